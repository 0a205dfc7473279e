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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets beside the repository; tests using them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA
