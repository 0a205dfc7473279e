"""Figures of the Bayesian side: free functions taking a fit (DataTree) or a table.

Every function returns a matplotlib Figure whose title names the interval shown and carries the
SYNTHETIC label when the fit's ``synthetic`` attribute says so. Nothing here samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from bayes_soil import schema
from bayes_soil.compare import interval_name
from bayes_soil.fits import cell_diagnostics_of
from bayes_soil.posterior import grid_interval

SYNTHETIC_TAG = "SYNTHETIC data"
UNITS_RATE = "Mg ha$^{-1}$ yr$^{-1}$"
UNITS_STOCK = "Mg ha$^{-1}$"
DRIVER_LABEL = {"map_mm": "MAP (mm)", "mat_c": "MAT (°C)"}
ELEMENT_LABEL = {"C": "SOC", "N": "STN"}
VEG_COLOURS = {"all": "#222222", "forest": "#1b7837", "shrub": "#b35806", "grassland": "#2166ac"}
FREQ_COLOUR = "#d6604d"
POST_COLOUR = "#4393c3"


def fit_is_synthetic(dt: xr.DataTree | None) -> bool:
    """The fit's ``synthetic`` root attribute (0/1, bool or text) as a bool."""
    if dt is None:
        return False
    value = dt.attrs.get("synthetic", 0)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def label_figure(
    fig: Figure,
    title: str,
    interval: str,
    synthetic: bool,
    handles: Sequence | None = None,
) -> Figure:
    """Lay the figure out under a fixed-height header: title, the interval(s) shown, an optional
    legend, and the SYNTHETIC tag (top right, red) when it applies."""
    height = fig.get_figheight()
    header = 0.62 + (0.28 if handles else 0.0)  # inches
    fig.tight_layout(rect=(0, 0, 1, 1 - header / height))
    fig.text(0.01, 1 - 0.08 / height, title, fontsize=12, ha="left", va="top")
    fig.text(
        0.01,
        1 - 0.36 / height,
        f"Intervals: {interval}",
        fontsize=9,
        ha="left",
        va="top",
        color="#444444",
    )
    if handles:
        fig.legend(
            handles=handles,
            loc="upper left",
            ncol=len(handles),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.0, 1 - 0.52 / height),
        )
    if synthetic:
        fig.text(
            0.99,
            1 - 0.08 / height,
            SYNTHETIC_TAG,
            fontsize=11,
            ha="right",
            va="top",
            color="#b2182b",
            weight="bold",
        )
    return fig


def _hdi(samples: np.ndarray, prob: float, axis: int = -1) -> np.ndarray:
    """HDI along ``axis`` (arviz_stats), returned as [..., 2]."""
    from arviz_stats.base import array_stats

    return np.asarray(array_stats.hdi(samples, prob, axis=axis))


def _stack(da: xr.DataArray) -> xr.DataArray:
    return da.stack(sample=("chain", "draw")).transpose(..., "sample")


# --------------------------------------------------------------------------------------------
# rates


