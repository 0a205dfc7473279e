"""Kruskal-Wallis tests of vegetation, stage and their combined groups (paper Table 1).

Why: the paper tests whether stocks (and change rates) differ among vegetation types, stages and
vegetation x stage groups with a rank test, because the stocks are far from normal. scipy's
``kruskal`` applies the tie correction, as R's ``kruskal.test`` does (checked against R).

The third test (the paper's "vegetation:stage") is Kruskal-Wallis on the vegetation x stage
groups taken as one factor. It says whether any of those groups differ, not whether vegetation
and stage interact, so it is named ``vegetation x stage groups`` and its ``test`` column says so;
with a single vegetation type it repeats the stage test, and its ``note`` says that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.schema import ALL_LAYERS, ELEMENTS

GROUPS = "vegetation x stage groups"
FACTORS = ("vegetation", "stage", GROUPS)
R_FACTOR_NAMES = {"vegetation:stage": GROUPS}  # the paper's and R script's name of GROUPS
TESTS = {
    "vegetation": "Kruskal-Wallis across vegetation types",
    "stage": "Kruskal-Wallis across restoration stages",
    GROUPS: (
        "Kruskal-Wallis on the combined vegetation x stage groups; not an interaction test "
        "(a difference here may come from vegetation, stage or both)"
    ),
}
ONE_VEGETATION = (
    "only one vegetation type: the groups are the stages, so this repeats the stage test"
)
KRUSKAL_COLUMNS = (
    "element",
    "layer",
    "response",
    "factor",
    "H",
    "df",
    "p",
    "n",
    "n_groups",
    "status",
    "reason",
    "test",
    "note",
)


def kruskal_wallis(values: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """H, df, p and n as ``kruskal.test(values, groups)``; empty groups are dropped.

    Raises ValueError with a reason when the test is undefined (fewer than 2 groups, or all
    values tied).
    """
    from scipy import stats

    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups, dtype=object)
    ok = np.isfinite(values) & pd.notna(groups)
    values, groups = values[ok], groups[ok]
    labels = pd.unique(groups)
    if len(labels) < 2:
        raise ValueError(f"only {len(labels)} non-empty group(s); the test needs 2")
    if np.unique(values).size < 2:
        raise ValueError("all values are tied; H is undefined")
    samples = [values[groups == g] for g in labels]
    res = stats.kruskal(*samples)
    return {
        "H": float(res.statistic),
        "df": len(labels) - 1,
        "p": float(res.pvalue),
        "n": int(values.size),
        "n_groups": len(labels),
    }


def _factor_labels(df: pd.DataFrame, factor: str) -> np.ndarray:
    if factor == GROUPS:
        return (df["vegetation"].astype(str) + ":" + df["stage"].astype(str)).to_numpy(object)
    return df[factor].to_numpy(object)


def _note(df: pd.DataFrame, col: str, factor: str) -> str:
    """Say when the combined groups test repeats the stage test (one vegetation type)."""
    if factor != GROUPS:
        return ""
    ok = np.isfinite(df[col].to_numpy(float)) & df["vegetation"].notna().to_numpy()
    return ONE_VEGETATION if df.loc[ok, "vegetation"].nunique() == 1 else ""


def kruskal_table(layers: pd.DataFrame, changes: pd.DataFrame) -> pd.DataFrame:
    """Per element x layer: response ``stock`` (layers) and ``rate`` (changes) against each
    factor; an untestable cell is listed with status ``skipped`` and its reason."""
    rows = []
    sources = (("stock", layers, "stock_mg_ha"), ("rate", changes, "rate_mg_ha_yr"))
    for response, table, col in sources:
        for element in ELEMENTS:
            el = table[table["element"] == element]
            if el.empty:
                for layer in ALL_LAYERS:
                    for factor in FACTORS:
                        rows.append(
                            {
                                "element": element,
                                "layer": layer,
                                "response": response,
                                "factor": factor,
                                "n": 0,
                                "status": "absent",
                                "reason": f"no {element} data in the input",
                            }
                        )
                continue
            for layer in ALL_LAYERS:
                lay = el[el["layer"] == layer]
                for factor in FACTORS:
                    row = {
                        "element": element,
                        "layer": layer,
                        "response": response,
                        "factor": factor,
                    }
                    row |= {"test": TESTS[factor], "note": _note(lay, col, factor)}
                    try:
                        row |= kruskal_wallis(lay[col].to_numpy(), _factor_labels(lay, factor))
                        row |= {"status": "ok", "reason": ""}
                    except ValueError as exc:
                        row |= {
                            "n": int(np.isfinite(lay[col].to_numpy(float)).sum()),
                            "status": "skipped",
                            "reason": str(exc),
                        }
                    rows.append(row)
    return pd.DataFrame(rows, columns=list(KRUSKAL_COLUMNS))
