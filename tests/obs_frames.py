"""Typed observation tables for harmonize tests (obs_id, line, float measurement columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the attributes every test row shares unless it says otherwise
BASE = {
    "study_id": "S1",
    "site_id": "A",
    "plot_id": "p1",
    "lon": 108.0,
    "lat": 36.0,
    "map_mm": 500.0,
    "mat_c": 9.0,
    "vegetation": "forest",
    "origin": "planted",
    "years": 10.0,
}
NUMERIC = ("bd_g_cm3", "soc_g_kg", "som_g_kg", "soc_stock_mg_ha", "stn_g_kg", "stn_stock_mg_ha")


def make_obs(rows: list[dict], **base) -> pd.DataFrame:
    """Typed observations as load_observations returns them; ``base`` adds to or replaces
    BASE's entries for every row."""
    common = {**BASE, **base}
    full = [{**common, "obs_id": f"r{i + 2}", "line": i + 2, **r} for i, r in enumerate(rows)]
    df = pd.DataFrame(full)
    for c in NUMERIC:
        df[c] = df[c].astype(float) if c in df.columns else np.nan
    return df
