"""The HTML report, its sentences and figures, on fake posteriors (no sampling)."""

from __future__ import annotations

import html
import re
from importlib.resources import files

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from report_fakes import (
    MISSING_CELL,
    fake_breakpoints_fit,
    fake_freq_tables,
    fake_harmonized,
    fake_rates_fit,
    fake_report_inputs,
)

from bayes_soil.compare import compare
from bayes_soil.io import SYNTHETIC_LABEL
from bayes_soil.report import posterior_figures as pf
from bayes_soil.report import sentences as S
from bayes_soil.report.html import QUICK_LABEL, build_html

EXTERNAL = re.compile(
    r"""(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""",
    re.IGNORECASE,
)


def _no_figures(make, caption, alt):
    """Stand-in for figure_embed.figure_html: text checks need no pixels (browser tests draw)."""
    return f"<figure><figcaption>{alt}</figcaption></figure>"


def text_only(inputs) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("bayes_soil.report.figure_embed.figure_html", _no_figures)
        return build_html(inputs)


@pytest.fixture(scope="module")
def page() -> str:
    return text_only(fake_report_inputs(failed_breakpoints=True))


# ---- sentences ---------------------------------------------------------------------------


def test_rate_sentence_reads_like_the_issue_example():
    row = {
        "element": "C",
        "layer": "20-100",
        "vegetation": "all",
        "stage": "6-10",
        "p_positive": 0.03,
        "hdi_low": -3.93,
        "hdi_high": -1.61,
        "mean": -2.74,
        "interval": "94% HDI",
    }
    assert S.rate_sentence(row) == (
        "The 20-100 cm C rate in years 6-10 is negative with probability 0.97; 94% HDI -3.9 to "
        "-1.6 Mg ha-1 yr-1 (mean -2.7)."
    )
    row.update(
        vegetation="shrub",
        stage=">30",
        p_positive=0.9991,
        hdi_low=0.012,
        hdi_high=0.0894,
        mean=0.05,
    )
    assert S.rate_sentence(row) == (
        "The 20-100 cm C rate after year 30 under shrub is positive with probability > 0.99; "
        "94% HDI 0.012 to 0.089 Mg ha-1 yr-1 (mean 0.050)."
    )


@pytest.mark.parametrize(
    ("low", "high", "text"),
    [
        (-3.93, -1.61, "-3.9 to -1.6"),
        (462.2, 576.4, "462 to 576"),
        (-0.5, 12.3, "-0.5 to 12.3"),
        (0.0012, 0.0089, "0.0012 to 0.0089"),
        (-0.04, 0.0, "-0.040 to 0.000"),
    ],
)
def test_interval_formatting(low, high, text):
    assert S.fmt_interval(low, high) == text


def test_probability_and_missing_formatting():
    assert S.fmt_prob(0.9999) == "> 0.99" and S.fmt_prob(0.001) == "< 0.01"
    assert S.fmt_prob(0.5) == "0.50" and S.fmt_num(float("nan")) == "n/a"
    assert S.fmt_p_value(0.0004) == "< 0.001" and S.fmt_p_value(0.0312) == "0.031"


def test_turning_point_sentence_says_whether_the_data_decide():
    row = {
        "element": "N",
        "driver": "map_mm",
        "layer": "0-20",
        "p_break": 0.97,
        "psi_mean": 470.4,
        "psi_hdi_low": 411.0,
        "psi_hdi_high": 524.0,
        "interval": "94% HDI given a turning point",
        "p_k1_neg_k2_pos": 0.904,
        "carried_by": "map_mm only (P = 0.93)",
        "psi": 417.7,
        "psi_se": 25.0,
        "davies_p": 0.0004,
    }
    text = S.turning_point_sentence(row)
    assert text.startswith(
        "N along MAP in 0-20 cm: the model finds a turning point (P(turning point) = 0.97); "
        "given a turning point, psi lies in 411 to 524 mm (94% HDI given a turning point), "
        "P(k1 < 0 < k2) = 0.90; with both drivers in one model the turning point is carried "
        "by map_mm only (P = 0.93)"
    )
    assert "Segmented regression puts it at 418 ± 1.96 x 25 mm (369 to 467 mm)" in text
    assert "Davies p < 0.001" in text
    row.update(p_break=0.5)
    assert "the data do not decide (P(turning point) = 0.50)" in S.turning_point_sentence(row)
    row.update(p_break=0.05)
    text = S.turning_point_sentence(row)
    assert "the model finds no turning point" in text and "psi lies in" not in text
    assert "segmented regression claims a break the model does not find" in text
    row.update(psi=float("nan"), freq_status="not estimated: no break")
    assert "Segmented regression gave no breakpoint (no break)" in S.turning_point_sentence(row)


