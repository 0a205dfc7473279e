"""Assemble the self-contained HTML report from results already computed.

One file: CSS inline, figures inline as base64 PNG, tables as HTML, the CSV tables as
``data:`` downloads; no network request, no external font or script, readable offline and
printable. Nothing here fits or harmonizes (``bayes_soil.workflow`` runs what is missing); this
module only turns results into a page, so it can be tested on fake posteriors.
"""

from __future__ import annotations

import base64
import contextvars
import html
import io
import json
import platform
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayes_soil import __version__, schema
from bayes_soil.compare import Comparison, definitions, fit_kind, interval_name
from bayes_soil.fits import library_versions
from bayes_soil.frequentist.kruskal import FACTORS
from bayes_soil.frequentist.stock_shift import shift_summary
from bayes_soil.io import SYNTHETIC_LABEL, AtomicOutputs, atomic_path, stock_method_of
from bayes_soil.posterior import break_decision, years_to_gain_table
from bayes_soil.report import sentences as S

# freq_figures and posterior_figures load matplotlib: they are imported where figures are drawn

QUICK_LABEL = (
    "QUICK MODE: the fits were run with few draws for a smoke test; the numbers below are not "
    "fit for inference"
)


@dataclass
class FitRecord:
    """A fit and where it came from (path in the store, reused or just run)."""

    dt: xr.DataTree
    path: str = ""
    origin: str = "given"  # "given", "reused from the store", "run now"

    @property
    def model(self) -> str:
        return str(self.dt.attrs.get("model", "?"))

    @property
    def verdict(self) -> str:
        return str(self.dt.attrs.get("diagnostics_verdict", "unknown"))

    @property
    def kind(self) -> str:
        return fit_kind(self.dt)


@dataclass
class ReportInputs:
    """Everything the page shows. ``harmonized`` is a HarmonizeResult (layers, changes,
    rejected, report, synthetic, data_sha256); ``freq`` the frequentist tables by name."""

    harmonized: Any
    freq: Mapping[str, pd.DataFrame]
    fits: Sequence[FitRecord] = ()
    comparison: Comparison | None = None
    data_label: str = "bundled synthetic demo"
    hdi_prob: float = 0.94
    quick: bool = False
    log: list[str] = field(default_factory=list)
    fit_errors: Mapping[str, str] = field(default_factory=dict)  # model -> why it did not run
    calibration: pd.DataFrame | None = None  # from `calibrate` folders (report --calibration)
    # ESM data only: frequentist rates and turning points on fixed depth vs ESM
    # (bayes_soil.frequentist.stock_shift.esm_vs_fixed: "rates", "breakpoints")
    stock_shift: Mapping[str, pd.DataFrame] | None = None
    title: str = "bayes_soil report: soil C and N stocks after revegetation"

    @property
    def synthetic(self) -> bool:
        from bayes_soil.report.posterior_figures import fit_is_synthetic

        return bool(getattr(self.harmonized, "synthetic", False)) or any(
            fit_is_synthetic(f.dt) for f in self.fits
        )

    def fits_of(self, kind: str) -> list[FitRecord]:
        return [f for f in self.fits if f.kind == kind]


# ------------------------------------------------------------------------------------------
# building blocks

