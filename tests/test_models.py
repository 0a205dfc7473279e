"""Model tier (build, no sampling) and fast checks of the registry, specs, data prep and CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_frames import changes_from_layers, make_changes, make_layers

from bayes_soil.cli import main
from bayes_soil.errors import InputError
from bayes_soil.models import REGISTRY, get_model
from bayes_soil.models.base import check_sampler, deep_merge
from bayes_soil.models.hier_rates import stage_basis


# ---- fast ----------------------------------------------------------------------------------
def test_registry_lists_both_models_with_specs(capsys):
    assert {"hier_rates", "climate_breakpoints"} <= set(REGISTRY)
    for cls in REGISTRY.values():
        assert cls.spec_path().is_file()
        assert cls.description()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "hier_rates:" in out and "climate_breakpoints.toml" in out


def test_unknown_model_and_sampler_are_input_errors():
    with pytest.raises(InputError, match="unknown model"):
        get_model("nope")
    with pytest.raises(InputError, match="unknown sampler"):
        check_sampler("stan")


def test_numpyro_missing_gives_install_hint():
    import importlib.util

    if importlib.util.find_spec("numpyro") and importlib.util.find_spec("jax"):
        pytest.skip("numpyro is installed here")
    with pytest.raises(InputError, match=r"pip install 'bayes_soil\[numpyro\]'"):
        check_sampler("numpyro")


def test_spec_merge_overrides_without_touching_defaults():
    m = get_model("hier_rates", {"data": {"elements": ["C"]}, "priors": {"tau": 0.3}})
    assert m.spec["data"]["elements"] == ["C"]
    assert m.spec["priors"]["tau"] == 0.3
    assert m.spec["priors"]["sigma"] == 1.0  # default kept
    assert get_model("hier_rates").spec["data"]["elements"] == ["C", "N"]
    assert deep_merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_stage_basis_in_decades_last_stage_open():
    b = stage_basis(np.array([0.0, 3.0, 12.0, 45.0]), 5)
    np.testing.assert_allclose(b[1], [0.3, 0, 0, 0, 0])
    np.testing.assert_allclose(b[2], [0.5, 0.5, 0.2, 0, 0])
    np.testing.assert_allclose(b[3], [0.5, 0.5, 1.0, 1.0, 1.5])
    # with three fitted stages the third is open-ended
    np.testing.assert_allclose(stage_basis(np.array([45.0]), 3)[0], [0.5, 0.5, 3.5])


def test_hier_prepare_standardises_and_drops_total_layer():
    layers = make_layers(seed=3, n_studies=9)
    d = get_model("hier_rates").prepare(layers)
    assert d.coords["fit_layer"] == ["0-20", "20-100", "100-200"]
    assert d.n_obs == (layers["layer"] != "0-200").sum()
    y, e, lay = d.arrays["stock"], d.arrays["element_idx"], d.arrays["layer_idx"]
    for ei in range(2):
        for li in range(3):
            sel = (e == ei) & (lay == li)
            assert abs(y[sel].mean()) < 1e-9 and y[sel].std() == pytest.approx(1.0)
    # scale brings rates back to Mg ha-1 yr-1: stock = loc + scale * y
    assert d.meta["scale"].shape == (2, 3)
    # each unit cell belongs to one element and layer, and one site cell (or none)
    assert len(d.coords["unit_cell"]) == d.arrays["unit_cell_element"].size
    assert d.arrays["unit_cell_site"].max() <= len(d.coords["site_cell"])


def test_hier_prepare_rejects_unusable_data():
    layers = make_layers(seed=3, n_studies=6)
    with pytest.raises(InputError, match="no layer stocks"):
        get_model("hier_rates", {"data": {"elements": ["N"]}}).prepare(
            layers[layers["element"] == "C"]
        )
    with pytest.raises(InputError, match="lacks column"):
        get_model("hier_rates").prepare(layers.drop(columns=["years"]))


def test_climate_prepare_bounds_psi_inside_observed_range():
    ch = make_changes(seed=1, n_studies=20)
    m = get_model("climate_breakpoints")
    d = m.prepare(ch)
    assert d.coords["driver"] == ["map_mm", "mat_c"]
    assert d.coords["layer"] == ["0-20", "20-100", "100-200", "0-200"]
    lo, hi = d.meta["psi_bounds"]["map_mm"]
    q = np.quantile(ch["map_mm"], m.spec["structure"]["psi_quantiles"])
    assert (lo, hi) == pytest.approx(tuple(q), rel=1e-9)
    with pytest.raises(InputError, match="lacks column"):
        get_model("climate_breakpoints").prepare(ch.drop(columns=["map_mm"]))


@pytest.mark.parametrize("model_name", ["hier_rates", "climate_breakpoints"])
def test_deep_imputed_rows_are_missing_by_default_and_data_on_request(model_name):
    """Imputed values are not data: both models leave out rows resting on the deep fill."""
    model = get_model(model_name)
    table = make_layers(seed=3, n_studies=12) if model.table == "layers" else None
    if table is None:
        table = make_changes(seed=1, n_studies=20)
    deep = table["layer"].isin(["100-200", "0-200"]).to_numpy()
    flagged = deep & (np.random.default_rng(0).random(len(table)) < 0.3)
    table = table.assign(deep_imputed=flagged)
    d = model.prepare(table)
    n_used = table["layer"].isin(d.coords.get("fit_layer", d.coords.get("layer"))).to_numpy()
    assert d.meta["n_deep_imputed_left_out"] == int(flagged[n_used].sum()) > 0
    assert d.n_obs == int((n_used & ~flagged).sum())
    kept = get_model(model_name, {"data": {"deep_imputed": "as_data"}}).prepare(table)
    assert kept.n_obs == int(n_used.sum()) and kept.meta["n_deep_imputed_left_out"] == 0
    with pytest.raises(InputError, match="deep_imputed must be one of"):
        get_model(model_name, {"data": {"deep_imputed": "fill"}}).prepare(table)
    with pytest.raises(InputError, match="bd_estimated must be one of uncertain, as_data"):
        get_model(model_name, {"data": {"bd_estimated": "ignore"}}).prepare(table)


def test_hier_with_response_rebuilds_the_prepared_sufficient_statistics():
    """SBC swaps the response: the same y must give exactly prepare's arrays, another y its own."""
    layers = make_layers(seed=3, n_studies=9)
    m = get_model("hier_rates")
    d = m.prepare(layers)
    same = m.with_response(d, d.arrays["stock"])
    for k, v in d.arrays.items():
        np.testing.assert_allclose(same.arrays[k], v, rtol=0, atol=1e-12, err_msg=k)
    y2 = d.arrays["stock"] * 2.0 + 1.0
    other = m.with_response(d, y2)
    np.testing.assert_allclose(other.arrays["stat_y1"].sum(), y2.sum())
    np.testing.assert_allclose(other.arrays["group_stat_y2"].sum(), (y2**2).sum())
    assert set(m.response_data) <= set(d.arrays)


