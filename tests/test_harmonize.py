"""Harmonization: SOC from SOM, stocks, PTF, layers, coverage, deep fill, stages, changes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from obs_frames import make_obs

from bayes_soil.harmonize import harmonize
from bayes_soil.harmonize.bulk_density import impute_bd, ptf_bd
from bayes_soil.harmonize.depth import apply_coverage_rule, split_into_layers
from bayes_soil.harmonize.soc import harmonized_soc
from bayes_soil.harmonize.stocks import stock_mg_ha
from bayes_soil.schema import LAYER_COLUMNS, stage_of


def profile(top_bottom: list[tuple[float, float]], **kw) -> list[dict]:
    """Rows of one profile with a reported C stock equal to the interval thickness."""
    return [
        {"depth_top_cm": t, "depth_bottom_cm": b, "soc_stock_mg_ha": float(b - t), **kw}
        for t, b in top_bottom
    ]


def layer_stock(res, element="C", layer="0-20", **keys) -> pd.Series:
    lay = res.layers
    m = (lay["element"] == element) & (lay["layer"] == layer)
    for k, v in keys.items():
        m &= lay[k] == v
    return lay.loc[m, "stock_mg_ha"]


# --- SOC, stock formula, PTF --------------------------------------------------------------------


def test_soc_from_som_only_where_soc_missing():
    df = make_obs(
        [
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "som_g_kg": 20.0},
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "soc_g_kg": 7.0, "som_g_kg": 20.0},
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "stn_g_kg": 1.0},
        ]
    )
    soc, from_som = harmonized_soc(df)
    assert soc.iloc[0] == pytest.approx(11.6)  # 0.58 x 20
    assert soc.iloc[1] == 7.0  # measured SOC wins
    assert math.isnan(soc.iloc[2])
    assert from_som.tolist() == [True, False, False]


def test_stock_formula_and_som_through_pipeline():
    assert stock_mg_ha(10.0, 1.3, 20.0) == pytest.approx(26.0)
    df = make_obs(
        [
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "som_g_kg": 20.0, "bd_g_cm3": 1.25},
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "stn_g_kg": 1.0, "bd_g_cm3": 1.25},
        ]
    )
    df.loc[1, "plot_id"] = "p2"
    res = harmonize(df, score_bd=False)
    assert layer_stock(res, "C", plot_id="p1").item() == pytest.approx(11.6 * 1.25 * 20 / 10)
    assert layer_stock(res, "N", plot_id="p2").item() == pytest.approx(1.0 * 1.25 * 2)
    assert set(res.layers["bd_method"]) == {"measured"}


def test_ptf_branches_hand_computed():
    # SOC% = g/kg / 10; < 6%: -0.1229 ln(SOC%) + 1.2901; >= 6%: 1.3774 exp(-0.0413 SOC%)
    got = ptf_bd([20.0, 59.9, 60.0, 100.0, 10.0, 0.0, np.nan])
    assert got[0] == pytest.approx(1.204912, abs=1e-6)  # 2%: 1.2901 - 0.1229 * 0.693147
    assert got[1] == pytest.approx(1.2901 - 0.1229 * math.log(5.99), abs=1e-12)
    assert got[2] == pytest.approx(1.075083, abs=1e-6)  # 6%: 1.3774 * exp(-0.2478)
    assert got[3] == pytest.approx(0.911373, abs=1e-6)  # 10%: 1.3774 * exp(-0.413)
    assert got[4] == pytest.approx(1.2901, abs=1e-12)  # 1%: ln 1 = 0
    assert np.isnan(got[5]) and np.isnan(got[6])


def test_ptf_method_fills_missing_bd_and_labels_it():
    df = make_obs(
        [
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "soc_g_kg": 20.0},
            {"depth_top_cm": 20, "depth_bottom_cm": 100, "soc_g_kg": 10.0, "bd_g_cm3": 1.4},
        ]
    )
    res = harmonize(df, bd_method="ptf", score_bd=False)
    assert layer_stock(res, layer="0-20").item() == pytest.approx(20.0 * 1.204912 * 2, rel=1e-6)
    methods = res.layers.set_index("layer")["bd_method"]
    assert methods["0-20"] == "ptf" and methods["20-100"] == "measured"


def test_n_only_row_without_bd_ptf_falls_back_to_rf_and_reports_it():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):  # enough measured rows to train the forest
        soc = float(rng.uniform(2, 30))
        rows.append(
            {
                "plot_id": f"m{i}",
                "depth_top_cm": 0,
                "depth_bottom_cm": 20,
                "soc_g_kg": soc,
                "stn_g_kg": soc / 10,
                "bd_g_cm3": float(ptf_bd(soc)),
                "map_mm": float(rng.uniform(300, 700)),
            }
        )
    rows.append({"plot_id": "x", "depth_top_cm": 0, "depth_bottom_cm": 20, "stn_g_kg": 1.0})
    res = harmonize(make_obs(rows), bd_method="ptf", score_bd=False)
    row = res.layers[(res.layers["plot_id"] == "x")]
    assert row["bd_method"].item() == "rf"
    assert 0.5 < row["stock_mg_ha"].item() / 2.0 < 2.0  # 1 g/kg x BD ~1 x 20 cm / 10
    assert res.report["bulk_density"]["fallbacks"]["ptf_no_soc_used_rf"] == 1
    assert res.report["rows"]["rejected"] == 0


def test_no_bd_possible_is_rejected_with_reason():
    df = make_obs([{"depth_top_cm": 0, "depth_bottom_cm": 20, "stn_g_kg": 1.0}])
    res = harmonize(df, bd_method="ptf", score_bd=False)  # no SOC for the PTF, no RF training
    assert len(res.layers) == 0
    assert "bulk density" in res.rejected["reason"].item()


def test_impute_bd_keeps_measured_values():
    df = make_obs(
        [
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "soc_g_kg": 20.0, "bd_g_cm3": 1.1},
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "soc_g_kg": 60.0},
        ]
    )
    bd, src, rep = impute_bd(df, pd.Series([True, True]), method="ptf")
    assert bd.tolist() == pytest.approx([1.1, 1.075083], abs=1e-6)
    assert src.tolist() == ["measured", "ptf"]
    assert rep["n_rows_ptf"] == 1


# --- layers ---------------------------------------------------------------------------------------


def test_straddling_intervals_split_by_thickness():
    df = make_obs(
        [
            {"depth_top_cm": 0, "depth_bottom_cm": 10, "soc_stock_mg_ha": 5.0},
            {"depth_top_cm": 10, "depth_bottom_cm": 30, "soc_stock_mg_ha": 20.0},
            {"depth_top_cm": 30, "depth_bottom_cm": 100, "soc_stock_mg_ha": 70.0},
            {"depth_top_cm": 100, "depth_bottom_cm": 250, "soc_stock_mg_ha": 30.0},
        ]
    )
    res = harmonize(df, score_bd=False)
    stocks = res.layers.set_index("layer")["stock_mg_ha"]
    assert stocks["0-20"] == pytest.approx(15.0)  # 5 + 20 x 10/20
    assert stocks["20-100"] == pytest.approx(80.0)  # 10 + 70
    assert stocks["100-200"] == pytest.approx(20.0)  # 30 x 100/150, the rest below 200 ignored
    assert stocks["0-200"] == pytest.approx(115.0)
    assert (res.layers["coverage"] == 1.0).all()
    assert res.layers.set_index("layer").loc["0-20", "obs_ids"] == "r2;r3"
    assert res.layers.set_index("layer").loc["0-200", "obs_ids"] == "r2;r3;r4;r5"
    assert set(res.layers["bd_method"]) == {"reported_stock"}
    assert list(res.layers.columns[: len(LAYER_COLUMNS)]) == list(LAYER_COLUMNS)
    assert res.report["steps"]["intervals_partly_below_bottom"] == 1


interval_lists = st.lists(
    st.tuples(
        st.floats(0, 260, allow_nan=False),
        st.floats(0.5, 120, allow_nan=False),
        st.floats(0.01, 100, allow_nan=False),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None)
@given(interval_lists)
def test_mass_conservation_property(items):
    """Sum of layer stocks == sum of the interval stocks lying inside 0-200 (thickness share)."""
    top = np.array([t for t, _, _ in items])
    bottom = top + np.array([d for _, d, _ in items])
    stock = np.array([s for _, _, s in items])
    intervals = pd.DataFrame(
        {
            "obs_id": [f"o{i}" for i in range(len(items))],
            "profile_id": "p",
            "element": "C",
            "depth_top_cm": top,
            "depth_bottom_cm": bottom,
            "stock_mg_ha": stock,
            "bd_method": "measured",
        }
    )
    layers = split_into_layers(intervals)
    inside = np.clip(np.minimum(bottom, 200) - np.maximum(top, 0), 0, None) / (bottom - top)
    assert layers["stock_mg_ha"].sum() == pytest.approx(float((stock * inside).sum()), rel=1e-9)
    thick = np.clip(np.minimum(bottom, 200) - top, 0, None).sum()
    width = {"0-20": 20, "20-100": 80, "100-200": 100}
    covered = (layers["coverage"] * layers["layer"].map(width)).sum()
    assert covered == pytest.approx(thick, rel=1e-9)


def test_partial_coverage_rule():
    df = make_obs(
        profile([(0, 19), (19, 40), (40, 80)])  # 0-20 via 0-19 + 1 cm of 19-40; 20-100 to 80
        + profile([(0, 20), (20, 97)], plot_id="p2")  # 20-100 covered 77/80 = 0.9625
    )
    res = harmonize(df, score_bd=False)
    p1 = res.layers[res.layers["plot_id"] == "p1"].set_index("layer")
    assert list(p1.index) == ["0-20"]  # 20-100 covered 0.75: left out
    assert p1.loc["0-20", "stock_mg_ha"] == pytest.approx(20.0)  # 19 + 21 x 1/21
    p2 = res.layers[res.layers["plot_id"] == "p2"].set_index("layer")
    assert p2.loc["20-100", "coverage"] == pytest.approx(77 / 80)
    assert bool(p2.loc["20-100", "coverage_scaled"])
    assert p2.loc["20-100", "stock_mg_ha"] == pytest.approx(77.0 * 80 / 77)
    assert "0-200" not in p2.index and "0-200" not in p1.index
    # the 40-80 row only touched the dropped layer: rejected, with the reason
    rej = res.rejected.set_index("obs_id")
    assert list(rej.index) == ["r4"]
    assert "partial coverage" in rej.loc["r4", "reason"]
    assert "C layer 20-100" in rej.loc["r4", "reason"]
    assert res.report["steps"]["layer_rows_coverage_scaled"] == 1
    assert sum(res.report["steps"]["layer_rows_dropped"].values()) == 1


def test_coverage_rule_on_table():
    layers = pd.DataFrame(
        {
            "profile_id": ["a", "b", "c", "d"],
            "element": "C",
            "layer": "0-20",
            "stock_mg_ha": [10.0, 9.5, 9.0, 30.0],
            "coverage": [1.0, 0.95, 0.9, 1.5],
            "bd_method": "measured",
            "obs_ids": ["1", "2", "3", "4"],
        }
    )
    kept, dropped = apply_coverage_rule(layers)
    assert kept["profile_id"].tolist() == ["a", "b"]
    assert kept["stock_mg_ha"].tolist() == pytest.approx([10.0, 10.0])
    assert kept["coverage_scaled"].tolist() == [False, True]
    assert dropped["reason"].tolist()[0].startswith("partial coverage")
    assert dropped["reason"].tolist()[1].startswith("overlapping")


def test_profile_covering_no_layer_is_rejected():
    df = make_obs(profile([(0, 10)]) + profile([(0, 20)], plot_id="p2"))
    res = harmonize(df, score_bd=False)
    assert res.rejected["obs_id"].tolist() == ["r2"]
    assert res.rejected["reason"].item().startswith("profile covers no standard layer fully")
    assert res.rejected["line"].item() == 2


def test_total_only_when_all_three_layers_exist():
    df = make_obs(
        profile([(0, 20), (20, 100), (100, 200)])
        + profile([(0, 20), (20, 100), (100, 150)], plot_id="p2")
    )
    res = harmonize(df, score_bd=False)
    p1 = res.layers[res.layers["plot_id"] == "p1"].set_index("layer")["stock_mg_ha"]
    assert p1["0-200"] == pytest.approx(p1["0-20"] + p1["20-100"] + p1["100-200"])
    p2 = res.layers[res.layers["plot_id"] == "p2"]
    assert set(p2["layer"]) == {"0-20", "20-100"}  # 100-200 half covered, too few to impute


# --- shallow-to-deep ------------------------------------------------------------------------------


def deep_dataset(n_complete: int = 30, n_shallow: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(n_complete + n_shallow):
        s1 = float(rng.uniform(10, 30))
        s2 = float(s1 * rng.uniform(1.5, 2.5))
        s3 = float(0.8 * s2 * np.exp(rng.normal(0, 0.05)))
        keys = {"plot_id": f"p{i}", "study_id": f"S{i % 6}", "years": float(i % 7)}
        rows.append({**keys, "depth_top_cm": 0, "depth_bottom_cm": 20, "soc_stock_mg_ha": s1})
        rows.append({**keys, "depth_top_cm": 20, "depth_bottom_cm": 100, "soc_stock_mg_ha": s2})
        if i < n_complete:
            rows.append(
                {**keys, "depth_top_cm": 100, "depth_bottom_cm": 200, "soc_stock_mg_ha": s3}
            )
    return make_obs(rows)


def test_deep_imputation_flagged_and_excludable():
    df = deep_dataset()
    res = harmonize(df, score_bd=False)
    imp = res.layers[res.layers["deep_imputed"]]
    assert set(imp["layer"]) == {"100-200", "0-200"}
    assert imp["plot_id"].nunique() == 3 and len(imp) == 6
    wide = res.layers.pivot(index="plot_id", columns="layer", values="stock_mg_ha")
    shallow = [f"p{i}" for i in range(30, 33)]
    ratio = wide.loc[shallow, "100-200"] / wide.loc[shallow, "20-100"]
    assert ratio.between(0.7, 0.9).all()  # truth 0.8 x exp(noise sd 0.05)
    assert (imp[imp["layer"] == "100-200"]["coverage"] == 0).all()
    rep = res.report["shallow_to_deep"]["C"]
    assert rep["n_filled"] == 3 and rep["n_training_profiles"] == 30
    assert rep["cv"]["r2"] > 0.8
    assert rep["cv"]["n_splits"] == 10

    # a deepest layer sampled only to 150 cm is predicted too; its own row is rejected, saying so
    half = make_obs(
        [
            {"plot_id": "h", "depth_top_cm": t, "depth_bottom_cm": b, "soc_stock_mg_ha": s}
            for t, b, s in ((0, 20, 20.0), (20, 100, 40.0), (100, 150, 20.0))
        ]
    )
    half["obs_id"] = ["h1", "h2", "h3"]
    res2 = harmonize(pd.concat([df, half], ignore_index=True), score_bd=False)
    h = res2.layers[res2.layers["plot_id"] == "h"].set_index("layer")
    assert bool(h.loc["100-200", "deep_imputed"]) and h.loc["100-200", "coverage"] == 0.5
    assert h.loc["100-200", "obs_ids"] == "h1;h2"
    reason = res2.rejected.set_index("obs_id").loc["h3", "reason"]
    assert "predicted by the shallow-to-deep" in reason

    ex = harmonize(df, exclude_deep_imputed=True, score_bd=False)
    assert not ex.layers["deep_imputed"].any()
    assert len(ex.layers) == len(res.layers) - 6
    assert ex.rejected.empty  # the shallow rows still feed 0-20 and 20-100
    assert ex.report["settings"]["exclude_deep_imputed"] is True


# --- stages and changes ---------------------------------------------------------------------------


def test_stage_boundaries():
    got = stage_of([0, 5, 5.1, 10, 10.5, 20, 30, 31]).tolist()
    assert got == ["0-5", "0-5", "6-10", "6-10", "11-20", "11-20", "21-30", ">30"]


def test_changes_against_mean_of_controls_and_missing_controls_counted():
    rows = (
        profile([(0, 20)], years=0.0, plot_id="c1", soc_stock_mg_ha=10.0)
        + profile([(0, 20)], years=0.0, plot_id="c2", soc_stock_mg_ha=14.0)
        + profile([(0, 20)], years=5.0, plot_id="t1", soc_stock_mg_ha=22.0)
        + profile([(0, 20)], years=31.0, plot_id="t2", soc_stock_mg_ha=43.0)
        # natural origin: no year-0 control of its own
        + profile([(0, 20)], years=10.0, plot_id="t3", soc_stock_mg_ha=30.0, origin="natural")
    )
    res = harmonize(make_obs(rows), score_bd=False)
    ch = res.changes.set_index("years")
    assert len(ch) == 2
    assert ch.loc[5.0, "baseline_stock_mg_ha"] == pytest.approx(12.0)
    assert ch.loc[5.0, "delta_stock_mg_ha"] == pytest.approx(10.0)
    assert ch.loc[5.0, "rate_mg_ha_yr"] == pytest.approx(2.0)
    assert ch.loc[31.0, "rate_mg_ha_yr"] == pytest.approx(1.0)
    assert ch.loc[5.0, "stage"] == "0-5" and ch.loc[31.0, "stage"] == ">30"
    assert ch.loc[5.0, "n_controls"] == 2
    left = res.report["changes"]["left_out"]
    assert left["no year-0 control for study/site/vegetation/origin"]["profiles"] == 1
    assert res.layers.set_index("plot_id").loc["t1", "stage"] == "0-5"


# --- row accounting -------------------------------------------------------------------------------


def test_row_accounting_every_row_used_or_rejected():
    rows = [
        *profile([(0, 20), (20, 100)]),
        {"depth_top_cm": 0, "depth_bottom_cm": 20, "plot_id": "q"},  # no C or N quantity
        *profile([(200, 250)]),  # below 200 cm
        *profile([(0, 20), (20, 60)], plot_id="p3"),  # 20-60 only touches a partial layer
    ]
    df = make_obs(rows)
    res = harmonize(df, score_bd=False)
    used = set(";".join(res.layers["obs_ids"]).split(";"))
    assert len(df) == len(used) + len(res.rejected)
    assert used.isdisjoint(res.rejected["obs_id"])
    reasons = res.rejected.set_index("obs_id")["reason"]
    assert reasons["r4"].startswith("no C or N quantity")
    assert reasons["r5"].startswith("interval entirely below 200 cm")
    assert "partial coverage" in reasons["r7"]
    assert res.rejected.set_index("obs_id").loc["r4", "line"] == 4
    rep = res.report["rows"]
    assert rep["input"] == 6 and rep["used"] == 3 and rep["rejected"] == 3
    assert sum(rep["rejected_by_reason"].values()) == 3


def test_profile_id_stable_and_distinct():
    df = make_obs(profile([(0, 20)]) + profile([(0, 20)], plot_id="p2"))
    a = harmonize(df, score_bd=False).layers["profile_id"]
    b = harmonize(df.iloc[::-1], score_bd=False).layers["profile_id"]
    assert a.nunique() == 2
    assert set(a) == set(b)
    assert a.str.fullmatch(r"p[0-9a-f]{12}").all()


def test_rf_without_enough_measured_bd_falls_back_to_ptf():
    df = make_obs(
        [
            {"depth_top_cm": 0, "depth_bottom_cm": 20, "soc_g_kg": 20.0},
            {"depth_top_cm": 20, "depth_bottom_cm": 100, "soc_g_kg": 10.0, "bd_g_cm3": 1.4},
        ]
    )
    res = harmonize(df, bd_method="rf", score_bd=False)
    assert res.layers.set_index("layer").loc["0-20", "bd_method"] == "ptf"
    assert res.report["bulk_density"]["fallbacks"]["rf_untrainable_used_ptf"] == 1


def test_harmonized_input_is_cached_on_disk_with_the_same_identity(tmp_path, monkeypatch):
    """A second process reads the harmonized tables from the disk cache: same identity, no work."""
    from bayes_soil.harmonize import pipeline

    monkeypatch.setenv("BAYES_SOIL_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "obs.csv"
    from bayes_soil.io import DEMO_OBSERVATIONS

    src.write_bytes(DEMO_OBSERVATIONS.read_bytes())
    pipeline._CACHE.clear()
    first = pipeline.load_harmonized(src)
    calls = []
    monkeypatch.setattr(pipeline, "harmonize", lambda *a, **k: calls.append(1))
    pipeline._CACHE.clear()  # as in a new process
    second = pipeline.load_harmonized(src)
    assert calls == []
    assert second.data_sha256 == first.data_sha256
    assert len(list((tmp_path / "cache" / "harmonized").iterdir())) == 1
    monkeypatch.setenv("BAYES_SOIL_CACHE", "off")
    assert pipeline.disk_cache_dir() is None


def test_british_spellings_are_deprecated_aliases(monkeypatch, tmp_path):
    """load_harmonised / write_harmonised still work, warn, and call the American names."""
    from bayes_soil import harmonize as h
    from bayes_soil.harmonize import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "load_harmonized", lambda *a, **k: calls.append(("load", a)))
    monkeypatch.setattr(pipeline, "write_harmonized", lambda *a, **k: calls.append(("write", a)))
    with pytest.warns(DeprecationWarning, match="use load_harmonized"):
        h.load_harmonised("data.csv")
    with pytest.warns(DeprecationWarning, match="use write_harmonized"):
        h.write_harmonised("result", tmp_path)
    assert calls == [("load", ("data.csv",)), ("write", ("result", tmp_path))]


# ---- estimated bulk density: its predictive sd travels with the stocks -------------------------
def test_bd_predictive_sd_splits_study_and_row_parts_from_the_two_cvs():
    from bayes_soil.harmonize.bulk_density import ASSUMED_REL_SD, bd_predictive_sd

    cv = {"kfold": {"rf": {"rmse": 0.10}}, "group_kfold": {"rf": {"rmse": 0.20}}}
    sd = bd_predictive_sd(cv, "rf", pd.Series([1.0, 1.5]))  # mean measured BD 1.25
    assert sd["row"] == pytest.approx(0.10 / 1.25)
    assert sd["study"] == pytest.approx(math.sqrt(0.20**2 - 0.10**2) / 1.25)
    # grouped CV no worse than K-fold: no study part; no CV at all: the documented assumption
    cv["group_kfold"]["rf"]["rmse"] = 0.08
    assert bd_predictive_sd(cv, "rf", pd.Series([1.25]))["study"] == 0.0
    none = bd_predictive_sd(None, "ptf", pd.Series([], dtype=float))
    assert (none["study"], none["row"]) == (ASSUMED_REL_SD["study"], ASSUMED_REL_SD["row"])
    assert none["source"].startswith("assumed")


def test_stocks_on_estimated_bd_carry_its_sd_into_layers_and_changes():
    from bayes_soil.schema import RATE_SD_COLUMN, STOCK_SD_COLUMNS

    rows = []
    for plot, years, soc, bd in (("c", 0.0, 10.0, 1.3), ("t", 20.0, 14.0, None)):
        rows.append(
            {
                "plot_id": plot,
                "years": years,
                "depth_top_cm": 0,
                "depth_bottom_cm": 20,
                "soc_g_kg": soc,
                **({"bd_g_cm3": bd} if bd else {}),
            }
        )
    res = harmonize(make_obs(rows), bd_method="ptf", score_bd=False)
    rel = res.report["bulk_density"]["predictive_sd_relative"]
    assert rel["source"].startswith("assumed")  # one measured BD: nothing to cross-validate
    lay = res.layers.set_index("plot_id")
    study_col, row_col = STOCK_SD_COLUMNS
    assert lay.loc["c", study_col] == 0.0 and lay.loc["c", row_col] == 0.0  # measured BD
    stock_t = lay.loc["t", "stock_mg_ha"]
    assert lay.loc["t", study_col] == pytest.approx(rel["study"])
    assert lay.loc["t", row_col] == pytest.approx(rel["row"])
    # the change: the treated side's study and row parts (its control was measured), / years
    want = math.hypot(rel["study"] * stock_t, rel["row"] * stock_t) / 20.0
    assert res.changes[RATE_SD_COLUMN].item() == pytest.approx(want)


def test_rate_sd_cancels_the_study_part_shared_with_the_control():
    from bayes_soil.harmonize.changes import rate_sd_from_bd

    rows = pd.DataFrame(
        {
            "_sd_study": [2.0],
            "_row_var": [9.0],
            "_baseline_sd_study": [1.0],
            "_baseline_row_var": [4.0],
            "n_controls": [2],
            "years": [10.0],
        }
    )
    assert rate_sd_from_bd(rows)[0] == pytest.approx(math.sqrt((2 - 1) ** 2 + 9 + 4 / 2) / 10)


def test_relative_error_sd_recovers_study_and_row_parts():
    from bayes_soil.harmonize.bulk_density import bd_predictive_sd, relative_error_sd

    rng = np.random.default_rng(4)
    studies = np.repeat(np.arange(300), 8)
    y = rng.uniform(1.0, 1.6, studies.size)
    rel = rng.normal(0, 0.10, 300)[studies] + rng.normal(0, 0.15, studies.size)
    got = relative_error_sd(y, y * (1 + rel), studies)
    assert got["study"] == pytest.approx(0.10, abs=0.01)
    assert got["row"] == pytest.approx(0.15, abs=0.01)
    # the grouped CV's split is what bd_predictive_sd uses when it exists
    cv = {"kfold": {"rf": {"rmse": 0.1}}, "group_kfold": {"rf": {"relative_error_sd": got}}}
    sd = bd_predictive_sd(cv, "rf", pd.Series([1.3]))
    assert (sd["study"], sd["row"]) == (got["study"], got["row"])
    assert relative_error_sd(y[:16], y[:16], studies[:16]) is None  # 2 studies: too few
