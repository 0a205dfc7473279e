"""Assemble the self-contained HTML report from results already computed.

One file: CSS inline, figures inline as base64 PNG, tables as HTML, the CSV tables as
``data:`` downloads; no network request, no external font or script, readable offline and
printable. Nothing here fits or harmonizes (``bayes_soil.workflow`` runs what is missing); this
module only turns results into a page, so it can be tested on fake posteriors.

The page is ``page.html`` (a :class:`string.Template`) filled with ``report.css``, both package
data, and with the sections built by the ``sections_*`` modules. The template's
Content-Security-Policy forbids every network fetch (the page must stand alone), and its one
inline script opens every ``<details>`` before printing so that nothing folded is lost on paper.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from string import Template

from bayes_soil.io import AtomicOutputs, atomic_path
from bayes_soil.report.figure_embed import FIGURE_PNG_DPI, saving_figure_files
from bayes_soil.report.html_parts import csv_download, esc, table_html
from bayes_soil.report.inputs import QUICK_LABEL, FitRecord, ReportInputs
from bayes_soil.report.sections_bayes import (
    calibration_section,
    comparison_section,
    diagnostics_section,
    posterior_section,
)
from bayes_soil.report.sections_data import data_section, harmonization_section
from bayes_soil.report.sections_freq import freq_section, table1_section
from bayes_soil.report.sections_provenance import methods_section, provenance_section
from bayes_soil.report.sections_summary import findings_section, header_html

# freq_figures and posterior_figures load matplotlib: they are imported where figures are drawn

__all__ = [
    "FIGURE_PNG_DPI",
    "QUICK_LABEL",
    "SECTIONS",
    "FitRecord",
    "ReportInputs",
    "build_html",
    "csv_download",
    "esc",
    "figures_dir_of",
    "table_html",
    "write_report",
]

#: the page's sections in order: (id, title, builder)
SECTIONS = (
    ("findings", "Key findings", findings_section),
    ("data", "Data and row accounting", data_section),
    ("harmonization", "Harmonization", harmonization_section),
    ("table1", "Table 1: Kruskal-Wallis tests", table1_section),
    ("frequentist", "Frequentist rates and breakpoints", freq_section),
    ("posterior", "Posterior rates and turning points", posterior_section),
    ("comparison", "Frequentist vs posterior", comparison_section),
    ("diagnostics", "Diagnostics", diagnostics_section),
    ("calibration", "Calibration on simulated data", calibration_section),
    ("provenance", "Provenance", provenance_section),
    ("methods", "Methods", methods_section),
)


@cache
def _package_text(name: str) -> str:
    return (files("bayes_soil.report") / name).read_text(encoding="utf-8")


def _toc() -> str:
    items = "".join(f"<li><a href='#{sid}'>{esc(t)}</a></li>" for sid, t, _ in SECTIONS)
    return f"<nav class='toc'><strong>Contents</strong><ol>{items}</ol></nav>"


def _section(sid: str, title: str, body: str, first: bool = False) -> str:
    cls = " class='first'" if first else ""
    return f"<section id='{sid}'><h2{cls}>{esc(title)}</h2>\n{body}\n</section>"


def build_html(inp: ReportInputs) -> str:
    """The whole page as one string (self-contained)."""
    header = header_html(inp)
    sections = [
        _section(sid, title, build(inp), first=i == 0)
        for i, (sid, title, build) in enumerate(SECTIONS)
    ]
    title = inp.title + (" (SYNTHETIC data)" if inp.synthetic else "")
    return Template(_package_text("page.html")).substitute(
        title=esc(title),
        css=_package_text("report.css"),
        header=header,
        toc=_toc(),
        sections="\n".join(sections),
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
        with saving_figure_files(sink):
            text = build_html(inp)
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return out