@pytest.mark.model
def test_hier_swapped_response_data_equal_a_model_built_on_them():
    """One compiled model serves every SBC simulation: setting the response data gives the
    logp of a model built on that response."""
    import pymc as pm

    layers = make_layers(seed=3, n_studies=6, elements=("C",))
    m = get_model("hier_rates", {"data": {"elements": ["C"], "min_rows_per_layer": 3}})
    d = m.prepare(layers)
    y2 = np.random.default_rng(1).normal(size=d.arrays["stock"].shape)
    d2 = m.with_response(d, y2)
    model, fresh = m.build(d), m.build(d2)
    point = model.initial_point()
    with model:
        pm.set_data({k: d2.arrays[k] for k in m.response_data})
    got = model.compile_logp()(point)
    assert got == pytest.approx(fresh.compile_logp()(point), rel=1e-10)
    assert got != pytest.approx(m.build(d).compile_logp()(point), rel=1e-6)


# ---- model tier: build, finite logp and gradient at the initial point ----------------------
def _finite_logp(model) -> None:
    ip = model.initial_point()
    assert np.isfinite(model.compile_logp()(ip))
    assert np.isfinite(model.compile_dlogp()(ip)).all()


@pytest.fixture(scope="module")
def demo():
    from bayes_soil.harmonize import load_harmonized

    return load_harmonized(None)


