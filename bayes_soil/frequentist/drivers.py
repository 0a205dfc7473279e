"""Co-varying climate drivers: say when a turning point may belong to the other driver.

Why: MAP and MAT vary together between sites (r = 0.89 on the demo). One-driver segmented
regression then finds a "significant" MAT turning point that is only the shadow of the MAP one
(the demo has none in MAT). For every element x layer the rows used by both fits give the
Pearson correlation of the drivers; the driver whose segmented fit explains more of the change
rate (higher R^2 = 1 - RSS / TSS on its rows) is named, and where |r| exceeds
``COVARY_THRESHOLD`` every significant turning point carries a note pointing to the Bayesian
joint model, which separates the two drivers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.schema import DRIVERS

COVARY_THRESHOLD = 0.7
JOINT_MODEL = "the Bayesian joint model (climate_breakpoints --driver both)"
DRIVER_COLUMNS = ("driver_correlation", "r2_segmented", "better_driver", "note")


def driver_correlation(changes: pd.DataFrame) -> float:
    """Pearson r of MAP and MAT over the rows where both and the rate are finite."""
    x = changes[list(DRIVERS)].to_numpy(float)
    rate = changes["rate_mg_ha_yr"].to_numpy(float)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(rate)
    if ok.sum() < 3 or np.ptp(x[ok, 0]) == 0 or np.ptp(x[ok, 1]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok, 0], x[ok, 1])[0, 1])


def r2_of(rss: float, y: np.ndarray) -> float:
    """1 - RSS / TSS of a fit to y (NaN when either is missing or y is constant)."""
    y = y[np.isfinite(y)]
    tss = float(((y - y.mean()) ** 2).sum()) if y.size else 0.0
    rss = pd.to_numeric(rss, errors="coerce")
    return 1 - float(rss) / tss if tss > 0 and np.isfinite(rss) else float("nan")


def covary_note(r: float, driver: str, better: str, threshold: float = COVARY_THRESHOLD) -> str:
    """The warning for a significant turning point of ``driver`` when the drivers co-vary."""
    if not np.isfinite(r) or abs(r) <= threshold:
        return ""
    other = next(d for d in DRIVERS if d != driver)
    head = f"drivers co-vary (r={r:.2f}): "
    if better == driver:
        return head + (f"{other}'s turning point may be a shadow of this one; see {JOINT_MODEL}")
    return head + f"this turning point may be carried by {other}; see {JOINT_MODEL}"


def driver_columns(changes: pd.DataFrame, breakpoints: pd.DataFrame) -> pd.DataFrame:
    """``DRIVER_COLUMNS`` for every row of ``breakpoints`` (same index)."""
    out = pd.DataFrame(index=breakpoints.index, columns=list(DRIVER_COLUMNS), dtype=object)
    out["note"] = ""
    out["better_driver"] = ""
    for (element, layer), grp in breakpoints.groupby(["element", "layer"], sort=False):
        cell = changes[(changes["element"] == element) & (changes["layer"] == layer)]
        if cell.empty:
            continue
        r = driver_correlation(cell)
        y = cell["rate_mg_ha_yr"].to_numpy(float)
        r2 = {}
        for _, row in grp.iterrows():
            used = np.isfinite(cell[row["driver"]].to_numpy(float))
            r2[row["driver"]] = r2_of(row.get("rss"), y[used])
        fitted = {d: v for d, v in r2.items() if np.isfinite(v)}
        better = max(fitted, key=fitted.get) if len(fitted) == len(DRIVERS) else ""
        for i, row in grp.iterrows():
            out.at[i, "driver_correlation"] = r
            out.at[i, "r2_segmented"] = r2[row["driver"]]
            out.at[i, "better_driver"] = better
            if row["status"] == "ok":
                out.at[i, "note"] = covary_note(r, row["driver"], better)
    return out
