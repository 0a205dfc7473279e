"""hier_rates: stage-wise rates of change of layer stocks, partially pooled across vegetation.

Per element e and fitted layer l (0-20, 20-100, 100-200; 0-200 is derived), on the stock y_i
standardised per element x layer, with t_i the age in decades:

    y_i = alpha[e,l] + v[site] + u[site] t_i + a[unit] + w[unit] t_i
          + sum_g beta[e, veg_i, g, l] h_g(t_i) + eps_i
    eps_i ~ Normal(0, sigma[e,l]^2)
    v ~ Normal(0, sd_site[e,l]^2)         site (distinct place) effect
    u ~ Normal(0, sd_site_slope[e,l]^2)   the site's rate deviation (climate acts on rates, and
                                          every chronosequence at a site shares its climate)
    a ~ Normal(0, sd_unit[e,l]^2)         chronosequence (study x site x vegetation x origin)
    w ~ Normal(0, sd_unit_slope[e,l]^2)   the chronosequence's own rate deviation
    beta[e,v,g,l] ~ Normal(mu_beta[e,g,l], tau[e,l]^2)      (partial pooling over vegetation)
    h_g(t) = clip(t - a_g, 0, b_g - a_g)   (continuous piecewise-linear trajectory, knots at
                                            5, 10, 20 and 30 years)

Why this form. The random effects (a, w per chronosequence x element x layer; v per site x
element x layer) are Gaussian and enter linearly, so they are integrated out in closed form:
per chronosequence cell a 2 x 2 Woodbury identity, per site another 2 x 2 one. What NUTS sees
is about 150 hyperparameters and rates instead of ~3,000 correlated effects (the explicit
centred form mixed well on the demo and badly on other simulated data: R-hat 1.08, bulk ESS
38). Because each chronosequence cell has one vegetation (hence one rate vector), the
likelihood needs only per-cell sufficient statistics (sums of y, y^2, t, t^2, t y and the
basis products), computed once: a gradient costs O(cells), not O(rows).

Imputed values are not data: by default (``data.deep_imputed = "missing"``) a 100-200 cm
stock filled by the shallow-to-deep function is left out (that cell is missing); the
frequentist reproduction keeps the paper's fill. ``"as_data"`` restores the old behaviour.

The effects are drawn afterwards from their exact conditional posterior (numpy, per thinned
draw) for the pointwise log-likelihood (conditional on the drawn effects, as an explicit
model would give) and the posterior predictive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayes_soil.errors import InputError
from bayes_soil.models.base import (
    CellStandardisation,
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
from bayes_soil.posterior import (
    add_total_layer,
    years_to_gain,
)
from bayes_soil.schema import (
    LAYERS,
    ORIGINS,
    STAGE_LOWER,
    STAGE_UPPER,
    STAGES,
    STOCK_SD_COLUMNS,
    VEGETATION,
)

if TYPE_CHECKING:
    import pymc as pm
    import xarray as xr

UNIT_KEYS = ("study_id", "site_id", "vegetation", "origin")
CELL_STATS = ("n", "t1", "t2", "y1", "ty", "b1", "bt")
GROUP_STATS = ("n", "y1", "y2", "b1", "by", "bb")
#: the prepared arrays that depend on the response (the rest is the design): pm.Data in the
#: model, so one compiled model serves new data of the same design (simulation-based calibration)
RESPONSE_ARRAYS = ("stat_y1", "stat_ty", "group_stat_y1", "group_stat_y2", "group_stat_by")


def stage_basis(years: np.ndarray, n_stages: int) -> np.ndarray:
    """(n, n_stages) basis h_g(t) in decades; the last fitted stage is open-ended."""
    lower = np.asarray(STAGE_LOWER[:n_stages])
    upper = np.asarray(STAGE_UPPER[:n_stages], dtype=float).copy()
    upper[-1] = np.inf
    return np.clip(np.asarray(years, float)[:, None] - lower, 0.0, upper - lower) / 10.0


def cell_statistics(
    y: np.ndarray, t: np.ndarray, basis: np.ndarray, cell: np.ndarray, n_cells: int
) -> dict[str, np.ndarray]:
    """Per-cell sufficient statistics of the Gaussian likelihood (sums over the cell's rows)."""
    g = basis.shape[1]

    def seg(v: np.ndarray) -> np.ndarray:
        out = np.zeros((n_cells, *v.shape[1:]))
        np.add.at(out, cell, v)
        return out

    return {
        "n": seg(np.ones_like(y)),
        "t1": seg(t),
        "t2": seg(t * t),
        "y1": seg(y),
        "y2": seg(y * y),
        "ty": seg(t * y),
        "b1": seg(basis),
        "bt": seg(basis * t[:, None]),
        "by": seg(basis * y[:, None]),
        "bb": seg((basis[:, :, None] * basis[:, None, :]).reshape(len(y), g * g)).reshape(
            n_cells, g, g
        ),
    }


@register
class HierRates(SoilModel):
    """Layer stocks: stage rates per vegetation x layer, partially pooled across vegetation."""

    name = "hier_rates"
    table = "layers"
    observed = ("stock",)
    response_data = RESPONSE_ARRAYS  # pm.Data names that carry the response (SBC)

    # ---- data -------------------------------------------------------------------------
    def prepare(self, table: pd.DataFrame) -> ModelData:
        data = self.spec["data"]
        df, n_deep_dropped = _stock_rows(table, data["deep_imputed"])
        bd_mode = bd_estimated_mode(data)
        df, elements, origins, fit_layers, dropped = _fitted_rows(df, data)
        vegetation = [v for v in VEGETATION if (df["vegetation"] == v).any()]
        others = sorted(set(df["vegetation"]) - set(VEGETATION))
        if others:
            raise InputError(f"unknown vegetation label(s) {others}; expected {VEGETATION}")
        max_years = float(df["years"].max())
        n_stages = max(1, sum(lo < max_years for lo in STAGE_LOWER))
        stages = list(STAGES[:n_stages])
        std = standardise_by_cell(df, "stock_mg_ha")
        obs_id = observation_ids(df)
        arrays, ucells, scells, n_bd_estimated = _design(
            df, std, elements, fit_layers, vegetation, n_stages, bd_mode
        )
        coords = {
            "element": elements,
            "vegetation": vegetation,
            "stage": stages,
            "fit_layer": fit_layers,
            "site_cell": scells,
            "unit_cell": ucells,
            "obs_id": obs_id.tolist(),
        }
        loc, scale = std.grids(elements, fit_layers)
        meta = {
            "loc": loc,
            "scale": scale,
            "max_age": df.groupby("vegetation")["years"].max().reindex(vegetation).to_numpy(float),
            "n_rows": _rows_per_stage(df, n_stages, stages),
            "dropped_layers": dropped,
            "origins": origins,
            "deep_imputed": data["deep_imputed"],
            "n_deep_imputed_left_out": n_deep_dropped,
            "bd_estimated": bd_mode,
            "n_rows_bd_estimated": n_bd_estimated,
        }
        return ModelData(coords=coords, arrays=arrays, meta=meta, n_obs=len(df))

    def with_response(self, data: ModelData, y: np.ndarray) -> ModelData:
        """The same design with another (standardised) response: for simulation-based
        calibration, where y is drawn from the prior predictive."""
        a = data.arrays
        n_cells = len(a["unit_cell_element"])
        stats = cell_statistics(y, a["years"] / 10.0, a["basis"], a["unit_cell_idx"], n_cells)
        new = {
            **a,
            "stock": np.asarray(y, float),
            **{f"stat_{k}": stats[k] for k in CELL_STATS},
            **_group_statistics(stats, a["unit_cell_group"], len(a["group_rate"])),
        }
        return ModelData(coords=data.coords, arrays=new, meta=data.meta, n_obs=data.n_obs)

    # ---- model ------------------------------------------------------------------------
    def build(self, data: ModelData) -> pm.Model:
        import pymc as pm
        import pytensor.tensor as pt

        pri = self.spec["priors"]
        struct = self.spec["structure"]
        a = data.arrays
        coords = {k: v for k, v in data.coords.items() if k not in ("obs_id",)}
        n_veg = len(coords["vegetation"])
        n_g = len(coords["stage"])
        ue, ul = a["unit_cell_element"], a["unit_cell_layer"]
        uel = ue * len(coords["fit_layer"]) + ul
        with pm.Model(coords=coords) as model:
            # the response enters only through these sums: data, so new data of the same design
            # need no new compilation (nutpie's with_data)
            a = {**a, **{k: pm.Data(k, a[k]) for k in RESPONSE_ARRAYS}}
            alpha = pm.Normal("alpha", 0.0, pri["alpha_sd"], dims=("element", "fit_layer"))
            sd_site = pm.HalfNormal("sd_site", pri["sd_site"], dims=("element", "fit_layer"))
            sd_unit = pm.HalfNormal("sd_unit", pri["sd_unit"], dims=("element", "fit_layer"))
            if struct["unit_slopes"]:
                sd_w = pm.HalfNormal(
                    "sd_unit_slope", pri["sd_unit_slope"], dims=("element", "fit_layer")
                )
            else:  # no chronosequence rate deviations: the slope variance is 0
                sd_w = pt.zeros((len(coords["element"]), len(coords["fit_layer"])))
            if struct["site_slopes"]:
                sd_site_w = pm.HalfNormal(
                    "sd_site_slope", pri["sd_site_slope"], dims=("element", "fit_layer")
                )
            else:
                sd_site_w = pt.zeros((len(coords["element"]), len(coords["fit_layer"])))
            sigma = pm.HalfNormal("sigma", pri["sigma"], dims=("element", "fit_layer"))
            mu_beta = pm.Normal(
                "mu_beta", 0.0, pri["mu_beta_sd"], dims=("element", "stage", "fit_layer")
            )
            if n_veg > 1:
                tau = pm.HalfNormal("tau", pri["tau"], dims=("element", "fit_layer"))
                if struct["beta"] == "centred":
                    beta = pm.Normal(
                        "beta",
                        mu_beta[:, None, :, :],
                        tau[:, None, None, :],
                        dims=("element", "vegetation", "stage", "fit_layer"),
                    )
                else:
                    z = pm.Normal(
                        "beta_z", 0.0, 1.0, dims=("element", "vegetation", "stage", "fit_layer")
                    )
                    beta = pm.Deterministic(
                        "beta",
                        mu_beta[:, None, :, :] + tau[:, None, None, :] * z,
                        dims=("element", "vegetation", "stage", "fit_layer"),
                    )
            else:  # one vegetation type: nothing to pool, tau would be prior alone (a funnel)
                beta = pm.Deterministic(
                    "beta",
                    mu_beta[:, None, :, :],
                    dims=("element", "vegetation", "stage", "fit_layer"),
                )
            theta = beta.dimshuffle(0, 1, 3, 2).reshape((-1, n_g))[a["group_rate"]]
            gel = a["group_element_layer"]
            if struct["origin"] == "contrast":
                d = pm.Normal("origin_contrast", 0.0, 0.5, dims=("element", "stage", "fit_layer"))
                sign = a["group_planted"] - 0.5
                theta = theta + sign[:, None] * d.dimshuffle(0, 2, 1).reshape((-1, n_g))[gel]
            # one row gather for the four per-(element, layer) parameters of every cell
            el_par = pt.stack([alpha, sigma, sd_unit, sd_w], axis=-1).reshape((-1, 4))
            cell_par = el_par[uel]
            n_l = len(coords["fit_layer"])
            sel = a["site_cell_element"] * n_l + a["site_cell_layer"]
            group_par = el_par[gel]
            pm.Potential(
                "stock_marginal",
                marginal_loglik(
                    theta,
                    cell_par[:, 0],
                    cell_par[:, 1],
                    cell_par[:, 2],
                    cell_par[:, 3],
                    sd_site.flatten()[sel],
                    sd_site_w.flatten()[sel],
                    a,
                    (group_par[:, 0], group_par[:, 1]),
                ),
            )
        return model

    # ---- derived quantities (original units) --------------------------------------------
    def derived(self, posterior: xr.Dataset, data: ModelData) -> xr.Dataset:
        import xarray as xr

        scale = xr.DataArray(
            data.meta["scale"],
            dims=("element", "fit_layer"),
            coords={"element": data.coords["element"], "fit_layer": data.coords["fit_layer"]},
        )
        rate = (posterior["beta"] * scale / 10.0).rename(fit_layer="layer")
        rate = add_total_layer(rate)
        out = {"rate": rate, "rate_mean": rate.mean("vegetation")}
        elements = list(data.coords["element"])
        if "C" in elements and "N" in elements:
            ratio = rate.sel(element="C", drop=True) / rate.sel(element="N", drop=True)
            out["rate_ratio"] = ratio
            out["rate_ratio_mean"] = out["rate_mean"].sel(element="C", drop=True) / out[
                "rate_mean"
            ].sel(element="N", drop=True)
        max_age = xr.DataArray(
            data.meta["max_age"],
            dims="vegetation",
            coords={"vegetation": data.coords["vegetation"]},
        )
        out["years_to_gain"] = years_to_gain(rate, max_age)
        if "origin_contrast" in posterior:
            oc = (posterior["origin_contrast"] * scale / 10.0).rename(fit_layer="layer")
            out["rate_origin_contrast"] = add_total_layer(oc)
        ds = xr.Dataset(out)
        ds["rate"].attrs.update(units="Mg ha-1 yr-1", long_name="stage rate of stock change")
        ds["rate_mean"].attrs.update(
            units="Mg ha-1 yr-1", long_name="equal-weight mean rate over vegetation ('all')"
        )
        ds["years_to_gain"].attrs.update(
            units="yr",
            long_name="first age after which the cumulative change stays positive; NaN = not "
            "within the observed ages of that vegetation",
        )
        return ds

    def extra_attrs(self, dt, data, settings) -> dict:
        import json

        attrs = {
            "deep_imputed": data.meta["deep_imputed"],
            "n_deep_imputed_left_out": int(data.meta["n_deep_imputed_left_out"]),
            "bd_estimated": data.meta["bd_estimated"],
            "n_rows_bd_estimated": int(data.meta["n_rows_bd_estimated"]),
            "fit_layers": json.dumps(list(data.coords["fit_layer"])),
            "dropped_layers": json.dumps(data.meta["dropped_layers"]),
            "observed_max_age": json.dumps(
                dict(zip(data.coords["vegetation"], map(float, data.meta["max_age"]), strict=True))
            ),
        }
        # rows per cell: what each rate rests on (0-200: profiles with all three layers)
        import xarray as xr

        arr = data.meta["n_rows"].to_xarray().rename(layer="fit_layer")
        arr = arr.reindex(
            fit_layer=data.coords["fit_layer"],
            element=data.coords["element"],
            vegetation=data.coords["vegetation"],
            stage=data.coords["stage"],
        )
        cd = dt["constant_data"].to_dataset() if "constant_data" in dt else xr.Dataset()
        dt["constant_data"] = cd.assign(n_rows=arr.fillna(0).astype("int64"))
        return attrs

    # ---- pointwise groups: effects drawn from their exact conditional posterior ----------
    def pointwise(self, dt, model, data, fs) -> None:
        """log_likelihood, posterior_predictive and observed_data (standardised stock).

        The likelihood NUTS saw has the effects integrated out; per thinned draw the site,
        unit and unit-slope effects are drawn from their exact Gaussian conditional posterior,
        and the pointwise log-likelihood is that of each row given them (as an explicit model
        would store it, so PSIS-LOO reads it as usual).
        """
        import xarray as xr

        post = thin_posterior(dt["posterior"].to_dataset(), fs.pointwise_draws_per_chain)
        rng = np.random.default_rng([fs.seed, 1])
        mean, sigma = self.conditional_mean(post, data, rng)
        y = data.arrays["stock"]
        ll = -0.5 * ((y - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
        rep = mean + sigma * rng.standard_normal(mean.shape)
        coords = {
            "chain": post["chain"].values,
            "draw": post["draw"].values,
            "obs_id": data.coords["obs_id"],
        }
        dims = ("chain", "draw", "obs_id")
        n_draws = int(dt["posterior"].sizes["draw"])
        for group, values in (("log_likelihood", ll), ("posterior_predictive", rep)):
            dt[group] = xr.Dataset(
                {"stock": (dims, values.astype("float32"))}, coords=coords
            ).assign_attrs(thinned_from_draws=n_draws)
        dt["observed_data"] = xr.Dataset(
            {"stock": (("obs_id",), y)}, coords={"obs_id": data.coords["obs_id"]}
        ).assign_attrs(units="stock standardised per element x layer")

    def conditional_mean(self, post: xr.Dataset, data: ModelData, rng: np.random.Generator):
        """Per draw and row: E[y | rates, drawn effects] and the residual sd (standardised)."""
        a = data.arrays
        c = _cell_draws({k: post[k].values for k in post.data_vars}, data)
        theta, alpha, s2 = c["theta"], c["alpha"], c["s2"]
        su2, sw2 = c["su2"], c["sd_unit_slope"] ** 2
        st = {k: a[k][None] for k in a if k.startswith("stat_")}
        _, q = _unit_terms(theta, alpha, s2, su2, sw2, st, np)
        site = a["unit_cell_site"]
        n_site = len(a["site_cell_element"])
        ss2, ssw2 = c["sd_site"] ** 2, c["sd_site_slope"] ** 2
        _, (mv, mu_), (p11, p12, p22) = _site_terms(q, site, n_site, ss2, ssw2, _segment_sum, np)
        v, u = _draw_pair(mv, mu_, p11, p12, p22, rng)  # site intercept and slope
        # unit intercept and slope given the site effect: N(Minv Z'r / s2, Minv)
        n, t1, t2 = st["stat_n"], st["stat_t1"], st["stat_t2"]
        off = alpha + v[:, site]
        off_w = u[:, site]
        r1 = st["stat_y1"] - (st["stat_b1"] * theta).sum(-1) - off * n - off_w * t1
        rt = st["stat_ty"] - (st["stat_bt"] * theta).sum(-1) - off * t1 - off_w * t2
        m11, m12, m22, _ = _woodbury(s2, su2, sw2, n, t1, t2)
        a_eff, w_eff = _draw_pair(
            (m11 * r1 + m12 * rt) / s2, (m12 * r1 + m22 * rt) / s2, m11, m12, m22, rng
        )
        cell = a["unit_cell_idx"]
        t = a["years"] / 10.0
        mean = (
            (off + a_eff)[:, cell]
            + (off_w + w_eff)[:, cell] * t
            + (theta[:, cell] * a["basis"][None]).sum(-1)
        )
        shape = (*post["sigma"].shape[:2], -1)
        return mean.reshape(shape), np.sqrt(s2[:, cell]).reshape(shape)

    def prior_predictive(self, data: ModelData, draws: int = 200, seed: int = 1) -> xr.DataTree:
        """Prior draws of the parameters and of the (standardised) stocks, effects included."""
        import warnings

        import pymc as pm
        import xarray as xr

        a = data.arrays
        with self.build(data), warnings.catch_warnings():
            # the Potential is the likelihood: prior draws rightly ignore it
            warnings.simplefilter("ignore", UserWarning)
            prior = pm.sample_prior_predictive(draws=draws, random_seed=seed)["prior"]
        p = prior.to_dataset()
        c = _cell_draws({k: p[k].values for k in p.data_vars}, data)
        rng = np.random.default_rng([seed, 2])
        n_u, n_s = len(a["unit_cell_element"]), len(a["site_cell_element"])
        v = c["sd_site"] * rng.standard_normal((draws, n_s))
        us = c["sd_site_slope"] * rng.standard_normal((draws, n_s))
        au = np.sqrt(c["su2"]) * rng.standard_normal((draws, n_u))
        wu = c["sd_unit_slope"] * rng.standard_normal((draws, n_u))
        cell, site = a["unit_cell_idx"], a["unit_cell_site"]
        level = c["alpha"] + v[:, site] + au
        slope = wu + us[:, site]
        mean = level[:, cell] + slope[:, cell] * a["years"] / 10.0
        mean = mean + (c["theta"][:, cell] * a["basis"][None]).sum(-1)
        sig = np.sqrt(c["s2"])[:, cell]
        y = mean + sig * rng.standard_normal(mean.shape)
        pp = xr.Dataset(
            {"stock": (("chain", "draw", "obs_id"), y[None])},
            coords={"chain": [0], "draw": np.arange(draws), "obs_id": data.coords["obs_id"]},
        )
        return xr.DataTree.from_dict({"prior": p, "prior_predictive": pp})


# ---- prepare's steps ---------------------------------------------------------------------
def _stock_rows(table: pd.DataFrame, deep_imputed: str) -> tuple[pd.DataFrame, int]:
    """Rows of the fitted layers with a finite stock and age (deep-imputed ones left out)."""
    need = {"study_id", "site_id", "vegetation", "origin", "years", "element", "layer"}
    missing = need - set(table.columns) | ({"stock_mg_ha"} - set(table.columns))
    if missing:
        raise InputError(f"layers table lacks column(s): {', '.join(sorted(missing))}")
    df = coerce_numeric(table[table["layer"].isin(LAYERS)].copy(), ("stock_mg_ha", "years"))
    df = df[np.isfinite(df["stock_mg_ha"]) & np.isfinite(df["years"]) & (df["years"] >= 0)]
    return drop_deep_imputed(df, deep_imputed)


def _fitted_rows(
    df: pd.DataFrame, data: dict
) -> tuple[pd.DataFrame, list[str], list[str], list[str], list[str]]:
    """The rows of the elements, origins and layers fitted (a layer needs enough rows for
    every element); returns them with those elements, origins, layers and the layers dropped."""
    elements = elements_present(df, data["elements"])
    if not elements:
        raise InputError(f"no layer stocks for element(s) {data['elements']} in the data")
    origins = [o for o in data["origins"] if o in ORIGINS]
    df = df[df["element"].isin(elements) & df["origin"].isin(origins)]
    min_rows = int(data["min_rows_per_layer"])
    fit_layers, dropped = layers_with_enough_rows(df, elements, LAYERS, min_rows)
    if not fit_layers:
        raise InputError(f"no layer has {min_rows} or more stock rows for every element {elements}")
    df = df[df["layer"].isin(fit_layers)].reset_index(drop=True)
    return df, elements, origins, fit_layers, dropped


def _cells(df: pd.DataFrame) -> tuple[pd.Series, list[str], list[str], pd.DataFrame]:
    """Each row's chronosequence cell (element # unit # layer); the cells, the site cells
    (element # site # layer) and each cell's first row (element, layer, vegetation, origin)."""
    unit = df[list(UNIT_KEYS)].astype(str).agg("|".join, axis=1)
    ucell_key = df["element"] + "#" + unit + "#" + df["layer"]
    scell_key = df["element"] + "#" + df["site_id"].astype(str) + "#" + df["layer"]
    ucells = list(pd.unique(ucell_key))
    scells = list(pd.unique(scell_key))
    first = (
        pd.DataFrame(
            {
                "u": ucell_key,
                "s": scell_key,
                "e": df["element"],
                "l": df["layer"],
                "v": df["vegetation"],
                "planted": df["origin"] == "planted",
            }
        )
        .drop_duplicates("u")
        .set_index("u")
        .loc[ucells]
    )
    return ucell_key, ucells, scells, first


def _design(
    df: pd.DataFrame,
    std: CellStandardisation,
    elements: list[str],
    fit_layers: list[str],
    vegetation: list[str],
    n_stages: int,
    bd_mode: str,
) -> tuple[dict[str, np.ndarray], list[str], list[str], int]:
    """The arrays the model reads (row indices, per-cell statistics, rate groups), the cell
    and site-cell labels, and how many rows rest on an estimated BD."""
    ucell_key, ucells, scells, first = _cells(df)
    e_idx = index_of(first["e"], elements)
    l_idx = index_of(first["l"], fit_layers)
    v_idx = index_of(first["v"], vegetation)
    n_v, n_l = len(vegetation), len(fit_layers)

    t = df["years"].to_numpy(float) / 10.0
    basis = stage_basis(df["years"].to_numpy(float), n_stages)
    cell_idx = index_of(ucell_key, ucells)
    stats = cell_statistics(std.y, t, basis, cell_idx, len(ucells))
    var_level, var_row = _bd_variances(df, std.row_scale, cell_idx, len(ucells))
    if bd_mode == "as_data":
        var_level, var_row = np.zeros_like(var_level), np.zeros_like(var_row)
    estimated = var_row > 0

    unit_rate = (e_idx * n_v + v_idx) * n_l + l_idx
    planted = first["planted"].to_numpy(bool)
    groups, unit_group, group_var_row = _rate_groups(unit_rate, planted, var_row, stats["n"])
    arrays = {
        "stock": std.y,
        "years": df["years"].to_numpy(float),
        "basis": basis,
        "element_idx": index_of(df["element"], elements),
        "vegetation_idx": index_of(df["vegetation"], vegetation),
        "layer_idx": index_of(df["layer"], fit_layers),
        "unit_cell_idx": cell_idx,
        "unit_cell_element": e_idx,
        "unit_cell_layer": l_idx,
        "unit_cell_site": index_of(first["s"], scells),
        "unit_cell_rate": unit_rate,
        "unit_cell_planted": planted.astype(float),
        "unit_cell_group": unit_group,
        "group_rate": groups // 4,
        "group_planted": ((groups // 2) % 2).astype(float),
        "group_element_layer": (groups // 4 // (n_v * n_l)) * n_l + (groups // 4) % n_l,
        "group_var_bd_row": group_var_row,
        "unit_cell_var_bd_row": group_var_row[unit_group],
        "unit_cell_var_bd_level": var_level,
        **_group_statistics(stats, unit_group, len(groups)),
        "site_cell_element": index_of(pd.Series(scells).str.split("#").str[0], elements),
        "site_cell_layer": index_of(pd.Series(scells).str.split("#").str[-1], fit_layers),
        # per cell only what the Woodbury terms read; the r'r sums live per rate group
        **{f"stat_{k}": stats[k] for k in CELL_STATS},
    }
    return arrays, ucells, scells, int(estimated[cell_idx].sum())


def _rate_groups(
    unit_rate: np.ndarray, planted: np.ndarray, var_row: np.ndarray, n_cell: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rate groups: cells sharing one rate vector (element x vegetation x layer x origin) and
    one residual variance (cells with estimated BD apart); each cell's group; per group the
    extra row variance from estimated BD (the mean of its cells', weighted by rows)."""
    estimated = var_row > 0
    group_key = (unit_rate * 2 + planted) * 2 + estimated
    groups, unit_group = np.unique(group_key, return_inverse=True)
    group_var_row = np.bincount(unit_group, weights=var_row * n_cell) / np.bincount(
        unit_group, weights=n_cell
    )
    return groups, unit_group, group_var_row


def _rows_per_stage(df: pd.DataFrame, n_stages: int, stages: list[str]) -> pd.Series:
    """Rows per element x vegetation x stage x layer (zeros included), for the report."""
    return (
        df.assign(stage=pd.Categorical(_stage_labels(df["years"], n_stages), stages))
        .groupby(["element", "vegetation", "stage", "layer"], observed=False)
        .size()
    )


def _group_statistics(stats: dict, unit_group: np.ndarray, n_groups: int) -> dict:
    """Sufficient statistics summed per rate group (for the r'r term)."""
    out = {}
    for k in GROUP_STATS:
        acc = np.zeros((n_groups, *stats[k].shape[1:]))
        np.add.at(acc, unit_group, stats[k])
        out[f"group_stat_{k}"] = acc
    return out


def _bd_variances(
    df: pd.DataFrame, scale: np.ndarray, cell: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per chronosequence cell, the known variances (standardised) from estimated bulk density.

    A study's estimated BDs share one relative error, which moves the whole chronosequence's
    stocks together: a variance of the cell's level (its mean squared study-part sd). The
    per-row part is residual variance (the cell's mean). Zero for cells whose stocks rest on
    measured BD or reported stocks; zero without harmonize's sd columns (older tables).
    """
    if not set(STOCK_SD_COLUMNS) <= set(df.columns):
        return np.zeros(n_cells), np.zeros(n_cells)
    stock = df["stock_mg_ha"].abs().to_numpy(float)
    study, row = (
        pd.to_numeric(df[c], errors="coerce").fillna(0.0).to_numpy(float) * stock / scale
        for c in STOCK_SD_COLUMNS
    )
    n = np.bincount(cell, minlength=n_cells)
    level = (np.bincount(cell, weights=study, minlength=n_cells) / n) ** 2
    row_var = np.bincount(cell, weights=row**2, minlength=n_cells) / n
    return level, row_var


def _cell_draws(draws: dict[str, np.ndarray], data: ModelData) -> dict[str, np.ndarray]:
    """Parameter draws (chain, draw, ...) gathered per chronosequence cell and per site cell.

    ``theta`` (S, cells, stages) is each cell's rate vector (with the planted - natural
    contrast where the spec has one); variances absent from the spec (no slopes) are 0.
    """
    a = data.arrays
    s = {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
    ue, ul = a["unit_cell_element"], a["unit_cell_layer"]
    se, sl = a["site_cell_element"], a["site_cell_layer"]
    n_g = len(data.coords["stage"])
    beta = s["beta"]  # (S, element, vegetation, stage, layer)
    theta = beta.transpose(0, 1, 2, 4, 3).reshape(beta.shape[0], -1, n_g)[:, a["unit_cell_rate"]]
    if "origin_contrast" in s:
        d = s["origin_contrast"].transpose(0, 1, 3, 2)[:, ue, ul]
        theta = theta + (a["unit_cell_planted"] - 0.5)[None, :, None] * d
    zero = np.zeros_like(s["sigma"])
    out = {"theta": theta}
    for k in ("alpha", "sigma", "sd_unit", "sd_unit_slope"):
        out[k] = s.get(k, zero)[:, ue, ul]
    for k in ("sd_site", "sd_site_slope"):
        out[k] = s.get(k, zero)[:, se, sl]
    # variances with the known parts from estimated bulk densities (zero where measured)
    out["s2"] = out["sigma"] ** 2 + a["unit_cell_var_bd_row"]
    out["su2"] = out["sd_unit"] ** 2 + a["unit_cell_var_bd_level"]
    return out


def _draw_pair(m1, m2, c11, c12, c22, rng):
    """Draws from bivariate normals N((m1, m2), [[c11, c12], [c12, c22]]) (elementwise)."""
    l11 = np.sqrt(c11)
    l21 = np.where(l11 > 0, c12 / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.clip(c22 - l21**2, 0.0, None))
    z1, z2 = rng.standard_normal((2, *np.shape(c11)))
    return m1 + l11 * z1, m2 + l21 * z1 + l22 * z2


def _segment_sum(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``values`` (..., k) into ``n`` segments along the last axis."""
    out = np.zeros((*values.shape[:-1], n))
    for i in range(values.shape[0]):
        out[i] = np.bincount(index, weights=values[i], minlength=n)
    return out


def _stage_labels(years: pd.Series, n_stages: int) -> np.ndarray:
    """Stage of each age, the last fitted stage open-ended."""
    upper = np.asarray(STAGE_UPPER[: n_stages - 1])
    idx = np.searchsorted(upper, np.asarray(years, float), side="left")
    return np.asarray(STAGES, dtype=object)[idx]


def _woodbury(s2, su2, sw2, n, t1, t2):
    """Inverse of M = D^-1 + Z'Z / s2 (D = diag(su2, sw2), Z = [1, t]) and log det(I + D Z'Z/s2).

    Written through A = I + D Z'Z / s2 so that su2 or sw2 -> 0 stays finite (sw2 = 0: no
    chronosequence slopes).
    """
    a11 = 1.0 + su2 * n / s2
    a22 = 1.0 + sw2 * t2 / s2
    det = a11 * a22 - su2 * sw2 * t1 * t1 / (s2 * s2)
    m11 = a22 * su2 / det
    m12 = -su2 * sw2 * t1 / (s2 * det)
    m22 = a11 * sw2 / det
    return m11, m12, m22, det


def _unit_terms(theta, alpha, s2, su2, sw2, st, xp):
    """Per chronosequence cell: the log-likelihood terms without r'r, r'Sigma^-1 1, 1'Sigma^-1 1.

    Sigma = s2 I + Z D Z' is the covariance of the cell's residuals after the unit intercept and
    slope are integrated out; r = y - basis @ theta - alpha. Woodbury gives
    r'Sigma^-1 r = (r'r - (Z'r)' M^-1 (Z'r) / s2) / s2; the r'r / s2 part is summed per rate
    group instead (:func:`_group_rr`), where it needs no per-cell work. ``xp`` is numpy or
    pytensor.tensor.
    """
    n, t1, t2 = st["stat_n"], st["stat_t1"], st["stat_t2"]
    y1 = st["stat_y1"] - (st["stat_b1"] * theta).sum(axis=-1)
    ty = st["stat_ty"] - (st["stat_bt"] * theta).sum(axis=-1)
    r1 = y1 - alpha * n
    rt = ty - alpha * t1
    m11, m12, m22, det = _woodbury(s2, su2, sw2, n, t1, t2)

    def quad(u1, ut, v1, vt):
        return u1 * v1 * m11 + (u1 * vt + ut * v1) * m12 + ut * vt * m22

    q = {
        "r1": (r1 - quad(r1, rt, n, t1) / s2) / s2,
        "rt": (rt - quad(r1, rt, t1, t2) / s2) / s2,
        "11": (n - quad(n, t1, n, t1) / s2) / s2,
        "1t": (t1 - quad(n, t1, t1, t2) / s2) / s2,
        "tt": (t2 - quad(t1, t2, t1, t2) / s2) / s2,
    }
    part = -0.5 * (n * xp.log(s2) + xp.log(det) - quad(r1, rt, r1, rt) / (s2 * s2))
    return part, q


def _site_terms(q: dict, site, n_site: int, ss2, ssw2, segsum, xp):
    """Site intercept and slope integrated out: log-likelihood terms and their Gaussian posterior.

    Each cell's residual has covariance Sigma_j; a site adds v + u t to all its cells, with
    (v, u) ~ N(0, diag(ss2, ssw2)). Per site: Q = sum_j [1 t]' Sigma_j^-1 [1 t] (2 x 2),
    b = sum_j [1 t]' Sigma_j^-1 r_j; the integral gives 0.5 b'P^-1 b - 0.5 log det(D P) with
    P = D^-1 + Q, and (v, u) | rest ~ N(P^-1 b, P^-1). Returns (term, mean (2,), P^-1 entries).
    """
    sums = {k: segsum(q[k], site, n_site) for k in ("r1", "rt", "11", "1t", "tt")}
    m11, m12, m22, det = _woodbury(1.0, ss2, ssw2, sums["11"], sums["1t"], sums["tt"])
    b1, b2 = sums["r1"], sums["rt"]
    term = 0.5 * (b1 * b1 * m11 + 2.0 * b1 * b2 * m12 + b2 * b2 * m22) - 0.5 * xp.log(det)
    mean = (m11 * b1 + m12 * b2, m12 * b1 + m22 * b2)
    return term, mean, (m11, m12, m22)


def _pt_segment_sum(values, index, n: int):
    import pytensor.tensor as pt

    return pt.inc_subtensor(pt.zeros(n)[index], values)


def _group_rr(theta, alpha, s2, gs):
    """-0.5 sum r'r / s2 over the rows of each rate group (cells sharing theta, alpha, s2)."""
    y1 = gs["y1"] - (gs["b1"] * theta).sum(axis=-1)
    bbt = (gs["bb"] * theta[..., None, :]).sum(axis=-1)
    y2 = gs["y2"] - 2.0 * (gs["by"] * theta).sum(axis=-1) + (bbt * theta).sum(axis=-1)
    rr = y2 - 2.0 * alpha * y1 + alpha * alpha * gs["n"]
    return -0.5 * rr / s2


def marginal_loglik(theta, alpha, sigma, sd_unit, sd_w, sd_site, sd_site_w, a, group_par):
    """log p(y | rates, variances) with unit intercepts, unit slopes and site effects integrated.

    ``theta`` (per rate group), ``alpha``/``sigma``/``sd_unit``/``sd_w`` (per unit cell),
    ``sd_site``/``sd_site_w`` (per site cell) and ``group_par`` = (alpha, sigma) per rate group are
    pytensor
    tensors; ``a`` holds the prepared arrays.
    """
    import pytensor.tensor as pt

    # known variances from estimated bulk densities: per row (residual) and per cell (level)
    s2 = sigma**2 + a["unit_cell_var_bd_row"]
    su2 = sd_unit**2 + a["unit_cell_var_bd_level"]
    theta_u = theta[a["unit_cell_group"]]
    part, q = _unit_terms(theta_u, alpha, s2, su2, sd_w**2, a, pt)
    gs = {k[len("group_stat_") :]: v for k, v in a.items() if k.startswith("group_stat_")}
    rr = _group_rr(theta, group_par[0], group_par[1] ** 2 + a["group_var_bd_row"], gs)
    n_site = len(a["site_cell_element"])
    site_term, _, _ = _site_terms(
        q, a["unit_cell_site"], n_site, sd_site**2, sd_site_w**2, _pt_segment_sum, pt
    )
    const = -0.5 * np.log(2 * np.pi) * float(np.asarray(a["stat_n"]).sum())
    return const + part.sum() + rr.sum() + site_term.sum()


__all__ = ["HierRates", "cell_statistics", "marginal_loglik", "stage_basis"]