@pytest.mark.model
@pytest.mark.parametrize("spec", [{}, {"structure": {"origin": "contrast", "unit_slopes": False}}])
def test_hier_rates_builds_on_demo(demo, spec):
    m = get_model("hier_rates", spec)
    d = m.prepare(demo.layers)
    assert d.coords["vegetation"] == ["forest", "shrub", "grassland"]
    assert len(d.coords["stage"]) == 5
    _finite_logp(m.build(d))


@pytest.mark.model
def test_hier_rates_builds_on_tiny_and_groa_like_data():
    tiny = make_layers(seed=4, n_studies=3, elements=("C",), max_age=12)
    m = get_model("hier_rates", {"data": {"elements": ["C"], "min_rows_per_layer": 3}})
    d = m.prepare(tiny)
    assert len(d.coords["stage"]) <= 3  # no stage beyond the oldest age
    _finite_logp(m.build(d))
    # GROA-like: one vegetation type, C only -> no pooling over vegetation (beta = mu_beta)
    groa = make_layers(seed=5, n_studies=8, vegetation=("forest",), elements=("C",))
    m = get_model("hier_rates")
    model = m.build(m.prepare(groa))
    assert "tau" not in model.named_vars
    _finite_logp(model)


@pytest.mark.model
@pytest.mark.parametrize("breaks", [True, False])
def test_climate_breakpoints_builds_on_demo(demo, breaks):
    m = get_model("climate_breakpoints", {"structure": {"breaks": breaks}})
    model = m.build(m.prepare(demo.changes))
    assert "marginal_loglik" in model.named_vars and "p_break" in model.named_vars
    (graph,) = model.replace_rvs_by_values([model["p_break"]])
    p_break = model.compile_fn(graph, inputs=model.value_vars, on_unused_input="ignore")
    pb = np.asarray(p_break(model.initial_point()))
    assert pb.shape == (2, 2, 4) and bool((pb > 0).any()) is breaks and (pb <= 1).all()
    _finite_logp(model)


@pytest.mark.model
def test_climate_breakpoints_builds_on_tiny_and_groa_like_data():
    ch = changes_from_layers(
        make_layers(seed=6, n_studies=6, vegetation=("forest",), elements=("C",))
    )
    m = get_model("climate_breakpoints", {"data": {"elements": ["C"], "drivers": ["map_mm"]}})
    _finite_logp(m.build(m.prepare(ch)))
    tiny = make_changes(seed=2, n_studies=5, elements=("N",))
    m = get_model("climate_breakpoints", {"data": {"elements": ["N"], "min_rows_per_layer": 5}})
    _finite_logp(m.build(m.prepare(tiny)))


@pytest.mark.model
def test_hier_rates_prior_predictive_is_on_the_standardised_scale():
    m = get_model("hier_rates", {"data": {"elements": ["C"]}})
    d = m.prepare(make_layers(seed=7, n_studies=6, elements=("C",)))
    pp = m.prior_predictive(d, draws=50, seed=1)
    y = pp["prior_predictive"]["stock"].values
    assert y.shape == (1, 50, d.n_obs)
    assert np.isfinite(y).all()
    assert 0.3 < np.median(np.abs(y)) < 20  # standardised data, weakly informative priors


