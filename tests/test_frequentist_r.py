"""The frequentist tables equal R's (lm, kruskal.test, segmented 1.6, davies.test).

The R script and the rows it ran on are in tests/fixtures/freq/ (see make_inputs.py and
freq_reference.R there); these tests need no R. ``test_r_script_reproduces_fixtures`` reruns R
when ``Rscript`` is installed (slow).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_soil.frequentist.breakpoints import breakpoint_table
from bayes_soil.frequentist.davies import davies_test
from bayes_soil.frequentist.kruskal import R_FACTOR_NAMES, kruskal_table
from bayes_soil.frequentist.rates import stage_rates
from bayes_soil.frequentist.segmented import SegmentedError, segmented

FIX = Path(__file__).parent / "fixtures" / "freq"
DATASETS = ("demo", "sim_seed7", "sim_noturn")
RTOL = 1e-6
KEYS = ["element", "layer", "vegetation", "stage"]


def _inputs(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        pd.read_csv(FIX / f"{name}_layers.csv.gz"),
        pd.read_csv(FIX / f"{name}_changes.csv.gz"),
    )


def _rel(a: pd.Series, b: pd.Series) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


@pytest.fixture(scope="module", params=DATASETS)
def dataset(request):
    layers, changes = _inputs(request.param)
    return request.param, layers, changes


def test_rates_equal_lm(dataset):
    name, layers, _ = dataset
    ours = stage_rates(layers)
    ref = pd.read_csv(FIX / f"{name}_R_rates.csv")
    fitted = ours[ours["status"] == "ok"]
    merged = fitted.merge(ref, on=KEYS, suffixes=("", "_R"), how="outer", indicator=True)
    # the same cells are fitted (n >= 3, two ages), no more, no fewer
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][KEYS]
    for col in ("k", "se", "ci_low", "ci_high", "p"):
        assert _rel(merged[col], merged[f"{col}_R"]).max() <= RTOL, col
    assert (merged["n"] == merged["n_R"]).all()
    # every cell R skipped is listed with a reason
    skipped = ours[ours["status"] != "ok"]
    assert skipped["reason"].str.len().gt(0).all()


def test_kruskal_equals_kruskal_test(dataset):
    name, layers, changes = dataset
    ours = kruskal_table(layers, changes)
    ref = pd.read_csv(FIX / f"{name}_R_kruskal.csv")
    ref["factor"] = ref["factor"].replace(R_FACTOR_NAMES)  # renamed: not an interaction test
    keys = ["element", "layer", "response", "factor"]
    merged = ours.merge(ref, on=keys, suffixes=("", "_R"), validate="one_to_one")
    assert len(merged) == len(ref) == len(ours)
    assert _rel(merged["H"], merged["H_R"]).max() <= RTOL
    assert _rel(merged["p"], merged["p_R"]).max() <= RTOL
    assert (merged["df"] == merged["df_R"]).all()
    assert (merged["n"] == merged["n_R"]).all()


def test_breakpoints_match_segmented_and_davies(dataset):
    name, _, changes = dataset
    ours = breakpoint_table(changes)
    ref = pd.read_csv(FIX / f"{name}_R_breakpoints.csv")
    keys = ["element", "layer", "driver"]
    m = ours.merge(ref, on=keys, suffixes=("", "_R"), validate="one_to_one")
    assert len(m) == len(ref)
    # Davies p within 0.3 in log10 (or both < 1e-6): here it is exact to rounding
    tiny = (m["davies_p"] < 1e-6) & (m["davies_p_R"] < 1e-6)
    dlog = np.abs(np.log10(m["davies_p"]) - np.log10(m["davies_p_R"]))
    assert (tiny | (dlog <= 1e-6)).all(), m[["davies_p", "davies_p_R"]]
    # R's failures are ours
    assert ((m["status_R"] == "no_breakpoint") == (m["status"] == "no_breakpoint")).all()
    both = m[m["status_R"] == "ok"]
    # psi within 1% where R reached the global minimum of the RSS (ours is always global)
    agree = _rel(both["psi"], both["psi_R"]) <= 0.01
    local = both["rss_R"] > both["rss"] * (1 + 1e-6)
    assert (agree | local).all(), both[~(agree | local)][[*keys, "psi", "psi_R"]]
    assert agree.mean() >= 0.8


@pytest.fixture(scope="module")
def battery():
    xy = pd.read_csv(FIX / "battery_xy.csv.gz")
    ref = pd.read_csv(FIX / "battery_R.csv").set_index("group")
    return xy, ref


def test_davies_equals_davies_test_on_small_samples(battery):
    """n from 8 to 320: the exact Davies (2002) bound and, above n = 300, the 1987 one."""
    xy, ref = battery
    worst = 0.0
    for g, grp in xy.groupby("group"):
        x, y = grp["x"].to_numpy(), grp["y"].to_numpy()
        for alt, col in (
            ("two.sided", "davies_p"),
            ("greater", "davies_greater"),
            ("less", "davies_less"),
        ):
            ours, theirs = davies_test(x, y, alternative=alt).p_value, ref.loc[g, col]
            worst = max(worst, abs(np.log10(ours) - np.log10(theirs)))
    assert worst <= 1e-6


def test_segmented_equals_r_on_battery(battery):
    xy, ref = battery
    n_agree = n_local = 0
    for g, grp in xy.groupby("group"):
        r = ref.loc[g]
        x, y = grp["x"].to_numpy(float), grp["y"].to_numpy(float)
        try:
            fit = segmented(x, y)
        except SegmentedError:
            # where R says "No breakpoint estimated", so do we; where we say it but R gives a
            # number, R stopped in a local minimum whose RSS is above the global one
            if r["status"] == "ok":
                n_local += 1
                assert r["rss"] > segmented(x, y, check_sides=False).rss * (1 + 1e-6)
            continue
        assert r["status"] == "ok", f"group {g}: R found no breakpoint, we found {fit.psi}"
        if abs(fit.psi - r["psi"]) <= 0.01 * abs(r["psi"]):
            n_agree += 1
            assert fit.k1 == pytest.approx(r["k1"], rel=1e-3, abs=1e-9)
            assert fit.k2 == pytest.approx(r["k2"], rel=1e-3, abs=1e-9)
        else:
            n_local += 1
            assert r["rss"] > fit.rss * (1 + 1e-6), f"group {g}: R's RSS is not above ours"
    assert n_agree >= 0.85 * (n_agree + n_local)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_r_script_reproduces_fixtures(tmp_path):
    for f in FIX.glob("*.csv.gz"):
        shutil.copy(f, tmp_path / f.name)
    subprocess.run(
        ["Rscript", str(FIX / "freq_reference.R"), str(tmp_path)], check=True, capture_output=True
    )
    for f in FIX.glob("*_R*.csv"):
        fresh = pd.read_csv(tmp_path / f.name)
        stored = pd.read_csv(f)
        pd.testing.assert_frame_equal(fresh, stored, check_exact=False, rtol=1e-9)
