"""compare: posterior vs frequentist tables on fake posteriors whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from report_fakes import (
    MISSING_CELL,
    NO_BREAK_REASON,
    fake_breakpoints_fit,
    fake_freq_tables,
    fake_rates_fit,
)

from bayes_soil import compare as cmp
from bayes_soil import schema
from bayes_soil.cli import main


@pytest.fixture(scope="module")
def rates_fit():
    return fake_rates_fit()


@pytest.fixture(scope="module")
def bp_fit():
    return fake_breakpoints_fit()


@pytest.fixture(scope="module")
def freq():
    return fake_freq_tables()


@pytest.fixture(scope="module")
def result(rates_fit, bp_fit, freq):
    return cmp.compare([rates_fit, bp_fit], freq)


def brute_hdi(x: np.ndarray, prob: float) -> tuple[float, float]:
    """Shortest window holding ceil(prob * n) sorted draws (the textbook HDI)."""
    x = np.sort(x)
    m = int(np.ceil(prob * len(x)))
    widths = x[m - 1 :] - x[: len(x) - m + 1]
    i = int(np.argmin(widths))
    return x[i], x[i + m - 1]


def draws(dt, var, **sel):
    return dt["posterior"][var].sel(**sel).to_numpy().ravel()


def row(df, **keys):
    mask = np.ones(len(df), bool)
    for k, v in keys.items():
        mask &= (df[k] == v).to_numpy()
    assert mask.sum() == 1, keys
    return df[mask].iloc[0]


def test_columns_and_one_row_per_cell(result):
    assert tuple(result.rates.columns) == cmp.COMPARISON_COLUMNS
    assert tuple(result.breakpoints.columns) == cmp.BREAKPOINTS_COMPARISON_COLUMNS
    n = (
        len(schema.ELEMENTS)
        * len(schema.ALL_LAYERS)
        * (len(schema.VEGETATION) + 1)
        * len(schema.STAGES)
    )
    assert len(result.rates) == n
    assert not result.rates.duplicated(list(cmp.RATE_KEYS)).any()
    assert set(result.rates["interval"]) == {"94% HDI"}


def test_posterior_numbers_match_the_draws(result, rates_fit):
    key = {"element": "C", "layer": "20-100", "vegetation": "grassland", "stage": "6-10"}
    x = draws(rates_fit, "rate", **key)
    r = row(result.rates, **key)
    assert r["mean"] == pytest.approx(x.mean())
    assert r["sd"] == pytest.approx(x.std(), rel=1e-3)  # ddof 0 or 1
    assert r["p_positive"] == pytest.approx((x > 0).mean())
    lo, hi = brute_hdi(x, 0.94)
    width = hi - lo
    assert r["hdi_low"] == pytest.approx(lo, abs=0.02 * width)
    assert r["hdi_high"] == pytest.approx(hi, abs=0.02 * width)
    assert r["difference"] == pytest.approx(r["mean"] - r["k"])


def test_vegetation_all_pairs_with_rate_mean(result, rates_fit, freq):
    key = {"element": "N", "layer": "0-20", "stage": "11-20"}
    x = draws(rates_fit, "rate_mean", **key)
    r = row(result.rates, vegetation="all", **key)
    assert r["mean"] == pytest.approx(x.mean())
    f = freq["rates"]
    fk = f[
        (f.element == "N") & (f.layer == "0-20") & (f.stage == "11-20") & (f.vegetation == "all")
    ]
    assert r["k"] == pytest.approx(fk["k"].iloc[0])
    assert np.isnan(r["shrinkage"])  # no shrinkage toward itself
    # pooled_mean of a vegetation row is the 'all' posterior mean
    r_f = row(result.rates, vegetation="forest", **key)
    assert r_f["pooled_mean"] == pytest.approx(x.mean())


def test_cell_ols_could_not_estimate_still_has_a_posterior(result, rates_fit):
    e, la, v, s = MISSING_CELL
    r = row(result.rates, element=e, layer=la, vegetation=v, stage=s)
    assert r["agreement"] == "posterior only"
    assert pd.isna(r["agree"]) and np.isnan(r["k"])
    assert "too few rows" in r["freq_status"]
    x = draws(rates_fit, "rate", element=e, layer=la, vegetation=v, stage=s)
    assert r["mean"] == pytest.approx(x.mean())
    assert r["hdi_low"] < r["mean"] < r["hdi_high"]


def test_agreement_rule_and_shrinkage_on_hand_made_intervals(rates_fit):
    post = cmp.posterior_rates(rates_fit)
    keys = dict(element="C", layer="0-20", stage="0-5")
    p_for = row(post, vegetation="forest", **keys)
    d = p_for["mean"] - p_for["pooled_mean"]
    m, sd = p_for["mean"], p_for["sd"]
    se = 0.5
    half = 1.959964 * np.sqrt(se**2 + sd**2)
    base = {**keys, "se": se, "ci_low": -1e3, "ci_high": 1e3, "p": 0.1, "n": 9}
    freq = pd.DataFrame(
        [
            # difference 0.1 (< 0.2 Mg ha-1 yr-1 for C), interval includes 0: agree
            {**base, "vegetation": "forest", "k": m - 0.1},
            # difference just beyond the interval's half-width: disagree (intervals overlap)
            {**base, "vegetation": "shrub", "k": m - 1.01 * half},
        ]
    )
    out = cmp.compare_rates(freq, post)
    r_for = row(out, vegetation="forest", **keys)
    assert r_for["difference"] == pytest.approx(0.1)
    assert r_for["difference_low"] == pytest.approx(0.1 - half)
    assert r_for["difference_high"] == pytest.approx(0.1 + half)
    assert r_for["practical_threshold"] == 0.2
    assert bool(r_for["agree"]) is True and r_for["agreement"] == "agree"
    r_shr = row(out, vegetation="shrub", **keys)
    assert r_shr["agreement"] == "disagree" and bool(r_shr["intervals_overlap"]) is True
    assert row(out, vegetation="grassland", **keys)["agreement"] == "posterior only"
    rule = r_for["agreement_rule"]
    assert "excludes 0" in rule and "C 0.2" in rule and "94% HDI" in rule
    # a difference bigger than the threshold that the data cannot tell from 0: inconclusive
    wide = freq.iloc[:1].assign(k=m - 0.5, se=50.0)
    r_w = row(cmp.compare_rates(wide, post), vegetation="forest", **keys)
    assert r_w["agreement"] == "inconclusive" and pd.isna(r_w["agree"])
    # OLS -3.26 vs posterior ~0 with wide intervals: overlapping, yet not "agree"
    groa = freq.iloc[:1].assign(k=-3.26, se=2.0)
    r_g = row(cmp.compare_rates(groa, post.assign(mean=0.03)), vegetation="forest", **keys)
    assert bool(r_g["intervals_overlap"]) and r_g["agreement"] != "agree"
    # shrinkage: OLS at pooled + 2d, posterior at pooled + d -> half the distance removed
    freq2 = freq.iloc[:1].assign(k=p_for["pooled_mean"] + 2 * d)
    r2 = row(cmp.compare_rates(freq2, post), vegetation="forest", **keys)
    assert r2["shrinkage"] == pytest.approx(0.5)
    # posterior exactly at OLS -> no shrinkage
    freq3 = freq.iloc[:1].assign(k=p_for["mean"])
    assert row(cmp.compare_rates(freq3, post), vegetation="forest", **keys)[
        "shrinkage"
    ] == pytest.approx(0.0)


def test_breakpoints_from_draws_and_p_break(result, bp_fit, freq):
    key = {"element": "C", "driver": "map_mm", "layer": "20-100"}
    r = row(result.breakpoints, **key)
    psi = draws(bp_fit, "psi", **key)
    k1, k2 = draws(bp_fit, "k1", **key), draws(bp_fit, "k2", **key)
    assert r["psi_mean"] == pytest.approx(psi.mean())
    assert r["p_k1_neg_k2_pos"] == pytest.approx(((k1 < 0) & (k2 > 0)).mean())
    assert r["k1_mean"] == pytest.approx(k1.mean())
    assert r["p_break"] == pytest.approx(0.97) and r["decision"] == "turning point"
    assert r["break_agreement"].startswith(("both", "segmented")) or r["break_agreement"] == ""
    assert cmp.break_agreement(0.001, 0.05).startswith("segmented: break")
    assert cmp.break_agreement(0.001, 0.5).endswith("the data do not decide")
    assert cmp.break_agreement(0.3, 0.1) == "both: no break"
    f = freq["breakpoints"]
    fr = f[(f.element == "C") & (f.driver == "map_mm") & (f.layer == "20-100")].iloc[0]
    assert r["psi"] == pytest.approx(fr["psi"]) and r["davies_p"] == pytest.approx(fr["davies_p"])
    lo, hi = fr["psi"] - 1.96 * fr["psi_se"], fr["psi"] + 1.96 * fr["psi_se"]
    overlap = bool(lo <= r["psi_hdi_high"] and r["psi_hdi_low"] <= hi)
    assert bool(r["intervals_overlap"]) == overlap
    half = 1.959964 * np.hypot(fr["psi_se"], r["psi_sd"])
    diff = r["psi_mean"] - fr["psi"]
    assert (r["difference_low"], r["difference_high"]) == pytest.approx((diff - half, diff + half))
    expected = (
        "disagree"
        if abs(diff) > half
        else ("agree" if abs(diff) <= cmp.PRACTICAL_PSI["map_mm"] else "inconclusive")
    )
    assert r["agreement"] == expected
    # the segmented side had no break for 0-200 and the posterior has no 0-200: kept, flagged
    nb = row(result.breakpoints, element="N", driver="mat_c", layer="100-200")
    assert nb["freq_status"] == "no_break: " + NO_BREAK_REASON and nb["agreement"] != ""
    r0 = row(result.breakpoints, element="N", driver="mat_c", layer="0-200")
    assert r0["agreement"] == "frequentist only" and "only 4 rates" in r0["freq_status"]


@pytest.mark.parametrize(
    "value",
    [
        {"C": {"map_mm": 3.5}},
        {"C:map_mm": 3.5},
        {"C/map_mm": 3.5},
        {"map_mm_C": 3.5},
        json.dumps({"C": {"map_mm": 3.5}}),
    ],
)
def test_parse_loo_attr_formats(value):
    assert cmp.parse_loo_attr(value) == {("C", "map_mm"): 3.5}


def test_parse_loo_attr_garbage_is_empty():
    assert cmp.parse_loo_attr("not json") == {}
    assert cmp.parse_loo_attr(None) == {}


def test_fits_from_different_datasets_are_refused(rates_fit, bp_fit, freq):
    other = bp_fit.copy()
    other.attrs["data_sha256"] = "cd" * 32
    with pytest.raises(cmp.InputError, match="different datasets"):
        cmp.compare([rates_fit, other], freq)


def test_per_element_fits_are_stacked_and_overlaps_refused(freq):
    c_fit = fake_rates_fit(elements=("C",), seed=5)
    n_fit = fake_rates_fit(elements=("N",), seed=6, verdict="fail")
    out = cmp.compare([c_fit, n_fit], freq).rates
    assert set(out.loc[out.element == "C", "fit_verdict"]) == {"pass"}
    assert set(out.loc[out.element == "N", "fit_verdict"]) == {"fail"}
    with pytest.raises(cmp.InputError, match="both hold"):
        cmp.compare([c_fit, c_fit], freq)


def test_interval_name():
    assert cmp.interval_name(0.94) == "94% HDI"
    assert cmp.interval_name(0.895) == "89.5% HDI"


def write_freq(freq, path):
    path.mkdir()
    for name, df in freq.items():
        df.to_csv(path / f"{name}.csv", index=False)


def test_cli_writes_tables_and_rule(tmp_path, rates_fit, bp_fit, freq, capsys):
    fr, fb = tmp_path / "rates.nc", tmp_path / "bp.nc"
    rates_fit.to_netcdf(fr, engine="h5netcdf")
    bp_fit.to_netcdf(fb, engine="h5netcdf")
    write_freq(freq, tmp_path / "freq")
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            str(fr),
            str(fb),
            "--freq",
            str(tmp_path / "freq"),
            "--out",
            str(out),
            "--hdi-prob",
            "0.9",
        ]
    )
    assert code == 0
    table = pd.read_csv(out / "comparison.csv", keep_default_na=False, na_values=[""])
    assert tuple(table.columns) == cmp.COMPARISON_COLUMNS
    assert set(table["interval"]) == {"90% HDI"}
    e, la, v, s = MISSING_CELL
    miss = table[
        (table.element == e) & (table.layer == la) & (table.vegetation == v) & (table.stage == s)
    ]
    assert miss["agreement"].tolist() == ["posterior only"]
    bps = pd.read_csv(out / "breakpoints_comparison.csv")
    assert len(bps) == 16
    rules = json.loads((out / "comparison_rules.json").read_text())
    assert "90% HDI" in rules["definitions"]["rate_agreement_rule"]
    assert rules["fits"][0]["model"] == "hier_rates"
    assert "synthetic" in capsys.readouterr().out.lower()


def test_cli_missing_freq_dir_is_input_error(tmp_path, rates_fit):
    fr = tmp_path / "rates.nc"
    rates_fit.to_netcdf(fr, engine="h5netcdf")
    code = main(
        ["compare", str(fr), "--freq", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert not (tmp_path / "o" / "comparison.csv").exists()


def test_cli_missing_column_names_the_file(tmp_path, rates_fit, freq):
    fr = tmp_path / "rates.nc"
    rates_fit.to_netcdf(fr, engine="h5netcdf")
    bad = dict(freq)
    bad["rates"] = freq["rates"].drop(columns="ci_low")
    write_freq(bad, tmp_path / "freq")
    with pytest.raises(cmp.InputError, match=r"rates\.csv: line 1: missing column\(s\) ci_low"):
        cmp.read_freq_tables(tmp_path / "freq")


def test_cli_refuses_tables_of_other_data(tmp_path, rates_fit, freq):
    fr = tmp_path / "rates.nc"
    rates_fit.to_netcdf(fr, engine="h5netcdf")
    write_freq(freq, tmp_path / "freq")
    (tmp_path / "freq" / "freq_provenance.json").write_text(json.dumps({"data_sha256": "cd" * 32}))
    code = main(
        ["compare", str(fr), "--freq", str(tmp_path / "freq"), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert not (tmp_path / "o").exists()
