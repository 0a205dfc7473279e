"""Fieller's interval for the C:N rate ratio, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_soil.frequentist.fieller import fieller_interval, slope_covariance
from bayes_soil.frequentist.rates import stage_rate_ratios, stage_rates


def test_fieller_hand_computed():
    # a = 2, b = 1, var 0.04 / 0.01, cov 0, c = 2:
    # 0.96 rho^2 - 4 rho + 3.84 = 0 -> rho = (4 -+ 1.12) / 1.92 = 1.5, 2.6667
    lo, hi, bounded = fieller_interval(2.0, 1.0, 0.04, 0.01, 0.0, 2.0)
    assert bounded
    assert (lo, hi) == pytest.approx((1.5, 8 / 3), rel=1e-12)
    # with cov 0.01: 0.96 rho^2 - 2 (2 - 0.04) rho + 3.84 = 0 -> (3.92 -+ sqrt(0.6208)) / 1.92
    lo, hi, _ = fieller_interval(2.0, 1.0, 0.04, 0.01, 0.01, 2.0)
    d = np.sqrt(3.92**2 - 4 * 0.96 * 3.84)
    assert (lo, hi) == pytest.approx(((3.92 - d) / 1.92, (3.92 + d) / 1.92), rel=1e-12)
    # b not distinguishable from 0 (|b| / se_b = 1 < 2): unbounded
    lo, hi, bounded = fieller_interval(2.0, 0.1, 0.04, 0.01, 0.0, 2.0)
    assert not bounded and np.isnan(lo) and np.isnan(hi)


def test_slope_covariance_on_the_same_rows_is_sigma_cn_over_sxx():
    x = np.array([0.0, 1, 2, 3, 4, 5])
    e_c = np.array([0.3, -0.2, 0.1, -0.4, 0.5, -0.1])
    e_n = np.array([0.1, 0.0, -0.2, -0.1, 0.3, 0.2])
    pid = [f"p{i}" for i in range(6)]
    c = pd.DataFrame({"profile_id": pid, "years": x, "stock_mg_ha": 10 + 2 * x + e_c})
    n = pd.DataFrame(
        {"profile_id": pid[::-1], "years": x[::-1], "stock_mg_ha": (1 + 0.1 * x + e_n)[::-1]}
    )
    cov, how = slope_covariance(c, n)
    rc = np.polyfit(x, c["stock_mg_ha"], 1)
    rn = np.polyfit(x, 1 + 0.1 * x + e_n, 1)
    res_c = c["stock_mg_ha"] - np.polyval(rc, x)
    res_n = 1 + 0.1 * x + e_n - np.polyval(rn, x)
    sxx = ((x - x.mean()) ** 2).sum()
    assert cov == pytest.approx(float(res_c @ res_n) / 4 / sxx, rel=1e-10)
    assert "same rows" in how
    cov0, how0 = slope_covariance(c.drop(columns="profile_id"), n.drop(columns="profile_id"))
    assert cov0 == 0 and "taken as 0" in how0


def test_ratio_is_undefined_when_the_n_rate_ci_includes_zero():
    rng = np.random.default_rng(0)
    rows = []
    for i, t in enumerate(np.tile(np.arange(0.0, 6.0), 4)):
        rows.append(("C", t, 10 + 1.0 * t + rng.normal(0, 0.2), f"p{i}"))
        rows.append(("N", t, 1 + 0.0 * t + rng.normal(0, 0.2), f"p{i}"))  # N rate ~ 0
    layers = pd.DataFrame(rows, columns=["element", "years", "stock_mg_ha", "profile_id"])
    layers = layers.assign(layer="0-20", vegetation="forest", stage="0-5")
    rates = stage_rates(layers)
    ratios = stage_rate_ratios(rates, layers).set_index(["layer", "vegetation", "stage"])
    r = ratios.loc[("0-20", "forest", "0-5")]
    n = rates[(rates["element"] == "N") & (rates["vegetation"] == "forest")].iloc[0]
    assert n["ci_low"] < 0 < n["ci_high"]
    assert r["status"] == "undefined" and r["reason"] == "N rate's CI includes 0"
    assert np.isfinite(r["ratio"])  # the point ratio stays, flagged
    assert "Fieller" in r["ratio_interval"] and "same rows" in r["covariance_note"]
