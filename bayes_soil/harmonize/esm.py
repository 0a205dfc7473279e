"""Equivalent soil mass (ESM) stocks beside the fixed-depth ones (issue 14, part 1).

Revegetation changes bulk density, so a fixed depth holds a different soil mass in the
control and in the restored plot. The cumulative-mass method (Wendt & Hauser 2013; von Haden
et al. 2020, SimpleESM) compares equal soil masses instead:

1. Per profile and element, the sampled intervals that run contiguously from the surface, each
   with a bulk density (measured or estimated; the row's ``bd_method`` says which), give the
   cumulative soil mass ``M_i`` (Mg ha-1; BD g cm-3 x thickness cm x 100) and the cumulative
   element mass ``E_i`` (Mg ha-1; the interval stocks) at each interval's bottom.
2. ``E(M)`` is a monotone cubic (PCHIP, :class:`scipy.interpolate.PchipInterpolator`) through
   the origin ``(0, 0)`` and the points ``(M_i, E_i)``. It is never extrapolated beyond the
   deepest sampled mass.
3. Reference masses: per chronosequence (study, site, vegetation, origin: the keys of the
   year-0 control, ``schema.CONTROL_KEYS``), the mean cumulative soil mass of its year-0
   control profiles at each standard boundary (20, 100, 200 cm). A control's mass at a depth is
   interpolated linearly in depth within an interval (BD is constant within an interval), so
   it needs contiguous intervals with BD down to that depth.
4. The ESM stock of layer ``[a, b]`` is ``E(Mref_b) - E(Mref_a)`` (``Mref_0 = 0``); the total
   0-200 cm is the sum of its layers, which telescopes to ``E(Mref_200)``.

A layer row that ESM cannot serve keeps its fixed-depth stock and says why in ``esm_status``
(``ok`` for ESM rows): no year-0 control in its chronosequence, no reference mass at a
boundary (controls without BD or not sampled that deep), bulk density missing in the profile,
the profile not sampled deep enough to reach the reference mass, or the layer was predicted by
the shallow-to-deep function. A 0-200 cm row is ESM only when all its layers are. Nothing is
dropped: the set of layer rows is the fixed-depth one; only stocks and the added columns
``stock_method`` (``esm``/``fixed`` per row), ``esm_status``, ``fixed_stock_mg_ha`` and
``esm_ref_mass_mg_ha`` (reference mass at the layer's lower boundary) differ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from bayes_soil.harmonize.changes import compute_changes
from bayes_soil.harmonize.depth import layer_label
from bayes_soil.io import stock_method_of
from bayes_soil.schema import CONTROL_KEYS

__all__ = ["apply_esm", "fixed_depth_twin", "soil_mass_mg_ha", "stock_method_of"]

STOCK_METHODS = ("fixed", "esm")
ESM_OK = "ok"
ESM_COLUMNS = ("stock_method", "esm_status", "fixed_stock_mg_ha", "esm_ref_mass_mg_ha")
#: soil mass (Mg ha-1) of 1 cm at BD 1 g cm-3: 1 g cm-3 x 1e8 cm2 ha-1 x 1 cm = 1e8 g = 100 Mg
MASS_PER_CM_BD = 100.0
_TOL = 1e-9

REASON_NO_CONTROL = "no year-0 control in the chronosequence (fixed depth kept)"
REASON_DEEP_IMPUTED = "layer predicted by the shallow-to-deep function (fixed depth kept)"


def soil_mass_mg_ha(bd_g_cm3, thickness_cm):
    """Soil mass of an interval, Mg ha-1 (BD g cm-3 x thickness cm x 100)."""
    return bd_g_cm3 * thickness_cm * MASS_PER_CM_BD


def _merge_duplicates(df: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Average exact duplicate intervals (as the fixed-depth path does); a mean with any
    missing value is missing."""
    g = df.groupby(keys, sort=False)
    out = g[values].mean()
    missing = df[values].isna().groupby([df[k] for k in keys], sort=False).any()
    out = out.mask(missing.reindex(out.index).to_numpy())
    return out.reset_index()


