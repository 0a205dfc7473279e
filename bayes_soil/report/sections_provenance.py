"""Sections on how the numbers were made: provenance (data identity, fit files and their
attributes, library versions) and the methods text written from the fits' settings."""

from __future__ import annotations

import json
import platform

import pandas as pd

from bayes_soil import __version__
from bayes_soil.compare import interval_name
from bayes_soil.fits import library_versions
from bayes_soil.report.html_parts import (
    details_html,
    esc,
    json_attr,
    list_html,
    stock_method_text,
    table_html,
)
from bayes_soil.report.inputs import QUICK_LABEL, ReportInputs
from bayes_soil.report.sentences import break_prior_text


def provenance_section(inp: ReportInputs) -> str:
    h = inp.harmonized
    rep = getattr(h, "report", {}) or {}
    rows = [
        {"item": "data", "value": inp.data_label},
        {"item": "data SHA-256", "value": str(getattr(h, "data_sha256", ""))},
        {"item": "synthetic", "value": "yes" if inp.synthetic else "no"},
        {"item": "stock method", "value": stock_method_text(h)},
        {
            "item": "harmonization settings",
            "value": json.dumps(rep.get("settings", {}), default=str),
        },
        {"item": "bayes_soil", "value": __version__},
        {"item": "python", "value": platform.python_version()},
    ]
    out = [table_html(pd.DataFrame(rows))]
    for rec in inp.fits:
        a = rec.dt.attrs
        fit_rows = [
            {"attribute": k, "value": str(a.get(k, ""))}
            for k in (
                "model",
                "created_at",
                "data_sha256",
                "seed",
                "synthetic",
                "stock_method",
                "diagnostics_verdict",
                "bayes_soil_version",
                "sampler",
                "library_versions",
            )
            if k in a
        ]
        fit_rows.insert(0, {"attribute": "file", "value": rec.path or "(in memory)"})
        fit_rows.insert(1, {"attribute": "origin", "value": rec.origin})
        out.append(f"<h3>{esc(rec.model)}</h3>" + table_html(pd.DataFrame(fit_rows)))
        spec = a.get("spec")
        if spec:
            try:
                spec = json.dumps(json.loads(spec), indent=1)
            except (TypeError, ValueError):
                spec = str(spec)
            out.append(details_html(f"model spec of {rec.model}", f"<pre>{esc(spec)}</pre>"))
        sha = str(getattr(h, "data_sha256", ""))
        if a.get("data_sha256") and sha and a.get("data_sha256") != sha:
            out.append(
                f"<p class='banner'>This fit was made from other data (data_sha256 "
                f"{esc(str(a.get('data_sha256'))[:12])}…) than the data summarised here "
                f"({esc(sha[:12])}…).</p>"
            )
    if inp.log:
        out.append("<h3>What this report run did</h3>" + list_html(inp.log, cls="log"))
    out.append(
        "<p class='meta'>Libraries used to build this page: "
        + esc(", ".join(f"{k} {v}" for k, v in library_versions().items()))
        + ".</p>"
    )
    return "\n".join(out)


def imputation_text(attrs: dict, rows: str) -> str:
    """What a fit did with imputed values (deep-layer fill, estimated bulk density)."""
    n_deep = attrs.get("n_deep_imputed_left_out")
    if attrs.get("deep_imputed", "missing") == "missing":
        deep = (
            f"Imputed values are not data: the {n_deep} {rows} resting on the shallow-to-deep "
            "fill of 100-200 cm were left out of this fit (missing cells), while the frequentist "
            "reproduction keeps the paper's fill."
        )
    else:
        deep = (
            f"The {rows} resting on the shallow-to-deep fill were fitted as if measured "
            "(data.deep_imputed = 'as_data')."
        )
    n_bd = attrs.get("n_rows_bd_estimated")
    if n_bd is None:  # fits made before the setting existed
        return deep
    if attrs.get("bd_estimated", "uncertain") == "uncertain":
        bd = (
            f" The {n_bd} {rows} on an estimated bulk density entered with that estimate's "
            "predictive variance (a part shared by the study's estimates and a part per row, "
            "from study-grouped and 10-fold cross-validation), not as measurements."
        )
    else:
        bd = (
            f" {rows.capitalize()} on an estimated bulk density were fitted as if measured "
            "(data.bd_estimated = 'as_data')."
        )
    return deep + bd


