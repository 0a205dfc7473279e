"""climate_breakpoints: is there a turning point in the change rate along MAP / MAT, and where?

Per cell c = (element e, layer l) and driver d, on change rates y_i (``changes.rate_mg_ha_yr``)
standardised per cell, each driver x_d standardised over the fitted rows:

    y_i = alpha[e, group_i, l] + u~[study cell_i] + v[c, site_i] + g[control_i] * 10 / years_i
          + sum_d ( kbar[c, d] x_di + b[c, d] h_cd(x_di; psi[c, d]) ) + eps_i
    eps_i ~ Normal(0, s_i^2),   s_i^2 = sigma_c^2 + (sigma_meas_c * 10 / years_i)^2 + v_i
    g[k] ~ Normal(0, sigma_meas_c^2 / n_controls_k)     integrated out in closed form
    u~ = u - (mean of u over the study cells of c)     (study effects sum to zero in a cell)
    u = sd_study_c z,  z ~ Normal(0, 1)                 (non-centred; SBC flagged the centred form)
    v[c, site] ~ Normal(0, sd_site^2)                   integrated out in closed form
    kbar[c, d] ~ Normal(0, slope_sd^2)                  integrated out in closed form
    b[c, d] ~ Normal(0, change_sd^2)  (half the change of slope)   integrated out in closed form
    h_cd(x; psi) = |x - psi| minus its least-squares line on [1, x_d] over the rows of c
    h_cd(x; none) = 0
    psi[c, d] in {none} U grid_d,  P(none) = 1 - pi_d, pi_d / grid size on each grid point
    pi_d ~ Beta(1, 1)   one unknown share of cells with a turning point per driver

pi_d (``break_share``, ``structure.break_prior = "shared"``) is learnt from all the cells of
driver d: Scott & Berger's (2010) multiplicity adjustment. A driver that turns in no other
element x layer cell makes a lone turning point less likely a priori; where it turns in most
cells, a weak cell is helped. It was adopted against MAT's false breaks beside a MAP-only
break (the simulator's MAT co-varies with MAP; benchmarks/calibration.md, stop 22).
``"fixed"`` sets pi_d = ``priors.p_break`` (0.5) in every cell.

v_i is the known variance of the rate from estimated bulk densities (harmonize's
``rate_sd_bd_mg_ha_yr``, standardised; 0 where BD was measured or the stock reported): imputed
values are not data, so they enter with their predictive uncertainty (``data.bd_estimated``;
"as_data" sets v = 0). Likewise a change resting on the shallow-to-deep fill is left out
(``data.deep_imputed = "missing"``).

g is the shared year-0 control (``structure.control_effect = "tied"``): every change of a
chronosequence is taken against one baseline (the mean of its n_controls year-0 plots), so the
baseline's plot noise enters all of the group's rates as noise / years. A control plot is
measured like a treated one, whose own noise is the sigma_meas / years term, so g's sd is tied
to sigma_meas (no new parameter). Groups are cell x chronosequence x site, nested in sites, so
the Woodbury identity per group (:func:`control_terms`) leaves the formulas below unchanged
with W and V the group-corrected sums. Measured over 20 simulated datasets at 1000 draws
(benchmarks/calibration.md, stop 20): every fit passes the gate (14 of 20 without the term),
psi's coverage is unchanged; MAT beside a MAP-only break is not better.

``grid_d`` has ``grid_size`` points (40 for the first driver, 20 for the second when both are
fitted) evenly spaced between the ``psi_quantiles`` (10th and 90th percentiles) of the driver,
so each slope rests on at least 10% of the rows. A "site" is a distinct climate (a distinct
value of the fitted drivers): the drivers vary only between sites, so a per-site effect is what
keeps a cluster of studies at one site from looking like a kink.

Given the continuous parameters (alpha, u, sigma, sigma_meas, sd_study, sd_site), the rest is
Gaussian: per cell the rows enter only through two segment sums per site,
W_cu = sum w_i and V_cu = sum w_i r_i (w = 1/s^2, r = y - alpha - u~), and

    log p(y | theta) = sum_i log N(r_i; 0, s_i^2)
        + sum_{c,u} [ tau_c^2 f_cu V_cu^2 / 2 - log(1 + tau_c^2 W_cu) / 2 ],  f = 1/(1 + tau^2 W)
        + sum_c [ a_c' M_c a_c / 2 - log det(slope_sd^2 Q_c) / 2 ]            (kbar integrated)
        + sum_c logsumexp_g ( log pi_g + L_cg )                              (b and psi)

with a_c = sum_u f V x_u, Q_c = sum_u f W x_u x_u' + I / slope_sd^2, M = Q^-1, and L_cg the
Gaussian integral over b given kbar integrated (a Schur complement; a 2 x 2 closed form for
(b_map, b_mat) on the 2-D grid when both drivers are fitted). :func:`marginal_loglik` is
that formula, written once for numpy and PyTensor; the model adds it as a Potential, so NUTS
sees only continuous parameters (no funnel between a near-zero change of slope and psi).

Two changes from the design prototype, both about the site sd, its worst-mixing parameter: the
linear slopes are integrated out too (the drivers vary only between sites, so a slope's
posterior width scales with the site sd), and there is one site sd for all cells (spec
``structure.site_sd``: "all", or "element" / "cell"). Per cell the site sd is small (0.03-0.07
on the standardised scale on the demo) and reaches towards zero; per cell its bulk ESS was 378
in 4 x 1000 on the demo (R-hat 1.016), pooled 623 (R-hat 1.007); see benchmarks/results.md.
Because the site effects are integrated out, the likelihood sees only sd_site^2, so sd_site is
sampled as a signed z ~ Normal(0, prior sd) with sd_site = |z| (exactly the HalfNormal prior):
a posterior that reaches zero is then a smooth hump through z = 0, not the long left tail that
log(sd_site) gives it. ``sd_site_signed`` is stored but not judged (its sign is arbitrary).

Posterior (original units; NaN where a draw has no turning point):

- ``p_break`` (element, driver, layer): per draw, 1 - P(psi = none | theta, y), the softmax
  of the grid weights (a Deterministic, so the diagnostics gate judges it);
- ``psi`` (element, driver, layer): one grid value per draw drawn from its conditional
  posterior (numpy, seeded from the fit seed), NaN when "none" is drawn;
- ``k1``, ``k2`` (element, driver, layer; Mg ha-1 yr-1 per driver unit): slopes below and above
  psi, with (kbar, b) drawn from their conditional Gaussian given psi; NaN without a break;
- ``psi_diff`` (driver, layer): psi_C - psi_N when both elements are fitted (NaN unless both
  draws have a turning point).

The group ``psi_grid`` holds the exact posterior of psi on its grid averaged over draws:
``psi_prob_<driver>`` (element, layer, ``psi_<driver>`` in driver units) sums to P(break),
``p_no_break`` (element, driver, layer), and with two drivers ``p_break_pattern`` (element,
layer, pattern: none / <driver> only / both), which says which driver carries the break.

0-200 cm is fitted as a layer of its own (its change rates are the sum of the three layers'
rates, so its turning point is a separate answer, not derived from the others).

Pointwise log-likelihood (for PSIS-LOO) and posterior predictive are computed in numpy on the
thinned draws, *given* the drawn turning point: per draw psi is drawn as above, then (kbar, b)
and the site effects from their conditional Gaussians, and row i's likelihood is
N(y_i; mean_i, s_i^2) (leave-one-row-out). ``breaks = false`` (``fit --no-break``) is the same
model with P(none) = 1: no hinge, linear slopes only.
"""

from __future__ import annotations