def cumulative_curve(
    top: np.ndarray, bottom: np.ndarray, mass: np.ndarray, element: np.ndarray | None = None
) -> dict:
    """Cumulative depth, soil mass (and element mass) from the surface, origin first.

    Only the intervals that run contiguously from 0 cm and have a soil mass count; ``stop``
    says what ended the curve: ``"bd"`` (an interval without bulk density), ``"gap"`` (a gap,
    an overlap, or no interval at 0 cm) or ``"end"`` (the deepest interval).
    """
    order = np.lexsort((bottom, top))
    top, bottom, mass = top[order], bottom[order], mass[order]
    el = None if element is None else element[order]
    depth, cm, ce = [0.0], [0.0], [0.0]
    stop = "end"
    for i in range(len(top)):
        if abs(top[i] - depth[-1]) > 1e-6:
            stop = "gap"
            break
        if not np.isfinite(mass[i]) or mass[i] <= 0 or (el is not None and not np.isfinite(el[i])):
            stop = "bd" if not np.isfinite(mass[i]) or mass[i] <= 0 else "gap"
            break
        depth.append(float(bottom[i]))
        cm.append(cm[-1] + float(mass[i]))
        if el is not None:
            ce.append(ce[-1] + float(el[i]))
    return {
        "depth": np.array(depth),
        "mass": np.array(cm),
        "element": np.array(ce) if el is not None else None,
        "stop": stop,
    }


def mass_at_depth(curve: dict, depth_cm: float) -> float:
    """Cumulative soil mass at ``depth_cm`` (linear within an interval), NaN beyond the curve."""
    d = curve["depth"]
    if depth_cm > d[-1] + 1e-6:
        return float("nan")
    return float(np.interp(depth_cm, d, curve["mass"]))


def esm_cumulative(curve: dict, ref_mass: np.ndarray) -> np.ndarray:
    """Interpolated cumulative element mass at ``ref_mass`` (PCHIP through the origin); NaN
    beyond the deepest sampled mass (no extrapolation)."""
    m, e = curve["mass"], curve["element"]
    ref = np.asarray(ref_mass, dtype=float)
    out = np.full(ref.shape, np.nan)
    if len(m) < 2:
        return out
    ok = np.isfinite(ref) & (ref <= m[-1] * (1 + _TOL))
    ok &= ref >= 0
    if ok.any():
        if "pchip" not in curve:  # one interpolator per profile x element, reused by layers
            curve["pchip"] = PchipInterpolator(m, e, extrapolate=False)
        out[ok] = curve["pchip"](np.minimum(ref[ok], m[-1]))
    return out


def reference_masses(
    mass_intervals: pd.DataFrame, profiles: pd.DataFrame, boundaries: list[float]
) -> pd.DataFrame:
    """Mean cumulative soil mass of each chronosequence's year-0 controls at each boundary.

    ``mass_intervals``: profile_id, depth_top_cm, depth_bottom_cm, soil_mass_mg_ha (one row per
    distinct interval). Returns one row per chronosequence (CONTROL_KEYS) that has a control,
    with ``ref_<b>`` (NaN where no control reaches ``b`` cm with BD) and ``n_ref_<b>``.
    """
    keys = list(CONTROL_KEYS)
    controls = profiles.loc[profiles["years"] == 0, ["profile_id", *keys]]
    rows = []
    by_profile = {pid: g for pid, g in mass_intervals.groupby("profile_id", sort=False)}
    for pid, *chain in controls.itertuples(index=False):
        g = by_profile.get(pid)
        row = dict(zip(keys, chain, strict=True))
        for b in boundaries:
            row[f"m_{b:g}"] = np.nan
        if g is not None:
            curve = cumulative_curve(
                g["depth_top_cm"].to_numpy(float),
                g["depth_bottom_cm"].to_numpy(float),
                g["soil_mass_mg_ha"].to_numpy(float),
            )
            for b in boundaries:
                row[f"m_{b:g}"] = mass_at_depth(curve, b)
        rows.append(row)
    cols = [f"m_{b:g}" for b in boundaries]
    if not rows:
        return pd.DataFrame(columns=[*keys, *[f"ref_{b:g}" for b in boundaries]])
    df = pd.DataFrame(rows)
    agg = df.groupby(keys, sort=False, dropna=False)[cols]
    out = agg.mean().rename(columns=lambda c: "ref_" + c[2:])
    counts = agg.count().rename(columns=lambda c: "n_ref_" + c[2:])
    return out.join(counts).reset_index()


