"""Execute the example notebooks in place (or a copy), so their stored outputs stay true.

Usage (from the repository root)::

    .venv/bin/python notebooks/execute.py            # all notebooks, in place
    .venv/bin/python notebooks/execute.py 01 03      # only those whose name contains 01 or 03

The kernel is the interpreter running this script (``python3`` kernelspec whose ``python``
command jupyter_client replaces by ``sys.executable``), so the notebooks see the same
environment as the tests. tests/test_notebooks.py calls :func:`execute_notebook` on copies.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

NOTEBOOKS_DIR = Path(__file__).resolve().parent
NOTEBOOKS = (
    "01_reproduce_paper.ipynb",
    "02_bayesian_workflow.ipynb",
    "03_your_own_data.ipynb",
)


def kernel_manager():
    """A KernelManager for the current interpreter (no installed kernelspec needed)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    # jupyter_client would pick whatever "python3" kernelspec is installed; pin this interpreter
    km._kernel_spec = KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Python 3 (bayes_soil)",
        language="python",
    )
    return km


def execute_notebook(
    path: str | Path,
    out_path: str | Path | None = None,
    *,
    cwd: str | Path | None = None,
    timeout: int = 900,
) -> tuple[object, float]:
    """Run every cell of ``path`` and write the result (also when a cell fails; then the
    ``CellExecutionError`` is raised after writing).

    Parameters
    ----------
    path : the notebook to run.
    out_path : where to write the executed notebook (default: over ``path``).
    cwd : working directory of the kernel (default: the notebook's folder).
    timeout : seconds allowed per cell.

    Returns
    -------
    (executed notebook, wall seconds)
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        km=kernel_manager(),
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd or path.parent)}},
        record_timing=False,
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:  # a failed run is written too: the error is in the cell's output
        wall = time.perf_counter() - start
        nb.metadata["kernelspec"] = {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }
        nbformat.write(nb, Path(out_path or path))
    return nb, wall


def cell_outputs_text(nb) -> str:
    """All stream and text/plain outputs of a notebook joined (for tests to search)."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    chosen = [n for n in NOTEBOOKS if not argv or any(a in n for a in argv)]
    for name in chosen:
        path = NOTEBOOKS_DIR / name
        if not path.exists():
            print(f"missing: {path}")
            return 1
        _, wall = execute_notebook(path, cwd=NOTEBOOKS_DIR)
        size = path.stat().st_size / 1e6
        print(f"{name}: executed in {wall:.0f} s, {size:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
