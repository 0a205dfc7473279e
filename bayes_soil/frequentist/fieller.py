"""Fieller's interval for the C:N rate ratio k_C / k_N (paper Eq 8), and the slopes' covariance.

Why: a ratio of two slopes is unstable when the N slope is near 0 (the demo shows -88 to +141).
Fieller's theorem gives the exact interval under normality: the set of rho with
(a - rho b)^2 <= c^2 (v_a - 2 rho v_ab + rho^2 v_b), a = k_C, b = k_N, c the critical value.
It is a bounded interval only when b is significantly different from 0 at the same level
(b^2 > c^2 v_b); otherwise it is the whole line or two half-lines, and the ratio is undefined.

The C and N slopes come from separate regressions of C and N stocks on years in the same cell.
Their covariance, for OLS weights w_i = (x_i - mean x) / Sxx of each regression, is
cov(k_C, k_N) = sigma_CN * sum over profiles in both regressions of w_Ci w_Ni, with sigma_CN the
residual covariance, estimated from the paired residuals (sum e_C e_N / (m - 2) over the m paired
profiles). Rows are paired by ``profile_id``; without it (or with fewer than 3 pairs) the
covariance is taken as 0 and the table says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEVEL = 0.95
INTERVAL = (
    "95% CI, Fieller (t critical value on min(n_C, n_N) - 2 df; cov(k_C, k_N) from the "
    "residuals of profiles measured for both elements)"
)
PAIR_KEY = "profile_id"


def critical_value(df: int, level: float = LEVEL) -> float:
    """Two-sided t critical value."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def fieller_interval(
    a: float, b: float, var_a: float, var_b: float, cov_ab: float, crit: float
) -> tuple[float, float, bool]:
    """(low, high, bounded) of Fieller's interval for a / b; NaN bounds when unbounded."""
    c2 = crit * crit
    qa = b * b - c2 * var_b
    qb = a * b - c2 * cov_ab
    qc = a * a - c2 * var_a
    if not qa > 0:
        return float("nan"), float("nan"), False
    root = np.sqrt(max(qb * qb - qa * qc, 0.0))
    return float((qb - root) / qa), float((qb + root) / qa), True


def _weights_and_residuals(cell: pd.DataFrame) -> pd.DataFrame:
    x = cell["years"].to_numpy(float)
    y = cell["stock_mg_ha"].to_numpy(float)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ y) / sxx
    resid = y - y.mean() - slope * xc
    return pd.DataFrame({"w": xc / sxx, "e": resid}, index=cell[PAIR_KEY].to_numpy())


def slope_covariance(c_cell: pd.DataFrame, n_cell: pd.DataFrame) -> tuple[float, str]:
    """cov(k_C, k_N) of the two OLS slopes of one cell, and how it was obtained."""
    if PAIR_KEY not in c_cell.columns or PAIR_KEY not in n_cell.columns:
        return 0.0, f"no {PAIR_KEY}: C and N rows cannot be paired; covariance taken as 0"
    wc, wn = _weights_and_residuals(c_cell), _weights_and_residuals(n_cell)
    if wc.index.has_duplicates or wn.index.has_duplicates:
        return 0.0, f"{PAIR_KEY} repeats within the cell; covariance taken as 0"
    both = wc.add_suffix("_c").join(wn.add_suffix("_n"), how="inner")
    m = len(both)
    if m < 3:
        return 0.0, f"{m} profiles have both C and N; covariance taken as 0"
    sigma_cn = float(both["e_c"] @ both["e_n"]) / (m - 2)
    cov = sigma_cn * float(both["w_c"] @ both["w_n"])
    same = m == len(wc) == len(wn)
    how = "same rows" if same else f"{m} of {len(wc)} C and {len(wn)} N rows paired"
    return cov, f"covariance from paired residuals ({how})"