def test_break_prior_sentence_follows_the_fit():
    # the report states the prior the fit used, read from the fit's psi_grid attributes
    def fit_with(**attrs):
        return xr.DataTree.from_dict({"psi_grid": xr.Dataset(attrs=attrs)})

    shared = S.break_prior_text(fit_with(break_prior="shared Beta(1, 1) per driver"))
    assert "one unknown share per driver" in shared
    assert S.break_prior_text(fit_with(break_prior="fixed", prior_p_break=0.3)) == (
        "(prior probability 0.3)"
    )


def test_comparison_sentence_for_a_cell_ols_could_not_estimate():
    row = {
        "element": "N",
        "layer": "100-200",
        "vegetation": "shrub",
        "stage": ">30",
        "p_positive": 0.58,
        "hdi_low": -0.28,
        "hdi_high": 0.41,
        "mean": 0.036,
        "interval": "94% HDI",
        "k": float("nan"),
        "agreement": "posterior only",
        "freq_status": "not estimated: too few rows (n=2 < 3)",
    }
    assert S.comparison_sentence(row).endswith(
        "OLS could not estimate this cell (too few rows (n=2 < 3)); the hierarchical model "
        "still estimates it by partial pooling."
    )


# ---- figures -----------------------------------------------------------------------------


def _texts(fig) -> str:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return " | ".join(out)


@pytest.fixture(scope="module")
def fits_and_tables():
    r, b, f = fake_rates_fit(), fake_breakpoints_fit(), fake_freq_tables()
    return r, b, f, compare([r, b], f)


@pytest.mark.parametrize("name", ["forest", "fan", "cn", "tp"])
def test_every_figure_names_its_interval_and_says_synthetic(fits_and_tables, name):
    r, b, f, cmp = fits_and_tables
    make = {
        "forest": lambda: pf.forest_rates(cmp.rates, "C", synthetic=True),
        "fan": lambda: pf.cumulative_change_fan(r, "N", changes=fake_harmonized().changes),
        "cn": lambda: pf.cn_ratio_posteriors(r, freq_ratios=f["rate_ratios"]),
        "tp": lambda: pf.turning_point_densities(b, freq_breakpoints=f["breakpoints"]),
    }[name]
    fig = make()
    text = _texts(fig)
    plt.close(fig)
    assert "Intervals:" in text and "94% HDI" in text
    assert pf.SYNTHETIC_TAG in text


def test_real_data_figures_carry_no_synthetic_tag():
    dt = fake_rates_fit(synthetic=False)
    fig = pf.cumulative_change_fan(dt, "C")
    assert pf.SYNTHETIC_TAG not in _texts(fig)
    plt.close(fig)


def test_fan_chart_band_is_the_hdi_of_the_cumulative_change(fits_and_tables):
    """F(35) = 5 r1 + 5 r2 + 10 r3 + 10 r4 + 5 r5: the band's right end is its 94% HDI."""
    r = fits_and_tables[0]
    fig = pf.cumulative_change_fan(r, "C", max_years=35.0, layers=("0-20",))
    band = fig.axes[0].collections[0]  # the outer (94%) band
    ys = band.get_paths()[0].vertices[:, 1]
    rm = r["posterior"]["rate_mean"].sel(element="C", layer="0-20")
    x = pf._stack(rm).transpose("sample", "stage").to_numpy()
    f35 = x @ np.array([5.0, 5.0, 10.0, 10.0, 5.0])
    lo, hi = np.sort(f35)[[0, -1]]
    h = pf._hdi(f35, 0.94)
    plt.close(fig)
    assert lo <= h[0] < h[1] <= hi
    assert np.isclose(ys, h[0]).any() and np.isclose(ys, h[1]).any()


