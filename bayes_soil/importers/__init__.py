"""Importers that turn public data releases into the observations schema (docs/data_format.md
section 1).

Each importer takes the release's directory and returns an ``ImportResult`` (observations,
rejected source rows with reasons, and an accounting report where rows_read == rows_written +
rows_rejected). ``IMPORTERS`` maps the name used by ``python -m bayes_soil import NAME`` to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bayes_soil.importers.groa import ImportResult, import_groa

IMPORTERS: dict[str, Callable[[str | Path], ImportResult]] = {"groa": import_groa}

__all__ = ["IMPORTERS", "ImportResult", "import_groa"]
