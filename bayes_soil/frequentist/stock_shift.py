"""How much the frequentist answers move between fixed-depth and ESM stocks (issue 14).

From an ESM harmonization alone: its fixed-depth twin (``harmonize.esm.fixed_depth_twin``,
identical to ``harmonize --stocks fixed``) is analysed beside it, and the stage rates
(vegetation "all") and segmented-regression turning points are put side by side with their
shifts. Used by the report (a section when the data are ESM) and ``benchmarks/esm_vs_fixed.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bayes_soil.frequentist import run_frequentist
from bayes_soil.harmonize.esm import fixed_depth_twin

RATE_SHIFT_COLUMNS = (
    "element",
    "layer",
    "stage",
    "k_fixed",
    "k_esm",
    "shift",
    "shift_in_se",
    "p_fixed",
    "p_esm",
    "sign_flip",
    "sig_change",
)
BREAK_SHIFT_COLUMNS = (
    "element",
    "layer",
    "driver",
    "psi_fixed",
    "psi_esm",
    "psi_shift",
    "psi_se_fixed",
    "davies_p_fixed",
    "davies_p_esm",
    "status_fixed",
    "status_esm",
)


def rate_shifts(fixed: pd.DataFrame, esm: pd.DataFrame) -> pd.DataFrame:
    """Stage rates of vegetation "all" fitted on both: ESM minus fixed, also in fixed SEs;
    ``sign_flip`` and ``sig_change`` (significance at 0.05 differs)."""
    keys = ["element", "layer", "vegetation", "stage"]
    m = fixed.merge(esm, on=keys, suffixes=("_fixed", "_esm"), validate="one_to_one")
    m = m[(m["vegetation"] == "all") & (m["status_fixed"] == "ok") & (m["status_esm"] == "ok")]
    m = m.assign(
        shift=m["k_esm"] - m["k_fixed"],
        shift_in_se=(m["k_esm"] - m["k_fixed"]) / m["se_fixed"],
        sign_flip=np.sign(m["k_esm"]) != np.sign(m["k_fixed"]),
        sig_change=(m["p_fixed"] < 0.05) != (m["p_esm"] < 0.05),
    )
    return m[list(RATE_SHIFT_COLUMNS)].reset_index(drop=True)


def break_shifts(fixed: pd.DataFrame, esm: pd.DataFrame) -> pd.DataFrame:
    """Turning points (psi) on both stock methods and their shift."""
    keys = ["element", "layer", "driver"]
    m = fixed.merge(esm, on=keys, suffixes=("_fixed", "_esm"), validate="one_to_one")
    m = m.assign(psi_shift=m["psi_esm"] - m["psi_fixed"])
    return m[list(BREAK_SHIFT_COLUMNS)].reset_index(drop=True)


def esm_vs_fixed(
    layers: pd.DataFrame,
    changes: pd.DataFrame,
    esm_freq: Mapping[str, pd.DataFrame] | None = None,
) -> dict[str, pd.DataFrame]:
    """``rates`` and ``breakpoints`` shift tables for ESM-harmonized ``layers``/``changes``.

    ``esm_freq``: the frequentist tables already made from these data (``rates``,
    ``breakpoints``); computed when absent. The fixed-depth side is computed from the twin.
    """
    fixed = run_frequentist(*fixed_depth_twin(layers))
    if esm_freq is None or "rates" not in esm_freq or "breakpoints" not in esm_freq:
        e = run_frequentist(layers, changes)
        esm_freq = {"rates": e.rates, "breakpoints": e.breakpoints}
    return {
        "rates": rate_shifts(fixed.rates, esm_freq["rates"]),
        "breakpoints": break_shifts(fixed.breakpoints, esm_freq["breakpoints"]),
    }


def shift_summary(rates: pd.DataFrame) -> str:
    """One sentence on the rate shifts."""
    if rates.empty:
        return "No stage rate was estimated on both stock methods."
    return (
        f"Across {len(rates)} stage-rate cells (vegetation 'all') the median shift from fixed "
        f"depth to ESM was {rates['shift_in_se'].abs().median():.2f} SE of the fixed-depth slope "
        f"(max {rates['shift_in_se'].abs().max():.2f} SE; largest absolute shift "
        f"{rates['shift'].abs().max():.3g} Mg ha-1 yr-1); {int(rates['sign_flip'].sum())} sign "
        f"flip(s), {int(rates['sig_change'].sum())} change(s) of significance at 0.05."
    )
