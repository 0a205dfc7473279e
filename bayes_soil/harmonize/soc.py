"""Soil organic carbon concentration from what a study reported (paper Eq. 3).

Studies report SOC directly or soil organic matter (SOM). Where only SOM is given,
SOC = 0.58 x SOM (Guo and Gifford 2002); a measured SOC always wins over the conversion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.schema import SOM_TO_SOC


def soc_from_som(som_g_kg: pd.Series | np.ndarray | float) -> pd.Series | np.ndarray | float:
    """SOC (g kg-1) from SOM (g kg-1): Eq. 3, SOC = 0.58 x SOM."""
    return SOM_TO_SOC * som_g_kg


def harmonized_soc(obs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """SOC concentration per row and whether it came from SOM.

    Returns
    -------
    soc : float Series (g kg-1), NaN where neither SOC nor SOM is given.
    from_som : bool Series, True where SOC was computed from SOM.
    """
    soc = _col(obs, "soc_g_kg")
    som = _col(obs, "som_g_kg")
    from_som = soc.isna() & som.notna()
    out = soc.where(~from_som, soc_from_som(som))
    return out, from_som


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column as float, all-NaN when the column is absent."""
    if name not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").astype(float)