def forest_rates(
    comparison: pd.DataFrame,
    element: str,
    *,
    synthetic: bool = False,
    layers: Sequence[str] = schema.ALL_LAYERS,
    vegetation: Sequence[str] = ("all", *schema.VEGETATION),
) -> Figure:
    """Forest plot: OLS slope (95% CI) beside the posterior (HDI) per stage, layer and vegetation.

    Takes the table of :func:`bayes_soil.compare.compare_rates`. OLS cells that could not be
    estimated show only the posterior (marked 'posterior only').
    """
    df = comparison[comparison["element"] == element]
    interval = str(df["interval"].dropna().iloc[0]) if len(df) else "HDI"
    layers = [la for la in layers if la in set(df["layer"])]
    vegetation = [v for v in vegetation if v in set(df["vegetation"])]
    n_rows = len(schema.STAGES) * len(vegetation)
    fig, axes = plt.subplots(
        1,
        max(len(layers), 1),
        figsize=(3.0 * max(len(layers), 1) + 1.4, 0.22 * n_rows + 1.8),
        sharey=True,
        squeeze=False,
    )
    ylabels = []
    for li, layer in enumerate(layers):
        ax = axes[0, li]
        sub = df[df["layer"] == layer]
        y = 0
        ticks = []
        for stage in schema.STAGES:
            for veg in vegetation:
                r = sub[(sub["stage"] == stage) & (sub["vegetation"] == veg)]
                ticks.append(y)
                if li == 0:
                    ylabels.append(f"{stage} yr · {veg}")
                if len(r):
                    r = r.iloc[0]
                    col = VEG_COLOURS.get(veg, "k")
                    if pd.notna(r["mean"]):
                        ax.plot([r["hdi_low"], r["hdi_high"]], [y + 0.17] * 2, color=col, lw=2)
                        ax.plot(r["mean"], y + 0.17, "o", color=col, ms=4)
                    if pd.notna(r["k"]):
                        ax.plot(
                            [r["ci_low"], r["ci_high"]], [y - 0.17] * 2, color=FREQ_COLOUR, lw=1.2
                        )
                        ax.plot(r["k"], y - 0.17, "s", mfc="white", mec=FREQ_COLOUR, ms=4)
                    elif pd.notna(r["mean"]):
                        ax.text(
                            r["hdi_high"],
                            y - 0.3,
                            " posterior only",
                            fontsize=6,
                            color="#666666",
                            va="center",
                            clip_on=True,
                        )
                y += 1
            ax.axhline(y - 0.5, color="#dddddd", lw=0.6)
        ax.axvline(0, color="#888888", lw=0.8, ls="--")
        ax.set_title(f"{layer} cm", fontsize=10)
        ax.set_xlabel(f"rate ({UNITS_RATE})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks(ticks)
    axes[0, 0].set_yticklabels(ylabels, fontsize=6.5)
    axes[0, 0].invert_yaxis()
    handles = [
        plt.Line2D(
            [], [], color="#222222", marker="o", lw=2, ms=4, label=f"posterior mean, {interval}"
        ),
        plt.Line2D(
            [],
            [],
            color=FREQ_COLOUR,
            marker="s",
            mfc="white",
            lw=1.2,
            ms=4,
            label="OLS slope, 95% CI",
        ),
    ]
    return label_figure(
        fig,
        f"{ELEMENT_LABEL.get(element, element)} change rates by stage and "
        "layer: frequentist vs posterior",
        f"posterior {interval}; OLS 95% CI",
        synthetic,
        handles,
    )


def cumulative_change_fan(
    dt: xr.DataTree,
    element: str,
    *,
    changes: pd.DataFrame | None = None,
    vegetation: str = "all",
    hdi_prob: float = 0.94,
    max_years: float | None = None,
    layers: Sequence[str] = schema.ALL_LAYERS,
) -> Figure:
    """Fan chart of the cumulative stock change F(t) = sum_g rate_g h_g(t) with the data.

    ``vegetation='all'`` uses ``rate_mean``; the data are ``changes.delta_stock_mg_ha`` of the
    element (and vegetation). Bands: 50% and ``hdi_prob`` HDI at each age.
    """
    post = dt["posterior"]
    if vegetation == "all":
        rates = post["rate_mean"].sel(element=element)
    else:
        rates = post["rate"].sel(element=element, vegetation=vegetation)
    if max_years is None:
        max_years = 40.0
        if changes is not None and len(changes):
            max_years = max(float(np.nanmax(changes["years"])), 10.0)
    t = np.linspace(0, max_years, 121)
    lower = np.asarray(schema.STAGE_LOWER)
    upper = np.asarray(schema.STAGE_UPPER)
    basis = np.clip(t[:, None] - lower[None, :], 0, upper - lower)  # (t, stage)
    layers = [la for la in layers if la in rates["layer"].values]
    ncol = min(len(layers), 2)
    nrow = int(np.ceil(len(layers) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.2 * nrow + 0.6), squeeze=False)
    name = interval_name(hdi_prob)
    for ax, layer in zip(axes.ravel(), layers, strict=False):
        r = _stack(rates.sel(layer=layer).transpose(..., "stage")).transpose("sample", "stage")
        r = r.sel(stage=list(schema.STAGES)).to_numpy()  # (sample, stage)
        f = r @ basis.T  # (sample, t)
        outer = _hdi(f, hdi_prob, axis=0)
        inner = _hdi(f, 0.5, axis=0)
        ax.fill_between(
            t, outer[..., 0], outer[..., 1], color=POST_COLOUR, alpha=0.25, lw=0, label=name
        )
        ax.fill_between(
            t, inner[..., 0], inner[..., 1], color=POST_COLOUR, alpha=0.45, lw=0, label="50% HDI"
        )
        ax.plot(t, np.median(f, axis=0), color="#08306b", lw=1.5, label="posterior median")
        if changes is not None and len(changes):
            d = changes[(changes["element"] == element) & (changes["layer"] == layer)]
            if vegetation != "all":
                d = d[d["vegetation"] == vegetation]
            ax.scatter(
                d["years"],
                d["delta_stock_mg_ha"],
                s=5,
                color="#555555",
                alpha=0.35,
                lw=0,
                label="data (stock - year-0 control)",
            )
        ax.axhline(0, color="#888888", lw=0.8, ls="--")
        for b in schema.STAGE_UPPER[:-1]:
            ax.axvline(b, color="#eeeeee", lw=0.8, zorder=0)
        ax.set_title(f"{layer} cm", fontsize=10)
        ax.set_xlabel("years since revegetation", fontsize=8)
        ax.set_ylabel(f"change in stock ({UNITS_STOCK})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(layers) :]:
        ax.set_visible(False)
    handles, _ = axes.ravel()[0].get_legend_handles_labels()
    veg_text = "all vegetation (rate_mean)" if vegetation == "all" else vegetation
    return label_figure(
        fig,
        f"Cumulative {ELEMENT_LABEL.get(element, element)} stock change, {veg_text}",
        f"{name} and 50% HDI of F(t) at each age",
        fit_is_synthetic(dt),
        handles,
    )


def cn_ratio_posteriors(
    dt: xr.DataTree,
    *,
    freq_ratios: pd.DataFrame | None = None,
    hdi_prob: float = 0.94,
    layers: Sequence[str] = schema.ALL_LAYERS,
) -> Figure | None:
    """Posterior C:N rate ratio (``rate_ratio``) per layer, stage and vegetation (median, HDI).

    Ratios of rates have heavy tails where the N rate is near zero, so the x axis is symlog.
    The frequentist k_C/k_N (rate_ratios.csv) is overlaid where given. None when the fit has no
    ``rate_ratio``.
    """
    if "rate_ratio" not in dt["posterior"].data_vars:
        return None
    ratio = dt["posterior"]["rate_ratio"]
    layers = [la for la in layers if la in ratio["layer"].values]
    vegs = [v for v in schema.VEGETATION if v in ratio["vegetation"].values]
    fig, axes = plt.subplots(
        1, len(layers), figsize=(3.0 * len(layers) + 1, 3.4), sharey=True, squeeze=False
    )
    name = interval_name(hdi_prob)
    for ax, layer in zip(axes[0], layers, strict=True):
        for si, stage in enumerate(schema.STAGES):
            for vi, veg in enumerate(vegs):
                x = _stack(ratio.sel(layer=layer, stage=stage, vegetation=veg)).to_numpy()
                x = x[np.isfinite(x)]
                if not len(x):
                    continue
                lo, hi = _hdi(x, hdi_prob)
                y = si + (vi - (len(vegs) - 1) / 2) * 0.22
                col = VEG_COLOURS.get(veg, "k")
                ax.plot([lo, hi], [y, y], color=col, lw=1.6)
                ax.plot(
                    np.median(x),
                    y,
                    "o",
                    color=col,
                    ms=3.5,
                    label=veg if (si == 0 and layer == layers[0]) else None,
                )
                if freq_ratios is not None and len(freq_ratios):
                    fr = freq_ratios[
                        (freq_ratios["layer"] == layer)
                        & (freq_ratios["stage"] == stage)
                        & (freq_ratios["vegetation"] == veg)
                    ]
                    if len(fr) and np.isfinite(fr["ratio"].iloc[0]):
                        ax.plot(
                            fr["ratio"].iloc[0],
                            y,
                            "x",
                            color=FREQ_COLOUR,
                            ms=4,
                            label="OLS k_C/k_N"
                            if (si == 0 and vi == 0 and layer == layers[0])
                            else None,
                        )
        ax.set_xscale("symlog", linthresh=10)
        ax.axvline(0, color="#888888", lw=0.8, ls="--")
        ax.set_title(f"{layer} cm", fontsize=10)
        ax.set_xlabel("C:N rate ratio (k_C / k_N)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_yticks(range(len(schema.STAGES)))
    axes[0, 0].set_yticklabels([f"{s} yr" for s in schema.STAGES], fontsize=8)
    axes[0, 0].invert_yaxis()
    handles, _ = axes[0, 0].get_legend_handles_labels()
    return label_figure(
        fig,
        "C:N rate ratio posteriors",
        f"posterior median and {name}",
        fit_is_synthetic(dt),
        handles,
    )


# --------------------------------------------------------------------------------------------
# turning points


def turning_point_densities(
    dt: xr.DataTree,
    *,
    freq_breakpoints: pd.DataFrame | None = None,
    hdi_prob: float = 0.94,
) -> Figure:
    """Posterior density of each turning point psi given a break (rows: element x driver,
    columns: layers; the exact grid posterior where the fit has one, with P(break)), its HDI
    shaded, with the segmented estimate +- 1.96 SE marked where there is one."""
    from arviz_stats.base import array_stats

    psi = dt["posterior"]["psi"]
    pgrid = dt["psi_grid"].to_dataset() if "psi_grid" in dt.children else None
    elements = [str(e) for e in psi["element"].values]
    drivers = [str(d) for d in psi["driver"].values]
    layers = [str(la) for la in psi["layer"].values]
    rows = [(e, d) for e in elements for d in drivers]
    fig, axes = plt.subplots(
        len(rows),
        len(layers),
        figsize=(2.9 * len(layers) + 0.6, 2.1 * len(rows) + 0.9),
        squeeze=False,
    )
    name = interval_name(hdi_prob)
    for ri, (el, drv) in enumerate(rows):
        for ci, layer in enumerate(layers):
            ax = axes[ri, ci]
            notes: list[str] = []  # written under the axis, never over a band or a density
            gname = f"psi_prob_{drv}"
            if pgrid is not None and gname in pgrid:  # the exact grid posterior, given a break
                g = pgrid[gname].sel(element=el, layer=layer)
                grid, mass = g[f"psi_{drv}"].to_numpy(), g.to_numpy()
                pb = float(mass.sum())
                step = float(grid[1] - grid[0]) if len(grid) > 1 else 1.0
                pdf = mass / max(pb, 1e-300) / step
                lo, hi = (
                    grid_interval(grid, mass, hdi_prob)[k] for k in ("psi_hdi_low", "psi_hdi_high")
                )
                ax.step(grid, pdf, where="mid", color=POST_COLOUR, lw=1.4)
                inside = (grid >= (lo or 0)) & (grid <= (hi or 0))
                ax.fill_between(
                    grid[inside], 0, pdf[inside], step="mid", color=POST_COLOUR, alpha=0.3, lw=0
                )
                notes.append(f"P(break)={pb:.2f}")
            else:
                x = _stack(psi.sel(element=el, driver=drv, layer=layer)).to_numpy()
                x = x[np.isfinite(x)]
                if len(x) > 1:
                    grid, pdf, _ = array_stats.kde(x)
                    lo, hi = _hdi(x, hdi_prob)
                    ax.plot(grid, pdf, color=POST_COLOUR, lw=1.4)
                    inside = (grid >= lo) & (grid <= hi)
                    ax.fill_between(
                        grid[inside], 0, pdf[inside], color=POST_COLOUR, alpha=0.3, lw=0
                    )
            if freq_breakpoints is not None and len(freq_breakpoints):
                fb = freq_breakpoints[
                    (freq_breakpoints["element"] == el)
                    & (freq_breakpoints["driver"] == drv)
                    & (freq_breakpoints["layer"] == layer)
                ]
                if len(fb) and pd.notna(fb["psi"].iloc[0]):
                    p, se = float(fb["psi"].iloc[0]), float(fb["psi_se"].iloc[0])
                    ax.axvline(p, color=FREQ_COLOUR, lw=1.3)
                    if np.isfinite(se):
                        ax.axvspan(
                            p - 1.96 * se, p + 1.96 * se, color=FREQ_COLOUR, alpha=0.12, lw=0
                        )
                    dp = fb["davies_p"].iloc[0] if "davies_p" in fb else np.nan
                    notes.append(f"Davies p={dp:.3g}")
                else:
                    notes.append("no segmented estimate")
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            if ri == 0:
                ax.set_title(f"{layer} cm", fontsize=10)
            if ci == 0:
                ax.set_ylabel(f"{ELEMENT_LABEL.get(el, el)}\n{drv}", fontsize=8)
            ax.set_xlabel(
                "\n".join([DRIVER_LABEL.get(drv, drv), "; ".join(notes)]).strip(), fontsize=7
            )
    handles = [
        plt.Line2D(
            [], [], color=POST_COLOUR, lw=6, alpha=0.4, label=f"posterior psi given a break, {name}"
        ),
        plt.Line2D([], [], color=FREQ_COLOUR, lw=1.3, label="segmented psi ± 1.96 SE"),
    ]
    return label_figure(
        fig,
        "Turning points along climate: posterior densities",
        f"shaded = posterior {name}; band = segmented psi ± 1.96 SE",
        fit_is_synthetic(dt),
        handles,
    )


# --------------------------------------------------------------------------------------------
# diagnostics


def rhat_by_variable(dt: xr.DataTree, cells: xr.Dataset | None = None) -> dict[str, xr.DataArray]:
    """R-hat of every measured posterior variable, per cell. ``cells``:
    :func:`bayes_soil.fits.cell_diagnostics_of` ``dt`` when already at hand."""
    cells = cell_diagnostics_of(dt) if cells is None else cells
    post = dt["posterior"]
    return {
        name: cells[name].sel(diagnostic="r_hat", drop=True)
        for name in post.data_vars
        if name in cells
    }


def diagnostics_table(dt: xr.DataTree, cells: xr.Dataset | None = None) -> pd.DataFrame:
    """Per posterior variable: cells, max R-hat, min bulk and tail ESS, worst cell (from the
    fit's stored per-cell diagnostics). ``cells``: :func:`bayes_soil.fits.cell_diagnostics_of`."""
    cells = cell_diagnostics_of(dt) if cells is None else cells
    post = dt["posterior"].to_dataset()
    rows = []
    for name, da in post.data_vars.items():
        n_cells = int(np.prod([da.sizes[d] for d in da.dims if d not in ("chain", "draw")]))
        if name not in cells:
            if np.issubdtype(da.dtype, np.number):  # a reparameterisation the fit did not measure
                rows.append({"variable": name, "cells": n_cells, "worst_cell": "not measured"})
            continue
        r = cells[name].sel(diagnostic="r_hat", drop=True)
        eb = cells[name].sel(diagnostic="ess_bulk").to_numpy()
        et = cells[name].sel(diagnostic="ess_tail").to_numpy()
        worst = ""
        if r.ndim and np.isfinite(r).any():
            idx = np.unravel_index(int(np.nanargmax(r.to_numpy())), r.shape)
            worst = ", ".join(
                str(r[d].values[i]) for d, i in zip(r.dims, idx, strict=True) if d in r.coords
            )
        rows.append(
            {
                "variable": name,
                "cells": n_cells,
                "max_r_hat": float(np.nanmax(r)) if np.isfinite(r).any() else np.nan,
                "min_ess_bulk": float(np.nanmin(eb)) if np.isfinite(eb).any() else np.nan,
                "min_ess_tail": float(np.nanmin(et)) if np.isfinite(et).any() else np.nan,
                "worst_cell": worst,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["variable", "cells", "max_r_hat", "min_ess_bulk", "min_ess_tail", "worst_cell"],
    )


def sampler_summary(dt: xr.DataTree) -> dict:
    """Chains, draws, divergences and mean tree depth from sample_stats (when present)."""
    post = dt["posterior"]
    out = {"chains": int(post.sizes.get("chain", 0)), "draws": int(post.sizes.get("draw", 0))}
    if "sample_stats" in dt.children:
        ss = dt["sample_stats"]
        if "diverging" in ss.data_vars:
            out["divergences"] = int(ss["diverging"].sum())
        for name in ("tree_depth", "depth"):
            if name in ss.data_vars:
                out["mean_tree_depth"] = float(ss[name].mean())
                break
    return out


def worst_cells(
    dt: xr.DataTree,
    n: int = 6,
    var_names: Sequence[str] | None = None,
    rhats: dict[str, xr.DataArray] | None = None,
) -> list:
    """The ``n`` posterior cells with the highest R-hat: [(variable, {dim: label}), ...]."""
    rhats = rhat_by_variable(dt) if rhats is None else rhats
    scored = []
    for name, r in rhats.items():
        if var_names is not None and name not in var_names:
            continue
        flat = r.to_numpy().ravel()
        if r.ndim == 0:
            scored.append((float(flat[0]) if np.isfinite(flat[0]) else -np.inf, name, {}))
            continue
        order = np.argsort(np.where(np.isfinite(flat), -flat, np.inf))[:n]
        for k in order:
            idx = np.unravel_index(int(k), r.shape)
            sel = {d: r[d].values[i] for d, i in zip(r.dims, idx, strict=True)}
            scored.append((float(flat[k]) if np.isfinite(flat[k]) else -np.inf, name, sel))
    scored.sort(key=lambda s: -s[0])
    return [(name, sel) for _, name, sel in scored[:n]]


def rank_plots(
    dt: xr.DataTree,
    n: int = 6,
    var_names: Sequence[str] | None = None,
    rhats: dict[str, xr.DataArray] | None = None,
) -> Figure:
    """Rank plots (ArviZ, fractional-rank ECDF differences per chain) of the ``n`` cells with
    the highest R-hat: uniform ranks = chains agree."""
    import arviz_plots
    from arviz_base import from_dict

    cells = worst_cells(dt, n=n, var_names=var_names, rhats=rhats)
    data = {}
    for name, sel in cells:
        # short labels: long coordinate values (e.g. study|site unit ids) would overlap
        parts = [str(v) if len(str(v)) <= 12 else str(v)[:11] + "…" for v in sel.values()]
        label = name + ("[" + ", ".join(parts) + "]" if parts else "")
        data[label] = dt["posterior"][name].sel(sel).transpose("chain", "draw").to_numpy()
    small = from_dict({"posterior": data})
    pc = arviz_plots.plot_rank(small, backend="matplotlib")
    fig = pc.viz.ds["figure"].item()
    fig.set_size_inches(12, 1.9 * int(np.ceil(len(data) / 4)) + 0.9)
    for ax in fig.axes:
        ax.title.set_fontsize(8.5)
    return label_figure(
        fig,
        f"Rank plots of the {len(data)} cells with the highest R-hat "
        f"({dt.attrs.get('model', 'fit')})",
        "none (diagnostic): lines = ECDF difference of fractional ranks per "
        "chain, flat and overlapping = chains agree; p = uniformity test",
        fit_is_synthetic(dt),
    )


def ppc_plot(dt: xr.DataTree, num_samples: int = 50) -> Figure | None:
    """Posterior predictive check (ArviZ): densities of replicated data over the observed one.

    None when the fit has no posterior_predictive / observed_data group.
    """
    import arviz_plots

    if "posterior_predictive" not in dt.children or "observed_data" not in dt.children:
        return None
    common = [v for v in dt["posterior_predictive"].data_vars if v in dt["observed_data"].data_vars]
    if not common:
        return None
    pc = arviz_plots.plot_ppc_dist(
        dt, var_names=common, num_samples=num_samples, backend="matplotlib"
    )
    fig = pc.viz.ds["figure"].item()
    fig.set_size_inches(min(4.5 * len(common), 12) + 1, 3.6)
    return label_figure(
        fig,
        f"Posterior predictive check ({dt.attrs.get('model', 'fit')})",
        f"none; {num_samples} replicated datasets (blue) vs the observed data (black)",
        fit_is_synthetic(dt),
    )