@pytest.mark.model
@pytest.mark.parametrize("unit_slopes", [True, False])
@pytest.mark.parametrize("site_slopes", [True, False])
@pytest.mark.parametrize("bd_estimated", [False, True])
def test_hier_rates_marginal_likelihood_equals_dense_gaussian(
    unit_slopes, site_slopes, bd_estimated
):
    """The closed-form marginal (effects integrated out) equals the dense multivariate normal,
    with the known variances of stocks on estimated bulk density where there are some."""
    from scipy.stats import multivariate_normal

    from bayes_soil.schema import STOCK_SD_COLUMNS

    layers = make_layers(seed=11, n_studies=4, elements=("C",))
    if bd_estimated:  # two of the four studies estimated their BD
        est = layers["study_id"].isin(sorted(layers["study_id"].unique())[:2])
        for col, rel in zip(STOCK_SD_COLUMNS, (0.1, 0.15), strict=True):
            layers[col] = np.where(est, rel, 0.0)
    spec = {"data": {"elements": ["C"], "min_rows_per_layer": 3}}
    spec["structure"] = {"unit_slopes": unit_slopes, "site_slopes": site_slopes}
    m = get_model("hier_rates", spec)
    d = m.prepare(layers)
    model = m.build(d)
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point().items()}
    import pytensor

    names = [rv.name for rv in model.free_RVs] + ["beta"]
    graphs = model.replace_rvs_by_values([model.potentials[0], *[model[n] for n in names]])
    fn = pytensor.function(model.value_vars, graphs, on_unused_input="ignore")
    out = fn(*[point[v.name] for v in model.value_vars])
    pot = float(out[0])
    val = dict(zip(names, out[1:], strict=True))
    a = d.arrays
    n_g = len(d.coords["stage"])
    theta = val["beta"].transpose(0, 1, 3, 2).reshape(-1, n_g)[a["unit_cell_rate"]]
    cell = a["unit_cell_idx"]
    el = (a["unit_cell_element"][cell], a["unit_cell_layer"][cell])
    mean = val["alpha"][el] + (theta[cell] * a["basis"]).sum(1)
    t = a["years"] / 10.0
    same_unit = cell[:, None] == cell[None, :]
    site = a["unit_cell_site"][cell]
    same_site = site[:, None] == site[None, :]
    var_unit = val["sd_unit"][el] ** 2 + a["unit_cell_var_bd_level"][cell]
    sd_site = val["sd_site"][el]
    cov = np.diag(val["sigma"][el] ** 2 + a["unit_cell_var_bd_row"][cell])
    assert (a["unit_cell_var_bd_level"].max() > 0) == bd_estimated
    cov = cov + same_unit * np.sqrt(np.outer(var_unit, var_unit))
    cov = cov + same_site * np.outer(sd_site, sd_site)
    if unit_slopes:
        sw = val["sd_unit_slope"][el] * t
        cov = cov + same_unit * np.outer(sw, sw)
    if site_slopes:
        ssw = val["sd_site_slope"][el] * t
        cov = cov + same_site * np.outer(ssw, ssw)
    dense = multivariate_normal(mean, cov).logpdf(a["stock"])
    assert pot == pytest.approx(dense, rel=1e-9, abs=1e-8)


def test_frames_are_layers_and_changes_shaped():
    from bayes_soil.schema import CHANGE_COLUMNS

    layers = make_layers(seed=0, n_studies=3)
    ch = changes_from_layers(layers)
    assert list(ch.columns) == list(CHANGE_COLUMNS)
    assert isinstance(ch, pd.DataFrame) and (ch["years"] > 0).all()


