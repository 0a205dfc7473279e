"""The example notebooks run from top to bottom without errors (so they never rot).

Each notebook checks itself with ``assert`` cells (row accounting, truth inside the intervals,
exit codes); a failing assert is a cell error here. The notebooks are copied to ``tmp_path`` and
run there with the current interpreter as the kernel; they write only into their own temporary
folders. Slow tier: about 1-3 minutes for all of them on 2 cores.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def _execute_module():
    spec = importlib.util.spec_from_file_location("nb_execute", NOTEBOOKS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXECUTE = _execute_module()


def run_notebook(name: str, tmp_path: Path):
    """Execute a copy of notebook ``name`` in ``tmp_path``; return (notebook, all text output)."""
    src = NOTEBOOKS / name
    copy = tmp_path / name
    shutil.copy(src, copy)
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    nb, _ = EXECUTE.execute_notebook(copy, cwd=tmp_path, timeout=600)
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "a notebook wrote into notebooks/"
    errors = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    return nb, EXECUTE.cell_outputs_text(nb)


def test_notebook_01_reproduce_paper(tmp_path):
    _, text = run_notebook("01_reproduce_paper.ipynb", tmp_path)
    assert "SYNTHETIC" in text
    # the checks against the simulator's truth ran and printed their counts
    assert "95% CIs containing the true rate" in text
    assert "MAP: Davies p < 0.05 in 8 of 8 cells" in text


def test_notebook_02_bayesian_workflow(tmp_path):
    """Small fits of both models (2 chains x 300 draws), diagnostics, comparison, truth checks."""
    _, text = run_notebook("02_bayesian_workflow.ipynb", tmp_path)
    assert "hier_rates fitted in" in text
    assert "climate_breakpoints fitted in" in text
    assert "true psi inside the posterior 94% HDI" in text
    assert "verdict:" in text


def test_notebook_03_your_own_data_groa(tmp_path, shared_data, monkeypatch):
    if not (shared_data / "groa" / "soil.csv").exists():
        pytest.skip("GROA release not in the shared data")
    monkeypatch.setenv("BAYES_SOIL_SHARED_DATA", str(shared_data))
    _, text = run_notebook("03_your_own_data.ipynb", tmp_path)
    assert "data: GROA (real data)" in text
    assert "exit code: 2" in text


def test_notebook_03_your_own_data_fallback(tmp_path, monkeypatch):
    """Without the GROA release the notebook says so and runs on a simulated stand-in."""
    monkeypatch.setenv("BAYES_SOIL_SHARED_DATA", str(tmp_path / "no_shared_data"))
    _, text = run_notebook("03_your_own_data.ipynb", tmp_path)
    assert "GROA release not found" in text
    assert "data: SYNTHETIC stand-in" in text