def methods_section(inp: ReportInputs) -> str:
    rep = getattr(inp.harmonized, "report", {}) or {}
    settings = rep.get("settings", {}) or {}
    bd = settings.get("bd_method", "rf")
    bd_text = (
        "a random forest trained on the rows with measured bulk density"
        if bd == "rf"
        else "the pedotransfer functions of Eq. 4-5"
    )
    name = interval_name(inp.hdi_prob)
    parts = [
        "Interval stocks were computed as concentration x bulk density x thickness / 10 "
        "(SOC = 0.58 x SOM where only SOM was reported); missing bulk density was estimated by "
        f"{bd_text}, and its accuracy checked against the pedotransfer functions by 10-fold "
        "cross-validation on the same folds. Intervals were summed into 0-20, 20-100 and 100-200 "
        "cm layers (splitting intervals that straddle a boundary in proportion to thickness; "
        "0-200 cm is their sum); the 100-200 cm stock of profiles sampled only to 100 cm was "
        "predicted from the shallow layers and flagged as imputed. Changes are stocks minus the "
        "mean of the year-0 controls of the same study, site, vegetation and origin.",
        "The frequentist reproduction follows the paper: ordinary least squares of stock on "
        "years within each restoration stage (0-5, 6-10, 11-20, 21-30, >30 years; Eq. 6-7) with "
        "95% confidence intervals, C:N rate ratios (Eq. 8), Kruskal-Wallis tests (Table 1), and "
        "one-breakpoint segmented regression of change rates on MAP and MAT with the Davies "
        "test.",
    ]
    for rec in inp.fits:
        s = json_attr(rec.dt, "sampler")
        samp = (
            f"{s.get('sampler', rec.dt.attrs.get('sampler_name', '?'))} "
            f"({s.get('chains', '?')} chains x {s.get('draws', '?')} draws after "
            f"{s.get('tune', '?')} tuning steps, seed {rec.dt.attrs.get('seed', '?')})"
        )
        imputed = imputation_text(rec.dt.attrs, "stocks" if rec.kind == "rates" else "changes")
        if rec.kind == "rates":
            parts.append(
                "The hierarchical model hier_rates describes each layer stock as a continuous, "
                "piecewise-linear trajectory in years since revegetation with one rate per "
                "stage, vegetation type and layer; rates are partially pooled across vegetation "
                "types toward a stage x layer mean; site and chronosequence effects on the "
                "baseline and on the rate absorb differences between places and studies (they are "
                "integrated out exactly), and errors are Gaussian. The 0-200 cm rate is the sum "
                "of the layer rates in every draw, and the pooled ('all') rate is the "
                f"equal-weight mean over vegetation types. {imputed} It was sampled with {samp}."
            )
        else:
            parts.append(
                "The turning-point model climate_breakpoints regresses change rates on MAP or "
                "MAT with a hinge at psi (slopes k1 before and k2 after) or no hinge at all "
                f"{break_prior_text(rec.dt)}, psi on a grid between the 10th and 90th percentiles "
                "of the driver and summed out exactly, with study effects, per-site effects and "
                "an error that shrinks with the length of the chronosequence; it gives the "
                "probability of a turning point per cell, and with both drivers in one model "
                f"which driver carries it. {imputed} It was sampled with {samp}."
            )
    parts.append(
        f"Posterior results are given as means with {name}s (highest density intervals) and "
        "the posterior probability of a positive rate, not as significance tests. Convergence "
        "was gated on R-hat, bulk ESS and divergences; a fit that fails the gate is reported "
        "as failed." + (" All numbers come from SYNTHETIC data." if inp.synthetic else "")
    )
    if inp.quick:
        parts.append(QUICK_LABEL + ".")
    return "".join(f"<p>{esc(p)}</p>" for p in parts)