# ---- climate_breakpoints: the marginal likelihood against brute force -----------------------
def _tiny_changes(n_sites: int = 4, per_site: int = 3, seed: int = 0, both: bool = False):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_sites):
        for k in range(per_site):
            rows.append(
                {
                    "study_id": f"s{(u + k) % 2}",
                    "element": "C",
                    "layer": "0-20",
                    "years": float(rng.integers(3, 40)),
                    "rate_mg_ha_yr": float(rng.normal(0.2 * abs(u - 1.5), 0.3)),
                    "map_mm": 350.0 + 90.0 * u,
                    "mat_c": 6.0 + 1.3 * u + (0.8 if u == 2 else 0.0),
                    "vegetation": ["forest", "shrub"][k % 2],
                    "stage": "6-10",
                    # study s1 estimated its bulk density: its rates carry a known sd
                    "rate_sd_bd_mg_ha_yr": 0.15 * ((u + k) % 2),
                }
            )
    return pd.DataFrame(rows)


def _tiny_model(both: bool = False, break_prior: str = "shared"):
    drivers = ["map_mm", "mat_c"] if both else ["map_mm"]
    spec = {
        "data": {
            "elements": ["C"],
            "drivers": drivers,
            "layers": ["0-20"],
            "min_rows_per_layer": 3,
        },
        # centred: the brute-force checks read the study effects off the point
        "structure": {
            "grid_size": [3, 2],
            "study_effects": "centred",
            "break_prior": break_prior,
        },
    }
    m = get_model("climate_breakpoints", spec)
    d = m.prepare(_tiny_changes(both=both))
    return m, d, m.build(d)


