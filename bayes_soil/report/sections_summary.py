"""The top of the page: the title line with its banners (synthetic data, quick fits, failed or
missing fits) and the key findings, written as sentences from the comparison."""

from __future__ import annotations

from datetime import UTC, datetime

from bayes_soil import __version__
from bayes_soil.compare import interval_name
from bayes_soil.io import SYNTHETIC_LABEL
from bayes_soil.posterior import break_decision
from bayes_soil.report import sentences as S
from bayes_soil.report.html_parts import (
    diag_text,
    esc,
    failed_fit_note,
    json_attr,
    list_html,
    stock_method_text,
)
from bayes_soil.report.inputs import QUICK_LABEL, ReportInputs


def header_html(inp: ReportInputs) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sha = str(getattr(inp.harmonized, "data_sha256", ""))
    parts = [
        f"<h1>{esc(inp.title)}</h1>",
        f"<p class='meta'>Data: {esc(inp.data_label)} · SHA-256 <code>{esc(sha[:16])}…</code> · "
        f"stocks: <span id='stock-method'>{esc(stock_method_text(inp.harmonized))}</span> · "
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
            d = json_attr(f.dt, "diagnostics")
            parts.append(
                f"<div class='banner'>The {esc(f.model)} fit {esc(f.path)} FAILED its "
                f"diagnostics ({esc(d.get('problems') or diag_text(d))}). Its results are "
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


def findings_section(inp: ReportInputs) -> str:
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
        + failed_fit_note(inp.fits)
        + list_html(items)
    )
