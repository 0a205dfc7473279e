"""Turning points of the change rate along MAP and MAT (paper Figs 6-7).

Why: per element x layer x driver, the paper fits one-breakpoint segmented regressions of the
change rate on the climate driver and tests the change in slope with Davies' test; where the
test finds none (p >= 0.05) the relation is a single straight line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.frequentist.davies import davies_test
from bayes_soil.frequentist.rates import ols_slope
from bayes_soil.frequentist.segmented import SegmentedError, segmented
from bayes_soil.schema import ALL_LAYERS, DRIVERS, ELEMENTS

ALPHA = 0.05
BREAKPOINT_COLUMNS = (
    "element",
    "layer",
    "driver",
    "psi",
    "psi_se",
    "k1",
    "k2",
    "davies_p",
    "n",
    "intercept",
    "rss",
    "slope_linear",
    "slope_linear_se",
    "intercept_linear",
    "x_min",
    "x_max",
    "status",
    "reason",
)


def fit_breakpoint(x: np.ndarray, y: np.ndarray) -> dict:
    """One row of breakpoints.csv for a single element x layer x driver.

    status: ``ok`` (Davies p < 0.05), ``no_break`` (p >= 0.05: read the straight line
    ``slope_linear``; the segmented numbers stay beside it), ``no_breakpoint`` (the segmented fit
    has no admissible breakpoint; R says "No breakpoint estimated"), ``too_few`` or
    ``no_spread``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    row: dict = {"n": int(x.size)}
    if x.size:
        row |= {"x_min": float(x.min()), "x_max": float(x.max())}
    if x.size < 6:
        return row | {"status": "too_few", "reason": f"only {x.size} rates; need at least 6"}
    n_x = np.unique(x).size
    if n_x < 4:
        reason = (
            "the driver has no spread (a single value)"
            if n_x == 1
            else f"the driver has only {n_x} distinct values; a broken line needs 4"
        )
        return row | {"status": "no_spread", "reason": reason}
    lin = ols_slope(x, y)
    row |= {
        "slope_linear": lin["k"],
        "slope_linear_se": lin["se"],
        "intercept_linear": lin["intercept"],
    }
    row["davies_p"] = davies_test(x, y).p_value
    try:
        fit = segmented(x, y)
    except SegmentedError as exc:
        return row | {"status": "no_breakpoint", "reason": str(exc)}
    row |= {
        "psi": fit.psi,
        "psi_se": fit.psi_se,
        "k1": fit.k1,
        "k2": fit.k2,
        "intercept": fit.intercept,
        "rss": fit.rss,
    }
    if not fit.converged:
        return row | {
            "status": "no_convergence",
            "reason": "Muggeo's algorithm did not converge in 30 iterations",
        }
    if row["davies_p"] >= ALPHA:
        return row | {
            "status": "no_break",
            "reason": f"Davies p = {row['davies_p']:.3g} >= {ALPHA}: one straight line",
        }
    return row | {"status": "ok", "reason": ""}


def breakpoint_table(changes: pd.DataFrame) -> pd.DataFrame:
    """breakpoints.csv: every element x layer x driver present in ``changes``."""
    rows = []
    for element in ELEMENTS:
        el = changes[changes["element"] == element]
        if el.empty:
            for layer in ALL_LAYERS:
                for driver in DRIVERS:
                    rows.append(
                        {
                            "element": element,
                            "layer": layer,
                            "driver": driver,
                            "n": 0,
                            "status": "absent",
                            "reason": f"no {element} change rates in the input",
                        }
                    )
            continue
        for layer in ALL_LAYERS:
            lay = el[el["layer"] == layer]
            for driver in DRIVERS:
                row = {"element": element, "layer": layer, "driver": driver}
                rate = lay["rate_mg_ha_yr"].to_numpy(float)
                x = lay[driver].to_numpy(float)
                row |= fit_breakpoint(x, rate)
                n_missing = int((np.isfinite(rate) & ~np.isfinite(x)).sum())
                if n_missing:  # kept for rates and Kruskal; only this driver's fit lacks them
                    note = f"{n_missing} rates without {driver} left out"
                    row["reason"] = f"{row['reason']}; {note}" if row.get("reason") else note
                rows.append(row)
    return pd.DataFrame(rows, columns=list(BREAKPOINT_COLUMNS))
