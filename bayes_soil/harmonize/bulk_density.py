"""Bulk density (BD) where a study did not measure it (paper Eq. 4-5 and section 2.2).

Two estimators:

- ``ptf``: the pedotransfer function of Wu et al. (2003) used by the paper,
  ``BD = -0.1229 ln(SOC%) + 1.2901`` for SOC% < 6 and ``BD = 1.3774 exp(-0.0413 SOC%)``
  for SOC% >= 6, with SOC% = SOC (g kg-1) / 10. It needs SOC > 0.
- ``rf``: a random forest (scikit-learn) trained on the rows with measured BD, on SOC, STN,
  depth midpoint and thickness, MAP, MAT, latitude, longitude, texture (``clay_pct``,
  ``silt_pct``, ``sand_pct``: optional extra input columns) and vegetation (one-hot). Trees
  route missing features (NaN) natively, so an N-only row can still get a prediction.

Both are scored with the same 10 folds (out-of-fold R2 and RMSE) and with study-grouped folds
(GroupKFold by study): in a meta-analysis, a row's own study usually measured BD nearby, so
plain K-fold flatters any learner; the grouped number is what a study without BD can expect.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

from bayes_soil.schema import STOCK_SD_COLUMNS, VEGETATION

PTF_SWITCH_PCT = 6.0
#: Candidate predictor columns; those present (and not all missing) are used.
NUMERIC_FEATURES = (
    "soc_g_kg",
    "stn_g_kg",
    "depth_mid_cm",
    "thickness_cm",
    "map_mm",
    "mat_c",
    "lat",
    "lon",
    "clay_pct",
    "silt_pct",
    "sand_pct",
)
# 40 trees: 10-fold R2 0.858 on the demo vs 0.859 with 200 trees, at a fifth of the cost
N_TREES = 40
N_FOLDS = 10
MIN_TRAIN_ROWS = 20
PARALLEL_ROWS = 2000


@contextlib.contextmanager
def quiet_sklearn(report: dict) -> Iterator[None]:
    """Keep scikit-learn's (and numpy's) warnings off the console; their distinct messages go
    to ``report["library_warnings"]`` so nothing is hidden from the harmonize report."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = list(report.get("library_warnings", []))
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.append(text)
    if seen:
        report["library_warnings"] = seen[:20]


def ptf_bd(soc_g_kg: pd.Series | np.ndarray | float) -> np.ndarray:
    """Eq. 4-5 of the paper: BD (g cm-3) from SOC (g kg-1); NaN where SOC <= 0 or missing."""
    soc_pct = np.asarray(soc_g_kg, dtype=float) / 10.0
    out = np.full(soc_pct.shape, np.nan)
    ok = np.isfinite(soc_pct) & (soc_pct > 0)
    low = ok & (soc_pct < PTF_SWITCH_PCT)
    high = ok & (soc_pct >= PTF_SWITCH_PCT)
    out[low] = -0.1229 * np.log(soc_pct[low]) + 1.2901
    out[high] = 1.3774 * np.exp(-0.0413 * soc_pct[high])
    return out


