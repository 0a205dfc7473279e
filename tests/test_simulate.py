"""Fast tests of the paper-calibrated simulator, its truth and the bundled demo dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayes_soil import io
from bayes_soil.cli import main
from bayes_soil.schema import (
    ELEMENTS,
    LAYERS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    STAGES,
    VEGETATION,
)
from bayes_soil.simulate import (
    VARIANTS,
    beta_array,
    demo_settings,
    hinge,
    simulate,
    simulate_from_settings,
    source_label,
    stage_basis,
)

PAPER_C_0_200 = [-0.67, -2.72, 0.10, 1.36, 2.18]  # paper section 3.1, all vegetation
PAPER_N_0_200 = [0.03, 0.12, 0.03, -0.27, 0.09]


@pytest.fixture(scope="module")
def sim():
    return simulate()


@pytest.fixture(scope="module")
def sim_line():
    return simulate(variant="no-turning-point")


def _interval_c_stock(obs: pd.DataFrame) -> pd.Series:
    """C stock of each interval where it can be computed without imputing BD."""
    soc = obs["soc_g_kg"].fillna(obs["som_g_kg"] * 0.58)
    thick = obs["depth_bottom_cm"] - obs["depth_top_cm"]
    return obs["soc_stock_mg_ha"].fillna(soc * obs["bd_g_cm3"] * thick / 10.0)


def _top_layer_unit_rates(obs: pd.DataFrame) -> pd.DataFrame:
    """Mean 0-20 cm C change rate (vs the year-0 control) per study x site unit, with its MAP."""
    o = obs.assign(c=_interval_c_stock(obs))
    o = o[o["depth_bottom_cm"] <= 20].dropna(subset=["c"])
    keys = ["study_id", "site_id", "plot_id", "vegetation", "origin", "years"]
    prof = o.groupby(keys, as_index=False).agg(c=("c", "sum"), thick=("depth_bottom_cm", "max"))
    prof = prof[prof["thick"] == 20]
    ctrl_keys = ["study_id", "site_id", "vegetation", "origin"]
    base = prof[prof["years"] == 0].groupby(ctrl_keys)["c"].mean().rename("base")
    ch = prof[prof["years"] > 0].join(base, on=ctrl_keys).dropna(subset=["base"])
    ch = ch.assign(rate=(ch["c"] - ch["base"]) / ch["years"])
    units = ch.groupby(["study_id", "site_id"], as_index=False)["rate"].mean()
    maps = obs[["site_id", "map_mm"]].drop_duplicates()
    return units.merge(maps, on="site_id")


def test_deterministic_by_seed():
    a = simulate(seed=7, scale=0.2)
    b = simulate(seed=7, scale=0.2)
    c = simulate(seed=8, scale=0.2)
    pd.testing.assert_frame_equal(a.observations, b.observations)
    assert a.truth == b.truth
    assert not a.observations.equals(c.observations)


def test_counts_and_schema(sim):
    obs = sim.observations
    # every contract column except control_scope (each simulated chronosequence has its own
    # same-site control, the default)
    assert set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS) - {"control_scope"} == set(obs.columns)
    assert obs["study_id"].nunique() == 183
    assert obs["site_id"].nunique() == 41
    assert 5000 <= len(obs) <= 7500
    assert obs["obs_id"].is_unique
    assert (obs["source"] == source_label(20261125, "base")).all()
    assert io.is_synthetic(obs)
    assert set(obs["vegetation"]) == set(VEGETATION)
    assert set(obs["origin"]) == {"planted", "natural"}
    assert obs["years"].min() == 0 and 50 <= obs["years"].max() <= 60
    assert (obs["depth_top_cm"] < obs["depth_bottom_cm"]).all()
    assert obs["depth_bottom_cm"].max() == 200
    # sites host several studies and some studies span several sites
    assert obs.groupby("site_id")["study_id"].nunique().max() >= 4
    assert obs.groupby("study_id")["site_id"].nunique().max() >= 2
    # several plots per age in some studies; a year-0 control in most chronosequences
    assert obs.groupby("study_id")["plot_id"].nunique().max() >= 3
    chrono = obs.groupby(["study_id", "site_id", "vegetation", "origin"])["years"]
    has_control = chrono.min() == 0
    assert 0.8 <= has_control.mean() < 1.0
    assert chrono.nunique().median() >= 4
    # about a quarter of studies sample only to 100 cm
    deep = obs.groupby("study_id")["depth_bottom_cm"].max()
    assert 0.1 <= (deep == 100).mean() <= 0.4 and (deep == 200).mean() > 0.5
    # an interval that straddles a standard layer boundary exists
    assert ((obs["depth_top_cm"] < 20) & (obs["depth_bottom_cm"] > 20)).any()
    assert sim.truth["counts"]["rows"] == len(obs)


def test_reporting_type_mix(sim):
    obs = sim.observations
    by = obs.groupby("study_id")
    has = by[["bd_g_cm3", "soc_g_kg", "som_g_kg", "soc_stock_mg_ha", "stn_g_kg"]].count() > 0
    conc_bd = has["soc_g_kg"] & has["bd_g_cm3"]
    conc_only = has["soc_g_kg"] & ~has["bd_g_cm3"]
    som = has["som_g_kg"]
    stocks = has["soc_stock_mg_ha"]
    # each study reports C one way, the majority as concentration + BD
    assert ((conc_bd | conc_only).astype(int) + som + stocks == 1).all()
    assert conc_bd.mean() > 0.4
    for kind in (conc_only, som, stocks):
        assert kind.sum() >= 5
    # SOM studies still report N as a concentration; stocks-only studies report N stocks
    assert has.loc[som, "stn_g_kg"].any()
    assert obs.loc[obs["soc_stock_mg_ha"].notna(), "stn_stock_mg_ha"].notna().any()
    # N missing for some studies (about 15%)
    n_missing = by[["stn_g_kg", "stn_stock_mg_ha"]].count().sum(axis=1) == 0
    assert 0.05 <= n_missing.mean() <= 0.3
    # every row has a C quantity
    assert obs[["soc_g_kg", "som_g_kg", "soc_stock_mg_ha"]].notna().any(axis=1).all()


def test_climate_gradient(sim):
    sites = sim.observations.drop_duplicates("site_id")
    assert sites["map_mm"].between(250, 750).all()
    assert sites["map_mm"].max() - sites["map_mm"].min() > 400
    assert sites["mat_c"].between(4, 14).all()
    assert sites["mat_c"].max() - sites["mat_c"].min() > 5
    assert np.corrcoef(sites["map_mm"], sites["mat_c"])[0, 1] > 0.6  # wetter is warmer
    assert sites["lon"].between(101, 114).all() and sites["lat"].between(34, 41).all()


def test_bulk_density_follows_ptf_and_depth(sim):
    obs = sim.observations.dropna(subset=["bd_g_cm3", "soc_g_kg"])
    ptf = -0.1229 * np.log(obs["soc_g_kg"] / 10) + 1.2901
    assert np.corrcoef(obs["bd_g_cm3"], ptf)[0, 1] > 0.6
    assert abs(float(np.median(obs["bd_g_cm3"] - ptf))) < 0.1
    top = obs.loc[obs["depth_bottom_cm"] <= 20, "bd_g_cm3"].mean()
    deep = obs.loc[obs["depth_top_cm"] >= 100, "bd_g_cm3"].mean()
    assert deep > top


def test_intervals_sum_to_true_layer_stocks(sim):
    """Intervals inside a standard layer add up to the latent layer stock (mass conserved)."""
    obs = sim.observations.assign(c=_interval_c_stock(sim.observations)).dropna(subset=["c"])
    layer_of = pd.cut(obs["depth_top_cm"], [0, 20, 100, 200], right=False, labels=LAYERS)
    bottom_ok = obs["depth_bottom_cm"] <= pd.Series(
        layer_of.map({"0-20": 20, "20-100": 100, "100-200": 200}).astype(float), index=obs.index
    )
    obs = obs.assign(layer=layer_of.astype(str))[bottom_ok]
    keys = ["study_id", "site_id", "plot_id", "vegetation", "origin", "years", "layer"]
    got = obs.groupby(keys, as_index=False)["c"].sum()
    truth = sim.true_layers[sim.true_layers["element"] == "C"]
    m = got.merge(truth, on=keys)
    # keep layers fully covered by intervals inside them (not straddled)
    thick = obs.assign(t=obs["depth_bottom_cm"] - obs["depth_top_cm"]).groupby(keys)["t"].sum()
    full = thick.reset_index().assign(
        need=lambda d: d["layer"].map({"0-20": 20, "20-100": 80, "100-200": 100})
    )
    full = full[full["t"] == full["need"]][keys]
    m = m.merge(full, on=keys)
    assert len(m) > 1000
    np.testing.assert_allclose(m["c"], m["stock_mg_ha"], rtol=0.01)


def test_truth_rates_shape_and_rules(sim):
    rates = pd.DataFrame(sim.truth["rates"])
    assert len(rates) == 2 * 4 * 5 * 4
    assert set(rates["vegetation"]) == {*VEGETATION, "all"}
    assert set(rates["layer"]) == {*LAYERS, "0-200"}
    assert list(dict.fromkeys(rates["stage"])) == list(STAGES)
    cube = rates.set_index(["element", "vegetation", "stage", "layer"])["rate"]
    for e in ELEMENTS:
        beta = beta_array(e)
        for vi, v in enumerate(VEGETATION):
            for gi, g in enumerate(STAGES):
                parts = [cube[(e, v, g, lay)] for lay in LAYERS]
                assert parts == pytest.approx(beta[vi, gi])
                assert cube[(e, v, g, "0-200")] == pytest.approx(sum(parts))
        for g in STAGES:
            for lay in (*LAYERS, "0-200"):
                mean = np.mean([cube[(e, v, g, lay)] for v in VEGETATION])
                assert cube[(e, "all", g, lay)] == pytest.approx(mean)
    paper = {"C": PAPER_C_0_200, "N": PAPER_N_0_200}
    for e in ELEMENTS:
        got = [cube[(e, "all", g, "0-200")] for g in STAGES]
        assert got == pytest.approx(paper[e], abs=1e-9)
    # forests lose C at 6-10 yr in every layer and gain after 11 yr
    for lay in LAYERS:
        assert cube[("C", "forest", "6-10", lay)] < 0 < cube[("C", "forest", "11-20", lay)]
    assert sim.truth["synthetic"] is True and sim.truth["seed"] == 20261125


def test_truth_turning_points_and_centering(sim):
    tp = pd.DataFrame(sim.truth["turning_points"])
    assert set(tp["driver"]) == {"map_mm", "mat_c"}
    m = tp[(tp["driver"] == "map_mm") & tp["layer"].isin(LAYERS)]
    assert len(m) == 6 and m["has_break"].all()
    assert (m["k1"] < 0).all() and (m["k2"] > 0).all()
    assert m["psi"].between(400, 600).all()
    top = m.set_index(["element", "layer"])
    assert top.loc[("C", "20-100"), "psi"] < top.loc[("C", "0-20"), "psi"]  # lower in 20-100
    assert not tp.loc[tp["driver"] == "mat_c", "has_break"].any()
    assert (tp.loc[tp["driver"] == "mat_c", ["k1", "k2"]] == 0).all().all()
    # c centres the climate term: mean zero over the study x site units of the dataset
    units = sim.observations.drop_duplicates(["study_id", "site_id"])["map_mm"].to_numpy()
    for row in m.itertuples():
        assert np.mean(hinge(units, row.psi, row.k1, row.k2) - row.c) == pytest.approx(0, abs=1e-9)


def test_no_turning_point_variant(sim_line):
    tp = pd.DataFrame(sim_line.truth["turning_points"])
    m = tp[tp["driver"] == "map_mm"]
    assert (m["k1"] == m["k2"]).all()
    assert not m["has_break"].any()
    assert (sim_line.observations["source"] == source_label(20261125, "no-turning-point")).all()
    assert sim_line.truth["variant"] == "no-turning-point"


def test_one_turning_point_variant_breaks_only_in_its_cell():
    sim1 = simulate(seed=5, variant="one-turning-point", scale=0.3)
    m = pd.DataFrame(sim1.truth["turning_points"]).query("driver == 'map_mm'")
    broken = m.loc[m["has_break"], ["element", "layer"]].apply(tuple, axis=1).tolist()
    assert broken == [("C", "100-200"), ("C", "0-200")]  # the layer, and the sum over layers
    assert m.set_index(["element", "layer"]).loc[("C", "0-200"), "approximate"]
    lines = m[~m["has_break"]]
    assert (lines["k1"] == lines["k2"]).all() and lines["psi"].isna().all()


def _bin_means(units: pd.DataFrame) -> tuple[float, float, float]:
    low = units.loc[units["map_mm"] < 360, "rate"].mean()
    mid = units.loc[units["map_mm"].between(460, 570), "rate"].mean()
    high = units.loc[units["map_mm"] > 650, "rate"].mean()
    return low, mid, high


def test_v_shape_visible_in_data(sim, sim_line):
    """Per-unit 0-20 cm C change rates dip in the middle of the MAP range, only in 'base'."""
    low, mid, high = _bin_means(_top_layer_unit_rates(sim.observations))
    assert mid < low - 0.15 and mid < high - 0.15
    low, mid, high = _bin_means(_top_layer_unit_rates(sim_line.observations))
    assert low < mid < high  # a straight line: no dip


def test_stage_basis_is_piecewise_linear():
    b = stage_basis(np.array([0.0, 3.0, 7.0, 25.0, 60.0]))
    np.testing.assert_allclose(b[2], [5, 2, 0, 0, 0])
    np.testing.assert_allclose(b[3], [5, 5, 10, 5, 0])
    np.testing.assert_allclose(b[4], [5, 5, 10, 10, 30])
    assert b[:, 0].tolist() == [0, 3, 5, 5, 5]


def test_scale_and_bad_arguments():
    half = simulate(scale=0.5)
    assert half.observations["study_id"].nunique() == 92
    assert half.observations["site_id"].nunique() == 20
    with pytest.raises(ValueError, match="variant"):
        simulate(variant="wiggly")
    with pytest.raises(ValueError, match="scale"):
        simulate(scale=0)


def test_demo_equals_generator_output():
    """The bundled demo is exactly simulate() with its stored settings (it never drifts)."""
    settings = demo_settings()
    sim = simulate_from_settings(settings)
    assert sim.settings == settings
    demo = pd.read_csv(io.DEMO_OBSERVATIONS, keep_default_na=False, na_values=[""])
    new = sim.observations
    assert list(demo.columns) == list(new.columns) and len(demo) == len(new)
    for col in new.columns:
        if new[col].dtype.kind == "f":
            np.testing.assert_allclose(demo[col], new[col], rtol=1e-6, atol=2e-3, err_msg=col)
        else:
            assert (demo[col].astype(str) == new[col].astype(str)).all(), col
    truth = json.loads(io.DEMO_TRUTH.read_text())
    assert truth["rates"] == sim.truth["rates"]
    assert truth["counts"] == sim.truth["counts"]
    assert truth["settings"] == settings
    assert io.is_synthetic(demo)
    assert "synthetic" in io.DEMO_OBSERVATIONS.name
    assert io.DEMO_OBSERVATIONS.stat().st_size < 1.5e6


def test_is_synthetic():
    df = pd.DataFrame({"source": ["synthetic: x", "Synthetic: y"]})
    assert io.is_synthetic(df)
    assert not io.is_synthetic(pd.DataFrame({"source": ["synthetic: x", "Deng 2014"]}))
    assert not io.is_synthetic(pd.DataFrame({"source": ["synthetic: x", None]}))
    assert not io.is_synthetic(pd.DataFrame({"study_id": ["a"]}))


def test_cli_simulate(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path)]) == 0
    obs = pd.read_csv(tmp_path / "observations.csv")
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(obs) == truth["counts"]["rows"]
    assert obs["study_id"].nunique() == 183 and obs["site_id"].nunique() == 41
    assert truth["synthetic"] is True and truth["variant"] == "base"
    assert "SYNTHETIC" in capsys.readouterr().out
    out2 = tmp_path / "line"
    argv = ["simulate", "--out", str(out2), "--seed", "3", "--variant", "no-turning-point"]
    assert main([*argv, "--studies", "30", "--sites", "8"]) == 0
    obs2 = pd.read_csv(out2 / "observations.csv")
    assert obs2["study_id"].nunique() == 30 and obs2["site_id"].nunique() == 8
    assert json.loads((out2 / "truth.json").read_text())["seed"] == 3
    assert main(["simulate", "--out", str(tmp_path / "bad"), "--scale", "0"]) == 2
    assert not (tmp_path / "bad" / "observations.csv").exists()


def test_simulated_tables_pass_validation(tmp_path):
    """Both variants and the demo are valid input for the rest of the pipeline."""
    from bayes_soil.validate import load_observations

    demo = load_observations(None)
    assert len(demo) == json.loads(io.DEMO_TRUTH.read_text())["counts"]["rows"]
    for variant in VARIANTS:
        sim = simulate(seed=11, variant=variant, scale=0.3)
        path = tmp_path / f"{variant}.csv"
        sim.observations.to_csv(path, index=False)
        df = load_observations(path)  # raises InputError listing every problem
        assert len(df) == len(sim.observations)