def test_diagnostics_table_finds_the_stuck_chain():
    dt = fake_rates_fit(bad_chain=True, verdict="fail")
    tab = pf.diagnostics_table(dt).set_index("variable")
    assert tab.loc["rate", "max_r_hat"] > 1.1
    assert tab.loc["sd_unit", "max_r_hat"] < 1.05  # untouched by the stuck chain
    cells = pf.worst_cells(dt, n=3)
    assert all(name in ("rate", "rate_mean", "rate_ratio") for name, _ in cells)
    fig = pf.rank_plots(dt, n=3)
    assert "highest R-hat" in _texts(fig)
    plt.close(fig)


# ---- the page ----------------------------------------------------------------------------


def test_page_is_self_contained(page):
    assert not EXTERNAL.search(page), EXTERNAL.search(page).group(0)
    assert "<link" not in page.lower()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the stylesheet (package data) is inlined and every slot of the page template filled
    css = (files("bayes_soil.report") / "report.css").read_text(encoding="utf-8")
    assert f"<style>\n{css}</style>" in page and "$" not in page
    # every figure the page asks for (drawn for real in test_report_browser.py)
    for alt in (
        "forest plot C",
        "forest plot N",
        "fan chart C",
        "fan chart N",
        "C:N ratio",
        "turning point densities",
        "rank plots hier_rates",
        "rank plots climate_breakpoints",
        "ppc hier_rates",
        "stocks C",
        "stocks N",
        "frequentist rates",
        "frequentist rate ratios",
        "segmented map_mm",
        "segmented mat_c",
    ):
        assert f"<figcaption>{alt}</figcaption>" in page


def test_page_has_every_section_and_the_rule(page):
    for sid in (
        "findings",
        "data",
        "harmonization",
        "table1",
        "frequentist",
        "posterior",
        "comparison",
        "diagnostics",
        "provenance",
        "methods",
    ):
        assert f"<section id='{sid}'>" in page
    assert "Overlapping intervals alone are not agreement" in page
    assert "the OLS 95% CI and the posterior 94% HDI overlap" in page
    assert (
        "Table 1" in page
        and "vegetation x stage groups H" in page
        and "not an interaction test" in page
    )
    # harmonization numbers from the report dict (fake: RF R2 0.61 vs PTF 0.32)
    assert "0.610" in page and "0.320" in page
    assert "data:text/csv;base64," in page  # the comparison table travels with the page


def test_page_states_results_with_uncertainty(page):
    assert "is positive with probability" in page or "is negative with probability" in page
    assert "significant" not in page.lower().replace("not significance tests", "")


def test_cell_ols_could_not_estimate_is_shown_with_the_posterior(page):
    e, la, v, _ = MISSING_CELL
    assert (f"The {la} cm {e} rate after year 30 under {v} is") in page
    assert "OLS could not estimate this cell (too few rows (n=2 &lt; 3))" in page


def test_failed_fit_is_shown_as_failed_not_hidden(page):
    assert "climate_breakpoints fit fits/climate_breakpoints/fake.nc FAILED" in page
    assert "<span class='badge fail'>FAILED</span>" in page
    assert "<span class='badge pass'>PASSED</span>" in page
    # its turning points are still reported
    assert "C along MAP in 0-20 cm: the model finds a turning point" in page


def test_joint_map_mat_answer_comes_with_its_known_weakness(page):
    # the fake fit has both drivers: the calibrated caution on MAT beside MAP is shown
    assert "Read MAT beside MAP as 'one of the two, or both'" in page


def test_synthetic_label_only_for_synthetic_data(page):
    assert html.escape(SYNTHETIC_LABEL) in page and "(SYNTHETIC data)</title>" in page
    real = text_only(fake_report_inputs(synthetic=False))
    assert "SYNTHETIC" not in real and "synthetic: yes" not in real
    assert QUICK_LABEL not in real


