"""Study cluster bootstrap intervals and the co-varying-driver note, on known cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_soil.frequentist.cluster import (
    bootstrap_psi,
    bootstrap_slopes,
    cell_rng,
    percentile_interval,
    rate_cluster_columns,
)
from bayes_soil.frequentist.drivers import COVARY_THRESHOLD, covary_note, driver_columns
from bayes_soil.frequentist.rates import stage_rates


def test_cluster_slopes_equal_refitting_ols_on_the_drawn_studies():
    rng = np.random.default_rng(1)
    study = np.repeat(np.arange(6), 5).astype(str)
    x = rng.uniform(0, 5, 30)
    y = 2 + 0.7 * x + np.repeat(rng.normal(0, 1, 6), 5) + rng.normal(0, 0.3, 30)
    slopes = bootstrap_slopes(x, y, study, 20, cell_rng(7, ("a",)))
    # the same resamples, by hand: draw study counts, repeat rows, polyfit
    counts = cell_rng(7, ("a",)).multinomial(6, np.full(6, 1 / 6), size=20)
    for b in range(20):
        idx = np.concatenate(
            [np.flatnonzero(study == str(s)).repeat(c) for s, c in enumerate(counts[b])]
        )
        assert slopes[b] == pytest.approx(np.polyfit(x[idx], y[idx], 1)[0], rel=1e-9)


def test_single_age_resample_has_no_slope_and_one_study_no_interval():
    # study "b" has one age only: a resample of only "b" has no slope
    x = np.array([1.0, 2, 3, 4, 4, 4])
    y = np.array([1.0, 2, 3, 4, 5, 6])
    study = np.array(["a"] * 3 + ["b"] * 3)
    slopes = bootstrap_slopes(x, y, study, 400, np.random.default_rng(0))
    n_b_only = np.isnan(slopes).sum()
    assert 60 < n_b_only < 140  # P(both draws are "b") = 1/4
    layers = pd.DataFrame(
        {
            "element": "C",
            "layer": "0-20",
            "vegetation": "forest",
            "stage": "0-5",
            "years": [0.0, 1, 2, 3],
            "stock_mg_ha": [1.0, 2, 2, 4],
            "study_id": "s1",
        }
    )
    rates = stage_rates(layers)
    cols = rate_cluster_columns(layers, rates, 50, 1)
    ok = rates.index[(rates["status"] == "ok") & (rates["vegetation"] == "forest")]
    assert np.isnan(float(cols.loc[ok[0], "ci95_cluster_low"]))
    assert "one study" in cols.loc[ok[0], "cluster_note"]


def test_cluster_interval_is_wider_than_iid_when_studies_share_an_offset():
    # 8 studies, each with its own slope deviation: the iid CI is far too narrow
    rng = np.random.default_rng(3)
    rows = []
    for s in range(8):
        dev = rng.normal(0, 0.5)
        for t in np.linspace(0, 5, 40):
            rows.append(
                ("C", "0-20", "forest", "0-5", t, 10 + (1 + dev) * t + rng.normal(0, 0.1), s)
            )
    cols = ["element", "layer", "vegetation", "stage", "years", "stock_mg_ha", "study_id"]
    layers = pd.DataFrame(rows, columns=cols)
    rates = stage_rates(layers)
    extra = rate_cluster_columns(layers, rates, 999, 2)
    i = rates.index[(rates["vegetation"] == "forest") & (rates["status"] == "ok")][0]
    iid = rates.loc[i, "ci_high"] - rates.loc[i, "ci_low"]
    clu = extra.loc[i, "ci95_cluster_high"] - extra.loc[i, "ci95_cluster_low"]
    assert clu > 3 * iid
    assert "only 8 studies" in extra.loc[i, "cluster_note"]


def test_percentile_interval_uses_finite_values():
    v = np.concatenate([np.arange(1.0, 102.0), [np.nan] * 5])
    assert percentile_interval(v) == pytest.approx((3.5, 98.5))


def test_bootstrap_psi_finds_the_break_in_every_resample():
    x = np.repeat(np.arange(300.0, 701.0, 25.0), 4)
    y = np.maximum(x - 500.0, 0) * 0.01
    study = np.repeat(np.arange(x.size // 4), 4)  # one study per driver value
    psis = bootstrap_psi(x, y, study, 30, np.random.default_rng(0))
    finite = psis[np.isfinite(psis)]
    assert finite.size >= 25
    assert np.allclose(finite, 500.0, atol=1e-6)


def _changes(map_mm, mat_c, rate):
    n = len(rate)
    return pd.DataFrame(
        {"element": "C", "layer": "0-20", "map_mm": map_mm, "mat_c": mat_c, "rate_mg_ha_yr": rate}
    ).iloc[:n]


def test_driver_columns_name_the_better_driver_and_warn_when_drivers_covary():
    x = np.linspace(300, 700, 50)
    changes = _changes(x, x / 50 + np.sin(x), np.maximum(x - 500, 0) * 0.01)
    bp = pd.DataFrame(
        {
            "element": "C",
            "layer": "0-20",
            "driver": ["map_mm", "mat_c"],
            "rss": [0.0, 1.0],
            "status": ["ok", "ok"],
        }
    )
    out = driver_columns(changes, bp)
    r = np.corrcoef(changes["map_mm"], changes["mat_c"])[0, 1]
    assert r > COVARY_THRESHOLD
    assert out["driver_correlation"].tolist() == pytest.approx([r, r])
    assert out.loc[0, "r2_segmented"] == pytest.approx(1.0)
    assert (out["better_driver"] == "map_mm").all()
    assert out.loc[1, "note"] == (
        f"drivers co-vary (r={r:.2f}): this turning point may be carried by map_mm; see the "
        "Bayesian joint model (climate_breakpoints --driver both)"
    )
    assert "shadow of this one" in out.loc[0, "note"]
    assert covary_note(0.5, "mat_c", "map_mm") == ""  # below the threshold: no note


def test_breakpoint_cluster_columns_on_an_exact_broken_line():
    from bayes_soil.frequentist.breakpoints import breakpoint_table
    from bayes_soil.frequentist.cluster import breakpoint_cluster_columns

    x = np.repeat(np.arange(300.0, 701.0, 25.0), 4)
    changes = pd.DataFrame(
        {
            "element": "C",
            "layer": "0-20",
            "map_mm": x,
            "mat_c": x / 50,
            "rate_mg_ha_yr": np.maximum(x - 500.0, 0) * 0.01 + np.tile([0, 1e-4, -1e-4, 0], 17),
            "study_id": np.repeat(np.arange(17), 4),
        }
    )
    bp = breakpoint_table(changes)
    cols = breakpoint_cluster_columns(changes, bp, 40, 3)
    i = bp.index[(bp["element"] == "C") & (bp["layer"] == "0-20") & (bp["driver"] == "map_mm")][0]
    assert float(cols.loc[i, "psi_ci95_cluster_low"]) == pytest.approx(500, abs=0.5)
    assert float(cols.loc[i, "psi_ci95_cluster_high"]) == pytest.approx(500, abs=0.5)
    assert (
        cols.loc[i, "psi_cluster_interval"] == "95% CI, study cluster bootstrap (percentile, B=40)"
    )
    absent = bp.index[bp["status"] == "absent"]  # no N rows: no psi, no interval
    assert cols.loc[absent, "psi_ci95_cluster_low"].isna().all()
