"""Fast tier: derived quantities and summary tables on fake posteriors (arviz_base.from_dict)."""

from __future__ import annotations

import json

import arviz_base as ab
import numpy as np
import pytest
import xarray as xr

from bayes_soil import posterior
from bayes_soil.schema import BREAKPOINTS_POSTERIOR_COLUMNS, RATES_POSTERIOR_COLUMNS

VEG = ["forest", "shrub"]
STAGES3 = ["0-5", "6-10", "11-20"]
LAY = ["0-20", "20-100", "100-200"]


def test_add_total_layer_sums_drawwise():
    da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("draw", "layer"), coords={"layer": LAY})
    out = posterior.add_total_layer(da)
    assert list(out["layer"].values) == [*LAY, "0-200"]
    np.testing.assert_allclose(out.sel(layer="0-200").values, [0 + 1 + 2, 3 + 4 + 5])
    # a partial set of layers gets no total (it would not be 0-200)
    part = posterior.add_total_layer(da.sel(layer=["0-20", "20-100"]))
    assert "0-200" not in part["layer"].values


def test_cumulative_change_is_piecewise_linear():
    rates = np.array([1.0, -2.0, 0.5])  # stages 0-5, 6-10, >10 (last open-ended)
    f = posterior.cumulative_change(rates, np.array([0, 5, 10, 14]))
    np.testing.assert_allclose(f, [0.0, 5.0, 5.0 - 10.0, -5.0 + 0.5 * 4])


@pytest.mark.parametrize(
    ("rates", "t_max", "expected"),
    [
        ([1.0, 1.0], 20.0, 0.0),  # gains from the start
        ([-1.0, 2.0], 20.0, 7.5),  # F(5) = -5, then +2/yr: zero at 5 + 2.5
        ([-1.0, 0.5], 12.0, np.nan),  # F(12) = -5 + 3.5 < 0: not within the observed ages
        ([1.0, -2.0, 1.0], 40.0, 15.0),  # F(5)=5, F(10)=-5, then +1/yr: zero at 15
    ],
)
def test_first_gain_age_hand_computed(rates, t_max, expected):
    rates = np.asarray(rates)
    got = posterior.first_gain_age(rates[None, :], t_max)[0]
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected)


def test_first_gain_age_dip_after_gain_counts_last_crossing():
    # gain, then loss below zero, then gain again: the lasting gain starts at the last crossing
    rates = np.array([[1.0, -3.0, 2.0]])  # F(5)=5, F(10)=-10, then +2/yr -> 15
    assert posterior.first_gain_age(rates, 30.0)[0] == pytest.approx(15.0)


def _fake_hier(seed: int = 0, verdict: str = "pass") -> xr.DataTree:
    rng = np.random.default_rng(seed)
    shape = (4, 200, 2, len(VEG), len(STAGES3), len(LAY))
    rate = rng.normal(0.5, 0.1, shape)
    rate[:, :, :, 0, 0, 0] = rng.normal(-1.0, 0.01, (*shape[:2], 2))
    rate[:, :, 1] *= 0.1  # N = C / 10 in expectation
    dims = ["element", "vegetation", "stage", "layer"]
    coords = {"element": ["C", "N"], "vegetation": VEG, "stage": STAGES3, "layer": LAY}
    dt = ab.from_dict({"posterior": {"rate": rate}}, dims={"rate": dims}, coords=coords)
    post = dt["posterior"].to_dataset()
    r = posterior.add_total_layer(post["rate"])
    max_age = xr.DataArray([25.0, 25.0], dims="vegetation", coords={"vegetation": VEG})
    ds = xr.Dataset(
        {
            "rate": r,
            "rate_mean": r.mean("vegetation"),
            "rate_ratio": r.sel(element="C", drop=True) / r.sel(element="N", drop=True),
            "rate_ratio_mean": r.mean("vegetation").sel(element="C", drop=True)
            / r.mean("vegetation").sel(element="N", drop=True),
            "years_to_gain": posterior.years_to_gain(r, max_age),
        }
    )
    dt["posterior"] = ds
    dt.attrs.update(
        diagnostics_verdict=verdict, observed_max_age=json.dumps({"forest": 25.0, "shrub": 25.0})
    )
    return dt


def test_rates_table_columns_values_and_interval():
    dt = _fake_hier()
    df = posterior.rates_table(dt, hdi_prob=0.9)
    assert list(df.columns[: len(RATES_POSTERIOR_COLUMNS)]) == list(RATES_POSTERIOR_COLUMNS)
    assert (df["interval"] == "90% HDI").all()
    # 2 elements x (2 vegetation + all) x 3 stages x 4 layers
    assert len(df) == 2 * 3 * 3 * 4
    row = df.query(
        "element == 'C' and vegetation == 'forest' and stage == '0-5' and layer == '0-20'"
    )
    assert row["mean"].item() == pytest.approx(-1.0, abs=0.01)
    assert row["p_positive"].item() == 0.0
    assert row["hdi_low"].item() < -1.0 < row["hdi_high"].item()
    assert row["r_hat"].item() < 1.01 and row["ess_bulk"].item() > 400
    allrow = df.query(
        "element == 'C' and vegetation == 'all' and stage == '0-5' and layer == '0-20'"
    )
    assert allrow["mean"].item() == pytest.approx((-1.0 + 0.5) / 2, abs=0.02)
    tot = df.query(
        "element == 'C' and vegetation == 'shrub' and stage == '6-10' and layer == '0-200'"
    )
    assert tot["mean"].item() == pytest.approx(1.5, abs=0.03)
    assert (df["diagnostics_verdict"] == "pass").all()