def test_quick_fits_are_labelled():
    assert QUICK_LABEL in text_only(fake_report_inputs(quick=True))


def test_provenance_lists_hash_seed_spec_and_versions(page):
    assert "ab" * 32 in page
    assert "model spec of hier_rates" in page and "beta_sd" in page
    assert "library_versions" in page and "pymc" in page
    assert "reused fake fits" in page


def test_table_cells_are_escaped():
    from bayes_soil.report.html import table_html

    out = table_html(pd.DataFrame({"reason": ["<script>alert(1)</script>"], "n": [3]}))
    assert "<script>" not in out and "&lt;script&gt;" in out


def test_methods_say_what_each_fit_did_with_imputed_values():
    from bayes_soil.report.sections_provenance import imputation_text

    default = imputation_text(
        {
            "deep_imputed": "missing",
            "n_deep_imputed_left_out": 12,
            "bd_estimated": "uncertain",
            "n_rows_bd_estimated": 340,
        },
        "stocks",
    )
    assert "12 stocks resting on the shallow-to-deep fill" in default
    assert "340 stocks on an estimated bulk density entered with that estimate's" in default
    as_data = imputation_text(
        {"deep_imputed": "as_data", "bd_estimated": "as_data", "n_rows_bd_estimated": 3}, "changes"
    )
    assert "fitted as if measured (data.deep_imputed" in as_data
    assert "Changes on an estimated bulk density were fitted as if measured" in as_data
    # fits made before the setting existed say nothing about bulk density
    assert "bulk density" not in imputation_text({"n_deep_imputed_left_out": 1}, "stocks")


def test_diagnostics_table_marks_each_variable_by_its_role_in_the_gate():
    from bayes_soil.report.sections_bayes import gate_roles, gate_rule_text

    d = {
        "rhat_max_allowed": 1.01,
        "ess_bulk_min_required": 400,
        "ess_tail_min_required": 400,
        "judged_vars": ["p_break", "psi"],
        "nuisance_vars": ["sd_site"],
        "nuisance_rhat_max_allowed": 1.05,
    }
    tab = pd.DataFrame({"variable": ["p_break", "sd_site", "sd_site_signed"]})
    tab, limit = gate_roles(tab, d)
    assert tab["gate"].tolist() == ["judged", "nuisance", "not judged"]
    assert [limit(r) for r in tab["gate"]] == [1.01, 1.05, float("inf")]
    text = gate_rule_text(d)
    assert "tail ESS >= 400" in text and "sd_site" in text and "1.05" in text
    # a fit judged before the split: every variable judged at 1.01
    old, _ = gate_roles(pd.DataFrame({"variable": ["beta"]}), {"rhat_max_allowed": 1.01})
    assert old["gate"].tolist() == ["judged"]


def test_diagnostics_table_reads_the_fits_stored_cell_diagnostics():
    """A fit stores per-cell R-hat / ESS once (fits.cell_diagnostics); the report reads them
    instead of ranking the draws again; a variable the model does not measure (a
    reparameterisation) is listed as such."""
    from bayes_soil import fits

    dt = fake_rates_fit(bad_chain=True, verdict="fail")
    post = dt["posterior"].to_dataset()
    cells = fits.cell_diagnostics(post)
    fresh = pf.diagnostics_table(dt).set_index("variable")  # no stored group: computed
    stored = cells.copy()
    stored["rate"] = stored["rate"].where(stored["diagnostic"] != "r_hat", 7.0)  # a marker
    dt["diagnostics"] = stored.drop_vars("sd_unit")  # as if the model did not measure it
    tab = pf.diagnostics_table(dt).set_index("variable")
    assert tab.loc["rate", "max_r_hat"] == 7.0  # read, not recomputed
    assert tab.loc["sd_unit", "worst_cell"] == "not measured"
    assert np.isnan(tab.loc["sd_unit", "max_r_hat"]) and np.isfinite(
        fresh.loc["sd_unit", "max_r_hat"]
    )
    assert set(tab.index) == set(fresh.index)
