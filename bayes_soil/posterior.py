"""Derived quantities and summary tables of fits (rates, ratios, time to gain, turning points).

Derived quantities are computed from draws (never from summaries), so ratios and sums carry
the full posterior uncertainty. Every table names its interval (``interval`` column, default
"94% HDI") and carries the fit's diagnostics verdict, so a failed fit is visible in every
summary.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayes_soil.schema import (
    ALL_VEGETATION,
    BREAKPOINTS_POSTERIOR_COLUMNS,
    LAYERS,
    RATES_POSTERIOR_COLUMNS,
    STAGE_LOWER,
    STAGE_UPPER,
    TOTAL_LAYER,
)

if TYPE_CHECKING:
    import xarray as xr

SAMPLE_DIMS = ("chain", "draw")


# ---- derived quantities -------------------------------------------------------------------
def add_total_layer(da: xr.DataArray, dim: str = "layer") -> xr.DataArray:
    """Append the 0-200 layer as the draw-wise sum of 0-20, 20-100 and 100-200.

    Returned unchanged when one of the three layers is missing (the sum would be partial).
    """
    import xarray as xr

    labels = [str(x) for x in da[dim].values]
    if not all(lay in labels for lay in LAYERS) or TOTAL_LAYER in labels:
        return da
    total = da.sel({dim: list(LAYERS)}).sum(dim).expand_dims({dim: [TOTAL_LAYER]})
    return xr.concat([da, total], dim=dim, join="outer")


def cumulative_change(rates: np.ndarray, t: np.ndarray) -> np.ndarray:
    """F(t) = sum_g rate_g * clip(t - a_g, 0, b_g - a_g) (last fitted stage open-ended).

    ``rates`` (..., stage) in units per year; ``t`` (k,) ages; returns (..., k).
    """
    g = rates.shape[-1]
    lower = np.asarray(STAGE_LOWER[:g])
    upper = np.asarray(STAGE_UPPER[:g], dtype=float).copy()
    upper[-1] = np.inf
    h = np.clip(np.asarray(t, float)[:, None] - lower, 0.0, upper - lower)  # (k, g)
    return rates @ h.T


def first_gain_age(rates: np.ndarray, t_max: float) -> np.ndarray:
    """First age after which F(t) > 0 up to ``t_max``; NaN where F(t_max) <= 0.

    F is piecewise linear with knots at the stage bounds, so the answer is exact: the last knot
    where F <= 0 (F(0) = 0 always) and linear interpolation to the zero crossing after it.
    """
    g = rates.shape[-1]
    knots = np.array([lo for lo in STAGE_LOWER[:g] if lo < t_max] + [t_max], dtype=float)
    f = cumulative_change(rates, knots)  # (..., k)
    nonpos = f <= 0
    k = len(knots)
    last = k - 1 - np.argmax(nonpos[..., ::-1], axis=-1)  # last index with F <= 0
    last = np.minimum(last, k - 2)
    f0 = np.take_along_axis(f, last[..., None], -1)[..., 0]
    f1 = np.take_along_axis(f, (last + 1)[..., None], -1)[..., 0]
    t0, t1 = knots[last], knots[last + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(f1 > f0, -f0 / (f1 - f0), 0.0)
    age = t0 + np.clip(frac, 0.0, 1.0) * (t1 - t0)
    return np.where(f[..., -1] > 0, age, np.nan)


def years_to_gain(rate: xr.DataArray, max_age: xr.DataArray) -> xr.DataArray:
    """Draw-wise first age of lasting net gain per (element, vegetation, layer).

    ``rate`` has dims (..., vegetation, stage, layer); ``max_age`` (vegetation) bounds the
    search to the observed ages of each vegetation (NaN = not within them).
    """
    import xarray as xr

    parts = []
    for v in rate["vegetation"].values:
        r = rate.sel(vegetation=v).transpose(..., "stage")
        t_max = float(max_age.sel(vegetation=v))
        vals = first_gain_age(r.values, t_max)
        parts.append(
            xr.DataArray(
                vals, dims=r.dims[:-1], coords={d: r[d] for d in r.dims[:-1] if d in r.coords}
            )
        )
    out = xr.concat(parts, dim=rate["vegetation"])
    order = [d for d in rate.dims if d != "stage"]
    return out.transpose(*order)


# ---- summaries ----------------------------------------------------------------------------
def interval_label(hdi_prob: float) -> str:
    return f"{round(hdi_prob * 100, 1):g}% HDI"


def _summary_frame(da: xr.DataArray, hdi_prob: float, extra: bool = True) -> pd.DataFrame:
    """mean, sd, HDI, P(>0), R-hat and bulk ESS per cell of a posterior DataArray."""
    import arviz_stats as azs
    import xarray as xr

    stats = {
        "mean": da.mean(SAMPLE_DIMS),
        "sd": da.std(SAMPLE_DIMS),
    }
    hdi = azs.hdi(da, prob=hdi_prob, skipna=True)
    stats["hdi_low"] = hdi.sel(ci_bound="lower", drop=True)
    stats["hdi_high"] = hdi.sel(ci_bound="upper", drop=True)
    if extra:
        stats["p_positive"] = (da > 0).mean(SAMPLE_DIMS)
        stats["r_hat"] = azs.rhat(da)
        stats["ess_bulk"] = azs.ess(da, method="bulk")
    ds = xr.Dataset(
        {
            k: v.reset_coords(drop=True) if hasattr(v, "reset_coords") else v
            for k, v in stats.items()
        }
    )
    return ds.to_dataframe().reset_index()


def _verdict(dt: xr.DataTree) -> str:
    return str(dt.attrs.get("diagnostics_verdict", "unknown"))


def rates_table(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """rates_posterior.csv: one row per element x layer x vegetation (incl. "all") x stage.

    Columns of DATA_SCHEMA.md section 5, then ``interval`` (e.g. "94% HDI"), ``n_rows`` (layer
    rows in that cell, where stored) and ``diagnostics_verdict``.
    """
    post = dt["posterior"].to_dataset()
    if "rate" not in post:
        raise ValueError("this fit has no `rate` (not a hier_rates fit)")
    per_veg = _summary_frame(post["rate"], hdi_prob)
    pooled = _summary_frame(post["rate_mean"], hdi_prob).assign(vegetation=ALL_VEGETATION)
    df = pd.concat([per_veg, pooled], ignore_index=True)
    df["interval"] = interval_label(hdi_prob)
    if "constant_data" in dt and "n_rows" in dt["constant_data"]:
        n = dt["constant_data"]["n_rows"].to_dataset().to_dataframe()["n_rows"].reset_index()
        n = n.rename(columns={"fit_layer": "layer"})
        n_all = n.groupby(["element", "stage", "layer"], as_index=False)["n_rows"].sum()
        n = pd.concat([n, n_all.assign(vegetation=ALL_VEGETATION)], ignore_index=True)
        df = df.merge(n, on=["element", "vegetation", "stage", "layer"], how="left")
    df["diagnostics_verdict"] = _verdict(dt)
    lead = [*RATES_POSTERIOR_COLUMNS, "interval"]
    return df[lead + [c for c in df.columns if c not in lead]]


def rate_ratio_table(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """C:N rate ratios from draws: layer, vegetation (incl. "all"), stage, median, mean, HDI.

    The ratio's posterior is heavy-tailed where the N rate is near zero, so the median is given
    beside the mean and ``p_n_rate_positive`` says how often the denominator is positive.
    """
    post = dt["posterior"].to_dataset()
    if "rate_ratio" not in post:
        raise ValueError("this fit has no `rate_ratio` (needs both elements)")
    frames = []
    for name, veg in (("rate_ratio", None), ("rate_ratio_mean", ALL_VEGETATION)):
        if name not in post:
            continue
        da = post[name]
        f = _summary_frame(da, hdi_prob, extra=False)
        f["median"] = da.median(SAMPLE_DIMS).to_dataframe(name="m")["m"].to_numpy()
        if veg is not None:
            f["vegetation"] = veg
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    n_rate = post["rate"].sel(element="N", drop=True)
    pn = pd.concat(
        [
            (n_rate > 0).mean(SAMPLE_DIMS).to_dataframe(name="p_n_rate_positive").reset_index(),
            (post["rate_mean"].sel(element="N", drop=True) > 0)
            .mean(SAMPLE_DIMS)
            .to_dataframe(name="p_n_rate_positive")
            .reset_index()
            .assign(vegetation=ALL_VEGETATION),
        ],
        ignore_index=True,
    )
    df = df.merge(pn, on=["vegetation", "stage", "layer"], how="left")
    df["interval"] = interval_label(hdi_prob)
    df["diagnostics_verdict"] = _verdict(dt)
    cols = [
        "layer",
        "vegetation",
        "stage",
        "median",
        "mean",
        "sd",
        "hdi_low",
        "hdi_high",
        "p_n_rate_positive",
        "interval",
        "diagnostics_verdict",
    ]
    return df[cols]


def years_to_gain_table(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """Time to net gain: median and HDI over draws that gain, and the share that do not.

    ``p_not_within_observed`` is the share of draws where the cumulative change is not
    positive by the oldest observed age of that vegetation (``observed_max_age``).
    """
    import arviz_stats as azs

    da = dt["posterior"]["years_to_gain"].to_dataset()["years_to_gain"]
    hdi = azs.hdi(da, prob=hdi_prob, skipna=True)
    frame = (
        da.median(SAMPLE_DIMS, skipna=True)
        .to_dataframe(name="median")
        .join(hdi.sel(ci_bound="lower", drop=True).to_dataframe(name="hdi_low"))
        .join(hdi.sel(ci_bound="upper", drop=True).to_dataframe(name="hdi_high"))
        .join(da.isnull().mean(SAMPLE_DIMS).to_dataframe(name="p_not_within_observed"))
        .reset_index()
    )
    frame = frame[[c for c in frame.columns if c not in ("chain", "draw")]]
    ages = json.loads(dt.attrs.get("observed_max_age", "{}") or "{}")
    frame["observed_max_age"] = frame["vegetation"].map(ages)
    frame["interval"] = interval_label(hdi_prob) + " (of draws that gain)"
    frame["diagnostics_verdict"] = _verdict(dt)
    return frame


def breakpoints_table(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """breakpoints_posterior.csv: one row per element x layer x driver.

    DATA_SCHEMA.md section 5 columns, then ``interval``, the HDIs of k1 and k2,
    ``p_k1_neg_k2_pos`` (P(k1 < 0 < k2), the paper's decrease-then-increase pattern),
    ``ess_bulk`` of psi, the LOO evidence against the no-break model and the verdict.
    """
    post = dt["posterior"].to_dataset()
    if "psi" not in post:
        raise ValueError("this fit has no `psi` (not a climate_breakpoints fit)")
    psi = _summary_frame(post["psi"], hdi_prob)
    psi = psi.rename(
        columns={
            "mean": "psi_mean",
            "sd": "psi_sd",
            "hdi_low": "psi_hdi_low",
            "hdi_high": "psi_hdi_high",
        }
    ).drop(columns=["p_positive"])
    keys = ["element", "layer", "driver"]
    for k in ("k1", "k2"):
        f = _summary_frame(post[k], hdi_prob, extra=False)[[*keys, "mean", "hdi_low", "hdi_high"]]
        psi = psi.merge(
            f.rename(
                columns={
                    "mean": f"{k}_mean",
                    "hdi_low": f"{k}_hdi_low",
                    "hdi_high": f"{k}_hdi_high",
                }
            ),
            on=keys,
        )
    pat = ((post["k1"] < 0) & (post["k2"] > 0)).mean(SAMPLE_DIMS)
    psi = psi.merge(pat.to_dataframe(name="p_k1_neg_k2_pos").reset_index(), on=keys)
    loo = json.loads(dt.attrs.get("loo_elpd_diff", "{}") or "{}")
    loo_se = json.loads(dt.attrs.get("loo_elpd_diff_se", "{}") or "{}")
    # per-driver comparison where stored, else the comparison with no hinge in any driver
    pairs = list(zip(psi["element"], psi["driver"], strict=True))
    key = [d if d in loo.get(e, {}) else "all" for e, d in pairs]
    psi["loo_elpd_diff"] = [
        loo.get(e, {}).get(k, np.nan) for (e, _), k in zip(pairs, key, strict=True)
    ]
    psi["loo_elpd_diff_se"] = [
        loo_se.get(e, {}).get(k, np.nan) for (e, _), k in zip(pairs, key, strict=True)
    ]
    psi["loo_reference"] = [
        "no hinge in any driver" if k == "all" else f"no hinge in {k}" for k in key
    ]
    psi["interval"] = interval_label(hdi_prob)
    psi["diagnostics_verdict"] = _verdict(dt)
    lead = [*BREAKPOINTS_POSTERIOR_COLUMNS, "interval"]
    return psi[lead + [c for c in psi.columns if c not in lead]]


def psi_diff_table(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """psi_C - psi_N per driver x layer: mean, HDI and P(psi_C > psi_N)."""
    da = dt["posterior"]["psi_diff"].to_dataset()["psi_diff"]
    f = _summary_frame(da, hdi_prob, extra=False)
    f["p_c_above_n"] = (da > 0).mean(SAMPLE_DIMS).to_dataframe(name="p").reset_index()["p"]
    f["interval"] = interval_label(hdi_prob)
    f["diagnostics_verdict"] = _verdict(dt)
    return f


def main_quantities(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """A short table for the terminal: pooled rates ('all') or turning points."""
    post = dt["posterior"]
    if "rate_mean" in post:
        df = rates_table(dt, hdi_prob)
        df = df[df["vegetation"] == ALL_VEGETATION]
        if (df["layer"] == TOTAL_LAYER).any():  # keep the terminal table short: 0-200 only
            df = df[df["layer"] == TOTAL_LAYER]
        return df[["element", "layer", "stage", "mean", "hdi_low", "hdi_high", "p_positive"]]
    if "psi" in post:
        df = breakpoints_table(dt, hdi_prob)
        return df[
            [
                "element",
                "driver",
                "layer",
                "psi_mean",
                "psi_hdi_low",
                "psi_hdi_high",
                "k1_mean",
                "k2_mean",
                "loo_elpd_diff",
                "loo_elpd_diff_se",
            ]
        ]
    raise ValueError("unknown fit: neither `rate_mean` nor `psi` in the posterior")