def apply_esm(
    layers: pd.DataFrame,
    intervals: pd.DataFrame,
    profiles: pd.DataFrame,
    layer_bounds: tuple[tuple[float, float], ...],
    total_label: str,
) -> tuple[pd.DataFrame, dict]:
    """Replace fixed-depth layer stocks by ESM stocks where possible; flag the rest.

    Parameters
    ----------
    layers : fixed-depth layer rows (profile_id, element, layer, stock_mg_ha, deep_imputed,
        ...), including the total layer.
    intervals : interval stocks before duplicate merging, with ``soil_mass_mg_ha``
        (NaN without BD): obs_id, profile_id, element, depth_top_cm, depth_bottom_cm,
        stock_mg_ha.
    profiles : one row per profile with CONTROL_KEYS and ``years``.

    Returns the layers with ESM stocks and :data:`ESM_COLUMNS`, and a report.
    """
    boundaries = sorted({float(b) for a, b in layer_bounds} | {float(layer_bounds[0][0])})
    lower = {layer_label(a, b): (float(a), float(b)) for a, b in layer_bounds}
    keys = list(CONTROL_KEYS)

    iv = _merge_duplicates(
        intervals,
        ["profile_id", "element", "depth_top_cm", "depth_bottom_cm"],
        ["stock_mg_ha", "soil_mass_mg_ha"],
    )
    mass_iv = _merge_duplicates(
        intervals, ["profile_id", "depth_top_cm", "depth_bottom_cm"], ["soil_mass_mg_ha"]
    )
    refs = reference_masses(mass_iv, profiles, [b for b in boundaries if b > 0])

    out = layers.copy().reset_index(drop=True)
    fixed = out["stock_mg_ha"].to_numpy(dtype=float)
    esm_stock = fixed.copy()
    status = np.full(len(out), ESM_OK, dtype=object)
    category = np.full(len(out), ESM_OK, dtype=object)
    ref_bottom = np.full(len(out), np.nan)
    curves = {
        (pid, el): cumulative_curve(
            g["depth_top_cm"].to_numpy(float),
            g["depth_bottom_cm"].to_numpy(float),
            g["soil_mass_mg_ha"].to_numpy(float),
            g["stock_mg_ha"].to_numpy(float),
        )
        for (pid, el), g in iv.groupby(["profile_id", "element"], sort=False)
    }
    chains = profiles.set_index("profile_id")[keys].astype(str)
    row_chain = chains.reindex(out["profile_id"])
    ref_cols = [f"{p}_{b:g}" for p in ("ref", "n_ref") for b in boundaries if b > 0]
    if len(refs):
        ref_table = refs.assign(**{k: refs[k].astype(str) for k in keys}).set_index(keys)
        ref_rows = ref_table.reindex(pd.MultiIndex.from_frame(row_chain))
    else:
        ref_rows = pd.DataFrame(np.nan, index=range(len(out)), columns=ref_cols)
    ref_arr = {c: ref_rows[c].to_numpy(dtype=float) for c in ref_cols}
    pids = out["profile_id"].to_numpy()
    elements = out["element"].to_numpy()
    layer_names = out["layer"].to_numpy()
    deep_imputed = out["deep_imputed"].to_numpy(dtype=bool)
    is_layer = layer_names != total_label

    def flag(i: int, cat: str, text: str) -> None:
        category[i], status[i] = cat, text

    for i in np.flatnonzero(is_layer):
        pid, el = pids[i], elements[i]
        a, b = lower[layer_names[i]]
        if not np.isfinite(ref_arr[f"n_ref_{b:g}"][i]):
            flag(i, "no_control", REASON_NO_CONTROL)
            continue
        m_a = 0.0 if a == 0.0 else float(ref_arr[f"ref_{a:g}"][i])
        m_b = float(ref_arr[f"ref_{b:g}"][i])
        ref_bottom[i] = m_b
        if deep_imputed[i]:
            flag(i, "deep_imputed", REASON_DEEP_IMPUTED)
            continue
        if not np.isfinite(m_a) or not np.isfinite(m_b):
            missing = a if not np.isfinite(m_a) else b
            flag(
                i,
                f"no_reference_mass_at_{missing:g}_cm",
                f"no reference mass at {missing:g} cm: no year-0 control sampled that deep "
                "with bulk density (fixed depth kept)",
            )
            continue
        curve = curves.get((pid, el))
        if curve is None:
            flag(i, "no_interval", "no interval stocks for this element (fixed depth kept)")
            continue
        e_a, e_b = esm_cumulative(curve, np.array([m_a, m_b]))
        if np.isfinite(e_a) and np.isfinite(e_b):
            esm_stock[i] = e_b - e_a
            continue
        reached, deepest = curve["mass"][-1], curve["depth"][-1]
        if curve["stop"] == "bd":
            flag(
                i,
                "bd_missing",
                f"bulk density missing below {deepest:g} cm: cumulative soil mass "
                f"{reached:.0f} < reference {m_b:.0f} Mg ha-1 (fixed depth kept)",
            )
        elif curve["stop"] == "gap":
            flag(
                i,
                "not_contiguous",
                f"intervals not contiguous from the surface below {deepest:g} cm: cumulative "
                f"soil mass {reached:.0f} < reference {m_b:.0f} Mg ha-1 (fixed depth kept)",
            )
        else:
            flag(
                i,
                "too_shallow",
                f"not sampled deep enough for the reference mass: {reached:.0f} < {m_b:.0f} "
                f"Mg ha-1 at {deepest:g} cm (fixed depth kept)",
            )

    # totals: ESM only when every layer of the profile x element is (the sum telescopes)
    parts = pd.DataFrame(
        {
            "profile_id": out["profile_id"],
            "element": out["element"],
            "layer": out["layer"],
            "stock": esm_stock,
            "ok": category == ESM_OK,
            "status": status,
            "ref": ref_bottom,
        }
    ).loc[is_layer]
    deepest_label = layer_label(*layer_bounds[-1])
    agg = parts.groupby(["profile_id", "element"], sort=False).agg(
        n=("layer", "size"), n_ok=("ok", "sum"), stock=("stock", "sum")
    )
    bad = parts.loc[~parts["ok"]].groupby(["profile_id", "element"], sort=False).first()
    deep_ref = parts.loc[parts["layer"] == deepest_label].set_index(["profile_id", "element"])
    for i in np.flatnonzero(~is_layer):
        key = (pids[i], elements[i])
        if (
            key in agg.index
            and agg.at[key, "n"] == len(lower)
            and agg.at[key, "n_ok"] == len(lower)
        ):
            esm_stock[i] = float(agg.at[key, "stock"])
            ref_bottom[i] = float(deep_ref.at[key, "ref"])
        elif key in bad.index:
            flag(
                i,
                "layer_on_fixed_depth",
                f"layer {bad.at[key, 'layer']} on fixed depth: {bad.at[key, 'status']}",
            )
        else:
            flag(i, "layer_missing", "not every layer present (fixed depth kept)")

    is_esm = category == ESM_OK
    out["stock_mg_ha"] = np.where(is_esm, esm_stock, fixed)
    out["stock_method"] = np.where(is_esm, "esm", "fixed").astype(object)
    out["esm_status"] = status
    out["fixed_stock_mg_ha"] = fixed
    out["esm_ref_mass_mg_ha"] = ref_bottom
    report = esm_report(out, pd.Series(category), refs, boundaries)
    return out, report