CSS = """
:root { --fg:#1a1a1a; --muted:#555; --line:#d9d9d9; --bad:#b2182b; --good:#1b7837;
        --warn:#8c510a; --bg-soft:#f6f6f4; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial,
       sans-serif; color: var(--fg); max-width: 1180px; margin: 0 auto; padding: 1.2rem 1.6rem 4rem;
       line-height: 1.45; font-size: 15px; background: #fff; }
h1 { font-size: 1.6rem; margin: 0.2rem 0 0.4rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid var(--fg); padding-bottom: 0.2rem;
     margin-top: 2.4rem; }
h3 { font-size: 1.08rem; margin-top: 1.6rem; }
p, li { max-width: 62rem; }
.meta { color: var(--muted); font-size: 0.9rem; }
.banner { border: 2px solid var(--bad); color: var(--bad); background: #fff5f5;
          padding: 0.6rem 0.9rem; font-weight: 600; margin: 0.6rem 0; border-radius: 4px; }
.banner.warn { border-color: var(--warn); color: var(--warn); background: #fffaf0; }
.badge { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 3px; color: #fff;
         font-weight: 600; font-size: 0.85rem; }
.badge.pass { background: var(--good); } .badge.fail { background: var(--bad); }
.badge.unknown { background: #777; }
nav.toc { background: var(--bg-soft); padding: 0.5rem 1rem; border-radius: 4px; }
nav.toc ol { margin: 0.2rem 0; columns: 2; }
table.tbl { border-collapse: collapse; font-size: 0.82rem; margin: 0.5rem 0 1rem;
            font-variant-numeric: tabular-nums; }
table.tbl th, table.tbl td { border-bottom: 1px solid var(--line); padding: 0.18rem 0.5rem;
                             text-align: right; vertical-align: top; }
table.tbl th { background: var(--bg-soft); position: sticky; top: 0; }
table.tbl td.txt, table.tbl th.txt { text-align: left; }
table.tbl td, table.tbl th { white-space: nowrap; }
table.tbl td.wrap { white-space: normal; min-width: 16rem; max-width: 40rem;
                    word-break: break-word; }
tr.disagree td { background: #fde0dc; } tr.postonly td { background: #e8f1fa; }
tr.failed td { color: var(--bad); }
figure { margin: 1rem 0 1.6rem; break-inside: avoid; page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 0.88rem; color: var(--muted); margin-top: 0.3rem; max-width: 62rem; }
details { margin: 0.4rem 0 1rem; } summary { cursor: pointer; color: #2166ac; }
pre { background: var(--bg-soft); padding: 0.6rem; overflow-x: auto; font-size: 0.78rem;
      white-space: pre-wrap; word-break: break-word; }
ul.findings li { margin-bottom: 0.25rem; }
.error { color: var(--bad); border: 1px dashed var(--bad); padding: 0.5rem; }
.downloads a { margin-right: 1rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav.toc, .downloads { display: none; }
  h2 { break-before: page; } h2.first { break-before: avoid; }
  table.tbl th { position: static; }
  a { color: inherit; text-decoration: none; }
}
@page { margin: 15mm; }
"""

