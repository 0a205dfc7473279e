"""Interval stocks (paper Eq. 1-2): one row per input interval x element.

Stock (Mg ha-1) = concentration (g kg-1) x BD (g cm-3) x thickness (cm) / 10. A stock the
study reported itself is used as given (``bd_method = reported_stock``) and needs no BD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: element -> (concentration column after harmonization, reported-stock column)
ELEMENT_COLUMNS = {"C": ("soc_g_kg", "soc_stock_mg_ha"), "N": ("stn_g_kg", "stn_stock_mg_ha")}
INTERVAL_COLUMNS = (
    "obs_id",
    "profile_id",
    "element",
    "depth_top_cm",
    "depth_bottom_cm",
    "stock_mg_ha",
    "bd_method",
)


def stock_mg_ha(conc_g_kg, bd_g_cm3, thickness_cm):
    """Eq. 1-2: g kg-1 x g cm-3 x cm / 10 = Mg ha-1."""
    return conc_g_kg * bd_g_cm3 * thickness_cm / 10.0


def interval_stocks(
    df: pd.DataFrame, bd: pd.Series, bd_source: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stocks of every interval and element that has a usable quantity.

    Parameters
    ----------
    df : rows with ``obs_id``, ``profile_id``, depths, harmonized ``soc_g_kg``, ``stn_g_kg`` and
        the reported-stock columns (absent columns count as missing).
    bd, bd_source : BD per row and where it came from (``measured``/``rf``/``ptf``/None).

    Returns
    -------
    intervals : INTERVAL_COLUMNS, one row per (row, element) with a stock.
    dropped : obs_id, element, reason for (row, element) pairs that had a concentration but no
        BD could be found.
    """
    thickness = (df["depth_bottom_cm"] - df["depth_top_cm"]).astype(float)
    parts, dropped = [], []
    for element, (conc_col, stock_col) in ELEMENT_COLUMNS.items():
        conc = _num(df, conc_col)
        reported = _num(df, stock_col)
        computed = stock_mg_ha(conc, bd, thickness)
        use_reported = reported.notna()
        stock = reported.where(use_reported, computed)
        method = pd.Series(
            np.where(use_reported, "reported_stock", bd_source.astype(object)),
            index=df.index,
            dtype=object,
        )
        ok = stock.notna()
        no_bd = ~ok & conc.notna()
        parts.append(
            pd.DataFrame(
                {
                    "obs_id": df["obs_id"],
                    "profile_id": df["profile_id"],
                    "element": element,
                    "depth_top_cm": df["depth_top_cm"].astype(float),
                    "depth_bottom_cm": df["depth_bottom_cm"].astype(float),
                    "stock_mg_ha": stock,
                    "bd_method": method,
                }
            ).loc[ok]
        )
        if no_bd.any():
            dropped.append(
                pd.DataFrame(
                    {
                        "obs_id": df.loc[no_bd, "obs_id"],
                        "element": element,
                        "reason": f"{element}: concentration without bulk density, and none "
                        "could be estimated",
                    }
                )
            )
    intervals = pd.concat(parts, ignore_index=True)[list(INTERVAL_COLUMNS)]
    dropped_df = (
        pd.concat(dropped, ignore_index=True)
        if dropped
        else pd.DataFrame(columns=["obs_id", "element", "reason"])
    )
    return intervals, dropped_df


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").astype(float)
