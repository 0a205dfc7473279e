"""Changes against the year-0 control (docs/data_format.md section 3).

For each non-control profile, element and layer: baseline = mean stock of the year-0 profiles
of the same study, site, vegetation and origin (schema.CONTROL_KEYS) in that element and layer;
delta = stock - baseline; rate = delta / years. This is the ``same site`` rule.

When the layers carry ``control_scope`` (an optional input column) and a profile's scope is
``study`` (the source says the study's control plots stand for all its sites, e.g. GROA's
``study_ref`` and ``study_chrono``), a profile without a same-site control takes the mean of
the study's year-0 profiles of the same vegetation and origin at any site: the ``study
reference`` rule. Such tables get a ``control_rule`` column naming the rule of every row.
Profiles without any control, or whose control lacks the layer, get no change row; both are
counted in the report, and the report gives the number of change rows per rule.

ESM tables (``harmonize --stocks esm``: layers with ``stock_method`` and ``fixed_stock_mg_ha``):
a change compares equal soil masses only when the treated row and every control row of its
baseline are ESM; otherwise both sides are taken on fixed depth, and the change row says which
in its own ``stock_method`` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.schema import (
    CHANGE_COLUMNS,
    CONTROL_KEYS,
    CONTROL_RULES,
    RATE_SD_COLUMN,
    STOCK_SD_COLUMNS,
    STUDY_CONTROL_KEYS,
)

SAME_SITE, STUDY_REFERENCE = CONTROL_RULES
STUDY_SD, ROW_SD = STOCK_SD_COLUMNS
RATE_SD = RATE_SD_COLUMN


def rate_sd_from_bd(rows: pd.DataFrame) -> np.ndarray:
    """sd of (stock - baseline) / years from the BD estimates of both sides.

    ``rows``: change rows with the absolute sds of the stock (``_sd_study``, ``_row_var``) and
    of the baseline (``_baseline_sd_study``, ``_baseline_row_var``: mean over its controls).

    The study-shared error is one relative error for the treated profile and its controls (same
    study, same estimator), so it enters as the difference of the two sds; the per-row parts are
    independent, the baseline's averaged over its ``n_controls`` profiles.
    """
    study = rows["_sd_study"].to_numpy(float) - rows["_baseline_sd_study"].to_numpy(float)
    n_controls = rows["n_controls"].to_numpy(float)
    row_var = (
        rows["_row_var"].to_numpy(float) + rows["_baseline_row_var"].to_numpy(float) / n_controls
    )
    return np.sqrt(study**2 + row_var) / rows["years"].to_numpy(float)


def _controls(layers: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    agg = {
        "baseline_stock_mg_ha": ("stock_mg_ha", "mean"),
        "n_controls": ("profile_id", "nunique"),
        "baseline_deep_imputed": ("deep_imputed", "any"),
    }
    if "_sd_study" in layers.columns:  # BD sds: study part averaged, row part in quadrature
        agg["_baseline_sd_study"] = ("_sd_study", "mean")
        agg["_baseline_row_var"] = ("_row_var", "mean")
    if "_esm" in layers.columns:  # ESM tables: the fixed-depth baseline too, and whether all
        agg["_baseline_fixed"] = ("fixed_stock_mg_ha", "mean")  # controls are ESM
        agg["_baseline_esm"] = ("_esm", "all")
    return (
        layers.loc[layers["years"] == 0]
        .groupby(keys, sort=False, dropna=False)
        .agg(**agg)
        .reset_index()
    )


def _has_chain(rows: pd.DataFrame, controls: pd.DataFrame, keys: list[str]) -> np.ndarray:
    chains = controls[keys].drop_duplicates()
    if rows.empty:
        return np.zeros(0, dtype=bool)
    hit = rows[keys].merge(chains, on=keys, how="left", indicator=True)["_merge"]
    return hit.eq("both").to_numpy()


def compute_changes(layers: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Change rows and a report of what was left out (with reasons) and of the rules used."""
    site_keys = [*CONTROL_KEYS, "element", "layer"]
    is_control = layers["years"] == 0
    with_scope = "control_scope" in layers.columns
    esm = "stock_method" in layers.columns
    with_sd = STUDY_SD in layers.columns
    if with_sd:  # absolute sds (Mg ha-1) of each stock
        stock = layers["stock_mg_ha"].abs()
        layers = layers.assign(
            _sd_study=layers[STUDY_SD] * stock, _row_var=(layers[ROW_SD] * stock) ** 2
        )
    if esm:
        layers = layers.assign(_esm=layers["stock_method"].eq("esm"))
    controls = _controls(layers, site_keys)
    treated = layers.loc[~is_control]
    merged = treated.merge(controls, on=site_keys, how="left", validate="many_to_one")
    merged["control_rule"] = np.where(merged["baseline_stock_mg_ha"].notna(), SAME_SITE, None)
    site_chain = _has_chain(merged, controls, list(CONTROL_KEYS))

    study_chain = np.zeros(len(merged), dtype=bool)
    study_keys = [*STUDY_CONTROL_KEYS, "element", "layer"]
    study_controls = _controls(layers, study_keys)
    # profiles whose study has a year-0 control only at another site (used only where allowed)
    elsewhere = ~site_chain & _has_chain(merged, study_controls, list(STUDY_CONTROL_KEYS))
    if with_scope:
        scope = merged["control_scope"].astype(object).fillna("site").str.lower()
        # the study rule applies only where the source allows it and no same-site control exists
        eligible = (scope == "study").to_numpy() & ~site_chain
        study_chain = eligible & _has_chain(merged, study_controls, list(STUDY_CONTROL_KEYS))
        if eligible.any():
            alt = merged.loc[eligible, study_keys].merge(
                study_controls, on=study_keys, how="left", validate="many_to_one"
            )
            idx = merged.index[eligible]
            cols = ["baseline_stock_mg_ha", "n_controls", "baseline_deep_imputed"]
            cols += ["_baseline_sd_study", "_baseline_row_var"] if with_sd else []
            for col in cols + (["_baseline_fixed", "_baseline_esm"] if esm else []):
                merged.loc[idx, col] = alt[col].to_numpy()
            got = alt["baseline_stock_mg_ha"].notna().to_numpy()
            merged.loc[idx[got], "control_rule"] = STUDY_REFERENCE

    has = merged["baseline_stock_mg_ha"].notna()
    chain = site_chain | study_chain
    no_control = merged.loc[~chain]
    no_layer = merged.loc[chain & ~has]
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
    if with_scope:
        extra.append("control_rule")
    if with_sd:
        out[RATE_SD] = rate_sd_from_bd(out)
        extra.append(RATE_SD)
    out = out[[*CHANGE_COLUMNS, *extra]].reset_index(drop=True)
    by_rule = merged.loc[has, "control_rule"]
    no_control_reason = "no year-0 control for study/site/vegetation/origin" + (
        " (nor a study reference where control_scope = study)" if with_scope else ""
    )
    report = {
        "n_rows": len(out),
        "n_control_profiles": int(layers.loc[is_control, "profile_id"].nunique()),
        "n_treated_profiles": int(treated["profile_id"].nunique()),
        "n_profiles_with_changes": int(out["profile_id"].nunique()),
        "by_control_rule": {
            rule: {
                "change_rows": int((by_rule == rule).sum()),
                "profiles": int(
                    merged.loc[has & (merged["control_rule"] == rule), "profile_id"].nunique()
                ),
            }
            for rule in CONTROL_RULES
        },
        "left_out": {
            no_control_reason: {
                "profiles": int(no_control["profile_id"].nunique()),
                "layer_rows": len(no_control),
            },
            "control lacks this element x layer": {
                "profiles": int(no_layer["profile_id"].nunique()),
                "layer_rows": len(no_layer),
            },
        },
        "study_control_elsewhere_not_used": {
            "profiles": int(merged.loc[elsewhere & ~study_chain, "profile_id"].nunique()),
            "note": "profiles without a same-site control whose study has year-0 profiles "
            "(same vegetation and origin) at another site; not used because the input does not "
            "say they are the study's control (control_scope = study)",
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
        + ", element and layer ('same site')"
        + (
            "; where control_scope = study and no such profile exists, the mean of the "
            "study's year-0 profiles with the same vegetation and origin at any site "
            "('study reference')"
            if with_scope
            else ""
        )
        + "; rate = (stock - baseline) / years",
    }
    return out, report
