"""Paper-style figures of the frequentist reproduction (free functions taking tables).

Why: users compare our tables with the paper's Figs 2-7 by eye first. Every figure names its
interval and, for synthetic input, says "SYNTHETIC data" in its title.

- ``fig_stocks``: stocks by stage and vegetation, one panel per layer (Figs 2-3, one per element)
- ``fig_rates``: OLS stage rates with their 95% CIs (Fig 4)
- ``fig_rate_ratios``: C:N rate ratios by stage (Fig 5)
- ``fig_breakpoints``: change rate against MAP or MAT with the segmented line and turning point
  (Figs 6-7)
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bayes_soil.frequentist.drivers import COVARY_THRESHOLD
from bayes_soil.schema import ALL_LAYERS, ALL_VEGETATION, ELEMENTS, STAGES, VEGETATION

COLORS = {"all": "#4d4d4d", "forest": "#1b7837", "shrub": "#b8860b", "grassland": "#5e9ed6"}
ELEMENT_NAME = {"C": "SOC", "N": "STN"}
DRIVER_LABEL = {"map_mm": "MAP (mm)", "mat_c": "MAT (°C)"}
SYNTHETIC_TAG = "SYNTHETIC data (bayes_soil simulator) - "
#: PNG resolution (print quality); SVG is written beside every PNG
PNG_DPI = 300
#: characters per line of a panel annotation (keeps the text box inside a 15-inch-wide row)
ANNOTATION_WIDTH = 34


CLUSTER_COLOR = "#d95f02"
CLUSTER_LABEL = "95% CI, study cluster bootstrap"


def _top_legend(fig, ax, top: float) -> None:
    """One legend row for the whole figure, at its top right, from one panel's artists."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        fontsize=9,
        frameon=False,
        loc="upper right",
        ncol=len(labels),
        bbox_to_anchor=(0.99, top),
    )


def _title(fig: plt.Figure, text: str, synthetic: bool, note: str) -> None:
    fig.suptitle((SYNTHETIC_TAG if synthetic else "") + text, fontsize=12, fontweight="bold")
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8.5, color="#333333")


