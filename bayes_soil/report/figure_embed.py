"""A matplotlib figure as an inline PNG in the page, and, while :func:`saving_figure_files` is
active, also as SVG and 300 dpi PNG files beside it. Section builders call
``figure_embed.figure_html`` through the module so that tests can swap it for a stub."""

from __future__ import annotations

import base64
import contextlib
import contextvars
import io
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from bayes_soil.report.html_parts import esc

#: where figure_html also saves each figure as SVG and 300 dpi PNG (an AtomicOutputs), or None
_FIGURE_SINK: contextvars.ContextVar = contextvars.ContextVar("figure_sink", default=None)
FIGURE_PNG_DPI = 300


@contextlib.contextmanager
def saving_figure_files(sink: Any) -> Iterator[None]:
    """While active, :func:`figure_html` also writes each figure into ``sink`` (an
    AtomicOutputs), under a file name made from its alt text (unique within the sink)."""
    sink.taken = set()
    token = _FIGURE_SINK.set(sink)
    try:
        yield
    finally:
        _FIGURE_SINK.reset(token)


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
    report; the error is also printed to stderr. Inside :func:`saving_figure_files` the figure
    is also saved as SVG and as a 300 dpi PNG.
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