def _tiny_point(model, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    ip = model.initial_point()
    return {k: v + 0.4 * rng.standard_normal(v.shape) for k, v in ip.items()}


def _tiny_pieces(m, d, point):
    """Residuals r = y - alpha - study (zero-sum), row variances, site effect and prior sds."""
    a = d.arrays
    ex = {k[: -len("_log__")]: np.exp(v) for k, v in point.items() if k.endswith("_log__")}
    c = point["c"].reshape(-1)
    u = point["study_eff_raw"] - point["study_eff_raw"].mean()  # one cell
    n_gr, n_l = len(d.coords["group"]), len(d.coords["layer"])
    egl = (a["element_idx"] * n_gr + a["group_idx"]) * n_l + a["layer_idx"]
    r = a["rate"] - c[egl] - u[a["study_cell_idx"]]
    s2 = ex["sigma"].item() ** 2 + (ex["sigma_meas"].item() * a["inv_decades"]) ** 2
    # the known variance from estimated BD, on the standardised scale (one cell: one scale)
    df = _tiny_changes(both=len(d.coords["driver"]) == 2)
    s2 = s2 + (df["rate_sd_bd_mg_ha_yr"].to_numpy() / df["rate_mg_ha_yr"].std(ddof=0)) ** 2
    pri = m.spec["priors"]
    sd_site = abs(point["sd_site_signed"]).item()  # sampled signed: sd_site = |z|
    return r, s2, sd_site, pri["slope_sd"], pri["change_sd"]


def _break_p(m, point, j: int) -> float:
    """Prior probability of a turning point for hinged driver j: the point's sampled
    ``break_share`` (stored on the log-odds scale), or the fixed ``priors.p_break``."""
    if "break_share_logodds__" in point:
        return float(1 / (1 + np.exp(-point["break_share_logodds__"][j])))
    return float(m.spec["priors"]["p_break"])


def _control_cov(d, point) -> np.ndarray:
    """Dense covariance of the shared year-0 controls: rows of one chronosequence (study x
    vegetation here) at one site share g ~ N(0, sigma_meas^2 / n_controls), times 10 / years."""
    df = _tiny_changes(both=len(d.coords["driver"]) == 2)
    z = d.arrays["inv_decades"]
    key = df["study_id"] + df["vegetation"] + d.arrays["site_idx"].astype(str)
    same = (key.to_numpy()[:, None] == key.to_numpy()[None, :]).astype(float)
    return np.exp(point["sigma_meas_log__"]).item() ** 2 * same * np.outer(z, z)


def _potential(model, point) -> float:
    f = model.compile_fn(model.potentiallogp, inputs=model.value_vars, on_unused_input="ignore")
    return float(f(point))


@pytest.mark.model
@pytest.mark.parametrize(
    "both, break_prior", [(False, "shared"), (True, "shared"), (True, "fixed")]
)
def test_climate_marginal_equals_brute_force_sum_over_grid(both, break_prior):
    """Model logp (the Potential) = log sum_g prior_g N(r; 0, Sigma_g), Sigma_g dense; prior_g
    from the sampled share of breaks per driver, or the fixed p_break."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    m, d, model = _tiny_model(both, break_prior)
    assert ("break_share" in model.named_vars) == (break_prior == "shared")
    point = _tiny_point(model)
    r, s2, tau, sk, sb = _tiny_pieces(m, d, point)
    a = d.arrays
    site = a["site_idx"]
    Z = (site[:, None] == np.arange(site.max() + 1)[None, :]).astype(float)
    x = a["x"]
    base = np.diag(s2) + _control_cov(d, point) + tau**2 * Z @ Z.T + sk**2 * x @ x.T
    comps = []
    hs = [d.meta["hinge_bases"][j][0] for j in range(x.shape[1])]  # (U, G+1) for the one cell
    sizes = [h.shape[1] for h in hs]
    for g in np.ndindex(*sizes):
        cov, lp = base.copy(), 0.0
        for j, gj in enumerate(g):
            h = hs[j][site, gj]
            cov += sb**2 * np.outer(h, h)
            p = _break_p(m, point, j)
            lp += np.log1p(-p) if gj == 0 else np.log(p / (sizes[j] - 1))
        comps.append(lp + multivariate_normal(np.zeros(len(r)), cov).logpdf(r))
    brute = logsumexp(comps)
    assert _potential(model, point) == pytest.approx(brute, rel=0, abs=1e-8)


@pytest.mark.model
def test_climate_noncentred_study_effects_give_the_same_likelihood():
    """structure.study_effects = "noncentred" only reparameterises: at u = z * sd_study the
    likelihood (the Potential) is the centred model's."""
    m, d, centred = _tiny_model()
    spec = {**m.spec, "structure": {**m.spec["structure"], "study_effects": "noncentred"}}
    nc_model = get_model("climate_breakpoints", spec)
    noncentred = nc_model.build(d)
    point = _tiny_point(centred)
    sd = np.exp(point["sd_study_log__"]).reshape(-1)[d.arrays["study_cell_cell"]]
    nc_point = {k: v for k, v in point.items() if k != "study_eff_raw"}
    nc_point["study_eff_z"] = point["study_eff_raw"] / sd
    assert _potential(noncentred, nc_point) == pytest.approx(_potential(centred, point), rel=1e-10)
    with pytest.raises(InputError, match="study_effects must be"):
        get_model("climate_breakpoints", {"structure": {"study_effects": "other"}}).build(d)


@pytest.mark.model
def test_climate_marginal_equals_numerical_integral():
    """Model logp = sum over the grid of a numerical integral over the site effects (one per
    site), the linear slope and the change of slope b, on tiny data: a Gauss-Legendre product
    rule (120 nodes a dimension, +- 12 sd around the mode found by finite differences)."""
    from numpy.polynomial.legendre import leggauss
    from scipy.special import logsumexp

    m, d, model = _tiny_model()
    point = _tiny_point(model)
    r, s2, tau, sk, sb = _tiny_pieces(m, d, point)
    a = d.arrays
    site, xs = a["site_idx"], a["x_sites"][:, 0]
    H = d.meta["hinge_bases"][0][0]  # (U, G+1)
    p = _break_p(m, point, 0)
    nodes, weights = leggauss(120)

    # rows of a site given its effect: dense (the shared controls; checked against brute force
    # above), so only the site effects, slope and change of slope are integrated numerically
    row_cov = np.diag(s2) + _control_cov(d, point)

    def log_sites(mean_u):  # mean_u (..., U); each site effect v integrated numerically
        out = 0.0
        for u in range(len(xs)):
            ri, cu = r[site == u], row_cov[np.ix_(site == u, site == u)]
            ci = np.linalg.inv(cu)
            w1, wr = ci.sum(), (ci @ ri).sum()
            mu = mean_u[..., u][..., None]
            prec = 1 / tau**2 + w1
            half = 12 / np.sqrt(prec)
            v = (wr - mu * w1) / prec + half * nodes
            lf = -0.5 * (np.log(2 * np.pi * tau**2) + v**2 / tau**2)
            e = ri[None, :] - (mu + v)[..., None]  # (..., nodes, rows)
            quad = np.einsum("...i,ij,...j->...", e, ci, e)
            lf = lf - 0.5 * (len(ri) * np.log(2 * np.pi) + np.linalg.slogdet(cu)[1] + quad)
            out = out + logsumexp(lf + np.log(weights * half), axis=-1)
        return out

    def log_joint(k, b, g):
        k, b = np.asarray(k, float), np.asarray(b, float)
        lp = -0.5 * (np.log(2 * np.pi * sk**2) + k**2 / sk**2)
        if g:
            lp = lp - 0.5 * (np.log(2 * np.pi * sb**2) + b**2 / sb**2)
        return lp + log_sites(k[..., None] * xs + b[..., None] * H[:, g])

    comps = []
    for g in range(H.shape[1]):
        # log_joint is quadratic in (k, b): central differences give its exact mode and curvature
        dims = 1 if g == 0 else 2
        e = np.eye(2)[:dims]

        def f(z, g=g):
            z = np.r_[z, 0.0][:2]
            return float(log_joint(z[0], z[1], g))

        z0 = np.zeros(dims)
        grad = np.array([(f(z0 + ei) - f(z0 - ei)) / 2 for ei in e])
        hess = np.array(
            [
                [
                    (f(z0 + ei + ej) - f(z0 + ei - ej) - f(z0 - ei + ej) + f(z0 - ei - ej)) / 4
                    for ej in e
                ]
                for ei in e
            ]
        )
        cov = np.linalg.inv(-hess)
        mode = cov @ grad
        half = 12 * np.sqrt(np.diag(cov))
        if g == 0:
            k = mode[0] + half[0] * nodes
            val = logsumexp(log_joint(k, np.zeros_like(k), 0) + np.log(weights * half[0]))
            lp = np.log1p(-p)
        else:
            k = np.repeat((mode[0] + half[0] * nodes)[:, None], len(nodes), axis=1)
            b = np.repeat((mode[1] + half[1] * nodes)[None, :], len(nodes), axis=0)
            w2 = np.log(np.outer(weights * half[0], weights * half[1]))
            val = logsumexp(log_joint(k, b, g) + w2)
            lp = np.log(p / (H.shape[1] - 1))
        comps.append(lp + val)
    assert _potential(model, point) == pytest.approx(logsumexp(comps), rel=0, abs=1e-8)


def _untransformed(name: str, v: np.ndarray) -> np.ndarray:
    if name.endswith("_log__"):
        return np.exp(v)
    if name.endswith("_logodds__"):
        return 1 / (1 + np.exp(-v))
    return v


@pytest.mark.model
def test_climate_numpy_marginal_matches_model_and_p_break():
    """The numpy path (post-processing, pointwise groups) is the PyTensor formula."""
    import xarray as xr

    m, d, model = _tiny_model(both=True)
    point = _tiny_point(model)
    post = xr.Dataset(
        {
            k.split("_log")[0]: (
                ("chain", "draw", *(f"{k}_{i}" for i in range(np.ndim(v)))),
                _untransformed(k, v)[None, None],
            )
            for k, v in point.items()
        }
    )
    post["sd_site"] = abs(post["sd_site_signed"])  # the Deterministic the fit stores
    mm = m.marginal_numpy(m._stats(post, d), d)
    total = mm["rows"] + mm["site"] + mm["slope"] + mm["lse"].sum(-1)
    assert _potential(model, point) == pytest.approx(float(total[0]), abs=1e-8)
    (pb_graph,) = model.replace_rvs_by_values([model["p_break"]])
    pb = model.compile_fn(pb_graph, inputs=model.value_vars, on_unused_input="ignore")
    w = np.exp(mm["grid"][0, 0] - mm["lse"][0, 0])
    got = np.asarray(pb(point))[0, :, 0]
    np.testing.assert_allclose(got, [1 - w[0].sum(), 1 - w[:, 0].sum()], atol=1e-12)


# ---- named variants: the project's models/ folder ----------------------------------------------
REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
VARIANT = "hier_rates_origin_contrast"


def test_shipped_variant_resolves_for_fit_and_is_listed(tmp_path, monkeypatch, capsys):
    """`fit --model <variant>`: packaged names first, then ./models/NAME.toml; the variant's
    entries override the base spec, --spec and flags override the variant; `models` lists it."""
    from bayes_soil.cli import build_parser
    from bayes_soil.commands.fit import _spec_overrides
    from bayes_soil.models.variants import resolve_model

    shutil.copytree(REPO_MODELS, tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    base, variant = resolve_model(VARIANT)
    assert base == "hier_rates" and variant.path == Path("models") / f"{VARIANT}.toml"
    assert resolve_model("hier_rates") == ("hier_rates", None)  # packaged name first
    args = build_parser().parse_args(["fit", "--model", VARIANT, "--element", "C"])
    spec = _spec_overrides(args)
    assert spec["structure"] == {"origin": "contrast"} and spec["data"] == {"elements": ["C"]}
    model = get_model(base, spec)
    assert model.spec["structure"]["origin"] == "contrast"
    assert model.spec["structure"]["unit_slopes"] is True  # the rest stays the base's
    assert model.spec["description"] == variant.description
    with pytest.raises(InputError, match="climate_breakpoints only"):
        _spec_overrides(build_parser().parse_args(["fit", "--model", VARIANT, "--no-break"]))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"{VARIANT}: variant of hier_rates" in out
    assert main(["models", "--spec", VARIANT]) == 0
    assert 'origin = "contrast"' in capsys.readouterr().out


def test_bad_or_unknown_variant_is_an_input_error(tmp_path, monkeypatch):
    from bayes_soil.models.variants import resolve_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no variants in models/"):
        resolve_model("nope")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "typo.toml").write_text('model = "hier_rates"\n[structure]\norgin = 1\n')
    (tmp_path / "models" / "nobase.toml").write_text('[structure]\norigin = "contrast"\n')
    with pytest.raises(InputError, match=r"typo\.toml: unknown spec key .structure\.orgin."):
        resolve_model("typo")
    with pytest.raises(InputError, match=r"nobase\.toml: a model variant names its base model"):
        resolve_model("nobase")
    with pytest.raises(InputError, match="variants in models/: nobase, typo"):
        resolve_model("nope")
    assert main(["fit", "--model", "nope"]) == 2


@pytest.mark.model
def test_shipped_variant_builds_with_the_origin_contrast(monkeypatch):
    """The variant's spec reaches the model: its PyMC model has the planted - natural contrast."""
    from bayes_soil.models.variants import resolve_model

    base, variant = resolve_model(VARIANT, REPO_MODELS)
    m = get_model(base, {**variant.spec, "data": {"elements": ["C"], "min_rows_per_layer": 3}})
    model = m.build(m.prepare(make_layers(seed=4, n_studies=6, elements=("C",))))
    assert "origin_contrast" in model.named_vars
    _finite_logp(model)