def test_failed_fit_is_marked_in_every_table():
    dt = _fake_hier(verdict="fail")
    for table in (posterior.rates_table, posterior.rate_ratio_table, posterior.years_to_gain_table):
        assert (table(dt)["diagnostics_verdict"] == "fail").all()


def test_rate_ratio_table_from_draws():
    df = posterior.rate_ratio_table(_fake_hier())
    row = df.query("vegetation == 'shrub' and stage == '11-20' and layer == '20-100'")
    assert row["median"].item() == pytest.approx(10.0, rel=0.05)
    assert row["p_n_rate_positive"].item() == 1.0
    assert set(df["vegetation"]) == {*VEG, "all"}


def test_years_to_gain_table_reports_share_not_gaining():
    df = posterior.years_to_gain_table(_fake_hier())
    # forest 0-20 C: -1/yr for 5 yr then +0.5/yr: F(5) = -5, zero at 15 yr
    row = df.query("element == 'C' and vegetation == 'forest' and layer == '0-20'")
    assert row["median"].item() == pytest.approx(15.0, abs=0.3)
    # F(25) = -5 + 0.5 x 20 = 5 with sd ~1.6 over draws: almost every draw gains by 25 yr
    assert 0.0 <= row["p_not_within_observed"].item() < 0.02
    assert row["observed_max_age"].item() == 25.0
    shrub = df.query("element == 'C' and vegetation == 'shrub' and layer == '0-20'")
    assert shrub["median"].item() == 0.0


def _fake_breaks(psi_c: float = 500.0, psi_n: float = 450.0) -> xr.DataTree:
    rng = np.random.default_rng(1)
    n = (4, 250)
    psi = np.empty((*n, 2, 1, 2))
    psi[..., 0, 0, :] = rng.normal(psi_c, 10.0, (*n, 2))
    psi[..., 1, 0, :] = rng.normal(psi_n, 10.0, (*n, 2))
    k1 = rng.normal(-0.002, 0.0002, psi.shape)
    k2 = rng.normal(0.003, 0.0002, psi.shape)
    dims = ["element", "driver", "layer"]
    coords = {"element": ["C", "N"], "driver": ["map_mm"], "layer": ["0-20", "0-200"]}
    dt = ab.from_dict(
        {"posterior": {"psi": psi, "k1": k1, "k2": k2}},
        dims={v: dims for v in ("psi", "k1", "k2")},
        coords=coords,
    )
    post = dt["posterior"].to_dataset()
    dt["posterior"] = post.assign(
        psi_diff=post["psi"].sel(element="C", drop=True) - post["psi"].sel(element="N", drop=True)
    )
    dt.attrs.update(diagnostics_verdict="pass")
    return dt


def test_breakpoints_table():
    df = posterior.breakpoints_table(_fake_breaks())
    assert list(df.columns[: len(BREAKPOINTS_POSTERIOR_COLUMNS)]) == list(
        BREAKPOINTS_POSTERIOR_COLUMNS
    )
    assert len(df) == 4
    c = df.query("element == 'C' and layer == '0-20'")
    assert c["psi_mean"].item() == pytest.approx(500.0, abs=1.0)
    assert c["psi_hdi_low"].item() < 500 < c["psi_hdi_high"].item()
    assert c["psi_hdi_high"].item() - c["psi_hdi_low"].item() == pytest.approx(
        2 * 1.88 * 10.0, rel=0.1
    )
    assert c["p_k1_neg_k2_pos"].item() == 1.0
    # no grid, no p_break in this fake: P(break) is the share of draws with a psi
    assert c["p_break"].item() == 1.0 and c["decision"].item() == "turning point"
    assert (df["interval"] == "94% HDI given a turning point").all()


def test_breakpoints_table_from_the_exact_grid_with_nan_draws():
    dt = _fake_breaks()
    post = dt["posterior"].to_dataset()
    psi = post["psi"].copy()
    psi.values[:, :100] = np.nan  # 40% of draws: no turning point
    dt["posterior"] = post.assign(psi=psi)
    grid = np.linspace(400.0, 600.0, 41)
    prob = np.zeros((2, 2, 41))
    prob[..., 20] = 0.35  # 500 mm
    prob[..., 19] = 0.25
    dt["psi_grid"] = xr.Dataset(
        {
            "psi_prob_map_mm": (("element", "layer", "psi_map_mm"), prob),
            "p_no_break": (("element", "driver", "layer"), np.full((2, 1, 2), 0.4)),
        },
        coords={
            "element": ["C", "N"],
            "layer": ["0-20", "0-200"],
            "driver": ["map_mm"],
            "psi_map_mm": grid,
        },
    )
    df = posterior.breakpoints_table(dt, hdi_prob=0.9)
    c = df.query("element == 'C' and layer == '0-20'")
    assert c["p_break"].item() == pytest.approx(0.6)
    assert c["decision"].item() == "the data do not decide"
    assert c["psi_hdi_low"].item() == pytest.approx(495.0 - 2.5)  # bins at their outer edges
    assert c["psi_hdi_high"].item() == pytest.approx(500.0 + 2.5)
    assert c["psi_median"].item() == 500.0 and c["psi_source"].item() == "exact grid posterior"
    assert posterior.break_decision(0.85) == "turning point"
    assert posterior.break_decision(0.1) == "no turning point"


def test_psi_diff_table():
    df = posterior.psi_diff_table(_fake_breaks())
    assert df["mean"].to_numpy() == pytest.approx([50.0, 50.0], abs=1.5)
    assert (df["p_c_above_n"] > 0.99).all()


def test_main_quantities_picks_the_model():
    assert "p_break" in posterior.main_quantities(_fake_breaks()).columns
    hier = posterior.main_quantities(_fake_hier())
    assert "stage" in hier.columns and len(hier) == 2 * 3  # 'all', 0-200 only
    assert (hier["layer"] == "0-200").all()
