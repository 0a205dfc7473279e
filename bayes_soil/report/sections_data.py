"""Sections on the data: row accounting, and harmonization (bulk density, shallow-to-deep fill,
missing drivers, control rules, equivalent soil mass and how far it moves the frequentist
answers)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from bayes_soil import schema
from bayes_soil.frequentist.stock_shift import shift_summary
from bayes_soil.io import SYNTHETIC_LABEL
from bayes_soil.report.html_parts import (
    details_html,
    esc,
    nested_get,
    table_html,
)
from bayes_soil.report.inputs import ReportInputs


def data_section(inp: ReportInputs) -> str:
    h = inp.harmonized
    layers, changes, rejected = h.layers, h.changes, h.rejected
    rep = getattr(h, "report", {}) or {}
    out = []
    if inp.synthetic:
        out.append(f"<p class='banner'>{esc(SYNTHETIC_LABEL)}</p>")
    rows = nested_get(rep, "rows", default={}) or {}
    acc = pd.DataFrame(
        [
            {"quantity": "input observation rows", "count": rows.get("input", np.nan)},
            {"quantity": "rows used in at least one layer", "count": rows.get("used", np.nan)},
            {
                "quantity": "rows rejected (with a reason)",
                "count": rows.get("rejected", len(rejected)),
            },
            {"quantity": "studies", "count": layers["study_id"].nunique()},
            {"quantity": "sites", "count": layers["site_id"].nunique()},
            {"quantity": "profiles", "count": layers["profile_id"].nunique()},
            {"quantity": "layer rows (profile x element x layer)", "count": len(layers)},
            {"quantity": "change rows (vs year-0 control)", "count": len(changes)},
        ]
    )
    out.append(table_html(acc))
    by_reason = rows.get("rejected_by_reason") or (
        rejected["reason"].value_counts().to_dict() if len(rejected) else {}
    )
    if by_reason:
        out.append("<h3>Rejected rows by reason</h3>")
        out.append(
            table_html(pd.DataFrame({"reason": list(by_reason), "rows": list(by_reason.values())}))
        )
    else:
        out.append("<p>No input row was rejected.</p>")
    left = nested_get(rep, "changes", "left_out", default={}) or {}
    if left:
        out.append("<h3>Profiles without a change row</h3>")
        out.append(
            table_html(
                pd.DataFrame(
                    [
                        {
                            "reason": k,
                            "profiles": v.get("profiles"),
                            "layer_rows": v.get("layer_rows"),
                        }
                        for k, v in left.items()
                        if isinstance(v, Mapping)
                    ]
                )
            )
        )
    prof = layers.drop_duplicates("profile_id")
    ct = pd.crosstab(prof["vegetation"], prof["stage"]).reindex(
        columns=[s for s in schema.STAGES if s in set(prof["stage"])]
    )
    ct = ct.reset_index().rename(columns={"vegetation": "vegetation \\ stage"})
    out.append("<h3>Profiles by vegetation and stage</h3>")
    out.append(table_html(ct))
    ranges = pd.DataFrame(
        [
            {
                "variable": c,
                "min": float(prof[c].min()),
                "median": float(prof[c].median()),
                "max": float(prof[c].max()),
            }
            for c in ("years", "map_mm", "mat_c")
            if c in prof
        ]
    )
    out.append("<h3>Ranges</h3>" + table_html(ranges))
    n_el = layers.groupby(["element", "layer"]).size().unstack("layer")
    n_el = n_el.reindex(columns=[c for c in schema.ALL_LAYERS if c in n_el.columns])
    out.append("<h3>Layer rows by element and layer</h3>" + table_html(n_el.reset_index()))
    return "\n".join(out)


def _drivers_and_controls_html(rep: Mapping) -> str:
    """Rows without a climate driver (kept, left out only where the driver is needed) and the
    number of changes per control rule."""
    out = []
    md = rep.get("missing_drivers") or {}
    rows = [
        {
            "driver": d,
            "input rows without it": v.get("input_rows"),
            "layer rows": v.get("layer_rows"),
            "change rows": v.get("change_rows"),
        }
        for d in schema.DRIVERS
        if isinstance(v := md.get(d), Mapping) and v.get("input_rows")
    ]
    if rows:
        out.append("<h3>Rows without a climate driver</h3>")
        out.append(
            "<p>Kept for the layers, stage rates and Kruskal-Wallis tests; left out of the "
            "turning points on that driver, the shallow-to-deep fill and the Bayesian climate "
            "model.</p>" + table_html(pd.DataFrame(rows))
        )
    rules = nested_get(rep, "changes", "by_control_rule", default={}) or {}
    used = {k: v for k, v in rules.items() if isinstance(v, Mapping) and v.get("change_rows")}
    if used:
        out.append(
            "<p>Changes per control rule: "
            + esc(
                ", ".join(
                    f"{k} {v['change_rows']} rows ({v.get('profiles', '?')} profiles)"
                    for k, v in used.items()
                )
            )
            + ".</p>"
        )
    return "\n".join(out)


def harmonization_section(inp: ReportInputs) -> str:
    rep = getattr(inp.harmonized, "report", {}) or {}
    out = []
    bd = rep.get("bulk_density", {}) or {}
    settings = rep.get("settings", {}) or {}
    method = bd.get("method", settings.get("bd_method", "?"))
    out.append(
        f"<p>Bulk density where not measured: <strong>{esc(method)}</strong> "
        f"({esc(bd.get('n_rows_measured', '?'))} rows with measured BD, "
        f"{esc(bd.get('n_rows_needing_estimate', '?'))} estimated). Stocks = concentration x BD x "
        "thickness / 10 (Eq. 1-2); SOC = 0.58 x SOM where only SOM is given.</p>"
    )
    cv_rows = []
    for scheme, label in (
        ("kfold", "10-fold CV (random rows)"),
        ("group_kfold", "10-fold CV grouped by study"),
    ):
        block = nested_get(bd, "cv", scheme, default={}) or {}
        for m in ("rf", "ptf"):
            if isinstance(block.get(m), Mapping):
                cv_rows.append(
                    {
                        "scheme": label,
                        "method": m,
                        "R2": block[m].get("r2"),
                        "RMSE (g cm-3)": block[m].get("rmse"),
                        "n": block[m].get("n"),
                    }
                )
    if cv_rows:
        out.append("<h3>Bulk density: cross-validated accuracy (same folds)</h3>")
        out.append(table_html(pd.DataFrame(cv_rows)))
    choice = bd.get("choice") or {}
    if choice.get("reason"):
        out.append(
            f"<p>Method chosen: <strong>{esc(choice.get('chosen'))}</strong> (requested "
            f"{esc(choice.get('requested'))}): {esc(choice['reason'])}.</p>"
        )
    sd = bd.get("predictive_sd_relative") or {}
    if sd:
        out.append(
            "<p>Predictive uncertainty of an estimated bulk density (relative sd, carried into "
            f"the Bayesian models with every stock that rests on it): {sd['study']:.1%} shared "
            f"by a study's estimates, {sd['row']:.1%} per row ({esc(sd.get('source', ''))}).</p>"
        )
    for warning in rep.get("warnings") or []:
        out.append(f"<p class='warning'><strong>Warning:</strong> {esc(warning)}</p>")
    out.append(_drivers_and_controls_html(rep))
    counts = rep.get("bd_method_counts") or {}
    if counts:
        out.append(
            "<p>Bulk density source of the layer rows: "
            + esc(", ".join(f"{k} {v}" for k, v in counts.items()))
            + ".</p>"
        )
    deep = rep.get("shallow_to_deep", {}) or {}
    deep_rows = []
    for el in schema.ELEMENTS:
        d = deep.get(el)
        if not isinstance(d, Mapping):
            continue
        for key, label in (
            ("cv", "10-fold CV (random)"),
            ("cv_grouped_by_study", "10-fold CV grouped by study"),
        ):
            c = d.get(key)
            if isinstance(c, Mapping):
                deep_rows.append(
                    {
                        "element": el,
                        "scheme": label,
                        "R2": c.get("r2"),
                        "RMSE (Mg ha-1)": c.get("rmse"),
                        "n": c.get("n"),
                        "profiles filled": d.get("n_filled"),
                    }
                )
    out.append("<h3>Shallow-to-deep prediction of the 100-200 cm stock</h3>")
    if deep_rows:
        if deep.get("model"):
            out.append(
                f"<p>Model: {esc(deep['model'])}. Filled rows are flagged "
                "<code>deep_imputed</code> and can be excluded "
                "(<code>--exclude-deep-imputed</code>).</p>"
            )
        out.append(table_html(pd.DataFrame(deep_rows)))
    else:
        out.append("<p class='meta'>No shallow-to-deep report.</p>")
    rule = nested_get(rep, "depth", "coverage_rule")
    if rule:
        out.append(f"<p>Depth coverage rule: {esc(rule)}.</p>")
    out.append(_esm_part(inp))
    if rep:
        out.append(
            details_html(
                "the full harmonization report (JSON)",
                f"<pre>{esc(json.dumps(rep, indent=1, default=str))}</pre>",
            )
        )
    return "\n".join(out)


def _esm_part(inp: ReportInputs) -> str:
    """Equivalent soil mass: what it served, why rows stayed on fixed depth, and how much the
    frequentist rates and turning points move (ESM data only)."""
    rep = getattr(inp.harmonized, "report", {}) or {}
    esm = rep.get("esm")
    if not esm:
        return (
            "<p>Stocks on fixed depth (the paper's method; <code>--stocks esm</code> "
            "gives equivalent soil mass).</p>"
        )
    out = [
        "<h3 id='esm'>Equivalent soil mass</h3>",
        f"<p>{esc(esm.get('method', ''))}. {esc(esm.get('layer_rows_esm', '?'))} layer rows on "
        f"ESM, {esc(esm.get('layer_rows_fixed_fallback', '?'))} kept on fixed depth "
        "(<code>esm_status</code> says why, per row).</p>",
    ]
    reasons = esm.get("fixed_fallback_by_reason") or {}
    if reasons:
        out.append(
            table_html(
                pd.DataFrame(
                    {"kept on fixed depth because": list(reasons), "rows": list(reasons.values())}
                )
            )
        )
    shift = inp.stock_shift
    if shift is not None:
        rates = shift.get("rates", pd.DataFrame())
        out.append(
            "<h3>How much the frequentist answers move: fixed depth vs ESM</h3>"
            f"<p>{esc(shift_summary(rates))}</p>"
        )
        out.append(details_html("stage rates on both stock methods", table_html(rates)))
        bps = shift.get("breakpoints")
        if bps is not None and len(bps):
            out.append(details_html("turning points on both stock methods", table_html(bps)))
    return "\n".join(out)
