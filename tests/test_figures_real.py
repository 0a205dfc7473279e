"""Figures on data without N (like GROA): no empty C:N panels, PNG at 300 dpi beside SVG,
annotations wrapped inside their panels."""

from __future__ import annotations

import pytest

from bayes_soil.frequentist import run_frequentist
from bayes_soil.harmonize import harmonize
from bayes_soil.report.freq_figures import PNG_DPI, write_freq_figures
from bayes_soil.simulate import simulate


@pytest.fixture(scope="module")
def carbon_only():
    obs = simulate(seed=3, scale=0.15).observations
    obs = obs.drop(columns=["stn_g_kg", "stn_stock_mg_ha"], errors="ignore")
    res = harmonize(obs, score_bd=False)
    assert set(res.layers["element"]) == {"C"}
    return res, run_frequentist(res.layers, res.changes)


@pytest.mark.slow
def test_no_n_means_no_ratio_figure_and_300_dpi_png(carbon_only, tmp_path):
    from PIL import Image

    res, freq = carbon_only
    names = write_freq_figures(freq, res.layers, res.changes, tmp_path, synthetic=True)
    assert not any(n.startswith("fig5") or n.startswith("fig3") for n in names)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(n for n in names if n.endswith(".png"))
    assert {p[:-4] for p in pngs} == {p.name[:-4] for p in tmp_path.glob("*.svg")}
    with Image.open(tmp_path / "fig4_rates.png") as im:
        assert round(im.info["dpi"][0]) == PNG_DPI
        assert im.size[0] == 15 * PNG_DPI  # 15-inch-wide figure


@pytest.mark.slow
def test_panel_annotations_are_wrapped(carbon_only):
    import matplotlib.pyplot as plt

    from bayes_soil.report.freq_figures import ANNOTATION_WIDTH, fig_breakpoints

    res, freq = carbon_only
    bp = freq.breakpoints.copy()
    bp.loc[bp["driver"] == "mat_c", ["status", "reason"]] = [
        "no_spread",
        "the driver has only 2 distinct values; a broken line needs 4; 17 rates without mat_c "
        "left out",
    ]
    fig = fig_breakpoints(res.changes, bp, "mat_c", synthetic=True)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts and all(
        max(len(line) for line in t.split("\n")) <= ANNOTATION_WIDTH for t in texts
    )
    plt.close(fig)