def bd_features(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Predictor matrix for the forest: numeric features plus vegetation one-hot.

    ``depth_mid_cm``/``thickness_cm`` are derived from ``depth_top_cm``/``depth_bottom_cm``
    when absent. ``columns`` fixes the column set (prediction uses the training set's).
    """
    x = pd.DataFrame(index=df.index)
    if "depth_top_cm" in df.columns and "depth_bottom_cm" in df.columns:
        top = pd.to_numeric(df["depth_top_cm"], errors="coerce").astype(float)
        bottom = pd.to_numeric(df["depth_bottom_cm"], errors="coerce").astype(float)
        x["depth_mid_cm"] = (top + bottom) / 2.0
        x["thickness_cm"] = bottom - top
    for name in NUMERIC_FEATURES:
        if name in df.columns:
            x[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    if "vegetation" in df.columns:
        veg = df["vegetation"].astype("object").str.lower()
        for v in VEGETATION:
            x[f"veg_{v}"] = (veg == v).astype(float)
    if columns is None:
        columns = [
            c
            for c in (*NUMERIC_FEATURES, *(f"veg_{v}" for v in VEGETATION))
            if c in x.columns and x[c].notna().any() and x[c].nunique(dropna=True) > 1
        ]
    for c in columns:
        if c not in x.columns:
            x[c] = np.nan
    return x[list(columns)]


def make_forest(seed: int = 0, n_trees: int = N_TREES, n_rows: int = 0):
    """The forest used everywhere (imputation and scoring), kept modest so it runs in seconds.

    Two threads only pay off on larger tables; below ~2,000 rows thread start-up costs more
    than it saves.
    """
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=n_trees,
        min_samples_leaf=5,
        max_features=0.5,
        max_samples=0.5,
        n_jobs=2 if n_rows >= PARALLEL_ROWS else 1,
        random_state=seed,
    )


def forest_predict(forest, x: pd.DataFrame) -> np.ndarray:
    """Predict with one thread: with several, sklearn adds the trees' predictions in the order
    the threads finish, so the last digits (and the data identity of the harmonized tables, a
    hash of their content) would change from run to run. Fitting stays parallel (each tree has
    its own seed, so the fitted forest does not depend on the threads)."""
    return forest.set_params(n_jobs=1).predict(x)


def _measured_mask(df: pd.DataFrame) -> pd.Series:
    bd = pd.to_numeric(df["bd_g_cm3"], errors="coerce").astype(float)
    return bd.notna() & (bd > 0)


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    ok = np.isfinite(y) & np.isfinite(pred)
    y, pred = y[ok], pred[ok]
    if y.size < 2:
        return {"r2": None, "rmse": None, "n": int(y.size)}
    sse = float(np.sum((y - pred) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    return {
        "r2": (1.0 - sse / sst) if sst > 0 else None,
        "rmse": float(np.sqrt(sse / y.size)),
        "n": int(y.size),
    }


def _oof_forest(x: pd.DataFrame, y: np.ndarray, splits, seed: int, n_trees: int) -> np.ndarray:
    pred = np.full(y.shape, np.nan)
    for train, test in splits:
        model = make_forest(seed, n_trees, len(train)).fit(x.iloc[train], y[train])
        pred[test] = forest_predict(model, x.iloc[test])
    return pred


def _scores(y, rf_pred, ptf_pred, splits) -> dict:
    """Pooled out-of-fold scores of both methods on the same folds, plus per-fold R2 spread."""
    common = np.isfinite(ptf_pred)
    fold_r2 = {"rf": [], "ptf": []}
    for _, test in splits:
        t = test[common[test]]
        for name, pred in (("rf", rf_pred), ("ptf", ptf_pred)):
            r2 = _metrics(y[t], pred[t])["r2"]
            if r2 is not None:
                fold_r2[name].append(r2)
    out = {
        "n_splits": len(splits),
        "rf": _metrics(y[common], rf_pred[common]),
        "ptf": _metrics(y[common], ptf_pred[common]),
        "rf_all_rows": _metrics(y, rf_pred),
    }
    for name, vals in fold_r2.items():
        out[name]["r2_fold_mean"] = float(np.mean(vals)) if vals else None
        out[name]["r2_fold_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return out


def relative_error_sd(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict | None:
    """Study-shared and per-row sd of the relative error pred / y - 1 (what a stock on that BD
    is off by), from out-of-fold predictions of studies left out whole.

    One-way random-effects moments: the per-row variance is the pooled within-study variance;
    the study variance is the mean squared study mean error (bias included) less what the rows'
    own noise puts into a mean of n rows. None with fewer than 3 studies.
    """
    ok = np.isfinite(y) & np.isfinite(pred) & (y > 0)
    rel = pd.Series(pred[ok] / y[ok] - 1.0)
    g = pd.Series(np.asarray(groups, dtype=object)[ok])
    n = rel.groupby(g.to_numpy()).size()
    if len(n) < 3 or (n > 1).sum() == 0:
        return None
    means = rel.groupby(g.to_numpy()).mean()
    within = float(((rel - means.reindex(g).to_numpy()) ** 2).sum() / max(len(rel) - len(n), 1))
    between = float(np.mean(means**2) - within * np.mean(1.0 / n))
    return {"study": float(np.sqrt(max(between, 0.0))), "row": float(np.sqrt(within))}


def score_bd_methods(
    df: pd.DataFrame,
    groups: pd.Series | np.ndarray | None = None,
    seed: int = 0,
    n_trees: int = N_TREES,
) -> dict:
    """Cross-validate the random forest against the PTF on rows with measured BD.

    Parameters
    ----------
    df : table with ``bd_g_cm3`` (measured BD), ``soc_g_kg`` and any of the feature columns
        (see :func:`bd_features`); rows without a measured BD are ignored.
    groups : study (or other cluster) label per row of ``df``; adds study-grouped folds.
    seed : random state of the folds and the forest.

    Returns
    -------
    dict with ``n``, ``n_ptf_applicable``, ``features``, ``kfold`` and (with groups)
    ``group_kfold``; each holds ``rf`` and ``ptf`` scores (``r2``, ``rmse``, ``n``) on the rows
    where the PTF applies (SOC > 0), and ``rf_all_rows`` on every row.
    """
    from sklearn.model_selection import GroupKFold, KFold

    mask = _measured_mask(df).to_numpy()
    data = df.loc[mask]
    y = pd.to_numeric(data["bd_g_cm3"]).to_numpy(dtype=float)
    x = bd_features(data)
    soc = data["soc_g_kg"] if "soc_g_kg" in data.columns else pd.Series(np.nan, index=data.index)
    ptf_pred = ptf_bd(soc)
    out: dict = {
        "n": int(y.size),
        "n_ptf_applicable": int(np.isfinite(ptf_pred).sum()),
        "features": list(x.columns),
        "n_trees": n_trees,
        "seed": seed,
    }
    if y.size < MIN_TRAIN_ROWS or x.shape[1] == 0:
        out["skipped"] = f"only {y.size} rows with measured BD (need {MIN_TRAIN_ROWS})"
        return out
    with quiet_sklearn(out):
        n_splits = min(N_FOLDS, y.size)
        splits = list(KFold(n_splits, shuffle=True, random_state=seed).split(x))
        rf_pred = _oof_forest(x, y, splits, seed, n_trees)
        out["kfold"] = _scores(y, rf_pred, ptf_pred, splits)
        if groups is not None:
            g = np.asarray(groups, dtype=object)[mask]
            n_groups = len(pd.unique(g))
            out["n_groups"] = int(n_groups)
            if n_groups >= 2:
                gk = GroupKFold(min(N_FOLDS, n_groups), shuffle=True, random_state=seed)
                gsplits = list(gk.split(x, y, groups=g))
                grf = _oof_forest(x, y, gsplits, seed, n_trees)
                out["group_kfold"] = _scores(y, grf, ptf_pred, gsplits)
                for name, pred in (("rf", grf), ("ptf", ptf_pred)):
                    out["group_kfold"][name]["relative_error_sd"] = relative_error_sd(y, pred, g)
            else:
                out["group_kfold_skipped"] = f"only {n_groups} study with measured BD; need 2"
    return out


def impute_bd(
    df: pd.DataFrame, needs_bd: pd.Series, method: str = "rf", seed: int = 0
) -> tuple[pd.Series, pd.Series, dict]:
    """BD per row: measured where given, else estimated by ``method`` where ``needs_bd``.

    ``df`` needs ``bd_g_cm3`` and ``soc_g_kg`` (the harmonized SOC, after Eq. 3) plus feature
    columns. Fallbacks (counted in the report): with ``ptf``, rows without SOC > 0 get the
    forest's prediction; with ``rf`` and too few measured rows to train, the PTF is used.
    Rows left NaN have no BD and no way to estimate it.

    Returns
    -------
    bd : float Series, bd_source : object Series (``measured``/``rf``/``ptf``/None), report dict.
    """
    if method not in ("rf", "ptf"):
        raise ValueError(f"bd_method must be 'rf' or 'ptf', not {method!r}")
    measured = _measured_mask(df)
    bd = pd.to_numeric(df["bd_g_cm3"], errors="coerce").astype(float).where(measured)
    source = pd.Series(np.where(measured, "measured", None), index=df.index, dtype=object)
    todo = needs_bd & ~measured
    report: dict = {
        "method": method,
        "n_rows_measured": int(measured.sum()),
        "n_rows_needing_estimate": int(todo.sum()),
        "fallbacks": {},
    }
    if not todo.any():
        return bd, source, report

    ptf_vals = pd.Series(ptf_bd(df["soc_g_kg"]), index=df.index)

    def train_forest():
        if measured.sum() < MIN_TRAIN_ROWS:
            return None
        x_train = bd_features(df.loc[measured])
        if x_train.shape[1] == 0:
            return None
        report["rf_features"] = list(x_train.columns)
        report["rf_trained_on"] = int(measured.sum())
        return make_forest(seed, n_rows=len(x_train)).fit(x_train, bd[measured].to_numpy())

    def rf_fill(rows: pd.Series, forest) -> None:
        if rows.any() and forest is not None:
            x = bd_features(df.loc[rows], columns=list(forest.feature_names_in_))
            bd.loc[rows] = forest_predict(forest, x)
            source.loc[rows] = "rf"

    with quiet_sklearn(report):
        _fill(method, todo, bd, source, ptf_vals, train_forest, rf_fill, report)
    left = todo & bd.isna()
    report["fallbacks"]["no_estimate_possible"] = int(left.sum())
    report["n_rows_rf"] = int((todo & source.eq("rf")).sum())
    report["n_rows_ptf"] = int((todo & source.eq("ptf")).sum())
    return bd, source, report


def _fill(method, todo, bd, source, ptf_vals, train_forest, rf_fill, report) -> None:
    """The method's estimates with its fallbacks (see :func:`impute_bd`)."""
    if method == "ptf":
        ok = todo & ptf_vals.notna()
        bd.loc[ok] = ptf_vals[ok]
        source.loc[ok] = "ptf"
        rest = todo & ~ok
        if rest.any():  # no SOC for the PTF (e.g. N-only rows): the forest is the fallback
            rf_fill(rest, train_forest())
            report["fallbacks"]["ptf_no_soc_used_rf"] = int((rest & source.eq("rf")).sum())
    else:
        forest = train_forest()
        if forest is not None:
            rf_fill(todo, forest)
        else:
            ok = todo & ptf_vals.notna()
            bd.loc[ok] = ptf_vals[ok]
            source.loc[ok] = "ptf"
            report["fallbacks"]["rf_untrainable_used_ptf"] = int(ok.sum())


#: relative sd of an estimated BD when it cannot be cross-validated (too few measured rows):
#: study-grouped CV on real compilations gives RMSE 0.27-0.30 g cm-3 at BD ~1.3 (README), split
#: evenly between a part shared by a study and a part per row
ASSUMED_REL_SD = {"study": 0.15, "row": 0.15}


def bd_predictive_sd(cv: dict | None, method: str, measured_bd: pd.Series) -> dict:
    """Relative predictive sd of an estimated BD, split into a study-shared and a per-row part.

    Why two parts: a study's BDs are estimated from the same covariates and method, so their
    errors move together. Best: the out-of-fold relative errors of whole left-out studies
    (study-grouped CV), split by :func:`relative_error_sd`: that is the situation of a study
    without BD. Without it (one study only): ``row^2 = rmse_kfold^2``, ``study^2 =
    max(rmse_grouped^2 - rmse_kfold^2, 0)``, both divided by the mean measured BD. Without a CV
    (fewer than MIN_TRAIN_ROWS measured rows) the documented :data:`ASSUMED_REL_SD` is used
    and said so.
    """
    mean_bd = float(pd.to_numeric(measured_bd, errors="coerce").mean())
    key = "ptf" if method == "ptf" else "rf"

    def rmse(fold: str) -> float | None:
        v = ((cv or {}).get(fold) or {}).get(key, {}).get("rmse")
        return None if v is None or not np.isfinite(v) else float(v)

    kfold, grouped = rmse("kfold"), rmse("group_kfold")
    direct = ((cv or {}).get("group_kfold") or {}).get(key, {}).get("relative_error_sd")
    if direct:
        return {
            "study": direct["study"],
            "row": direct["row"],
            "source": f"{key} study-grouped cross-validation: relative errors of left-out "
            "studies split into a study mean and a per-row part",
        }
    if kfold is None or not np.isfinite(mean_bd) or mean_bd <= 0:
        return {
            **ASSUMED_REL_SD,
            "source": "assumed (no cross-validation possible: too few measured BD rows)",
        }
    study2 = max((grouped if grouped is not None else kfold) ** 2 - kfold**2, 0.0)
    return {
        "study": float(np.sqrt(study2) / mean_bd),
        "row": float(kfold / mean_bd),
        "source": f"{key} cross-validation: 10-fold RMSE {kfold:.3f}, study-grouped RMSE "
        + ("n/a" if grouped is None else f"{grouped:.3f}")
        + f" g cm-3, mean measured BD {mean_bd:.3f}",
    }


def add_stock_sd(
    layers: pd.DataFrame, obs_ids: pd.Series, bd_source: pd.Series, rel_sd: dict
) -> pd.DataFrame:
    """Layer stocks with the relative sd their estimated BD gives them (:data:`STOCK_SD_COLUMNS`).

    A layer's share of estimated BD is the share of its input rows (``obs_ids``) whose BD was
    estimated; its relative sd is share x the BD's relative sd (0 where every BD was measured
    or the study reported the stock). Relative, so it holds for fixed-depth and ESM stocks
    alike. ``obs_ids``/``bd_source``: per input row, aligned.
    """
    estimated = dict(
        zip(obs_ids.astype(str), bd_source.isin(["rf", "ptf"]).to_numpy(), strict=True)
    )
    share = np.array(
        [np.mean([estimated.get(i, False) for i in ids.split(";")]) for ids in layers["obs_ids"]]
    )
    study_col, row_col = STOCK_SD_COLUMNS
    return layers.assign(**{study_col: share * rel_sd["study"], row_col: share * rel_sd["row"]})