def esm_report(
    out: pd.DataFrame, category: pd.Series, refs: pd.DataFrame, boundaries: list[float]
) -> dict:
    """Counts of ESM and fixed-depth rows (by element x layer, and by reason)."""
    is_esm = (out["stock_method"] == "esm").to_numpy()
    reasons = category[~is_esm]
    by_el_layer = (
        out.groupby(["element", "layer"], sort=False)["stock_method"]
        .agg(esm=lambda s: int((s == "esm").sum()), fixed=lambda s: int((s != "esm").sum()))
        .reset_index()
    )
    rel = (out["stock_mg_ha"] - out["fixed_stock_mg_ha"]) / out["fixed_stock_mg_ha"]
    return {
        "method": (
            "cumulative-mass ESM: PCHIP of cumulative element mass on cumulative soil mass "
            "through (0, 0), no extrapolation; reference masses = mean cumulative soil mass of "
            "the chronosequence's year-0 controls at "
            + ", ".join(f"{b:g}" for b in boundaries if b > 0)
            + " cm; rows ESM cannot serve keep the fixed-depth stock (esm_status says why)"
        ),
        "layer_rows_esm": int(is_esm.sum()),
        "layer_rows_fixed_fallback": int((~is_esm).sum()),
        "by_element_layer": {
            f"{r.element} {r.layer}": {"esm": int(r.esm), "fixed": int(r.fixed)}
            for r in by_el_layer.itertuples()
        },
        "fixed_fallback_by_reason": {str(k): int(v) for k, v in reasons.value_counts().items()},
        "chronosequences_with_reference": len(refs),
        "median_relative_change_esm_vs_fixed": (
            float(np.nanmedian(rel[is_esm])) if is_esm.any() else None
        ),
    }


def fixed_depth_twin(layers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fixed-depth layers and changes of the same data, from an ESM layers table.

    ESM keeps every fixed-depth stock in ``fixed_stock_mg_ha`` and the rows are the fixed-depth
    ones, so this is exactly what ``harmonize --stocks fixed`` gives (same data identity; a
    test checks it), without harmonizing again.
    """
    fixed = layers.assign(stock_mg_ha=layers["fixed_stock_mg_ha"]).drop(
        columns=[c for c in ESM_COLUMNS if c in layers.columns]
    )
    changes, _ = compute_changes(fixed)
    return fixed, changes