import json
import types
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayes_soil.errors import InputError
from bayes_soil.models.base import (
    FitSettings,
    ModelData,
    SoilModel,
    bd_estimated_mode,
    coerce_numeric,
    drop_deep_imputed,
    elements_present,
    index_of,
    layers_with_enough_rows,
    observation_ids,
    register,
    standardise_by_cell,
    thin_posterior,
)
from bayes_soil.schema import ALL_LAYERS, CONTROL_KEYS, DRIVERS, RATE_SD_COLUMN

if TYPE_CHECKING:
    import pymc as pm
    import xarray as xr

LOG2PI = float(np.log(2 * np.pi))


# ---- the marginal likelihood, one formula for numpy and PyTensor ----------------------------
def _ops(backend: str) -> types.SimpleNamespace:
    if backend == "numpy":
        from scipy.special import logsumexp

        return types.SimpleNamespace(log=np.log, log1p=np.log1p, logsumexp=logsumexp)
    import pytensor.tensor as pt

    return types.SimpleNamespace(log=pt.log, log1p=pt.log1p, logsumexp=pt.logsumexp)


def marginal_loglik(
    V,
    W,
    t2,
    X: np.ndarray,
    H: list[np.ndarray],
    log_prior: list[np.ndarray],
    slope_var: float,
    change_var: float,
    backend: str = "numpy",
) -> dict[str, Any]:
    """Site effects, slopes and changes of slope integrated out; psi left on its grid.

    Parameters
    ----------
    V, W : (..., C, U) segment sums sum w r and sum w per cell x site (leading batch dims allowed
        with numpy).
    t2 : (..., C) site-effect variances sd_site^2.
    X : (U, D) standardised driver values of each site.
    H : per hinged driver (at most two), (C, U, G + 1) hinge bases, column 0 = "none" (zeros).
    log_prior : per hinged driver, (G + 1,) log prior weights of none and the grid points (with
        numpy also (..., 1, G + 1): per draw, when the prior share of breaks is sampled).
    slope_var, change_var : prior variances of kbar and b.

    Returns a dict: ``site`` (...,) and ``slope`` (...,) summed log terms, ``grid`` (..., C, G1+1
    [, G2+1]) unnormalised log posterior weights of psi (prior included) and ``lse`` (..., C)
    their logsumexp. The marginal log-likelihood is the row term (sum log N(r; 0, s^2)) plus
    site + slope + lse.sum().
    """
    ops = _ops(backend)
    D = X.shape[1]
    t2 = t2[..., :, None]
    f = 1.0 / (1.0 + t2 * W)
    site = (0.5 * t2 * f * V**2 - 0.5 * ops.log1p(t2 * W)).sum(axis=(-2, -1))
    fV, fW = f * V, f * W
    a = [(fV * X[:, e]).sum(axis=-1) for e in range(D)]  # (..., C)
    q = [[(fW * (X[:, e] * X[:, k])).sum(axis=-1) for k in range(D)] for e in range(D)]
    if D == 1:
        Q = q[0][0] + 1.0 / slope_var
        M = [[1.0 / Q]]
        slope = 0.5 * a[0] ** 2 / Q - 0.5 * ops.log(slope_var * Q)
    else:
        q11, q12, q22 = q[0][0] + 1.0 / slope_var, q[0][1], q[1][1] + 1.0 / slope_var
        det = q11 * q22 - q12**2
        M = [[q22 / det, -q12 / det], [-q12 / det, q11 / det]]
        quad = M[0][0] * a[0] ** 2 + 2 * M[0][1] * a[0] * a[1] + M[1][1] * a[1] ** 2
        slope = 0.5 * quad - 0.5 * ops.log(slope_var**2 * det)
    slope = slope.sum(axis=-1)
    Ma = [sum(M[e][k] * a[k] for k in range(D)) for e in range(D)]  # (..., C)
    A_, B_, K_ = [], [], []
    for Hd in H:
        fVg, fWg = fV[..., None], fW[..., None]
        A = (fVg * Hd).sum(axis=-2)  # (..., C, G+1)
        B = (fWg * Hd**2).sum(axis=-2)
        K = [(fWg * Hd * X[:, e][:, None]).sum(axis=-2) for e in range(D)]  # cross with kbar
        A_.append(A - sum(K[e] * Ma[e][..., None] for e in range(D)))
        B_.append(B - sum(K[e] * M[e][k][..., None] * K[k] for e in range(D) for k in range(D)))
        K_.append(K)
    if not H:
        return {"site": site, "slope": slope, "grid": None, "lse": None}
    if len(H) == 1:
        A, B = A_[0], B_[0]
        grid = log_prior[0] + 0.5 * change_var * A**2 / (1 + change_var * B)
        grid = grid - 0.5 * ops.log1p(change_var * B)
        lse = ops.logsumexp(grid, axis=-1)
    else:
        H1, H2 = H
        K1, K2 = K_
        if backend == "numpy":
            C12 = np.einsum("...cu,cug,cuh->...cgh", fW, H1, H2)
        else:
            C12 = (H1.transpose(0, 2, 1) * fW[:, None, :]) @ H2
        C12 = C12 - sum(
            K1[e][..., :, None] * M[e][k][..., None, None] * K2[k][..., None, :]
            for e in range(D)
            for k in range(D)
        )
        a1, a2 = A_[0][..., :, None], A_[1][..., None, :]
        p11 = B_[0][..., :, None] + 1.0 / change_var
        p22 = B_[1][..., None, :] + 1.0 / change_var
        det = p11 * p22 - C12**2
        if backend == "numpy":  # (..., 1, G+1) per draw, or (G+1,)
            lp2 = log_prior[0][..., :, None] + log_prior[1][..., None, :]
        else:
            lp2 = log_prior[0][:, None] + log_prior[1][None, :]
        grid = (
            lp2
            + 0.5 * (a1**2 * p22 - 2 * a1 * a2 * C12 + a2**2 * p11) / det
            - 0.5 * ops.log(det * change_var**2)
        )
        shape = grid.shape
        if backend == "numpy":
            lse = ops.logsumexp(grid.reshape(*shape[:-2], -1), axis=-1)
        else:
            lse = ops.logsumexp(grid.reshape((shape[0], -1)), axis=-1)
    return {"site": site, "slope": slope, "grid": grid, "lse": lse}


