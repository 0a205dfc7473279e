"""Davies' test for a change in slope, as R's ``segmented::davies.test`` for a linear model.

Why: the paper reports a turning point only where the slope changes; the breakpoint is a
nuisance parameter that exists only under the alternative, so the usual t-test does not apply.
Davies (1987, Biometrika 74:33-43; 2002, Biometrika 89:484-489) bounds the p-value of the
supremum of the test-statistic process by its value at the best point plus a term in the total
variation of the process.

Following the ``davies.test`` help page (segmented 1.6): the statistic at each of ``k``
evaluation points psi (``k`` equally spaced values between the second-smallest and the
second-largest value of x) is the t-statistic of the difference-in-slope coefficient beta in
``y ~ 1 + x + beta * (x - psi)_+``. For n <= 300 the Davies (2002) linear-model bound is used:

    p = P(t_nu > M) + V * sqrt(pi) * Gamma((nu + 1) / 2) / Gamma(nu / 2) / (2 pi)
        * (1 + M^2 / nu)^(-(nu - 1) / 2),

with nu = n - 3 residual degrees of freedom and V the total variation of the process on the
angle scale, arctan(|t| / sqrt(nu)) (the length of the statistic's path on the sphere). For
n > 300 the help page says the approximate Davies (1987) bound is returned instead:

    p = Phi(-M) + V_t * exp(-M^2 / 2) / sqrt(8 pi),   V_t = total variation of t.

Two-sided p-values double the one-sided bound at M = max |t|. These formulas were checked
number by number against R (tests/fixtures/davies_*); they were not taken from the package's
source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

ALTERNATIVES = ("two.sided", "greater", "less")
EXACT_MAX_N = 300  # above this, davies.test falls back to the Davies (1987) approximation


@dataclass(frozen=True)
class DaviesResult:
    """p_value: the Davies upper bound (capped at 1); best_at: the evaluation point of the best
    statistic; points, statistics: the process (evaluation point, t-statistic)."""

    p_value: float
    best_at: float
    points: np.ndarray
    statistics: np.ndarray
    method: str


def evaluation_points(x: np.ndarray, k: int = 10) -> np.ndarray:
    """``k`` equally spaced values between the second-smallest and second-largest x, without the
    points where the hinge (x - psi)_+ is collinear with the intercept and x."""
    xs = np.sort(np.asarray(x, dtype=float))
    pts = np.linspace(xs[1], xs[-2], k)
    return pts[(pts > xs[0]) & (pts < xs[-1])]


def hinge_t_statistics(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """t-statistic of the hinge coefficient in y ~ 1 + x + (x - psi)_+ at each psi."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    out = np.empty(points.size)
    for i, psi in enumerate(points):
        X = np.column_stack([np.ones(n), x, np.maximum(x - psi, 0.0)])
        q, r = np.linalg.qr(X)
        beta = np.linalg.solve(r, q.T @ y)
        resid = y - X @ beta
        s2 = resid @ resid / (n - 3)
        rinv = np.linalg.inv(r)
        var_b = s2 * (rinv[2] @ rinv[2])
        out[i] = beta[2] / np.sqrt(var_b)
    return out


def _one_sided_bound(stat: np.ndarray, m: float, n: int) -> float:
    nu = n - 3
    if n > EXACT_MAX_N:
        v = np.abs(np.diff(stat)).sum()
        return float(stats.norm.sf(m) + v * np.exp(-(m**2) / 2) / np.sqrt(8 * np.pi))
    angle = np.arctan(np.abs(stat) / np.sqrt(nu))
    v = np.abs(np.diff(angle)).sum()
    log_c = 0.5 * np.log(np.pi) + special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2)
    tube = v * np.exp(log_c) / (2 * np.pi) * (1 + m**2 / nu) ** (-(nu - 1) / 2)
    return float(stats.t.sf(m, nu) + tube)


def davies_test(
    x: np.ndarray,
    y: np.ndarray,
    k: int = 10,
    alternative: str = "two.sided",
    values: np.ndarray | None = None,
) -> DaviesResult:
    """Davies' test of H0: no change in the slope of y on x (``davies.test(lm(y ~ x), ~x)``).

    Raises ValueError when there are fewer than 4 observations or x has fewer than 3 distinct
    values (R fails on these too).
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    if n < 4 or np.unique(x).size < 3:
        raise ValueError("the Davies test needs at least 4 observations and 3 distinct x values")
    points = evaluation_points(x, k) if values is None else np.asarray(values, dtype=float)
    if points.size < 1:
        raise ValueError("no admissible evaluation points")
    t = hinge_t_statistics(x, y, points)
    n_eff = n
    if alternative == "greater":
        i = int(np.argmax(t))
        p = _one_sided_bound(t, t[i], n_eff)
    elif alternative == "less":
        i = int(np.argmin(t))
        p = _one_sided_bound(-t, -t[i], n_eff)
    else:
        i = int(np.argmax(np.abs(t)))
        p = 2 * _one_sided_bound(t, abs(t[i]), n_eff)
    method = "Davies (1987)" if n > EXACT_MAX_N else "Davies (2002)"
    return DaviesResult(min(p, 1.0), float(points[i]), points, t, method)
