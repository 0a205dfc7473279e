"""Small HTML pieces shared by the section builders: escaping, tables, downloads, folds, lists,
badges, and the few sentences more than one section writes. Pure strings: no figures here
(``figure_embed``) and no knowledge of the page's layout (``html``)."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayes_soil.fits import nuisance_summary
from bayes_soil.io import stock_method_of
from bayes_soil.report import sentences as S
from bayes_soil.report.inputs import FitRecord


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


def details_html(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def list_html(items: Iterable[str], cls: str = "findings") -> str:
    items = list(items)
    if not items:
        return ""
    return f"<ul class='{cls}'>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def badge_html(verdict: str) -> str:
    v = verdict if verdict in ("pass", "fail") else "unknown"
    text = {"pass": "PASSED", "fail": "FAILED"}.get(v, verdict.upper() or "UNKNOWN")
    return f"<span class='badge {v}'>{esc(text)}</span>"


def json_attr(dt: xr.DataTree, name: str) -> dict:
    raw = dt.attrs.get(name)
    if isinstance(raw, dict):
        return raw
    try:
        out = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def nested_get(d: Mapping, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return default
        d = d[k]
    return d


def stock_method_text(harmonized) -> str:
    """'fixed depth', or 'equivalent soil mass (ESM; n of m layer rows, the rest fixed depth)'."""
    layers = getattr(harmonized, "layers", None)
    if stock_method_of(layers) != "esm":
        return "fixed depth"
    n_esm = int((layers["stock_method"] == "esm").sum())
    return (
        f"equivalent soil mass (ESM; {n_esm} of {len(layers)} layer rows, the rest on fixed "
        "depth: see esm_status)"
    )


def diag_text(d: Mapping) -> str:
    bits = []
    if "max_rhat" in d:
        bits.append(f"max R-hat {S.fmt_num(d['max_rhat'], 3)}")
    if "min_ess_bulk" in d:
        bits.append(f"min bulk ESS {S.fmt_num(d['min_ess_bulk'], 0)}")
    if d.get("min_ess_tail") is not None:
        gated = "ess_tail_min_required" in d  # fits made before the tail ESS was gated
        bits.append(
            f"min tail ESS {S.fmt_num(d['min_ess_tail'], 0)}" + ("" if gated else " (not gated)")
        )
    if "divergences" in d:
        bits.append(f"{int(d['divergences'])} divergences")
    return ", ".join(bits) + nuisance_text(d)


def nuisance_text(d: Mapping) -> str:
    """'; worst nuisance parameter: ...' when the gate listed nuisance parameters."""
    summary = nuisance_summary(d)
    if not summary:
        return ""
    return (
        f"; nuisance parameters (not shown, they fail the fit only above R-hat "
        f"{d.get('nuisance_rhat_max_allowed', 1.05)}): {summary}"
    )


def failed_fit_note(records: Sequence[FitRecord]) -> str:
    bad = [r for r in records if r.verdict != "pass"]
    if not bad:
        return ""
    return "".join(
        f"<p class='banner'>Some numbers below come from the {esc(r.model)} fit, which "
        + ("FAILED its diagnostics" if r.verdict == "fail" else "has no diagnostics verdict")
        + ": read them as unreliable.</p>"
        for r in bad
    )
