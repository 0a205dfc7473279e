"""The report also writes each of its figures as SVG and 300 dpi PNG beside the page."""

from __future__ import annotations

import pytest
from report_fakes import fake_report_inputs

from bayes_soil.report.html import FIGURE_PNG_DPI, figures_dir_of, write_report


@pytest.mark.slow
def test_report_writes_svg_and_300_dpi_png_of_every_figure(tmp_path):
    from PIL import Image

    out = tmp_path / "report.html"
    write_report(fake_report_inputs(), out)
    fdir = figures_dir_of(out)
    assert fdir == tmp_path / "report_figures"
    svgs = sorted(p.stem for p in fdir.glob("*.svg"))
    pngs = sorted(p.stem for p in fdir.glob("*.png"))
    assert svgs and svgs == pngs
    page = out.read_text()
    assert page.count("<figure>") == len(svgs)  # one file pair per figure on the page
    with Image.open(fdir / f"{pngs[0]}.png") as im:
        assert round(im.info["dpi"][0]) == FIGURE_PNG_DPI
    assert not list(tmp_path.rglob("*.partial"))


def test_no_figure_files_when_not_asked(tmp_path, monkeypatch):
    monkeypatch.setattr("bayes_soil.report.html.build_html", lambda inp: "<html></html>")
    out = tmp_path / "r.html"
    write_report(None, out, figure_files=False)
    assert out.exists() and not figures_dir_of(out).exists()