# Opens every <details> before printing so that nothing folded is lost on paper. Inline: the
# page loads nothing from anywhere.
PRINT_SCRIPT = (
    "window.addEventListener('beforeprint',function(){"
    "document.querySelectorAll('details').forEach(function(d){d.open=true;});});"
)


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _fmt_cell(v: object, col: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return f"{int(v):d}"
    if isinstance(v, float | np.floating):
        v = float(v)
        if col in ("p", "davies_p") or col.endswith("_p"):
            return S.fmt_p_value(v)
        if col.startswith("p_") or col in ("p_positive",):
            return f"{v:.2f}"
        if col in ("n", "df", "cells") and v == int(v):
            return f"{int(v):d}"
        if col.startswith("ess"):
            return f"{v:.0f}"
        if col in ("r_hat", "max_r_hat"):
            return f"{v:.3f}"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        if a >= 0.01:
            return f"{v:.3f}"
        return f"{v:.2e}"
    return str(v)


def table_html(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    row_class: Callable[[pd.Series], str] | None = None,
    max_rows: int | None = None,
) -> str:
    """A DataFrame as an HTML table with numbers formatted for reading (text escaped)."""
    if df is None or len(df) == 0:
        return "<p class='meta'>(no rows)</p>"
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    shown = df if max_rows is None else df.head(max_rows)
    text_cols = {
        c
        for c in df.columns
        if df[c].dtype == object or str(df[c].dtype) in ("string", "str", "category")
    }
    long_cols = {c for c in text_cols if shown[c].astype(str).str.len().max() > 40}
    cell_cls = {
        c: ("txt wrap" if c in long_cols else "txt" if c in text_cols else "") for c in df.columns
    }
    head = "".join(f"<th class='{cell_cls[c]}'>{esc(c)}</th>" for c in df.columns)
    rows = []
    for _, r in shown.iterrows():
        cls = row_class(r) if row_class else ""
        cells = "".join(
            f"<td class='{cell_cls[c]}'>{esc(_fmt_cell(r[c], str(c)))}</td>" for c in df.columns
        )
        rows.append(f"<tr class='{cls}'>{cells}</tr>")
    more = ""
    if max_rows is not None and len(df) > max_rows:
        more = f"<p class='meta'>first {max_rows} of {len(df)} rows</p>"
    return (
        f"<table class='tbl'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        f"</table>{more}"
    )


def csv_download(df: pd.DataFrame, filename: str) -> str:
    """A link that saves ``df`` as CSV from a data: URI (no server involved)."""
    data = base64.b64encode(df.to_csv(index=False).encode()).decode()
    return f"<a download='{esc(filename)}' href='data:text/csv;base64,{data}'>{esc(filename)}</a>"


#: where figure_html also saves each figure as SVG and 300 dpi PNG (an AtomicOutputs), or None
_FIGURE_SINK: contextvars.ContextVar = contextvars.ContextVar("figure_sink", default=None)
FIGURE_PNG_DPI = 300


def _figure_stem(alt: str, taken: set[str]) -> str:
    stem = re.sub(r"[^a-z0-9]+", "_", alt.lower()).strip("_") or "figure"
    base, k = stem, 2
    while stem in taken:
        stem, k = f"{base}_{k}", k + 1
    taken.add(stem)
    return stem


def figure_html(make: Callable[[], Any], caption: str, alt: str) -> str:
    """Render a figure (a callable returning a matplotlib Figure or None) as an inline PNG.

    A figure that fails is shown as an error box with the reason rather than stopping the
    report; the error is also printed to stderr. While :func:`write_report` collects figure
    files, the figure is also saved as SVG and as a 300 dpi PNG.
    """
    import matplotlib.pyplot as plt

    try:
        fig = make()
    except Exception as exc:  # a broken figure must not hide the rest of the report
        print(f"report: figure '{alt}' failed: {exc}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return f"<p class='error'>Figure '{esc(alt)}' could not be drawn: {esc(exc)}</p>"
    if fig is None:
        return ""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    sink = _FIGURE_SINK.get()
    if sink is not None:
        stem = _figure_stem(alt, sink.taken)
        with plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(sink.path(f"{stem}.svg"), format="svg")
        fig.savefig(sink.path(f"{stem}.png"), format="png", dpi=FIGURE_PNG_DPI)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return (
        f"<figure><img alt='{esc(alt)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _details(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def _ul(items: Iterable[str], cls: str = "findings") -> str:
    items = list(items)
    if not items:
        return ""
    return f"<ul class='{cls}'>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def _badge(verdict: str) -> str:
    v = verdict if verdict in ("pass", "fail") else "unknown"
    text = {"pass": "PASSED", "fail": "FAILED"}.get(v, verdict.upper() or "UNKNOWN")
    return f"<span class='badge {v}'>{esc(text)}</span>"


def _json_attr(dt: xr.DataTree, name: str) -> dict:
    raw = dt.attrs.get(name)
    if isinstance(raw, dict):
        return raw
    try:
        out = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _get(d: Mapping, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return default
        d = d[k]
    return d


# ------------------------------------------------------------------------------------------
# sections


def _stock_method_text(harmonized) -> str:
    """'fixed depth', or 'equivalent soil mass (ESM; n of m layer rows, the rest fixed depth)'."""
    layers = getattr(harmonized, "layers", None)
    if stock_method_of(layers) != "esm":
        return "fixed depth"
    n_esm = int((layers["stock_method"] == "esm").sum())
    return (
        f"equivalent soil mass (ESM; {n_esm} of {len(layers)} layer rows, the rest on fixed "
        "depth: see esm_status)"
    )


def _header(inp: ReportInputs) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sha = str(getattr(inp.harmonized, "data_sha256", ""))
    parts = [
        f"<h1>{esc(inp.title)}</h1>",
        f"<p class='meta'>Data: {esc(inp.data_label)} · SHA-256 <code>{esc(sha[:16])}…</code> · "
        f"stocks: <span id='stock-method'>{esc(_stock_method_text(inp.harmonized))}</span> · "
        f"generated {esc(now)} by bayes_soil {esc(__version__)} · intervals: posterior "
        f"{esc(interval_name(inp.hdi_prob))}, OLS 95% CI</p>",
    ]
    if inp.synthetic:
        parts.append(
            f"<div class='banner' id='synthetic-banner'>{esc(SYNTHETIC_LABEL)}. Every "
            "number and figure in this report comes from simulated data.</div>"
        )
    if inp.quick:
        parts.append(f"<div class='banner warn' id='quick-banner'>{esc(QUICK_LABEL)}.</div>")
    for f in inp.fits:
        if f.verdict != "pass":
            d = _json_attr(f.dt, "diagnostics")
            parts.append(
                f"<div class='banner'>The {esc(f.model)} fit {esc(f.path)} FAILED its "
                f"diagnostics ({esc(d.get('problems') or _diag_text(d))}). Its results are "
                "shown below, marked as failed; do not rely on them.</div>"
            )
    missing = [
        m
        for m, kind in (("hier_rates", "rates"), ("climate_breakpoints", "breakpoints"))
        if not inp.fits_of(kind)
    ]
    for m, why in inp.fit_errors.items():
        parts.append(
            f"<div class='banner' id='fit-error-{esc(m)}'>Fitting {esc(m)} FAILED with an error: "
            f"{esc(why)}. The sections that need it say so.</div>"
        )
    for m in [m for m in missing if m not in inp.fit_errors]:
        parts.append(
            f"<div class='banner warn'>No {esc(m)} fit is available: the sections "
            "that need it say so.</div>"
        )
    return "\n".join(parts)


def _diag_text(d: Mapping) -> str:
    bits = []
    if "max_rhat" in d:
        bits.append(f"max R-hat {S.fmt_num(d['max_rhat'], 3)}")
    if "min_ess_bulk" in d:
        bits.append(f"min bulk ESS {S.fmt_num(d['min_ess_bulk'], 0)}")
    if d.get("min_ess_tail") is not None:
        bits.append(f"min tail ESS {S.fmt_num(d['min_ess_tail'], 0)} (reported, not gated)")
    if "divergences" in d:
        bits.append(f"{int(d['divergences'])} divergences")
    return ", ".join(bits)


SECTIONS = (
    ("findings", "Key findings"),
    ("data", "Data and row accounting"),
    ("harmonization", "Harmonization"),
    ("table1", "Table 1: Kruskal-Wallis tests"),
    ("frequentist", "Frequentist rates and breakpoints"),
    ("posterior", "Posterior rates and turning points"),
    ("comparison", "Frequentist vs posterior"),
    ("diagnostics", "Diagnostics"),
    ("calibration", "Calibration on simulated data"),
    ("provenance", "Provenance"),
    ("methods", "Methods"),
)


def _toc() -> str:
    items = "".join(f"<li><a href='#{sid}'>{esc(t)}</a></li>" for sid, t in SECTIONS)
    return f"<nav class='toc'><strong>Contents</strong><ol>{items}</ol></nav>"


def _section(sid: str, body: str, first: bool = False) -> str:
    title = dict(SECTIONS)[sid]
    cls = " class='first'" if first else ""
    return f"<section id='{sid}'><h2{cls}>{esc(title)}</h2>\n{body}\n</section>"


def _failed_note(records: Sequence[FitRecord]) -> str:
    bad = [r for r in records if r.verdict != "pass"]
    if not bad:
        return ""
    return "".join(
        f"<p class='banner'>Some numbers below come from the {esc(r.model)} fit, which "
        + ("FAILED its diagnostics" if r.verdict == "fail" else "has no diagnostics verdict")
        + ": read them as unreliable.</p>"
        for r in bad
    )


def _findings(inp: ReportInputs) -> str:
    items: list[str] = []
    cmp = inp.comparison
    if cmp is not None and len(cmp.rates):
        tot = cmp.rates[
            (cmp.rates["vegetation"] == "all")
            & (cmp.rates["layer"] == "0-200")
            & cmp.rates["mean"].notna()
        ]
        for _, r in tot.iterrows():
            items.append(S.rate_sentence(r))
        both = cmp.rates[cmp.rates["agreement"].isin(["agree", "disagree", "inconclusive"])]
        if len(both):
            n = both["agreement"].value_counts()
            items.append(
                f"Of {len(both)} rate cells that both estimate, OLS and posterior agree in "
                f"{n.get('agree', 0)}, disagree in {n.get('disagree', 0)} and are inconclusive "
                f"in {n.get('inconclusive', 0)} ({cmp.rates['agreement_rule'].iloc[0]})."
            )
        n_po = int((cmp.rates["agreement"] == "posterior only").sum())
        if n_po:
            items.append(
                f"{n_po} rate cell(s) could not be estimated by OLS; the hierarchical "
                "model still estimates them (see the comparison section)."
            )
    if cmp is not None and len(cmp.breakpoints):
        bp = cmp.breakpoints[cmp.breakpoints["p_break"].notna()]
        decision = bp["p_break"].map(break_decision)
        found = bp[decision == "turning point"]
        for _, r in found.iterrows():
            items.append(S.turning_point_sentence(r))
        undecided = bp[decision == "the data do not decide"]
        if len(undecided):
            items.append(
                f"For {len(undecided)} element x driver x layer cell(s) the data do not decide "
                "whether there is a turning point (0.2 < P(turning point) < 0.8); for "
                f"{len(bp) - len(found) - len(undecided)} the model finds none (P <= 0.2). "
                "All cells are in the turning-point section."
            )
        elif len(bp) > len(found):
            items.append(
                f"For the other {len(bp) - len(found)} element x driver x layer cells the model "
                "finds no turning point (P(turning point) <= 0.2); see the turning-point section."
            )
    if not items:
        return "<p>No posterior results are available (see the banners above).</p>"
    return (
        f"<p class='meta'>Generated from the numbers; intervals are "
        f"{esc(interval_name(inp.hdi_prob))} unless stated.</p>"
        + _failed_note(inp.fits)
        + _ul(items)
    )


def _data_section(inp: ReportInputs) -> str:
    h = inp.harmonized
    layers, changes, rejected = h.layers, h.changes, h.rejected
    rep = getattr(h, "report", {}) or {}
    out = []
    if inp.synthetic:
        out.append(f"<p class='banner'>{esc(SYNTHETIC_LABEL)}</p>")
    rows = _get(rep, "rows", default={}) or {}
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
    left = _get(rep, "changes", "left_out", default={}) or {}
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
    rules = _get(rep, "changes", "by_control_rule", default={}) or {}
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


def _harmonization_section(inp: ReportInputs) -> str:
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
        block = _get(bd, "cv", scheme, default={}) or {}
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
    rule = _get(rep, "depth", "coverage_rule")
    if rule:
        out.append(f"<p>Depth coverage rule: {esc(rule)}.</p>")
    out.append(_esm_part(inp))
    if rep:
        out.append(
            _details(
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
        out.append(_details("stage rates on both stock methods", table_html(rates)))
        bps = shift.get("breakpoints")
        if bps is not None and len(bps):
            out.append(_details("turning points on both stock methods", table_html(bps)))
    return "\n".join(out)


def _table1_section(inp: ReportInputs) -> str:
    kr = inp.freq.get("kruskal")
    if kr is None or len(kr) == 0:
        return "<p>No Kruskal-Wallis table (frequentist results missing).</p>"
    resp = ", ".join(sorted({str(r) for r in kr["response"].dropna()}))
    wide = kr.pivot_table(
        index=["element", "layer"], columns="factor", values=["H", "p"], aggfunc="first", sort=False
    )
    wide.columns = [f"{f} {stat}" for stat, f in wide.columns]
    order = [f"{f} {s}" for f in FACTORS for s in ("H", "p")]
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    return (
        f"<p>Kruskal-Wallis H (tie-corrected) and p for differences in {esc(resp)} between "
        "vegetation types, stages and the combined vegetation x stage groups, per element and "
        "layer (the paper's Table 1). The third test is Kruskal-Wallis on the combined groups, "
        "not an interaction test; with one vegetation type it repeats the stage test.</p>"
        + table_html(wide)
        + _details("long format with df and n", table_html(kr))
    )


def _freq_section(inp: ReportInputs) -> str:
    out = []
    rates = inp.freq.get("rates")
    if rates is not None and len(rates):
        all_veg = rates[rates["vegetation"] == "all"]
        out.append("<h3>Stage-wise rates (OLS of stock on years within each stage, Eq. 6-7)</h3>")
        out.append(
            "<p class='meta'>All vegetation pooled; slopes k in Mg ha-1 yr-1 with the 95% CI of "
            "the OLS slope (ci_low, ci_high; rows iid, as R's lm) and the 95% CI, study cluster "
            "bootstrap (ci95_cluster_low, ci95_cluster_high; studies resampled, which respects "
            "the clustering of rows). The per-vegetation table is folded below.</p>"
        )
        cols = [
            "element",
            "layer",
            "stage",
            "k",
            "se",
            "ci_low",
            "ci_high",
            "ci95_cluster_low",
            "ci95_cluster_high",
            "p",
            "n",
            "n_studies",
            "status",
            "reason",
        ]
        out.append(table_html(all_veg, cols))
        out.append(
            _details(
                "rates for every vegetation type",
                table_html(
                    rates[rates["vegetation"] != "all"],
                    ["element", "layer", "vegetation", *cols[2:]],
                ),
            )
        )
    else:
        out.append("<p>No frequentist rates.</p>")
    bps = inp.freq.get("breakpoints")
    out.append("<h3>Segmented regression of change rates on climate (Davies test)</h3>")
    if bps is not None and len(bps):
        out.append(
            "<p class='meta'>psi +- psi_se: segmented's delta-method SE (rows iid); "
            "psi_ci95_cluster_low/high: psi's 95% CI, study cluster bootstrap. "
            "driver_correlation: Pearson r of MAP and MAT over the rows used; better_driver: the "
            "driver whose segmented fit has the higher R^2; note: where the drivers co-vary, a "
            "turning point may be carried by the other driver.</p>"
        )
        extra = ["psi_ci95_cluster_low", "psi_ci95_cluster_high", "driver_correlation"]
        extra += ["better_driver", "status", "reason", "note"]
        out.append(table_html(bps, [*schema.BREAKPOINT_COLUMNS, *extra]))
    else:
        out.append("<p>No breakpoint table.</p>")
    out.append(_freq_figures(inp))
    return "\n".join(out)


def _freq_figures(inp: ReportInputs) -> str:
    """Figures of the frequentist side, drawn by ``bayes_soil.report.freq_figures``."""
    from bayes_soil.report import freq_figures as ff

    out = []
    syn = inp.synthetic
    layers = getattr(inp.harmonized, "layers", None)
    changes = getattr(inp.harmonized, "changes", None)
    rates, ratios, bps = (inp.freq.get(k) for k in ("rates", "rate_ratios", "breakpoints"))
    if layers is not None and len(layers):
        for el in [e for e in schema.ELEMENTS if e in set(layers["element"])]:
            out.append(
                figure_html(
                    lambda el=el: ff.fig_stocks(layers, el, synthetic=syn),
                    f"{el} stocks by stage and vegetation, one panel per layer (as the paper's "
                    "Figs 2-3).",
                    f"stocks {el}",
                )
            )
    if rates is not None and len(rates):
        out.append(
            figure_html(
                lambda: ff.fig_rates(rates, synthetic=syn),
                "OLS stage rates with their 95% CIs (as the paper's Fig 4).",
                "frequentist rates",
            )
        )
    if ratios is not None and len(ratios) and ff.has_n_ratios(ratios):  # no N: no empty panels
        out.append(
            figure_html(
                lambda: ff.fig_rate_ratios(ratios, synthetic=syn),
                "C:N rate ratios k_C / k_N of the OLS slopes (as Fig 5).",
                "frequentist rate ratios",
            )
        )
    if bps is not None and len(bps) and changes is not None and len(changes):
        for drv in schema.DRIVERS:
            out.append(
                figure_html(
                    lambda drv=drv: ff.fig_breakpoints(changes, bps, drv, synthetic=syn),
                    f"Change rate against {drv}: one-breakpoint segmented regression with psi ± "
                    "1.96 SE and the Davies test (as Figs 6-7).",
                    f"segmented {drv}",
                )
            )
    return "\n".join(out)


def _posterior_section(inp: ReportInputs) -> str:
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
        out.append(_failed_note(rate_fits))
        for el in schema.ELEMENTS:
            sub = cmp.rates[
                (cmp.rates["element"] == el)
                & (cmp.rates["vegetation"] == "all")
                & cmp.rates["mean"].notna()
            ]
            if not len(sub):
                continue
            out.append(f"<h4>{esc(el)}: all vegetation (equal-weight mean over types)</h4>")
            out.append(_ul(S.rate_sentence(r) for _, r in sub.iterrows()))
        for rec in rate_fits:
            dt = rec.dt
            els = [str(e) for e in dt["posterior"]["rate"]["element"].values]
            for el in els:
                out.append(
                    figure_html(
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
                figure_html(
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
            _details(
                "posterior rates for every vegetation type",
                table_html(veg, list(schema.RATES_POSTERIOR_COLUMNS)),
            )
        )
    out.append("<h3>Turning points along climate (climate_breakpoints)</h3>")
    bp_fits = inp.fits_of("breakpoints")
    if not bp_fits or cmp is None or not len(cmp.breakpoints):
        out.append("<p>No climate_breakpoints fit: no posterior turning points.</p>")
    else:
        out.append(_failed_note(bp_fits))
        bp = cmp.breakpoints[cmp.breakpoints["p_break"].notna()]
        out.append(_ul(S.turning_point_sentence(r) for _, r in bp.iterrows()))
        if cmp.psi_diff is not None and len(cmp.psi_diff):
            out.append(_ul(S.psi_diff_sentence(r) for _, r in cmp.psi_diff.iterrows()))
        out.append(
            "<p class='meta'>P(turning point) is the exact posterior probability (prior 0.5) "
            "that the change rate has a kink along the driver; 'the data do not decide' where "
            "it lies between 0.2 and 0.8. psi's interval is given a turning point.</p>"
        )
        for rec in bp_fits:
            out.append(
                figure_html(
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


def _comparison_section(inp: ReportInputs) -> str:
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
            out.append(_ul(S.comparison_sentence(x) for _, x in special.iterrows()))
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
                    figure_html(
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
            _details(
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


def _diagnostics_section(inp: ReportInputs) -> str:
    from bayes_soil.report import posterior_figures as pf

    if not inp.fits:
        return "<p>No fits, no diagnostics.</p>"
    out = []
    for rec in inp.fits:
        dt = rec.dt
        d = _json_attr(dt, "diagnostics")
        ss = pf.sampler_summary(dt)
        out.append(f"<h3>{esc(rec.model)} {_badge(rec.verdict)}</h3>")
        out.append(
            f"<p>{esc(rec.path or '(in memory)')} — {esc(rec.origin)}. {esc(ss.get('chains'))} "
            f"chains x {esc(ss.get('draws'))} draws; divergences: "
            f"{esc(ss.get('divergences', d.get('divergences', 'n/a')))}; "
            f"{esc(_diag_text(d))}.</p>"
        )
        if d.get("problems"):
            out.append(f"<p class='banner'>Problems: {esc(d['problems'])}</p>")
        if d.get("advice"):
            out.append(f"<p>Advice: {esc(d['advice'])}</p>")
        if "rhat_max_allowed" in d or "ess_bulk_min_required" in d:
            out.append(
                f"<p class='meta'>Gate: R-hat &le; {esc(d.get('rhat_max_allowed', '?'))}, "
                f"bulk ESS &ge; {esc(d.get('ess_bulk_min_required', '?'))}, no divergences."
                "</p>"
            )
        try:
            tab = pf.diagnostics_table(dt)
        except Exception as exc:
            out.append(f"<p class='error'>R-hat/ESS table failed: {esc(exc)}</p>")
        else:
            out.append(
                table_html(
                    tab,
                    row_class=lambda x: (
                        "failed" if (np.isfinite(x["max_r_hat"]) and x["max_r_hat"] > 1.01) else ""
                    ),
                )
            )
        out.append(
            figure_html(
                lambda dt=dt: pf.rank_plots(dt),
                "Rank plots of the cells with "
                "the highest R-hat: each line is one chain; uniform ranks (flat "
                "lines) mean the chains explore the same distribution.",
                f"rank plots {rec.model}",
            )
        )
        out.append(
            figure_html(
                lambda dt=dt: pf.ppc_plot(dt),
                "Posterior predictive check: "
                "densities of datasets replicated from the posterior against the "
                "observed data (on the model's scale).",
                f"ppc {rec.model}",
            )
        )
    return "\n".join(out)


def _calibration_section(inp: ReportInputs) -> str:
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


def _provenance_section(inp: ReportInputs) -> str:
    h = inp.harmonized
    rep = getattr(h, "report", {}) or {}
    rows = [
        {"item": "data", "value": inp.data_label},
        {"item": "data SHA-256", "value": str(getattr(h, "data_sha256", ""))},
        {"item": "synthetic", "value": "yes" if inp.synthetic else "no"},
        {"item": "stock method", "value": _stock_method_text(h)},
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
            out.append(_details(f"model spec of {rec.model}", f"<pre>{esc(spec)}</pre>"))
        sha = str(getattr(h, "data_sha256", ""))
        if a.get("data_sha256") and sha and a.get("data_sha256") != sha:
            out.append(
                f"<p class='banner'>This fit was made from other data (data_sha256 "
                f"{esc(str(a.get('data_sha256'))[:12])}…) than the data summarised here "
                f"({esc(sha[:12])}…).</p>"
            )
    if inp.log:
        out.append("<h3>What this report run did</h3>" + _ul(inp.log, cls="log"))
    out.append(
        "<p class='meta'>Libraries used to build this page: "
        + esc(", ".join(f"{k} {v}" for k, v in library_versions().items()))
        + ".</p>"
    )
    return "\n".join(out)


def _methods_section(inp: ReportInputs) -> str:
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
        s = _json_attr(rec.dt, "sampler")
        samp = (
            f"{s.get('sampler', rec.dt.attrs.get('sampler_name', '?'))} "
            f"({s.get('chains', '?')} chains x {s.get('draws', '?')} draws after "
            f"{s.get('tune', '?')} tuning steps, seed {rec.dt.attrs.get('seed', '?')})"
        )
        if rec.kind == "rates":
            deep_mode = rec.dt.attrs.get("deep_imputed", "missing")
            n_left = rec.dt.attrs.get("n_deep_imputed_left_out")
            deep_text = (
                f"Imputed values are not data: the {n_left} 100-200 cm stocks filled by the "
                "shallow-to-deep function were left out of this fit (missing cells), while the "
                "frequentist reproduction keeps the paper's fill."
                if deep_mode == "missing"
                else "The 100-200 cm stocks filled by the shallow-to-deep function were fitted "
                "as if measured (data.deep_imputed = 'as_data')."
            )
            parts.append(
                "The hierarchical model hier_rates describes each layer stock as a continuous, "
                "piecewise-linear trajectory in years since revegetation with one rate per "
                "stage, vegetation type and layer; rates are partially pooled across vegetation "
                "types toward a stage x layer mean; site and chronosequence effects on the "
                "baseline and on the rate absorb differences between places and studies (they are "
                "integrated out exactly), and errors are Gaussian. The 0-200 cm rate is the sum "
                "of the layer rates in every draw, and the pooled ('all') rate is the "
                f"equal-weight mean over vegetation types. {deep_text} It was sampled with {samp}."
            )
        else:
            parts.append(
                "The turning-point model climate_breakpoints regresses change rates on MAP or "
                "MAT with a hinge at psi (slopes k1 before and k2 after) or no hinge at all "
                "(prior probability 0.5), psi on a grid between the 10th and 90th percentiles "
                "of the driver and summed out exactly, with study effects, per-site effects and "
                "an error that shrinks with the length of the chronosequence; it gives the "
                "probability of a turning point per cell, and with both drivers in one model "
                f"which driver carries it. It was sampled with {samp}."
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


def build_html(inp: ReportInputs) -> str:
    """The whole page as one string (self-contained)."""
    body = [
        _header(inp),
        _toc(),
        _section("findings", _findings(inp), first=True),
        _section("data", _data_section(inp)),
        _section("harmonization", _harmonization_section(inp)),
        _section("table1", _table1_section(inp)),
        _section("frequentist", _freq_section(inp)),
        _section("posterior", _posterior_section(inp)),
        _section("comparison", _comparison_section(inp)),
        _section("diagnostics", _diagnostics_section(inp)),
        _section("calibration", _calibration_section(inp)),
        _section("provenance", _provenance_section(inp)),
        _section("methods", _methods_section(inp)),
    ]
    title = inp.title + (" (SYNTHETIC data)" if inp.synthetic else "")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # forbid every network fetch: the page must stand alone
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{PRINT_SCRIPT}</script>\n</body></html>\n"
    )


def figures_dir_of(out: str | Path) -> Path:
    """The folder beside the page that holds its figures: ``report.html`` -> ``report_figures``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_figures")


def write_report(inp: ReportInputs, out: str | Path, *, figure_files: bool = True) -> Path:
    """Build the page and write it atomically to ``out``; with ``figure_files`` every figure
    is also written as SVG and 300 dpi PNG to :func:`figures_dir_of` (published with the page,
    or not at all)."""
    out = Path(out)
    if not figure_files:
        text = build_html(inp)
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return out
    with AtomicOutputs(figures_dir_of(out)) as sink:
        sink.taken = set()
        token = _FIGURE_SINK.set(sink)
        try:
            text = build_html(inp)
        finally:
            _FIGURE_SINK.reset(token)
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return out
