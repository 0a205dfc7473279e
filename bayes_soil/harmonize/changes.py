"""Changes against the year-0 control (DATA_SCHEMA section 3).

For each non-control profile, element and layer: baseline = mean stock of the year-0 profiles
of the same study, site, vegetation and origin (schema.CONTROL_KEYS) in that element and layer;
delta = stock - baseline; rate = delta / years. Profiles without such a control, or whose
control lacks the layer, get no change row; both are counted in the report.

ESM tables (``harmonize --stocks esm``: layers with ``stock_method`` and ``fixed_stock_mg_ha``):
a change compares equal soil masses only when the treated row and every control row of its
baseline are ESM; otherwise both sides are taken on fixed depth, and the change row says which
in its own ``stock_method`` column.
"""

from __future__ import annotations

import pandas as pd

from bayes_soil.schema import CHANGE_COLUMNS, CONTROL_KEYS


def compute_changes(layers: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Change rows and a report of what was left out (with reasons)."""
    keys = [*CONTROL_KEYS, "element", "layer"]
    is_control = layers["years"] == 0
    esm = "stock_method" in layers.columns
    agg = {
        "baseline_stock_mg_ha": ("stock_mg_ha", "mean"),
        "n_controls": ("profile_id", "nunique"),
        "baseline_deep_imputed": ("deep_imputed", "any"),
    }
    if esm:
        layers = layers.assign(_esm=layers["stock_method"].eq("esm"))
        agg["_baseline_fixed"] = ("fixed_stock_mg_ha", "mean")
        agg["_baseline_esm"] = ("_esm", "all")
    controls = (
        layers.loc[is_control].groupby(keys, sort=False, dropna=False).agg(**agg).reset_index()
    )
    treated = layers.loc[~is_control]
    merged = treated.merge(controls, on=keys, how="left", validate="many_to_one")
    has = merged["baseline_stock_mg_ha"].notna()
    chains = controls[list(CONTROL_KEYS)].drop_duplicates()
    chain_has_control = (
        merged[list(CONTROL_KEYS)]
        .merge(chains, on=list(CONTROL_KEYS), how="left", indicator=True)["_merge"]
        .eq("both")
        .to_numpy()
    )
    no_control = merged.loc[~chain_has_control]
    no_layer = merged.loc[chain_has_control & ~has]
    out = merged.loc[has].copy()
    extra = ["n_controls", "deep_imputed"]
    if esm:
        both = out["_esm"].astype(bool) & out["_baseline_esm"].astype(bool)
        out["stock_mg_ha"] = out["stock_mg_ha"].where(both, out["fixed_stock_mg_ha"])
        out["baseline_stock_mg_ha"] = out["baseline_stock_mg_ha"].where(
            both, out["_baseline_fixed"]
        )
        out["stock_method"] = both.map({True: "esm", False: "fixed"}).astype(object)
        extra.append("stock_method")
    out["delta_stock_mg_ha"] = out["stock_mg_ha"] - out["baseline_stock_mg_ha"]
    out["rate_mg_ha_yr"] = out["delta_stock_mg_ha"] / out["years"]
    out["deep_imputed"] = out["deep_imputed"].astype(bool) | out["baseline_deep_imputed"].astype(
        bool
    )
    out = out[[*CHANGE_COLUMNS, *extra]].reset_index(drop=True)
    report = {
        "n_rows": len(out),
        "n_control_profiles": int(layers.loc[is_control, "profile_id"].nunique()),
        "n_treated_profiles": int(treated["profile_id"].nunique()),
        "n_profiles_with_changes": int(out["profile_id"].nunique()),
        "left_out": {
            "no year-0 control for study/site/vegetation/origin": {
                "profiles": int(no_control["profile_id"].nunique()),
                "layer_rows": len(no_control),
            },
            "control lacks this element x layer": {
                "profiles": int(no_layer["profile_id"].nunique()),
                "layer_rows": len(no_layer),
            },
        },
        "profiles_without_control": sorted(no_control["profile_id"].unique().tolist())[:50],
        **(
            {
                "rows_esm": int((out["stock_method"] == "esm").sum()),
                "rows_fixed_depth": int((out["stock_method"] != "esm").sum()),
            }
            if esm
            else {}
        ),
        "baseline": "mean stock of the year-0 profiles with the same "
        + ", ".join(CONTROL_KEYS)
        + ", element and layer; rate = (stock - baseline) / years",
    }
    return out, report