def _style(ax: plt.Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", color="#e5e5e5", lw=0.6)
    ax.set_axisbelow(True)


def _elements(df: pd.DataFrame) -> list[str]:
    return [e for e in ELEMENTS if e in set(df["element"])]


def fig_stocks(layers: pd.DataFrame, element: str, *, synthetic: bool = False) -> plt.Figure:
    """Box plots of layer stocks by stage, side by side for each vegetation type (Figs 2-3)."""
    vegs = [v for v in VEGETATION if v in set(layers["vegetation"])]
    fig, axes = plt.subplots(1, len(ALL_LAYERS), figsize=(15, 4.2), constrained_layout=False)
    data = layers[layers["element"] == element]
    width = 0.8 / max(len(vegs), 1)
    for ax, layer in zip(axes, ALL_LAYERS, strict=True):
        lay = data[data["layer"] == layer]
        for j, veg in enumerate(vegs):
            vals = [
                lay[(lay["vegetation"] == veg) & (lay["stage"] == s)]["stock_mg_ha"].dropna()
                for s in STAGES
            ]
            pos = np.arange(len(STAGES)) + (j - (len(vegs) - 1) / 2) * width
            keep = [i for i, v in enumerate(vals) if len(v)]
            if not keep:
                continue
            bp = ax.boxplot(
                [vals[i] for i in keep],
                positions=pos[keep],
                widths=width * 0.85,
                patch_artist=True,
                showfliers=False,
                medianprops={"color": "black"},
            )
            for box in bp["boxes"]:
                box.set(facecolor=COLORS[veg], alpha=0.75, edgecolor="#333333", linewidth=0.6)
        ax.set_xticks(np.arange(len(STAGES)), STAGES)
        ax.set_title(f"{layer} cm", fontsize=10)
        ax.set_xlabel("Years since revegetation", fontsize=9)
        _style(ax)
    axes[0].set_ylabel(f"{ELEMENT_NAME[element]} stock (Mg ha$^{{-1}}$)", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[v], alpha=0.75) for v in vegs]
    fig.legend(
        handles,
        vegs,
        fontsize=9,
        frameon=False,
        loc="upper right",
        ncol=len(vegs),
        bbox_to_anchor=(0.99, 0.955),
    )
    _title(
        fig,
        f"Soil {element} stocks by restoration stage and vegetation",
        synthetic,
        "boxes: interquartile range, line: median, whiskers: 1.5 x IQR (outliers not drawn)",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    return fig


def fig_rates(rates: pd.DataFrame, *, synthetic: bool = False) -> plt.Figure:
    """OLS rates k by stage with 95% CI bars, all vegetation and each type (Fig 4)."""
    elements = _elements(rates)
    vegs = [v for v in (ALL_VEGETATION, *VEGETATION) if v in set(rates["vegetation"])]
    fig, axes = plt.subplots(
        len(elements), len(ALL_LAYERS), figsize=(15, 3.6 * len(elements)), squeeze=False
    )
    width = 0.8 / len(vegs)
    for r, element in enumerate(elements):
        for c, layer in enumerate(ALL_LAYERS):
            ax = axes[r, c]
            sub = rates[(rates["element"] == element) & (rates["layer"] == layer)]
            for j, veg in enumerate(vegs):
                cell = sub[sub["vegetation"] == veg].set_index("stage").reindex(list(STAGES))
                pos = np.arange(len(STAGES)) + (j - (len(vegs) - 1) / 2) * width
                k = cell["k"].to_numpy(float)
                err = np.vstack([k - cell["ci_low"], cell["ci_high"] - k])
                ax.bar(
                    pos,
                    k,
                    width * 0.9,
                    color=COLORS[veg],
                    label=veg,
                    alpha=1.0 if veg == ALL_VEGETATION else 0.8,
                )
                ax.errorbar(
                    pos, k, yerr=err, fmt="none", ecolor="#222222", elinewidth=0.7, capsize=1.5
                )
                if "ci95_cluster_low" in cell:
                    lo = pd.to_numeric(cell["ci95_cluster_low"], errors="coerce").to_numpy(float)
                    hi = pd.to_numeric(cell["ci95_cluster_high"], errors="coerce").to_numpy(float)
                    ax.vlines(
                        pos + width * 0.25,
                        lo,
                        hi,
                        color=CLUSTER_COLOR,
                        lw=1.1,
                        label=CLUSTER_LABEL if (r, c, j) == (0, 0, 0) else None,
                    )
            ax.axhline(0, color="black", lw=0.7)
            n_all = sub[sub["vegetation"] == ALL_VEGETATION].set_index("stage")["n"]
            ticks = [f"{s}\nn={int(n_all.get(s, 0))}" for s in STAGES]
            ax.set_xticks(np.arange(len(STAGES)), ticks)
            ax.set_title(f"{ELEMENT_NAME[element]} {layer} cm", fontsize=10)
            _style(ax)
            if c == 0:
                ax.set_ylabel("Rate (Mg ha$^{-1}$ yr$^{-1}$)", fontsize=9)
            if r == len(elements) - 1:
                ax.set_xlabel("Years since revegetation", fontsize=9)
    _top_legend(fig, axes[0, 0], 0.965)
    _title(
        fig,
        "Rates of stock change by restoration stage (OLS slope of stock on years, Eq 6)",
        synthetic,
        "bars: OLS slope k; black error bars: 95% CI of the OLS slope (rows iid, as R's lm); "
        f"orange lines: {CLUSTER_LABEL} (studies resampled);\nn under each stage: "
        "observations, all vegetation; empty slot: cell with n < 3 or a single age "
        "(see the reason column of rates.csv)",
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return fig


def fig_rate_ratios(rate_ratios: pd.DataFrame, *, synthetic: bool = False) -> plt.Figure:
    """C:N rate ratios k_C / k_N by stage per layer (Fig 5), symmetric-log axis."""
    stage_rows = rate_ratios[rate_ratios["kind"] == "stage"]
    vegs = [v for v in (ALL_VEGETATION, *VEGETATION) if v in set(stage_rows["vegetation"])]
    fig, axes = plt.subplots(1, len(ALL_LAYERS), figsize=(15, 4.0), squeeze=False)
    width = 0.8 / max(len(vegs), 1)
    absent = stage_rows.empty or (stage_rows["status"] == "absent").all()
    for c, layer in enumerate(ALL_LAYERS):
        ax = axes[0, c]
        sub = stage_rows[stage_rows["layer"] == layer]
        for j, veg in enumerate(vegs):
            cell = sub[sub["vegetation"] == veg].set_index("stage").reindex(list(STAGES))
            pos = np.arange(len(STAGES)) + (j - (len(vegs) - 1) / 2) * width
            ratio = cell["ratio"].to_numpy(float)
            undefined = (cell["status"] == "undefined").to_numpy()
            ax.bar(
                pos, np.where(undefined, np.nan, ratio), width * 0.9, color=COLORS[veg], label=veg
            )
            ax.bar(
                pos,
                np.where(undefined, ratio, np.nan),
                width * 0.9,
                color="none",
                edgecolor=COLORS[veg],
                hatch="///",
                lw=0.6,
            )
            if "ratio_ci95_low" in cell:
                lo = pd.to_numeric(cell["ratio_ci95_low"], errors="coerce").to_numpy(float)
                hi = pd.to_numeric(cell["ratio_ci95_high"], errors="coerce").to_numpy(float)
                ok = ~undefined
                ax.vlines(pos[ok], lo[ok], hi[ok], color="#222222", lw=0.7)
        ax.axhline(0, color="black", lw=0.7)
        ax.set_yscale("symlog", linthresh=10)
        ax.set_xticks(np.arange(len(STAGES)), STAGES)
        ax.set_title(f"{layer} cm", fontsize=10)
        ax.set_xlabel("Years since revegetation", fontsize=9)
        _style(ax)
        if absent:
            ax.text(
                0.5,
                0.5,
                "no N data:\nratio not available",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=9,
                color="#777777",
            )
    axes[0, 0].set_ylabel("C:N rate ratio (k$_C$ / k$_N$)", fontsize=9)
    if vegs and not absent:
        _top_legend(fig, axes[0, 0], 0.955)
    _title(
        fig,
        "C:N ratio of the stage rates (Eq 8)",
        synthetic,
        "bars: point ratio of the two OLS slopes; lines: 95% CI, Fieller; hatched, no "
        "interval: undefined (the N rate's 95% CI includes 0 or Fieller's interval is "
        "unbounded); symmetric-log axis, linear within ±10",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    return fig


def _psi_extras(ax: plt.Axes, b: pd.Series) -> str:
    """Draw psi's cluster bootstrap interval; the label lines for it and co-varying drivers."""
    text = ""
    lo = pd.to_numeric(b.get("psi_ci95_cluster_low"), errors="coerce")
    hi = pd.to_numeric(b.get("psi_ci95_cluster_high"), errors="coerce")
    if np.isfinite(lo) and np.isfinite(hi):
        ax.plot(
            [lo, hi], [0.03, 0.03], color=CLUSTER_COLOR, lw=2.5, transform=ax.get_xaxis_transform()
        )
        text += f"\ncluster 95% CI [{lo:.4g}, {hi:.4g}]"
    r = pd.to_numeric(b.get("driver_correlation"), errors="coerce")
    better = b.get("better_driver") or ""
    if np.isfinite(r) and abs(r) > COVARY_THRESHOLD:
        text += f"\nr(MAP, MAT) = {r:.2f}: drivers co-vary"
        if better and better != b["driver"]:
            text += f";\nmay be carried by {better}"
    return text


def fig_breakpoints(
    changes: pd.DataFrame, breakpoints: pd.DataFrame, driver: str, *, synthetic: bool = False
) -> plt.Figure:
    """Change rate against a climate driver with the segmented fit and turning point
    (Figs 6-7); a straight line where Davies' test finds no change in slope."""
    elements = _elements(changes) or ["C"]
    fig, axes = plt.subplots(
        len(elements), len(ALL_LAYERS), figsize=(15, 3.7 * len(elements)), squeeze=False
    )
    for r, element in enumerate(elements):
        for c, layer in enumerate(ALL_LAYERS):
            ax = axes[r, c]
            pts = changes[(changes["element"] == element) & (changes["layer"] == layer)]
            ax.scatter(
                pts[driver], pts["rate_mg_ha_yr"], s=5, color="#9a9a9a", alpha=0.45, linewidths=0
            )
            row = breakpoints[
                (breakpoints["element"] == element)
                & (breakpoints["layer"] == layer)
                & (breakpoints["driver"] == driver)
            ]
            label = ""
            if len(row):
                b = row.iloc[0]
                xs = np.linspace(b["x_min"], b["x_max"], 200) if np.isfinite(b["x_min"]) else []
                if b["status"] == "ok":
                    y = (
                        b["intercept"]
                        + b["k1"] * xs
                        + (b["k2"] - b["k1"]) * np.maximum(xs - b["psi"], 0)
                    )
                    ax.plot(xs, y, color="#b2182b", lw=1.8)
                    lo, hi = b["psi"] - 1.96 * b["psi_se"], b["psi"] + 1.96 * b["psi_se"]
                    ax.axvspan(lo, hi, color="#b2182b", alpha=0.12, lw=0)
                    ax.axvline(b["psi"], color="#b2182b", ls="--", lw=1)
                    label = (
                        f"ψ = {b['psi']:.4g} ± {b['psi_se']:.2g}\nk1 = {b['k1']:.3g}, "
                        f"k2 = {b['k2']:.3g}\nDavies p = {b['davies_p']:.2g}, n = {b['n']}"
                    ) + _psi_extras(ax, b)
                elif np.isfinite(b.get("slope_linear", np.nan)):
                    y = b["intercept_linear"] + b["slope_linear"] * xs
                    ax.plot(xs, y, color="#2166ac", lw=1.8)
                    label = (
                        f"no turning point ({b['status']})\nslope = {b['slope_linear']:.3g}"
                        f"\nDavies p = {b['davies_p']:.2g}, n = {b['n']}"
                    )
                else:
                    label = f"{b['status']}: {b['reason']}"
            # wrapped to stay inside the panel; on the side away from the turning point band
            label = "\n".join(
                textwrap.fill(part, ANNOTATION_WIDTH) for part in label.split("\n") if part
            )
            right = _band_on_left(row, pts, driver)
            ax.text(
                0.98 if right else 0.02,
                0.98,
                label,
                transform=ax.transAxes,
                va="top",
                ha="right" if right else "left",
                clip_on=True,
                fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
            )
            ax.axhline(0, color="black", lw=0.5)
            ax.set_title(f"{ELEMENT_NAME[element]} {layer} cm", fontsize=10)
            _style(ax)
            if c == 0:
                ax.set_ylabel("Change rate (Mg ha$^{-1}$ yr$^{-1}$)", fontsize=9)
            if r == len(elements) - 1:
                ax.set_xlabel(DRIVER_LABEL.get(driver, driver), fontsize=9)
            if len(pts) > 20:  # keep the bulk visible: clip the y axis to the 1-99% range
                q1, q99 = np.nanquantile(pts["rate_mg_ha_yr"], [0.01, 0.99])
                pad = 0.15 * (q99 - q1)
                ax.set_ylim(q1 - pad, q99 + pad)
    _title(
        fig,
        f"Change rate along {DRIVER_LABEL.get(driver, driver)}: segmented regression",
        synthetic,
        "red: one-breakpoint segmented fit (Muggeo), dashed: turning point ψ, band: "
        "ψ ± 1.96 SE (delta method); orange bar at the bottom: ψ's 95% CI, study cluster "
        "bootstrap;\nblue: straight line where the Davies test p ≥ 0.05; r: correlation of "
        "MAP and MAT (|r| > 0.7: the break may belong to the other driver); "
        "y axis clipped to the 1-99% range of the rates",
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return fig


ESM_TAG = " (equivalent-soil-mass stocks)"


def _band_on_left(row: pd.DataFrame, pts: pd.DataFrame, driver: str) -> bool:
    """True when the turning point (and its band) lies in the left half of the panel's x range,
    so the annotation goes to the right."""
    if row.empty or row.iloc[0]["status"] != "ok":
        return False
    x = pd.to_numeric(pts[driver], errors="coerce").dropna()
    if x.empty:
        return False
    lo, hi = float(x.min()), float(x.max())
    return hi > lo and (float(row.iloc[0]["psi"]) - lo) / (hi - lo) < 0.5


def has_n_ratios(rate_ratios: pd.DataFrame) -> bool:
    """Whether any C:N stage ratio exists (no N in the data: the ratio figure is not drawn)."""
    stage_rows = rate_ratios[rate_ratios["kind"] == "stage"]
    return not (stage_rows.empty or (stage_rows["status"] == "absent").all())


def write_freq_figures(
    result,
    layers: pd.DataFrame,
    changes: pd.DataFrame,
    out,
    *,
    synthetic: bool = False,
    stock_method: str = "fixed",
) -> list[str]:
    """Draw every figure and save PNG and SVG through ``out.path(name)`` (an AtomicOutputs) or
    into a folder; returns the file names. With ``stock_method="esm"`` every title says so
    (fixed depth, the paper's method, is left unsaid)."""
    figs = {}
    for i, element in zip((2, 3), _elements(layers), strict=False):
        figs[f"fig{i}_stocks_{element}"] = fig_stocks(layers, element, synthetic=synthetic)
    figs["fig4_rates"] = fig_rates(result.rates, synthetic=synthetic)
    if has_n_ratios(result.rate_ratios):  # no N data: no empty ratio panels
        figs["fig5_rate_ratios"] = fig_rate_ratios(result.rate_ratios, synthetic=synthetic)
    figs["fig6_rate_vs_map"] = fig_breakpoints(
        changes, result.breakpoints, "map_mm", synthetic=synthetic
    )
    figs["fig7_rate_vs_mat"] = fig_breakpoints(
        changes, result.breakpoints, "mat_c", synthetic=synthetic
    )
    if stock_method == "esm":
        for fig in figs.values():
            fig.suptitle(fig.get_suptitle() + ESM_TAG, fontsize=12, fontweight="bold")
    names = []
    with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text (searchable, small)
        for stem, fig in figs.items():
            for ext in ("png", "svg"):
                name = f"{stem}.{ext}"
                target = out.path(name) if hasattr(out, "path") else Path(out) / name
                fig.savefig(target, format=ext, dpi=PNG_DPI if ext == "png" else None)
                names.append(name)
            plt.close(fig)
    return names
