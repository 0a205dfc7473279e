"""Frequentist algorithms against hand-computed values, bad input, the freq command and GROA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_soil.cli import main
from bayes_soil.frequentist import run_frequentist
from bayes_soil.frequentist.breakpoints import fit_breakpoint
from bayes_soil.frequentist.davies import davies_test, evaluation_points
from bayes_soil.frequentist.kruskal import kruskal_wallis
from bayes_soil.frequentist.rates import stage_rate_ratios, stage_rates
from bayes_soil.frequentist.segmented import SegmentedError, profile_minimum, segmented

FIX = Path(__file__).parent / "fixtures" / "freq"


# --- algorithms -------------------------------------------------------------------------------


def test_segmented_recovers_a_known_broken_line():
    x = np.repeat(np.arange(300.0, 701.0, 20.0), 3)
    rng = np.random.default_rng(0)
    y = 1 + 0.004 * np.minimum(x - 517.0, 0) - 0.006 * np.maximum(x - 517.0, 0)
    y = y + rng.normal(0, 0.02, x.size)
    fit = segmented(x, y)
    assert fit.psi == pytest.approx(517, abs=5)
    assert fit.k1 == pytest.approx(0.004, abs=3e-4)
    assert fit.k2 == pytest.approx(-0.006, abs=3e-4)
    assert 0 < fit.psi_se < 5
    assert fit.converged
    # Muggeo's fixed point is a minimum of the profile RSS: nothing lower on a fine grid
    grid = np.linspace(*fit.bounds, 2001)
    rss = [np.sum((y - np.poly1d(np.polyfit(x, y, 1))(x)) ** 2)]
    for p in grid:
        X = np.column_stack([np.ones_like(x), x, np.maximum(x - p, 0)])
        r = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
        rss.append(r @ r)
    assert fit.rss <= min(rss) + 1e-9


def test_profile_minimum_is_exact_between_data_values():
    x = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    y = np.maximum(x - 4.3, 0) * 2.0  # the kink lies between two data values
    psi, rss = profile_minimum(x, y, (0.45, 8.55))
    assert psi == pytest.approx(4.3, abs=1e-9)
    assert rss == pytest.approx(0, abs=1e-18)


def test_segmented_refuses_too_few_distinct_values():
    with pytest.raises(SegmentedError, match="distinct"):
        segmented(np.array([1.0, 1, 2, 2, 3, 3, 3]), np.arange(7.0))


def test_davies_evaluation_points_drop_collinear_ends():
    x = np.array([310.0, 310, 324, 337, 400, 500, 684, 700])
    pts = evaluation_points(x, 10)
    assert pts[0] > 310 and pts.size == 9  # 310 = min: the hinge equals x - 310 there


def test_davies_detects_a_strong_break_and_not_noise():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, 80)
    assert davies_test(x, np.maximum(x - 5, 0) + rng.normal(0, 0.3, 80)).p_value < 1e-6
    assert davies_test(x, rng.normal(0, 1, 80)).p_value > 0.05


def test_kruskal_equals_hand_computation():
    # ranks 1..6, R = (6, 15): H = 12/42 (36/3 + 225/3) - 21 = 3.857142..., p = 0.049535
    out = kruskal_wallis(np.arange(1.0, 7.0), np.array(["a"] * 3 + ["b"] * 3))
    assert out["H"] == pytest.approx(27 / 7)
    assert out["p"] == pytest.approx(0.0495346, rel=1e-5)
    assert (out["df"], out["n"]) == (1, 6)
    with pytest.raises(ValueError, match="tied"):
        kruskal_wallis(np.ones(4), np.array(["a", "a", "b", "b"]))
    with pytest.raises(ValueError, match="group"):
        kruskal_wallis(np.arange(4.0), np.array(["a"] * 4))


def _layers(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["element", "layer", "vegetation", "stage", "years", "stock_mg_ha"]
    )


def test_stage_rates_hand_computed_and_small_cells_explained():
    rows = [
        ("C", "0-20", "forest", "0-5", t, 10 + 0.5 * t + e)
        for t, e in [(0, 0.1), (0, -0.1), (2, 0.2), (4, -0.2), (5, 0.0)]
    ]
    rows += [("C", "0-20", "forest", "6-10", 7, 12.0), ("C", "0-20", "forest", "6-10", 8, 12.5)]
    rows += [("C", "0-20", "shrub", "0-5", 3, s) for s in (9.0, 10.0, 11.0)]
    rows += [("N", "0-20", "forest", "0-5", t, 1 + 0.05 * t) for t in (0, 2, 4, 5)]
    rates = stage_rates(_layers(rows)).set_index(["element", "layer", "vegetation", "stage"])
    cell = rates.loc[("C", "0-20", "forest", "0-5")]
    x = np.array([0, 0, 2, 4, 5.0])
    y = 10 + 0.5 * x + np.array([0.1, -0.1, 0.2, -0.2, 0])
    assert cell["k"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-12)
    assert cell["status"] == "ok" and cell["n"] == 5  # year-0 controls count in stage 0-5
    assert "only 2 observation" in rates.loc[("C", "0-20", "forest", "6-10"), "reason"]
    assert "same age" in rates.loc[("C", "0-20", "shrub", "0-5"), "reason"]
    assert rates.loc[("C", "0-20", "forest", ">30"), "reason"] == "no observations in this cell"
    assert not rates.loc[rates["status"] != "ok", "reason"].eq("").any()
    ratios = stage_rate_ratios(rates.reset_index())
    r = ratios.set_index(["layer", "vegetation", "stage"]).loc[("0-20", "forest", "0-5")]
    assert r["ratio"] == pytest.approx(cell["k"] / 0.05, rel=1e-9)


def test_driver_without_spread_is_reported_not_computed():
    row = fit_breakpoint(np.full(20, 450.0), np.arange(20.0))
    assert row["status"] == "no_spread" and "single value" in row["reason"]
    assert "psi" not in row
    row = fit_breakpoint(np.array([1.0, 2, 3]), np.array([1.0, 2, 3]))
    assert row["status"] == "too_few"


def test_rate_ratios_before_and_after_psi():
    layers = pd.read_csv(FIX / "sim_noturn_layers.csv.gz")
    changes = pd.read_csv(FIX / "sim_noturn_changes.csv.gz")
    res = run_frequentist(layers, changes)
    bp = res.breakpoints.set_index(["element", "layer", "driver"])
    rr = res.rate_ratios[res.rate_ratios["kind"] != "stage"]
    assert set(rr["kind"]) == {"before_psi", "after_psi"}
    row = rr[(rr["kind"] == "before_psi") & (rr["driver"] == "map_mm") & (rr["layer"] == "0-20")]
    expected = bp.loc[("C", "0-20", "map_mm"), "k1"] / bp.loc[("N", "0-20", "map_mm"), "k1"]
    assert row["ratio"].iloc[0] == pytest.approx(expected)
    # every status other than ok comes with a reason
    for table in res.tables().values():
        assert not table.loc[table["status"] != "ok", "reason"].fillna("").eq("").any()


# --- the command ------------------------------------------------------------------------------


def _harmonized_dir(tmp_path: Path, name: str = "sim_noturn", synthetic: bool = True) -> Path:
    d = tmp_path / "harmonized"
    d.mkdir(parents=True)
    pd.read_csv(FIX / f"{name}_layers.csv.gz").to_csv(d / "layers.csv", index=False)
    pd.read_csv(FIX / f"{name}_changes.csv.gz").to_csv(d / "changes.csv", index=False)
    (d / "harmonize_report.json").write_text(json.dumps({"synthetic": synthetic}))
    return d


def test_freq_command_writes_tables_equal_to_r(tmp_path, capsys):
    data = _harmonized_dir(tmp_path)
    out = tmp_path / "out"
    assert main(["freq", "--data", str(data), "--out", str(out), "--no-figures"]) == 0
    rates = pd.read_csv(out / "rates.csv")
    ref = pd.read_csv(FIX / "sim_noturn_R_rates.csv")
    m = rates.merge(ref, on=["element", "layer", "vegetation", "stage"], suffixes=("", "_R"))
    assert len(m) == len(ref)
    assert np.allclose(m["k"], m["k_R"], rtol=1e-6, atol=0)
    for name in ("rate_ratios", "kruskal", "breakpoints"):
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "Turning points" in printed
    # the fixture has no study_id: the cluster interval says why it is missing
    ok = rates[rates["status"] == "ok"]
    assert ok["ci95_cluster_low"].isna().all()
    assert (ok["cluster_note"] == "no study_id column: clusters unknown").all()
    bp = pd.read_csv(out / "breakpoints.csv", keep_default_na=False, na_values=[""])
    changes = pd.read_csv(FIX / "sim_noturn_changes.csv.gz")
    c = changes[(changes["element"] == "C") & (changes["layer"] == "0-20")]
    r = np.corrcoef(c["map_mm"], c["mat_c"])[0, 1]
    cell = bp.set_index(["element", "layer", "driver"])
    assert cell.loc[("C", "0-20", "mat_c"), "driver_correlation"] == pytest.approx(r)
    assert r > 0.7 and (cell["better_driver"] == "map_mm").all()
    # no-turning-point data: MAT's tests are not significant, so no note; MAP's breaks warn
    assert cell.loc[("C", "0-20", "mat_c"), "status"] == "no_break"
    assert pd.isna(cell.loc[("C", "0-20", "mat_c"), "note"])
    assert cell.loc[("C", "100-200", "map_mm"), "note"].startswith(
        f"drivers co-vary (r={r:.2f}): mat_c's turning point may be a shadow of this one"
    )


@pytest.mark.slow
def test_freq_command_figures_are_labelled(tmp_path):
    data = _harmonized_dir(tmp_path)
    out = tmp_path / "out"
    assert main(["freq", "--data", str(data), "--out", str(out)]) == 0
    svgs = sorted(out.glob("*.svg"))
    assert len(svgs) == 6 and len(list(out.glob("*.png"))) == 6
    for svg in svgs:
        text = svg.read_text()
        assert "SYNTHETIC" in text
        assert any(k in text for k in ("95% CI", "interquartile", "1.96 SE", "point ratio"))


def test_freq_bad_inputs_exit_2(tmp_path, capsys):
    data = _harmonized_dir(tmp_path)
    (data / "changes.csv").unlink()
    assert main(["freq", "--data", str(data), "--out", str(tmp_path / "o1")]) == 2
    assert "changes.csv" in capsys.readouterr().err
    data2 = _harmonized_dir(tmp_path / "b")
    layers = pd.read_csv(data2 / "layers.csv").drop(columns=["stock_mg_ha"])
    layers.to_csv(data2 / "layers.csv", index=False)
    assert main(["freq", "--data", str(data2), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "layers.csv" in err and "stock_mg_ha" in err
    data3 = _harmonized_dir(tmp_path / "c")
    changes = pd.read_csv(data3 / "changes.csv", dtype=str)
    changes.loc[4, "rate_mg_ha_yr"] = "abc"
    changes.to_csv(data3 / "changes.csv", index=False)
    assert main(["freq", "--data", str(data3), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "line 6" in err and "rate_mg_ha_yr" in err and "abc" in err
    assert not (tmp_path / "o3" / "rates.csv").exists()  # nothing half-written


@pytest.mark.slow
def test_freq_on_groa(shared_data, tmp_path):
    obs = tmp_path / "groa.csv"
    assert main(["import", "groa", str(shared_data / "groa"), "--out", str(obs)]) == 0
    out = tmp_path / "freq"
    assert main(["freq", "--data", str(obs), "--out", str(out), "--no-figures"]) == 0
    rates = pd.read_csv(out / "rates.csv")
    assert (rates.loc[rates["element"] == "N", "status"] == "absent").all()
    assert (rates.loc[rates["element"] == "C", "status"] == "ok").any()
    bp = pd.read_csv(out / "breakpoints.csv")
    assert set(bp.loc[bp["element"] == "N", "status"]) == {"absent"}
    ratios = pd.read_csv(out / "rate_ratios.csv")
    assert (ratios["status"] == "absent").all()


def test_kruskal_groups_test_is_named_and_says_when_it_repeats_the_stage_test():
    from bayes_soil.frequentist.kruskal import GROUPS, kruskal_table

    rows = [
        ("C", "0-20", "forest", s, float(i + 3 * j))
        for j, s in enumerate(("0-5", "6-10"))
        for i in range(3)
    ]
    layers = pd.DataFrame(rows, columns=["element", "layer", "vegetation", "stage", "stock_mg_ha"])
    changes = layers.rename(columns={"stock_mg_ha": "rate_mg_ha_yr"})
    kr = kruskal_table(layers, changes)
    cell = kr[(kr["element"] == "C") & (kr["layer"] == "0-20") & (kr["response"] == "stock")]
    cell = cell.set_index("factor")
    assert "not an interaction test" in cell.loc[GROUPS, "test"]
    assert "repeats the stage test" in cell.loc[GROUPS, "note"]
    # the numbers are the stage test's, as the note says
    assert cell.loc[GROUPS, "H"] == pytest.approx(cell.loc["stage", "H"])
    assert cell.loc["stage", "note"] == ""
