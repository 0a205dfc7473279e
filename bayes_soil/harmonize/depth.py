"""Interval stocks -> standard layers (default 0-20, 20-100, 100-200 cm).

Rules (the harmonize report repeats them):

- An interval that straddles a layer boundary is split in proportion to thickness, so the
  summed stock inside the layers equals the interval stocks inside them (mass-conserving).
  The part of an interval below the deepest boundary is ignored.
- Exact duplicate intervals of one profile and element (same top and bottom, e.g. replicate
  plots without a plot_id) are averaged first, so they do not double the stock.
- ``coverage`` = fraction of the layer's thickness covered by sampled intervals.
- Partial coverage is never silently treated as complete: a layer with
  ``coverage >= COVERAGE_TOLERANCE`` (0.95, e.g. 0-19 cm for 0-20, or 20-97 cm for 20-100)
  is kept, its stock scaled up by 1/coverage and flagged ``coverage_scaled``; a layer with
  lower coverage is left out and counted (reason ``partial coverage``). Coverage above 1
  (overlapping, non-identical intervals such as 0-10 and 0-20 in one profile) is ambiguous and
  left out too (reason ``overlapping intervals``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.schema import LAYER_BOUNDS

COVERAGE_TOLERANCE = 0.95
_EPS = 1e-9


def layer_label(top: float, bottom: float) -> str:
    """'0-20' style label of a layer."""
    return f"{top:g}-{bottom:g}"


def overlaps(top: np.ndarray, bottom: np.ndarray, bounds=LAYER_BOUNDS) -> np.ndarray:
    """(n_intervals, n_layers) overlap thickness (cm) of each interval with each layer."""
    lo = np.array([b[0] for b in bounds], dtype=float)
    hi = np.array([b[1] for b in bounds], dtype=float)
    top = np.asarray(top, dtype=float)[:, None]
    bottom = np.asarray(bottom, dtype=float)[:, None]
    return np.clip(np.minimum(bottom, hi) - np.maximum(top, lo), 0.0, None)


def merge_duplicate_intervals(intervals: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Average exact duplicate intervals within a profile and element.

    ``obs_id`` of the result is the ';'-joined ids of the merged rows; ``bd_method`` the
    shared method or ``mixed``. Returns the merged table and how many rows were merged away.
    """
    keys = ["profile_id", "element", "depth_top_cm", "depth_bottom_cm"]
    dup = intervals.duplicated(keys, keep=False)
    if not dup.any():
        return intervals.reset_index(drop=True), 0
    single = intervals.loc[~dup]
    merged = (
        intervals.loc[dup]
        .groupby(keys, sort=False)
        .agg(
            obs_id=("obs_id", ";".join),
            stock_mg_ha=("stock_mg_ha", "mean"),
            bd_method=("bd_method", _combine_methods),
        )
        .reset_index()
    )
    out = pd.concat([single, merged[single.columns]], ignore_index=True)
    return out, int(dup.sum() - len(merged))


def split_into_layers(intervals: pd.DataFrame, bounds=LAYER_BOUNDS) -> pd.DataFrame:
    """Sum interval stocks into layers, splitting straddling intervals by thickness.

    Parameters
    ----------
    intervals : profile_id, element, depth_top_cm, depth_bottom_cm, stock_mg_ha, bd_method,
        obs_id (';'-joined when merged).

    Returns
    -------
    One row per (profile_id, element, layer) that at least one interval touches, with the raw
    ``stock_mg_ha`` (sum of the contributions), ``coverage``, ``bd_method`` and ``obs_ids``.
    """
    top = intervals["depth_top_cm"].to_numpy(dtype=float)
    bottom = intervals["depth_bottom_cm"].to_numpy(dtype=float)
    ov = overlaps(top, bottom, bounds)
    thick = bottom - top
    labels = np.array([layer_label(a, b) for a, b in bounds], dtype=object)
    widths = np.array([b - a for a, b in bounds], dtype=float)
    i, j = np.nonzero(ov > 0)
    part = intervals.iloc[i].reset_index(drop=True)
    contrib = pd.DataFrame(
        {
            "profile_id": part["profile_id"],
            "element": part["element"],
            "layer": labels[j],
            "layer_index": j,
            "depth_top_cm": part["depth_top_cm"],
            "stock_mg_ha": part["stock_mg_ha"].to_numpy() * ov[i, j] / thick[i],
            "coverage": ov[i, j] / widths[j],
            "bd_method": part["bd_method"],
            "obs_id": part["obs_id"],
        }
    ).sort_values(["profile_id", "element", "layer_index", "depth_top_cm"], kind="stable")
    out = (
        contrib.groupby(["profile_id", "element", "layer"], sort=False)
        .agg(
            layer_index=("layer_index", "first"),
            stock_mg_ha=("stock_mg_ha", "sum"),
            coverage=("coverage", "sum"),
            n_methods=("bd_method", "nunique"),
            bd_method=("bd_method", "first"),
            obs_ids=("obs_id", ";".join),
        )
        .reset_index()
    )
    out.loc[out["n_methods"] > 1, "bd_method"] = "mixed"
    return out.drop(columns="n_methods")


def apply_coverage_rule(
    layers: pd.DataFrame, tolerance: float = COVERAGE_TOLERANCE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep complete layers, scale near-complete ones, set the rest aside with a reason.

    Returns ``(kept, dropped)``; ``kept`` has ``coverage_scaled`` (bool), ``dropped`` a
    ``reason``. ``coverage`` keeps the sampled fraction (capped at 1 for rounding).
    """
    cov = layers["coverage"].to_numpy(dtype=float)
    over = cov > 1.0 + 1e-6
    ok = ~over & (cov >= tolerance - _EPS)
    kept = layers.loc[ok].copy()
    kept["coverage"] = np.minimum(kept["coverage"].to_numpy(dtype=float), 1.0)
    scaled = kept["coverage"] < 1.0 - 1e-6
    kept["coverage_scaled"] = scaled
    kept.loc[scaled, "stock_mg_ha"] = kept.loc[scaled, "stock_mg_ha"] / kept.loc[scaled, "coverage"]
    dropped = layers.loc[~ok].copy()
    dropped["reason"] = np.where(
        over[~ok],
        "overlapping intervals (coverage > 1)",
        f"partial coverage (< {tolerance:g})",
    )
    return kept, dropped


def _combine_methods(methods: pd.Series) -> str:
    """One method name, or ``mixed`` when the contributing rows differ."""
    values = set()
    for m in methods:
        values.update(str(m).split("|"))
    return values.pop() if len(values) == 1 else "mixed"
