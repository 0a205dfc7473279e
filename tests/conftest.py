"""Shared fixtures. Tiers: unmarked = fast, ``model`` = builds models, ``slow`` = real NUTS."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BAYES_SOIL_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _private_harmonize_cache(tmp_path_factory):
    """Tests use their own disk cache of harmonized inputs, never the user's."""
    old = os.environ.get("BAYES_SOIL_CACHE")
    os.environ["BAYES_SOIL_CACHE"] = str(tmp_path_factory.mktemp("harmonize_cache"))
    yield
    if old is None:
        os.environ.pop("BAYES_SOIL_CACHE", None)
    else:
        os.environ["BAYES_SOIL_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets beside the repository; tests using them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


# ---- tiers: plain `pytest` runs the fast tier; `--all-tiers` (the README command) runs all ----
SLOW_MARKERS = ("model", "slow", "browser")


def pytest_addoption(parser):
    parser.addoption(
        "--all-tiers",
        action="store_true",
        help="run the model, slow (real NUTS, notebooks, R) and browser tiers too",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--all-tiers") or config.getoption("-m"):
        return  # everything, or exactly what -m selects
    keep = [i for i in items if not any(m in i.keywords for m in SLOW_MARKERS)]
    dropped = [i for i in items if any(m in i.keywords for m in SLOW_MARKERS)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
