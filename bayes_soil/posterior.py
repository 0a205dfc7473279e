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

    Columns of docs/data_format.md section 5, then ``interval`` (e.g. "94% HDI"), ``n_rows`` (layer
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


BREAK_CERTAIN = 0.8  # P(break) >= this: "turning point"; <= 1 - this: "no turning point"


def break_decision(p_break: float) -> str:
    """What P(turning point) says: a turning point, none, or "the data do not decide"."""
    if not np.isfinite(p_break):
        return ""
    if p_break >= BREAK_CERTAIN:
        return "turning point"
    if p_break <= 1 - BREAK_CERTAIN:
        return "no turning point"
    return "the data do not decide"


def grid_interval(values: np.ndarray, prob: np.ndarray, hdi_prob: float) -> dict:
    """Mean, sd, median and HDI of psi given a break from its exact grid posterior.

    The grid points are the centres of equal bins; the HDI is the span of the fewest bins
    holding ``hdi_prob`` of the mass, reported at their outer edges.
    """
    total = prob.sum()
    if not total > 0:
        return dict.fromkeys(("psi_mean", "psi_sd", "psi_median", "psi_hdi_low", "psi_hdi_high"))
    p = prob / total
    mean = float((p * values).sum())
    step = float(values[1] - values[0]) if len(values) > 1 else 0.0
    order = np.argsort(-p, kind="stable")
    n = int(np.searchsorted(np.cumsum(p[order]), hdi_prob - 1e-12) + 1)
    chosen = values[order[:n]]
    return {
        "psi_mean": mean,
        "psi_sd": float(np.sqrt((p * (values - mean) ** 2).sum())),
        "psi_median": float(values[np.searchsorted(np.cumsum(p), 0.5)]),
        "psi_hdi_low": float(chosen.min() - step / 2),
        "psi_hdi_high": float(chosen.max() + step / 2),
    }


def breakpoints_table(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """breakpoints_posterior.csv: one row per element x layer x driver.

    docs/data_format.md section 5 columns (psi's mean, sd and HDI are *given a turning point*;
    ``r_hat`` is that of P(break)), then ``interval``, ``p_break`` (posterior probability of a
    turning point, exact from the grid where the fit has one), ``decision`` ("turning point" at
    P >= 0.8, "no turning point" at P <= 0.2, else "the data do not decide"), psi's median,
    k1 / k2 means and HDIs and P(k1 < 0 < k2), all given a turning point; with two drivers,
    ``p_only_this_driver``, ``p_both_drivers`` and ``carried_by`` (which driver carries the
    turning point of the element x layer); the verdict.
    """
    import arviz_stats as azs

    post = dt["posterior"].to_dataset()
    if "psi" not in post:
        raise ValueError("this fit has no `psi` (not a climate_breakpoints fit)")
    grid = dt["psi_grid"].to_dataset() if "psi_grid" in dt.children else None
    psi = post["psi"]
    keys = ["element", "layer", "driver"]
    rows = []
    for e in psi["element"].values:
        for d in psi["driver"].values:
            for lay in psi["layer"].values:
                cell = {"element": str(e), "layer": str(lay), "driver": str(d)}
                draws = psi.sel(element=e, driver=d, layer=lay).values.ravel()
                if grid is not None and "p_no_break" in grid:
                    cell["p_break"] = 1.0 - float(
                        grid["p_no_break"].sel(element=e, driver=d, layer=lay)
                    )
                elif "p_break" in post:
                    cell["p_break"] = float(
                        post["p_break"].sel(element=e, driver=d, layer=lay).mean()
                    )
                else:
                    cell["p_break"] = float(np.isfinite(draws).mean())
                gname = f"psi_prob_{d}"
                if grid is not None and gname in grid:
                    g = grid[gname].sel(element=e, layer=lay)
                    cell.update(grid_interval(g[f"psi_{d}"].values, g.values, hdi_prob))
                    cell["psi_source"] = "exact grid posterior"
                else:
                    ok = draws[np.isfinite(draws)]
                    if len(ok) > 1:
                        lo, hi = azs.hdi(ok, prob=hdi_prob)
                        cell.update(
                            psi_mean=float(ok.mean()),
                            psi_sd=float(ok.std()),
                            psi_median=float(np.median(ok)),
                            psi_hdi_low=float(lo),
                            psi_hdi_high=float(hi),
                        )
                    cell["psi_source"] = "draws"
                for k in ("k1", "k2"):
                    kd = post[k].sel(element=e, driver=d, layer=lay).values.ravel()
                    kd = kd[np.isfinite(kd)]
                    if len(kd) > 1:
                        lo, hi = azs.hdi(kd, prob=hdi_prob)
                        cell.update(
                            {
                                f"{k}_mean": float(kd.mean()),
                                f"{k}_hdi_low": float(lo),
                                f"{k}_hdi_high": float(hi),
                            }
                        )
                k1 = post["k1"].sel(element=e, driver=d, layer=lay).values
                k2 = post["k2"].sel(element=e, driver=d, layer=lay).values
                has = np.isfinite(k1) & np.isfinite(k2)
                cell["p_k1_neg_k2_pos"] = (
                    float(((k1 < 0) & (k2 > 0))[has].mean()) if has.any() else np.nan
                )
                if "p_break" in post:
                    pb = post["p_break"].sel(element=e, driver=d, layer=lay)
                    if float(pb.std()) > 0:
                        cell["r_hat"] = float(azs.rhat(pb.values))
                        cell["ess_bulk"] = float(azs.ess(pb.values, method="bulk"))
                if grid is not None and "p_break_pattern" in grid:
                    pat = grid["p_break_pattern"].sel(element=e, layer=lay)
                    labels = [str(x) for x in pat["pattern"].values]
                    vals = dict(zip(labels, map(float, pat.values), strict=True))
                    cell["p_only_this_driver"] = vals.get(f"{d} only", np.nan)
                    cell["p_both_drivers"] = vals.get("both", np.nan)
                    best = max(vals, key=vals.get)
                    cell["carried_by"] = (
                        f"{'no driver' if best == 'none' else best} (P = {vals[best]:.2f})"
                    )
                rows.append(cell)
    df = pd.DataFrame(rows)
    for col in (
        *BREAKPOINTS_POSTERIOR_COLUMNS,
        "k1_hdi_low",
        "k1_hdi_high",
        "k2_hdi_low",
        "k2_hdi_high",
        "ess_bulk",
        "psi_median",
    ):
        if col not in df:
            df[col] = np.nan
    df["decision"] = df["p_break"].map(break_decision)
    df["interval"] = interval_label(hdi_prob) + " given a turning point"
    df["diagnostics_verdict"] = _verdict(dt)
    lead = [*BREAKPOINTS_POSTERIOR_COLUMNS, "interval", "p_break", "decision"]
    df = df[lead + [c for c in df.columns if c not in lead]]
    return df.sort_values(
        keys, key=lambda c: c.map({v: i for i, v in enumerate(pd.unique(c))}), kind="stable"
    ).reset_index(drop=True)


def psi_diff_table(dt: xr.DataTree, hdi_prob: float = 0.94) -> pd.DataFrame:
    """psi_C - psi_N per driver x layer over the draws where both have a turning point: mean,
    HDI, P(psi_C > psi_N) among them, and ``p_both_break`` (the share of such draws)."""
    da = dt["posterior"]["psi_diff"].to_dataset()["psi_diff"]
    f = _summary_frame(da, hdi_prob, extra=False)
    both = da.notnull().sum(SAMPLE_DIMS)
    above = (da > 0).sum(SAMPLE_DIMS) / both.where(both > 0)
    f["p_c_above_n"] = above.to_dataframe(name="p").reset_index()["p"]
    f["p_both_break"] = da.notnull().mean(SAMPLE_DIMS).to_dataframe(name="p").reset_index()["p"]
    f["interval"] = interval_label(hdi_prob) + " given both turning points"
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
                "p_break",
                "decision",
                "psi_hdi_low",
                "psi_median",
                "psi_hdi_high",
                "k1_mean",
                "k2_mean",
            ]
        ]
    raise ValueError("unknown fit: neither `rate_mean` nor `psi` in the posterior")
