"""Sections on the Bayesian fits: posterior rates and turning points, frequentist vs posterior,
sampler diagnostics, and calibration on simulated data (figures by ``posterior_figures``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bayes_soil import schema
from bayes_soil.compare import definitions, interval_name
from bayes_soil.fits import cell_diagnostics_of
from bayes_soil.posterior import years_to_gain_table
from bayes_soil.report import figure_embed
from bayes_soil.report import sentences as S
from bayes_soil.report.html_parts import (
    badge_html,
    csv_download,
    details_html,
    diag_text,
    esc,
    failed_fit_note,
    json_attr,
    list_html,
    table_html,
)
from bayes_soil.report.inputs import ReportInputs


def posterior_section(inp: ReportInputs) -> str:
    from bayes_soil.report import posterior_figures as pf

    out = []
    name = interval_name(inp.hdi_prob)
    cmp = inp.comparison
    changes = getattr(inp.harmonized, "changes", None)
    rate_fits = inp.fits_of("rates")
    out.append("<h3>Stage-wise rates (hier_rates)</h3>")
    if not rate_fits or cmp is None or not len(cmp.rates):
        out.append("<p>No hier_rates fit: no posterior rates.</p>")
    else:
        out.append(failed_fit_note(rate_fits))
        for el in schema.ELEMENTS:
            sub = cmp.rates[
                (cmp.rates["element"] == el)
                & (cmp.rates["vegetation"] == "all")
                & cmp.rates["mean"].notna()
            ]
            if not len(sub):
                continue
            out.append(f"<h4>{esc(el)}: all vegetation (equal-weight mean over types)</h4>")
            out.append(list_html(S.rate_sentence(r) for _, r in sub.iterrows()))
        for rec in rate_fits:
            dt = rec.dt
            els = [str(e) for e in dt["posterior"]["rate"]["element"].values]
            for el in els:
                out.append(
                    figure_embed.figure_html(
                        lambda dt=dt, el=el: pf.cumulative_change_fan(
                            dt, el, changes=changes, hdi_prob=inp.hdi_prob
                        ),
                        f"Cumulative {el} stock change F(t) implied by the posterior stage rates "
                        f"(all vegetation), with the {name} and 50% HDI at each age; dots are the "
                        "observed changes against the year-0 control of the same chronosequence.",
                        f"fan chart {el}",
                    )
                )
            out.append(
                figure_embed.figure_html(
                    lambda dt=dt: pf.cn_ratio_posteriors(
                        dt, freq_ratios=inp.freq.get("rate_ratios"), hdi_prob=inp.hdi_prob
                    ),
                    f"C:N rate ratio (k_C / k_N) from the draws: median and {name}; x = OLS ratio. "
                    "The ratio is heavy-tailed where the N rate is near zero.",
                    "C:N ratio",
                )
            )
            out.append(_years_to_gain(dt, inp.hdi_prob))
        veg = cmp.rates[(cmp.rates["vegetation"] != "all") & cmp.rates["mean"].notna()]
        out.append(
            details_html(
                "posterior rates for every vegetation type",
                table_html(veg, list(schema.RATES_POSTERIOR_COLUMNS)),
            )
        )
    out.append("<h3>Turning points along climate (climate_breakpoints)</h3>")
    bp_fits = inp.fits_of("breakpoints")
    if not bp_fits or cmp is None or not len(cmp.breakpoints):
        out.append("<p>No climate_breakpoints fit: no posterior turning points.</p>")
    else:
        out.append(failed_fit_note(bp_fits))
        bp = cmp.breakpoints[cmp.breakpoints["p_break"].notna()]
        out.append(list_html(S.turning_point_sentence(r) for _, r in bp.iterrows()))
        if cmp.psi_diff is not None and len(cmp.psi_diff):
            out.append(list_html(S.psi_diff_sentence(r) for _, r in cmp.psi_diff.iterrows()))
        out.append(
            "<p class='meta'>P(turning point) is the exact posterior probability "
            f"{S.break_prior_text(bp_fits[0].dt)} that the change rate has a kink along the "
            "driver; 'the data do not decide' where it lies between 0.2 and 0.8. psi's "
            "interval is given a turning point.</p>"
        )
        if {"map_mm", "mat_c"} <= set(bp["driver"]):
            out.append(
                "<p class='meta'>Precipitation and temperature co-vary between sites, so the "
                "joint model can give a temperature turning point beside a precipitation one "
                "that the data hold only along precipitation: on 20 simulated datasets with "
                "about 20 sites it did so (P &gt; 0.5) in 4 of 160 cells, 2 with P &ge; 0.8, "
                "with the default shared prior (12 and 4 with a fixed prior of 0.5 per cell; "
                "benchmarks/calibration.md of bayes_soil). Read MAT beside MAP as 'one of the "
                "two, or both'.</p>"
            )
        for rec in bp_fits:
            out.append(
                figure_embed.figure_html(
                    lambda dt=rec.dt: pf.turning_point_densities(
                        dt, freq_breakpoints=inp.freq.get("breakpoints"), hdi_prob=inp.hdi_prob
                    ),
                    f"Posterior density of each turning point psi (shaded: {name}); red line and "
                    "band: segmented regression psi ± 1.96 SE, with its Davies p.",
                    "turning point densities",
                )
            )
    return "\n".join(out)


def _years_to_gain(dt: xr.DataTree, hdi_prob: float) -> str:
    if "years_to_gain" not in dt["posterior"].data_vars:
        return ""
    try:
        tab = years_to_gain_table(dt, hdi_prob)
    except Exception as exc:  # the posterior helper is optional here
        return f"<p class='error'>Years to net gain could not be summarised: {esc(exc)}</p>"
    cols = [
        "element",
        "vegetation",
        "layer",
        "median",
        "hdi_low",
        "hdi_high",
        "p_not_within_observed",
        "observed_max_age",
        "interval",
    ]
    return (
        "<h4>Years to net gain</h4><p class='meta'>First age after which the cumulative "
        "change stays positive; p_not_within_observed = posterior probability of no net gain "
        "within the observed ages.</p>" + table_html(tab, cols)
    )


def comparison_section(inp: ReportInputs) -> str:
    from bayes_soil.report import posterior_figures as pf

    cmp = inp.comparison
    if cmp is None or (not len(cmp.rates) and not len(cmp.breakpoints)):
        return "<p>Nothing to compare (no fits).</p>"
    defs = definitions(inp.hdi_prob)
    out = [
        "<p><strong>Agreement rule (rates):</strong> "
        + esc(defs["rate_agreement_rule"])
        + ".<br><strong>Agreement rule (turning points):</strong> "
        + esc(defs["breakpoint_agreement_rule"])
        + ".<br><strong>Shrinkage:</strong> "
        + esc(defs["shrinkage"])
        + ".</p>",
        "<p>Vegetation <code>all</code> on the frequentist side (OLS over every vegetation type) "
        "is paired with the posterior <code>rate_mean</code>.</p>",
    ]
    r = cmp.rates
    if len(r):
        counts = r["agreement"].value_counts()
        out.append(
            table_html(pd.DataFrame({"agreement": counts.index, "rate cells": counts.to_numpy()}))
        )
        special = r[r["agreement"].isin(["disagree", "posterior only"])]
        if len(special):
            out.append("<h3>Cells where the two sides differ or only the posterior speaks</h3>")
            out.append(list_html(S.comparison_sentence(x) for _, x in special.iterrows()))
        shr = r[r["shrinkage"].notna()]
        if len(shr):
            out.append(
                f"<p>Median shrinkage toward the pooled mean over {len(shr)} vegetation cells: "
                f"{S.fmt_num(float(shr['shrinkage'].median()))} (0 = posterior at the OLS slope, "
                "1 = at the pooled mean).</p>"
            )
        for el in schema.ELEMENTS:
            if (r["element"] == el).any():
                out.append(
                    figure_embed.figure_html(
                        lambda el=el: pf.forest_rates(r, el, synthetic=inp.synthetic),
                        f"{el}: OLS slope with 95% CI (open squares) beside the posterior mean "
                        f"with its {interval_name(inp.hdi_prob)} (dots), per stage, vegetation "
                        "and layer.",
                        f"forest plot {el}",
                    )
                )

        def cls(x: pd.Series) -> str:
            return {"disagree": "disagree", "posterior only": "postonly"}.get(
                str(x["agreement"]), ""
            )

        out.append(
            details_html(
                "the comparison table (comparison.csv)",
                table_html(r, [c for c in r.columns if c != "agreement_rule"], row_class=cls),
            )
        )
    b = cmp.breakpoints
    if len(b):
        out.append("<h3>Turning points</h3>")
        out.append(
            table_html(
                b,
                [
                    "element",
                    "layer",
                    "driver",
                    "psi",
                    "psi_se",
                    "davies_p",
                    "p_break",
                    "decision",
                    "carried_by",
                    "psi_hdi_low",
                    "psi_hdi_high",
                    "interval",
                    "p_k1_neg_k2_pos",
                    "break_agreement",
                    "agreement",
                ],
            )
        )
    links = [
        csv_download(cmp.rates, "comparison.csv"),
        csv_download(cmp.breakpoints, "breakpoints_comparison.csv"),
    ]
    for name in ("rates", "breakpoints", "kruskal", "rate_ratios"):
        df = inp.freq.get(name)
        if df is not None and len(df):
            links.append(csv_download(df, f"{name}.csv"))
    out.append("<p class='downloads'>Download: " + " ".join(links) + "</p>")
    return "\n".join(out)


def diagnostics_section(inp: ReportInputs) -> str:
    from bayes_soil.report import posterior_figures as pf

    if not inp.fits:
        return "<p>No fits, no diagnostics.</p>"
    out = []
    for rec in inp.fits:
        dt = rec.dt
        d = json_attr(dt, "diagnostics")
        ss = pf.sampler_summary(dt)
        out.append(f"<h3>{esc(rec.model)} {badge_html(rec.verdict)}</h3>")
        out.append(
            f"<p>{esc(rec.path or '(in memory)')} — {esc(rec.origin)}. {esc(ss.get('chains'))} "
            f"chains x {esc(ss.get('draws'))} draws; divergences: "
            f"{esc(ss.get('divergences', d.get('divergences', 'n/a')))}; "
            f"{esc(diag_text(d))}.</p>"
        )
        if d.get("problems"):
            out.append(f"<p class='banner'>Problems: {esc(d['problems'])}</p>")
        if d.get("advice"):
            out.append(f"<p>Advice: {esc(d['advice'])}</p>")
        if "rhat_max_allowed" in d or "ess_bulk_min_required" in d:
            out.append(f"<p class='meta'>{esc(gate_rule_text(d))}</p>")
        rhats = None
        try:
            cells = cell_diagnostics_of(dt)  # stored with the fit; shared below
            tab = pf.diagnostics_table(dt, cells)
            rhats = pf.rhat_by_variable(dt, cells)
        except Exception as exc:
            out.append(f"<p class='error'>R-hat/ESS table failed: {esc(exc)}</p>")
        else:
            tab, limit = gate_roles(tab, d)
            out.append(
                table_html(
                    tab,
                    row_class=lambda x, limit=limit: (
                        "failed"
                        if np.isfinite(x["max_r_hat"]) and x["max_r_hat"] > limit(x["gate"])
                        else ""
                    ),
                )
            )
        out.append(
            figure_embed.figure_html(
                lambda dt=dt, rhats=rhats: pf.rank_plots(dt, rhats=rhats),
                "Rank plots of the cells with "
                "the highest R-hat: each line is one chain; uniform ranks (flat "
                "lines) mean the chains explore the same distribution.",
                f"rank plots {rec.model}",
            )
        )
        out.append(
            figure_embed.figure_html(
                lambda dt=dt: pf.ppc_plot(dt),
                "Posterior predictive check: "
                "densities of datasets replicated from the posterior against the "
                "observed data (on the model's scale).",
                f"ppc {rec.model}",
            )
        )
    return "\n".join(out)


def calibration_section(inp: ReportInputs) -> str:
    """Coverage of the models' intervals over many SYNTHETIC datasets with known truth."""
    if inp.calibration is None or inp.calibration.empty:
        return (
            "<p>No calibration was given. <code>python -m bayes_soil calibrate --model "
            "hier_rates --datasets 10 --out calib/hier</code> fits the model to simulated "
            "datasets with known truth and scores its intervals; <code>report --calibration "
            "calib/hier</code> then shows the result here.</p>"
        )
    intro = (
        "<p>SYNTHETIC data: each row summarises fits of one model to datasets simulated by the "
        "package's simulator (known truth). <em>90% coverage</em> is the share of cells whose "
        "true value lies in the posterior's central 90% interval (well calibrated: about 0.9), "
        "with a 95% Wilson interval that treats cells as independent; for turning points it "
        "is the interval given a break. The <em>false-break rate</em> is the share of cells "
        "without a true turning point where P(turning point) &gt; 0.5.</p>"
    )
    return intro + table_html(inp.calibration)