def hinge_basis(
    x_rows: np.ndarray, x_sites: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """|x - psi| orthogonalised on [1, x] over ``x_rows``, evaluated at ``x_sites``.

    Returns (U, G + 1) bases (column 0 = no turning point, zeros) and (G + 1,) coefficients on x
    of the removed line (0 for column 0): below psi the hinge's slope is -1 - coef, above +1 - coef.
    """
    X = np.column_stack([np.ones(len(x_rows)), x_rows])
    raw = np.abs(x_rows[:, None] - grid[None, :])
    coef, *_ = np.linalg.lstsq(X, raw, rcond=None)  # (2, G)
    H = np.zeros((len(x_sites), len(grid) + 1))
    H[:, 1:] = np.abs(x_sites[:, None] - grid[None, :]) - coef[0] - np.outer(x_sites, coef[1])
    return H, np.concatenate([[0.0], coef[1]])


def control_terms(w, wr, z, tg2, gidx: np.ndarray, n_groups: int, backend: str = "numpy"):
    """The shared year-0 control integrated out, per control group.

    Every change rate of a chronosequence is ``(stock_t - baseline) / years``: the baseline's
    noise e enters all its rows as ``e / years``, shared within the group and growing at young
    ages. With g ~ Normal(0, tg2) per group and loading z_i (decades^-1), the group's covariance
    is diag(1 / w) + tg2 z z'; by Woodbury its log density is the row term plus ``ll`` below, and
    anything constant within the group (site effects, slopes, hinges) sees the weights
    sum w - dW and the weighted residuals sum w r - dV.

    w, wr : (..., N) row weights 1 / s^2 and w * r.  z : (N,) loadings.  tg2 : (..., K).
    Returns ``ll`` (...,), ``dW`` and ``dV`` (..., K) and ``d`` = 1 + tg2 sum w z^2 (..., K).
    """
    seg = _segment_sum(gidx, n_groups, backend)
    sz2, sz, szr = seg(w * z * z), seg(w * z), seg(wr * z)
    d = 1.0 + tg2 * sz2
    ops = _ops(backend)
    ll = (0.5 * tg2 * szr**2 / d - 0.5 * ops.log1p(tg2 * sz2)).sum(axis=-1)
    return {"ll": ll, "dW": tg2 * sz**2 / d, "dV": tg2 * sz * szr / d, "d": d, "szr": szr}


def site_sums(w, r, z, sigma_meas, a: dict, n_cell_sites: int, control: bool, backend: str):
    """Per cell x site, W = sum w and V = sum w r, with the shared controls integrated out when
    ``control`` (then ``ll`` is their log-density term and ``tg2`` (..., K) their variances;
    else 0 and None). The one composition for the PyTensor model and the numpy draws.

    w, r : (..., N).  z : (N,) loadings 10 / years.  sigma_meas : (..., cells).
    """
    seg = _segment_sum(a["cell_site_idx"], n_cell_sites, backend)
    V, W = seg(w * r), seg(w)
    if not control:
        return V, W, 0.0, None
    tg2 = sigma_meas.T[a["ctrl_cell"]].T ** 2 / a["ctrl_n"]
    ct = control_terms(w, w * r, z, tg2, a["ctrl_idx"], len(a["ctrl_n"]), backend)
    seg_c = _segment_sum(a["ctrl_cell_site"], n_cell_sites, backend)
    return V - seg_c(ct["dV"]), W - seg_c(ct["dW"]), ct["ll"], tg2


def _segment_sum(idx: np.ndarray, n: int, backend: str):
    """A function summing (..., N) values into (..., n) segments given by ``idx``."""
    if backend == "numpy":
        from scipy import sparse

        one_hot = sparse.csr_matrix((np.ones(len(idx)), (np.arange(len(idx)), idx)), (len(idx), n))

        def seg(v):
            v = np.asarray(v, float)
            return np.asarray(one_hot.T.dot(v.reshape(-1, v.shape[-1]).T).T).reshape(
                *v.shape[:-1], n
            )

        return seg
    import pytensor.tensor as pt

    return lambda v: pt.inc_subtensor(pt.zeros(n)[idx], v)


@register
class ClimateBreakpoints(SoilModel):
    """Change rates vs climate: turning point on a grid, summed out; P(break) per cell."""

    name = "climate_breakpoints"
    table = "changes"
    observed = ("rate",)
    response_data = ("rate",)  # pm.Data that carries the response (SBC swaps it)
    # the gate judges what the report shows: P(break), and psi, k1, k2, psi_diff in the cells
    # where every draw has a turning point; the rest is nuisance, measured and listed (the site
    # sd mixes slowest and is not shown; benchmarks/results.md)
    diagnostic_vars = ("p_break", "psi", "k1", "k2", "psi_diff")
    nuisance_vars = (
        "break_share",
        "c",
        "sd_study",
        "study_eff_raw",
        "sigma",
        "sigma_meas",
        "sd_site",
    )
    # study_eff_raw = study_eff_z * sd_study and sd_site = |sd_site_signed| are measured instead
    unmeasured_vars = ("study_eff_z", "sd_site_signed")

    def breaks(self) -> list[str]:
        """Drivers that get a turning point (default: every fitted driver)."""
        b = self.spec["structure"].get("breaks", True)
        drivers = list(self.spec["data"]["drivers"])
        if b is True:
            return drivers
        if b is False:
            return []
        return [d for d in drivers if d in b]

    # ---- data -------------------------------------------------------------------------
    def prepare(self, table: pd.DataFrame) -> ModelData:
        data, structure = self.spec["data"], self.spec["structure"]
        drivers = [d for d in data["drivers"] if d in DRIVERS]
        if not drivers:
            raise InputError(f"no known driver in {data['drivers']}; use {DRIVERS}")
        df, n_deep_dropped, no_driver, layers_wanted = _change_rows(table, data, drivers)
        df, elements, layers, dropped = _fitted_rows(df, data, layers_wanted, no_driver)
        std = standardise_by_cell(df, "rate_mg_ha_yr")
        bd_mode = bd_estimated_mode(data)
        var_bd = _bd_variance(df, std.row_scale, bd_mode)
        x, x_loc, x_scale, lo, hi = _standardised_drivers(df, drivers, structure)

        group, groups = _adjustment_groups(df, structure)
        cell_key, cells, cell_el = _study_cells(df, elements, layers)
        obs_id = observation_ids(df)

        # sites = distinct climates (the drivers vary only between them); cell = element x layer
        x_sites, site_idx = np.unique(x, axis=0, return_inverse=True)
        site_idx = site_idx.ravel()
        n_l = len(layers)
        element_idx = index_of(df["element"], elements)
        layer_idx = index_of(df["layer"], layers)
        cell_idx = element_idx * n_l + layer_idx
        sizes = list(structure.get("grid_size", [40, 20]))
        grids, bases, coefs = _hinge_grids(x, x_sites, cell_idx, len(elements) * n_l, lo, hi, sizes)
        ctrl = _control_groups(df, cell_idx, site_idx, len(x_sites))
        arrays = {
            "rate": std.y,
            "x": x,
            "inv_decades": 10.0 / df["years"].to_numpy(float),
            # known variance (standardised) of the rate from estimated bulk densities
            "var_bd": var_bd,
            "element_idx": element_idx,
            "layer_idx": layer_idx,
            "cell_idx": cell_idx,
            "site_idx": site_idx,
            "cell_site_idx": cell_idx * len(x_sites) + site_idx,
            "study_cell_idx": index_of(cell_key, cells),
            "group_idx": index_of(group, groups),
            "study_cell_element": cell_el[:, 0],
            "study_cell_layer": cell_el[:, 1],
            "study_cell_cell": cell_el[:, 0] * n_l + cell_el[:, 1],
            "x_sites": x_sites,
            "psi_lo": lo,
            "psi_hi": hi,
            **ctrl,
        }
        coords = {
            "element": elements,
            "driver": drivers,
            "layer": layers,
            "group": groups,
            "study_cell": cells,
            "obs_id": obs_id.tolist(),
        }
        y_loc, y_scale = std.grids(elements, layers)
        meta = {
            "y_loc": y_loc,
            "y_scale": y_scale,
            "x_loc": x_loc,
            "x_scale": x_scale,
            "psi_bounds": {
                d: [float(lo[j] * x_scale[j] + x_loc[j]), float(hi[j] * x_scale[j] + x_loc[j])]
                for j, d in enumerate(drivers)
            },
            "grids": grids,
            "hinge_bases": bases,
            "hinge_coefs": coefs,
            "n_sites": len(x_sites),
            "dropped_layers": dropped,
            "rows_without_driver": no_driver,
            "deep_imputed": data["deep_imputed"],
            "n_deep_imputed_left_out": n_deep_dropped,
            "bd_estimated": bd_mode,
            "n_rows_bd_estimated": int((var_bd > 0).sum()),
            "element_of_obs": df["element"].to_numpy(),
        }
        return ModelData(coords=coords, arrays=arrays, meta=meta, n_obs=len(df))

    # ---- pieces shared by the PyMC model and the numpy post-processing -------------------
    def _hinged(self, data: ModelData) -> list[int]:
        drivers = data.coords["driver"]
        hinged = [drivers.index(d) for d in self.breaks() if d in drivers]
        if len(hinged) > 2:  # pragma: no cover - only two drivers exist
            raise InputError("at most two drivers can have a turning point")
        return hinged

    def _break_prior(self) -> tuple[str, tuple[float, ...]]:
        """The prior probability of a turning point, read in one place: ("shared", (a, b)),
        one unknown share per driver ~ Beta(a, b) (``structure.break_prior = "shared"``,
        ``priors.break_share``), or ("fixed", (p,)) in every cell (``priors.p_break``)."""
        mode = self.spec["structure"].get("break_prior", "fixed")
        pri = self.spec["priors"]
        if mode == "shared":
            return mode, tuple(float(v) for v in pri.get("break_share", (1.0, 1.0)))
        if mode == "fixed":
            return mode, (float(pri.get("p_break", 0.5)),)
        raise InputError(f"structure.break_prior must be 'shared' or 'fixed', not {mode!r}")

    def _log_priors(self, data: ModelData, share=None, backend: str = "numpy") -> list:
        """Per hinged driver, log prior weights of (none, grid points): P(none) = 1 - p and p
        spread evenly over the grid. p is ``priors.p_break``, or ``share`` (the sampled
        ``break_share``: a PyTensor vector, or numpy (S, hinged) giving (S, 1, G + 1) weights)."""
        out = []
        for k, j in enumerate(self._hinged(data)):
            g = len(data.meta["grids"][j])
            if share is None:
                (p,) = self._break_prior()[1]
                out.append(np.concatenate([[np.log1p(-p)], np.full(g, np.log(p) - np.log(g))]))
            elif backend == "numpy":
                p = np.asarray(share, float)[:, k, None, None]  # (S, 1, 1)
                rest = np.broadcast_to(np.log(p) - np.log(g), (len(p), 1, g))
                out.append(np.concatenate([np.log1p(-p), rest], axis=-1))
            else:
                import pytensor.tensor as pt

                p = share[k]
                rest = pt.repeat(pt.log(p) - np.log(g), g)
                out.append(pt.concatenate([pt.log1p(-p)[None], rest]))
        return out

    def _control_effect(self) -> bool:
        """Whether the shared year-0 control is integrated out (``structure.control_effect``)."""
        mode = self.spec["structure"].get("control_effect", "tied")
        if mode not in ("tied", "none"):
            raise InputError(f"structure.control_effect must be 'tied' or 'none', not {mode!r}")
        return mode == "tied"

    def _variances(self) -> tuple[float, float]:
        pri = self.spec["priors"]
        return float(pri["slope_sd"]) ** 2, float(pri["change_sd"]) ** 2

    # ---- model ------------------------------------------------------------------------
    def build(self, data: ModelData) -> pm.Model:
        import pymc as pm
        import pytensor.tensor as pt

        pri = self.spec["priors"]
        a = data.arrays
        n_e, n_l = len(data.coords["element"]), len(data.coords["layer"])
        n_c, n_u = n_e * n_l, int(data.meta["n_sites"])
        n_gr = len(data.coords["group"])
        hinged = self._hinged(data)
        H = [pt.as_tensor(data.meta["hinge_bases"][j]) for j in hinged]
        slope_var, change_var = self._variances()
        n_sc = len(data.coords["study_cell"])
        # averaging matrix: study effects minus their mean within the cell
        counts = np.bincount(a["study_cell_cell"], minlength=n_c).clip(1)
        with pm.Model(coords=data.coords) as model:
            x = pm.Data("x", a["x"], dims=("obs_id", "driver"))
            pm.Data("element_idx", a["element_idx"], dims="obs_id")
            pm.Data("layer_idx", a["layer_idx"], dims="obs_id")
            inv_dec = pm.Data("inv_decades", a["inv_decades"], dims="obs_id")
            del x
            # the prior share of cells with a turning point, per hinged driver: unknown and
            # learnt from all the cells (Scott & Berger 2010's multiplicity adjustment), so a
            # dataset where one driver breaks nowhere else lowers the odds of a lone break
            mode, prior_args = self._break_prior()
            if mode == "shared" and hinged:
                model.add_coord("hinged_driver", [data.coords["driver"][j] for j in hinged])
                share = pm.Beta("break_share", *prior_args, dims="hinged_driver")
                lp = self._log_priors(data, share, backend="pytensor")
            else:
                lp = [pt.as_tensor(v) for v in self._log_priors(data)]
            # the response as data: new data of the same design need no new compilation (SBC)
            y = pm.Data("rate", a["rate"], dims="obs_id")
            cell = a["cell_idx"]
            egl = (a["element_idx"] * n_gr + a["group_idx"]) * n_l + a["layer_idx"]
            # intercept per element x group (vegetation x stage) x layer: the change rate also
            # carries the age trajectory F(t)/t, which differs by vegetation and stage
            c = pm.Normal("c", 0.0, pri["intercept_sd"], dims=("element", "group", "layer"))
            sd_study = pm.HalfNormal("sd_study", pri["sd_study"], dims=("element", "layer"))
            sd_sc = sd_study.flatten()[a["study_cell_cell"]]
            study_effects = self.spec["structure"].get("study_effects", "centred")
            if study_effects == "noncentred":  # for weakly informed study effects (few rows)
                z_study = pm.Normal("study_eff_z", 0.0, 1.0, dims="study_cell")
                u_raw = pm.Deterministic("study_eff_raw", z_study * sd_sc, dims="study_cell")
            elif study_effects == "centred":
                u_raw = pm.Normal("study_eff_raw", 0.0, sd_sc, dims="study_cell")
            else:
                raise InputError(
                    "structure.study_effects must be 'centred' or 'noncentred', "
                    f"not {study_effects!r}"
                )
            mean_sc = pt.inc_subtensor(pt.zeros(n_c)[a["study_cell_cell"]], u_raw) / counts
            u = u_raw - mean_sc[a["study_cell_cell"]]
            del n_sc
            sigma = pm.HalfNormal("sigma", pri["sigma"], dims=("element", "layer"))
            sigma_meas = pm.HalfNormal("sigma_meas", pri["sigma_meas"], dims=("element", "layer"))
            # the site sd enters only as sd_site^2 (the site effects are integrated out), so it
            # is sampled as a signed value z ~ Normal(0, prior) with sd_site = |z|: the same
            # HalfNormal prior, but a posterior that reaches zero is a smooth hump through z = 0
            # instead of the long left tail of log(sd_site) (the old worst-mixing parameter)
            pool = self.spec["structure"].get("site_sd", "all")
            dims = {"all": None, "element": "element"}.get(pool, ("element", "layer"))
            z = pm.Normal("sd_site_signed", 0.0, pri["sd_site"], dims=dims)
            sd_site = pm.Deterministic("sd_site", pt.abs(z), dims=dims)
            if pool == "all":  # one site sd for every cell (all are standardised)
                t2 = pt.repeat(pt.stack([sd_site**2]), n_c)
            elif pool == "element":  # one per element, shared by its layers
                t2 = pt.repeat(sd_site**2, n_l)
            else:
                t2 = sd_site.flatten() ** 2
            s2 = (
                sigma.flatten()[cell] ** 2
                + (sigma_meas.flatten()[cell] * inv_dec) ** 2
                + a["var_bd"]
            )
            r = y - c.flatten()[egl] - u[a["study_cell_idx"]]
            w = 1.0 / s2
            rows = -0.5 * (LOG2PI + pt.log(s2) + w * r**2)
            V, W, ctrl_ll, _ = site_sums(
                w, r, inv_dec, sigma_meas.flatten(), a, n_c * n_u, self._control_effect(), "pt"
            )
            total = rows.sum() + ctrl_ll
            V, W = V.reshape((n_c, n_u)), W.reshape((n_c, n_u))
            m = marginal_loglik(
                V, W, t2, a["x_sites"], H, lp, slope_var, change_var, backend="pytensor"
            )
            total = total + m["site"] + m["slope"]
            if m["lse"] is not None:
                total = total + m["lse"].sum()
            pm.Potential("marginal_loglik", total)
            # P(break) per draw: 1 - posterior weight of "none", per hinged driver
            pb = [pt.zeros(n_c) for _ in data.coords["driver"]]
            if len(hinged) == 1:
                pb[hinged[0]] = 1.0 - pt.exp(m["grid"][:, 0] - m["lse"])
            elif len(hinged) == 2:
                g = m["grid"]
                pb[hinged[0]] = 1.0 - pt.exp(pt.logsumexp(g[:, 0, :], axis=-1) - m["lse"])
                pb[hinged[1]] = 1.0 - pt.exp(pt.logsumexp(g[:, :, 0], axis=-1) - m["lse"])
            pbt = pt.stack(pb, axis=-1).reshape((n_e, n_l, len(pb))).transpose(0, 2, 1)
            pm.Deterministic("p_break", pbt, dims=("element", "driver", "layer"))
        return model

    def with_response(self, data: ModelData, y: np.ndarray) -> ModelData:
        """The same design with another (standardised) response (simulation-based calibration)."""
        arrays = {**data.arrays, "rate": np.asarray(y, float)}
        return ModelData(coords=data.coords, arrays=arrays, meta=data.meta, n_obs=data.n_obs)

    def prior_predictive(self, data: ModelData, draws: int = 200, seed: int = 1) -> xr.DataTree:
        """Prior draws of the parameters and of the standardised change rates.

        The sampled parameters come from PyMC's prior; what the likelihood integrates out is
        drawn here from its prior: per cell the site effects, the linear slopes on every driver,
        and per hinged driver the turning point (none with probability 1 - p_break, else a grid
        point) with its change of slope; then y = mean + Normal(0, s_i^2).
        """
        import warnings

        import pymc as pm
        import xarray as xr

        a = data.arrays
        with self.build(data), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the Potential is the likelihood
            prior = pm.sample_prior_predictive(draws=draws, random_seed=seed)["prior"]
        p = prior.to_dataset()
        st = self._stats(p, data)
        rng = np.random.default_rng([seed, 2])
        cell, site = a["cell_idx"], a["site_idx"]
        n_c, n_u = st["t2"].shape[1], int(data.meta["n_sites"])
        slope_var, change_var = self._variances()
        v = np.sqrt(st["t2"])[:, :, None] * rng.standard_normal((draws, n_c, n_u))
        mean = st["mu0"] + v[:, cell, site]
        x_sites = a["x_sites"]
        kbar = np.sqrt(slope_var) * rng.standard_normal((draws, n_c, x_sites.shape[1]))
        mean = mean + (kbar[:, cell, :] * x_sites[site][None]).sum(-1)
        for k, j in enumerate(self._hinged(data)):
            H = data.meta["hinge_bases"][j]  # (C, U, G + 1), column 0 = no turning point
            p = st["share"][:, k, None] if "share" in st else self._break_prior()[1][0]
            has = rng.random((draws, n_c)) < p  # none with probability 1 - p, else uniform
            g = np.where(has, rng.integers(1, H.shape[-1], (draws, n_c)), 0)
            b = np.sqrt(change_var) * rng.standard_normal((draws, n_c))
            mean = mean + b[:, cell] * H[cell[None, :], site[None, :], g[:, cell]]
        if "tg2" in st:  # the shared year-0 control of each group, times 1 / years
            g = np.sqrt(st["tg2"]) * rng.standard_normal(st["tg2"].shape)
            mean = mean + g[:, a["ctrl_idx"]] * a["inv_decades"]
        y = mean + np.sqrt(st["s2"]) * rng.standard_normal(mean.shape)
        pp = xr.Dataset(
            {"rate": (("chain", "draw", "obs_id"), y[None])},
            coords={"chain": [0], "draw": np.arange(draws), "obs_id": data.coords["obs_id"]},
        )
        return xr.DataTree.from_dict({"prior": p, "prior_predictive": pp})

    def derived(self, posterior: xr.Dataset, data: ModelData) -> xr.Dataset:
        """Nothing left to derive: psi, k1, k2 and psi_diff need seeded random draws and are
        added with the pointwise groups (:meth:`pointwise`), where the seed is known."""
        import xarray as xr

        return xr.Dataset()

    # ---- numpy post-processing: grid posterior, draws of psi / slopes, pointwise groups ---
    def _stats(self, post: xr.Dataset, data: ModelData, idx: np.ndarray | None = None) -> dict:
        """Per flattened draw: r, s2, V, W, t2 from the sampled parameters (numpy)."""
        a = data.arrays
        n_e, n_l = len(data.coords["element"]), len(data.coords["layer"])
        n_c, n_u = n_e * n_l, int(data.meta["n_sites"])
        n_gr = len(data.coords["group"])

        def flat(name: str) -> np.ndarray:
            v = post[name].values
            v = v.reshape(-1, *v.shape[2:]).astype(float)
            return v if idx is None else v[idx]

        c = flat("c").reshape(-1, n_e * n_gr * n_l)
        u_raw = flat("study_eff_raw")
        sig = flat("sigma").reshape(-1, n_c)
        sme = flat("sigma_meas").reshape(-1, n_c)
        tau = flat("sd_site")
        if tau.ndim == 1:  # one for all cells
            tau = np.repeat(tau[:, None], n_c, axis=1)
        elif tau.ndim == 2 and tau.shape[1] == n_e:  # one per element
            tau = np.repeat(tau, n_l, axis=1)
        tau = tau.reshape(-1, n_c)
        scc = a["study_cell_cell"]
        counts = np.bincount(scc, minlength=n_c).clip(1)
        mean_sc = np.stack([np.bincount(scc, weights=row, minlength=n_c) for row in u_raw])
        u = u_raw - (mean_sc / counts)[:, scc]
        egl = (a["element_idx"] * n_gr + a["group_idx"]) * n_l + a["layer_idx"]
        cell = a["cell_idx"]
        mu0 = c[:, egl] + u[:, a["study_cell_idx"]]
        r = a["rate"][None, :] - mu0
        s2 = sig[:, cell] ** 2 + (sme[:, cell] * a["inv_decades"][None, :]) ** 2 + a["var_bd"]
        w = 1.0 / s2
        V, W, ctrl_ll, tg2 = site_sums(
            w, r, a["inv_decades"], sme, a, n_c * n_u, self._control_effect(), "numpy"
        )
        out = {"mu0": mu0, "r": r, "s2": s2, "t2": tau**2, "ctrl_ll": ctrl_ll}
        if "break_share" in post:
            out["share"] = flat("break_share")
        if tg2 is not None:  # the pointwise draws and the prior predictive draw g from it
            out["tg2"] = tg2
        return {**out, "V": V.reshape(-1, n_c, n_u), "W": W.reshape(-1, n_c, n_u)}

    def marginal_numpy(self, st: dict, data: ModelData) -> dict:
        """:func:`marginal_loglik` on a batch of draws (numpy), plus the row term."""
        hinged = self._hinged(data)
        H = [data.meta["hinge_bases"][j] for j in hinged]
        slope_var, change_var = self._variances()
        m = marginal_loglik(
            st["V"],
            st["W"],
            st["t2"],
            data.arrays["x_sites"],
            H,
            self._log_priors(data, st.get("share")),
            slope_var,
            change_var,
        )
        m["rows"] = (-0.5 * (LOG2PI + np.log(st["s2"]) + st["r"] ** 2 / st["s2"])).sum(-1)
        m["rows"] = m["rows"] + st["ctrl_ll"]
        return m

    def _draw_conditional(
        self, st: dict, data: ModelData, gidx: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(kbar, b) per draw and cell from their conditional Gaussian given psi (site effects
        integrated out). ``gidx`` (S, C, Dh) grid indices (0 = none). Returns kbar (S, C, D)
        and b (S, C, Dh) (b = 0 where psi is none)."""
        X = data.arrays["x_sites"]
        hinged = self._hinged(data)
        S, n_c, n_u = st["V"].shape
        D, Dh = X.shape[1], len(hinged)
        slope_var, change_var = self._variances()
        f = 1.0 / (1.0 + st["t2"][..., None] * st["W"])
        fV, fW = f * st["V"], f * st["W"]
        Z = np.broadcast_to(X, (S, n_c, n_u, D))
        hs = []
        for k, j in enumerate(hinged):
            Hd = data.meta["hinge_bases"][j]  # (C, U, G+1)
            hs.append(Hd[np.arange(n_c)[None, :], :, gidx[..., k]])  # (S, C, U)
        Z = np.concatenate([Z, np.stack(hs, axis=-1)], axis=-1) if hs else np.array(Z)
        prec = np.einsum("scu,scuk,scul->sckl", fW, Z, Z)
        prior = np.r_[np.full(D, 1 / slope_var), np.full(Dh, 1 / change_var)]
        prec = prec + np.diag(prior)
        rhs = np.einsum("scu,scuk->sck", fV, Z)
        L = np.linalg.cholesky(prec)
        mean = np.linalg.solve(prec, rhs[..., None])[..., 0]
        z = rng.standard_normal(mean.shape)
        # beta = mean + L^-T z  has covariance prec^-1
        dev = np.linalg.solve(np.swapaxes(L, -1, -2), z[..., None])[..., 0]
        beta = mean + dev
        kbar, b = beta[..., :D], beta[..., D:]
        if Dh:
            b = np.where(gidx == 0, 0.0, b)
        return kbar, b

    def pointwise(self, dt: xr.DataTree, model: pm.Model, data: ModelData, fs: FitSettings) -> None:
        """Grid posterior, seeded draws of psi / k1 / k2, and the pointwise groups (numpy).

        PyMC cannot evaluate a Potential row by row, so the log-likelihood (given the drawn
        turning point, slopes and site effects) and the posterior predictive are computed here.
        """
        import xarray as xr

        post = dt["posterior"].to_dataset()
        c = data.coords
        n_e, n_l = len(c["element"]), len(c["layer"])
        n_c, n_u = n_e * n_l, int(data.meta["n_sites"])
        drivers = list(c["driver"])
        hinged = self._hinged(data)
        n_ch, n_dr = post.sizes["chain"], post.sizes["draw"]
        S = n_ch * n_dr
        rng = np.random.default_rng([int(fs.seed), 20261201])
        # draws kept for the pointwise groups (same evenly spaced draws as the other models)
        thin_draws = thin_posterior(post, fs.pointwise_draws_per_chain)["draw"].values
        thin_pos = np.flatnonzero(np.isin(post["draw"].values, thin_draws))
        thin_flat = (np.arange(n_ch)[:, None] * n_dr + thin_pos[None, :]).ravel()
        is_thin = np.zeros(S, bool)
        is_thin[thin_flat] = True

        grids = data.meta["grids"]
        gsize = [len(grids[j]) + 1 for j in hinged]
        prob_sum = [np.zeros((n_c, g)) for g in gsize]
        pattern_sum = np.zeros((n_c, 4))
        gidx_all = np.zeros((S, n_c, len(hinged)), dtype=np.int64)
        kbar_all = np.zeros((S, n_c, len(drivers)))
        b_all = np.zeros((S, n_c, len(hinged)))
        n_obs = data.n_obs
        ll = np.zeros((len(thin_flat), n_obs), dtype=np.float32)
        pp = np.zeros((len(thin_flat), n_obs), dtype=np.float32)
        t_row = {s: i for i, s in enumerate(thin_flat)}
        a = data.arrays
        X = a["x_sites"]
        chunk = 200
        for start in range(0, S, chunk):
            idx = np.arange(start, min(S, start + chunk))
            st = self._stats(post, data, idx)
            m = self.marginal_numpy(st, data)
            if hinged:
                g = m["grid"]
                if len(hinged) == 1:
                    p = np.exp(g - m["lse"][..., None])  # (s, C, G+1)
                    prob_sum[0] += p.sum(0)
                    cum = np.cumsum(p, axis=-1)
                    uu = rng.random(p.shape[:-1])[..., None]
                    gi = (cum < uu * cum[..., -1:]).sum(-1)
                    gidx_all[idx, :, 0] = np.minimum(gi, p.shape[-1] - 1)
                else:
                    p = np.exp(g - m["lse"][..., None, None])  # (s, C, G1+1, G2+1)
                    prob_sum[0] += p.sum((0, 3))
                    prob_sum[1] += p.sum((0, 2))
                    pattern_sum[:, 0] += p[:, :, 0, 0].sum(0)
                    pattern_sum[:, 1] += p[:, :, 1:, 0].sum((0, 2))
                    pattern_sum[:, 2] += p[:, :, 0, 1:].sum((0, 2))
                    pattern_sum[:, 3] += p[:, :, 1:, 1:].sum((0, 2, 3))
                    flatp = p.reshape(*p.shape[:2], -1)
                    cum = np.cumsum(flatp, axis=-1)
                    uu = rng.random(flatp.shape[:-1])[..., None]
                    gi = np.minimum((cum < uu * cum[..., -1:]).sum(-1), flatp.shape[-1] - 1)
                    gidx_all[idx, :, 0], gidx_all[idx, :, 1] = np.divmod(gi, p.shape[-1])
            kbar, b = self._draw_conditional(st, data, gidx_all[idx], rng)
            kbar_all[idx], b_all[idx] = kbar, b
            sel = is_thin[idx]
            if sel.any():
                # site effects given everything else, then rows are independent
                ii = np.flatnonzero(sel)
                mean_site = np.einsum("sce,ue->scu", kbar[ii], X)
                for k, j in enumerate(hinged):
                    Hd = data.meta["hinge_bases"][j]
                    hsel = Hd[np.arange(n_c)[None, :], :, gidx_all[idx[ii], :, k]]  # (s, C, U)
                    mean_site = mean_site + b[ii][..., k][..., None] * hsel
                t2 = st["t2"][ii][..., None]
                Wi, Vi = st["W"][ii], st["V"][ii]
                prec = 1.0 / t2 + Wi
                v = (Vi - mean_site * Wi) / prec + rng.standard_normal(Wi.shape) / np.sqrt(prec)
                full = (mean_site + v).reshape(len(ii), n_c * n_u)[:, a["cell_site_idx"]]
                mu = st["mu0"][ii] + full
                s2 = st["s2"][ii]
                if "tg2" in st:  # the shared control's effect given the rest, per group
                    z, tg2 = a["inv_decades"], st["tg2"][ii]
                    ct = control_terms(
                        1 / s2, (a["rate"] - mu) / s2, z, tg2, a["ctrl_idx"], tg2.shape[-1]
                    )
                    g_var = tg2 / ct["d"]
                    g = g_var * ct["szr"] + np.sqrt(g_var) * rng.standard_normal(g_var.shape)
                    mu = mu + g[:, a["ctrl_idx"]] * z
                rows = [t_row[s] for s in idx[ii]]
                ll[rows] = -0.5 * (LOG2PI + np.log(s2) + (a["rate"][None, :] - mu) ** 2 / s2)
                pp[rows] = mu + np.sqrt(s2) * rng.standard_normal(mu.shape)

        # ---- posterior variables in original units --------------------------------------
        y_scale = data.meta["y_scale"].reshape(n_c)
        x_scale, x_loc = data.meta["x_scale"], data.meta["x_loc"]
        D = len(drivers)
        psi = np.full((S, n_c, D), np.nan)
        k1 = np.full((S, n_c, D), np.nan)
        k2 = np.full((S, n_c, D), np.nan)
        for k, j in enumerate(hinged):
            gi = gidx_all[..., k]
            grid_o = np.r_[np.nan, grids[j] * x_scale[j] + x_loc[j]]
            psi[..., j] = grid_o[gi]
            coef = data.meta["hinge_coefs"][j][np.arange(n_c)[None, :], gi]
            scale = y_scale[None, :] / x_scale[j]
            has = gi > 0
            bb = b_all[..., k]
            k1[..., j] = np.where(has, (kbar_all[..., j] - bb * (1 + coef)) * scale, np.nan)
            k2[..., j] = np.where(has, (kbar_all[..., j] + bb * (1 - coef)) * scale, np.nan)

        def to_da(arr: np.ndarray, name: str) -> xr.DataArray:
            v = arr.reshape(n_ch, n_dr, n_e, n_l, D).transpose(0, 1, 2, 4, 3)
            return xr.DataArray(
                v,
                dims=("chain", "draw", "element", "driver", "layer"),
                coords={
                    "chain": post["chain"],
                    "draw": post["draw"],
                    "element": c["element"],
                    "driver": drivers,
                    "layer": c["layer"],
                },
                name=name,
            )

        new = {"psi": to_da(psi, "psi"), "k1": to_da(k1, "k1"), "k2": to_da(k2, "k2")}
        new["psi"].attrs.update(
            units="driver units (map_mm: mm; mat_c: degC)",
            description="turning point drawn from its grid posterior; NaN = no turning point",
        )
        for k in ("k1", "k2"):
            new[k].attrs.update(
                units="Mg ha-1 yr-1 per driver unit",
                description=f"slope {'below' if k == 'k1' else 'above'} psi; NaN = no break",
            )
        if {"C", "N"} <= set(c["element"]):
            new["psi_diff"] = new["psi"].sel(element="C", drop=True) - new["psi"].sel(
                element="N", drop=True
            )
            new["psi_diff"].attrs.update(
                units=new["psi"].attrs["units"],
                description="psi_C - psi_N; NaN unless both draws have a turning point",
            )
        dt["posterior"] = post.assign(new).assign_attrs(post.attrs)

        # ---- the exact grid posterior, averaged over draws -------------------------------
        grid_vars: dict[str, xr.DataArray] = {}
        p_none = np.zeros((n_c, D))
        for k, j in enumerate(hinged):
            d = drivers[j]
            prob = prob_sum[k] / S
            p_none[:, j] = prob[:, 0]
            grid_vars[f"psi_prob_{d}"] = xr.DataArray(
                prob[:, 1:].reshape(n_e, n_l, -1),
                dims=("element", "layer", f"psi_{d}"),
                coords={
                    "element": c["element"],
                    "layer": c["layer"],
                    f"psi_{d}": grids[j] * x_scale[j] + x_loc[j],
                },
                attrs={"description": f"P(psi = grid value) for {d}; sums to P(break)"},
            )
        for j in range(D):
            if j not in hinged:
                p_none[:, j] = 1.0
        grid_vars["p_no_break"] = xr.DataArray(
            p_none.reshape(n_e, n_l, D).transpose(0, 2, 1),
            dims=("element", "driver", "layer"),
            coords={"element": c["element"], "driver": drivers, "layer": c["layer"]},
            attrs={"description": "posterior probability of no turning point (exact)"},
        )
        if len(hinged) == 2:
            d1, d2 = drivers[hinged[0]], drivers[hinged[1]]
            grid_vars["p_break_pattern"] = xr.DataArray(
                (pattern_sum / S).reshape(n_e, n_l, 4),
                dims=("element", "layer", "pattern"),
                coords={
                    "element": c["element"],
                    "layer": c["layer"],
                    "pattern": ["none", f"{d1} only", f"{d2} only", "both"],
                },
                attrs={"description": "which driver carries the turning point (exact)"},
            )
        dt["psi_grid"] = xr.Dataset(grid_vars).assign_attrs(
            description="exact posterior of psi on its grid, averaged over the draws",
            **self._break_prior_attrs(),
        )

        # ---- pointwise groups --------------------------------------------------------------
        n_keep = len(thin_pos)
        pw_coords = {
            "chain": post["chain"].values,
            "draw": post["draw"].values[thin_pos],
            "obs_id": c["obs_id"],
        }
        dims = ("chain", "draw", "obs_id")
        attrs = {
            "thinned_from_draws": int(n_dr),
            "note": "given the drawn turning point, slopes and site effects (leave one row out)",
        }
        dt["log_likelihood"] = xr.Dataset(
            {"rate": (dims, ll.reshape(n_ch, n_keep, n_obs))}, coords=pw_coords
        ).assign_attrs(attrs)
        dt["posterior_predictive"] = xr.Dataset(
            {"rate": (dims, pp.reshape(n_ch, n_keep, n_obs))}, coords=pw_coords
        ).assign_attrs(attrs)
        if "observed_data" not in dt.children:
            dt["observed_data"] = xr.Dataset(
                {"rate": (("obs_id",), a["rate"])}, coords={"obs_id": c["obs_id"]}
            )

    def _break_prior_attrs(self) -> dict:
        """The prior of a turning point as the report reads it back (sentences.break_prior_text)."""
        mode, args = self._break_prior()
        if mode == "shared":
            return {"break_prior": "shared", "break_share_beta": list(args)}
        return {"break_prior": "fixed", "prior_p_break": args[0]}

    def extra_attrs(self, dt: xr.DataTree, data: ModelData, settings) -> dict:
        attrs: dict[str, Any] = {
            "psi_bounds": json.dumps(data.meta["psi_bounds"]),
            "dropped_layers": json.dumps(data.meta["dropped_layers"]),
            "rows_without_driver": json.dumps(data.meta.get("rows_without_driver", {})),
            "breaks": json.dumps(self.breaks()),
            "psi_grid_size": json.dumps(
                {data.coords["driver"][j]: len(data.meta["grids"][j]) for j in self._hinged(data)}
            ),
            "n_sites": int(data.meta["n_sites"]),
            "deep_imputed": data.meta["deep_imputed"],
            "n_deep_imputed_left_out": int(data.meta["n_deep_imputed_left_out"]),
            "bd_estimated": data.meta["bd_estimated"],
            "n_rows_bd_estimated": int(data.meta["n_rows_bd_estimated"]),
        }
        return attrs


# ---- prepare's steps ---------------------------------------------------------------------
def _change_rows(
    table: pd.DataFrame, data: dict, drivers: list[str]
) -> tuple[pd.DataFrame, int, dict[str, int], list[str]]:
    """Change rows with a finite rate, every fitted driver and a wanted layer; also how many
    were left out as deep-imputed and, per driver, for lacking it; and the layers wanted."""
    need = {"study_id", "element", "layer", "years", "rate_mg_ha_yr", *drivers}
    missing = need - set(table.columns)
    if missing:
        raise InputError(f"changes table lacks column(s): {', '.join(sorted(missing))}")
    # a change whose stock (or control) rests on the shallow-to-deep fill is not data
    df, n_deep_dropped = drop_deep_imputed(table.copy(), data["deep_imputed"])
    coerce_numeric(df, ("years", "rate_mg_ha_yr", *drivers))
    ok = np.isfinite(df["rate_mg_ha_yr"]) & (df["years"] > data.get("min_years", 0))
    # rows without a driver stay in every other analysis; here they are left out, counted
    wanted = ok & df["layer"].isin(data.get("layers", ALL_LAYERS))
    wanted &= df["element"].isin(data["elements"])
    no_driver = {d: int((wanted & ~np.isfinite(df[d])).sum()) for d in drivers}
    for d in drivers:
        ok &= np.isfinite(df[d])
    layers_wanted = [lay for lay in data.get("layers", ALL_LAYERS)]
    return df[ok & df["layer"].isin(layers_wanted)], n_deep_dropped, no_driver, layers_wanted


def _fitted_rows(
    df: pd.DataFrame, data: dict, layers_wanted: list[str], no_driver: dict[str, int]
) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """The rows of the elements and layers fitted (a layer needs enough rows for every
    element); returns them with those elements and layers and the layers dropped."""
    elements = elements_present(df, data["elements"])
    if not elements:
        lost = ", ".join(f"{n} without {d}" for d, n in no_driver.items() if n)
        why = f" ({lost}; the model needs every driver it fits)" if lost else ""
        raise InputError(f"no change rates for element(s) {data['elements']}{why}")
    df = df[df["element"].isin(elements)]
    min_rows = int(data.get("min_rows_per_layer", 10))
    layers, dropped = layers_with_enough_rows(df, elements, layers_wanted, min_rows)
    if not layers:
        raise InputError(f"no layer has {min_rows} or more change rates for {elements}")
    df = df[df["layer"].isin(layers)].reset_index(drop=True)
    return df, elements, layers, dropped


def _bd_variance(df: pd.DataFrame, row_scale: np.ndarray, bd_mode: str) -> np.ndarray:
    """Each rate's known variance (standardised) from estimated bulk densities (0: measured)."""
    var_bd = np.zeros(len(df))
    if bd_mode == "uncertain" and RATE_SD_COLUMN in df.columns:
        sd = pd.to_numeric(df[RATE_SD_COLUMN], errors="coerce").fillna(0.0).to_numpy(float)
        var_bd = (sd / row_scale) ** 2
    return var_bd


def _standardised_drivers(
    df: pd.DataFrame, drivers: list[str], structure: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The drivers standardised over the fitted rows (x, loc, scale) and, per driver, the
    range (quantiles) a turning point is searched in."""
    x_loc = np.array([df[d].mean() for d in drivers])
    x_scale = np.array([df[d].std(ddof=0) or 1.0 for d in drivers])
    x = (df[drivers].to_numpy(float) - x_loc) / x_scale
    q_lo, q_hi = structure.get("psi_quantiles", [0.1, 0.9])
    lo = np.quantile(x, q_lo, axis=0)
    hi = np.quantile(x, q_hi, axis=0)
    if np.any(hi - lo <= 0):
        raise InputError("a driver does not vary in the data; no turning point can be fitted")
    return x, x_loc, x_scale, lo, hi


def _adjustment_groups(df: pd.DataFrame, structure: dict) -> tuple[pd.Series, list[str]]:
    """Each row's intercept group (the ``structure.adjust`` columns joined; "all" without),
    and the groups."""
    adjust = [c for c in structure.get("adjust", []) if c in df.columns]
    group = (
        df[adjust].astype(str).agg("|".join, axis=1)
        if adjust
        else pd.Series(["all"] * len(df), index=df.index)
    )
    return group, sorted(pd.unique(group))


def _study_cells(
    df: pd.DataFrame, elements: list[str], layers: list[str]
) -> tuple[pd.Series, list[str], np.ndarray]:
    """Each row's study cell (element # study # layer), the cells, and each cell's (element,
    layer) indices."""
    cell_key = df["element"] + "#" + df["study_id"].astype(str) + "#" + df["layer"]
    cells = list(pd.unique(cell_key))
    e_of = {e: i for i, e in enumerate(elements)}
    l_of = {lay: i for i, lay in enumerate(layers)}
    cell_el = np.array([[e_of[k.split("#")[0]], l_of[k.split("#")[-1]]] for k in cells])
    return cell_key, cells, cell_el


def _control_groups(
    df: pd.DataFrame, cell_idx: np.ndarray, site_idx: np.ndarray, n_sites: int
) -> dict[str, np.ndarray]:
    """Rows sharing one year-0 baseline: same cell, chronosequence (schema.CONTROL_KEYS) and
    fitted site (a study-reference baseline shared across sites is split by site, so groups
    nest in sites). Returns each row's group, and per group its cell, cell x site and number of
    control profiles averaged in the baseline."""
    keys = [k for k in CONTROL_KEYS if k in df.columns]
    frame = df[keys].astype(str).assign(_cell=cell_idx, _site=site_idx)
    gidx = frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()
    first = np.unique(gidx, return_index=True)[1]
    n_ctrl = pd.to_numeric(df.get("n_controls", 1), errors="coerce")
    n_ctrl = np.broadcast_to(np.asarray(n_ctrl, float), len(df))
    n_ctrl = np.where(np.isfinite(n_ctrl) & (n_ctrl >= 1), n_ctrl, 1.0)
    return {
        "ctrl_idx": gidx,
        "ctrl_cell": cell_idx[first],
        "ctrl_cell_site": cell_idx[first] * n_sites + site_idx[first],
        "ctrl_n": n_ctrl[first],
    }


def _hinge_grids(
    x: np.ndarray,
    x_sites: np.ndarray,
    cell_idx: np.ndarray,
    n_cells: int,
    lo: np.ndarray,
    hi: np.ndarray,
    sizes: list[int],
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per driver, the psi grid (standardised) and per cell the hinge bases and their
    least-squares line coefficients (:func:`hinge_basis`)."""
    grids, bases, coefs = [], [], []
    for j in range(x.shape[1]):
        g = int(sizes[min(j, len(sizes) - 1)])
        grid = lo[j] + (hi[j] - lo[j]) * (np.arange(g) + 0.5) / g
        H = np.zeros((n_cells, len(x_sites), g + 1))
        K = np.zeros((n_cells, g + 1))
        for c in range(n_cells):
            rows = cell_idx == c
            H[c], K[c] = hinge_basis(x[rows, j], x_sites[:, j], grid)
        grids.append(grid)
        bases.append(H)
        coefs.append(K)
    return grids, bases, coefs


def loo_by_element(dt: xr.DataTree, element_of_obs: np.ndarray, var: str = "rate") -> dict:
    """PSIS-LOO per element (standardised scale) with the count of Pareto k above ArviZ's own
    threshold (``good_k``, which depends on the number of draws), never a fixed 0.7."""
    import warnings

    import arviz_stats as azs
    import xarray as xr

    ll = dt["log_likelihood"].to_dataset()
    out = {}
    for e in pd.unique(element_of_obs):
        sub = ll[[var]].isel(obs_id=np.flatnonzero(element_of_obs == e)).astype("float64")
        with warnings.catch_warnings():  # high Pareto k is counted and stored instead
            warnings.simplefilter("ignore")
            res = azs.loo(xr.DataTree.from_dict({"log_likelihood": sub}), pointwise=True, reff=1.0)
        k = np.asarray(res.pareto_k.values)
        out[str(e)] = {
            "elpd_loo": float(res.elpd),
            "se": float(res.se),
            "p_loo": float(res.p),
            "good_k": float(res.good_k),
            "n_bad_k": int((k > res.good_k).sum()),
            "n": int(k.size),
        }
    return out


__all__ = ["ClimateBreakpoints", "hinge_basis", "loo_by_element", "marginal_loglik"]