def gate_rule_text(d: dict) -> str:
    """The gate's rule as this fit was judged (older fits: R-hat and bulk ESS only)."""
    text = (
        f"Gate: R-hat <= {d.get('rhat_max_allowed', '?')}, bulk ESS >= "
        f"{d.get('ess_bulk_min_required', '?')}"
    )
    if "ess_tail_min_required" in d:
        text += f", tail ESS >= {d['ess_tail_min_required']}"
    text += ", no divergences"
    if d.get("judged_vars") and d.get("nuisance_vars"):
        text += (
            f", on the quantities shown ({', '.join(d['judged_vars'])}); nuisance parameters "
            f"({', '.join(d['nuisance_vars'])}) are listed and fail the fit only above R-hat "
            f"{d.get('nuisance_rhat_max_allowed', '?')}"
        )
    return text + "."


def gate_roles(tab: pd.DataFrame, d: dict):
    """The diagnostics table with each variable's role in the gate, and the R-hat limit per
    role (a row above its limit is marked failed)."""
    judged, nuisance = set(d.get("judged_vars") or []), set(d.get("nuisance_vars") or [])
    nuisance_limit = float(d.get("nuisance_rhat_max_allowed", 1.05))

    def role(v: str) -> str:
        if not judged or v in judged:
            return "judged"
        return "nuisance" if v in nuisance else "not judged"

    tab = tab.assign(gate=[role(v) for v in tab["variable"]])
    limits = {"judged": float(d.get("rhat_max_allowed", 1.01)), "nuisance": nuisance_limit}
    return tab, lambda r: limits.get(r, np.inf)
