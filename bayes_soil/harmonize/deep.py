"""Shallow-to-deep function: predict the deepest layer (100-200 cm) from the shallower ones.

Many studies sample only to 100 cm. Following the paper (section 2.2, Figs S2-S3), a function
fitted on complete profiles predicts the 100-200 cm stock from the 0-20 and 20-100 cm stocks
and covariates; it fills the missing deep layer, and such rows are flagged ``deep_imputed``.

Model, per element: ordinary least squares on logs,
``log(deep) ~ log(layer_1) + ... + log(layer_k) + MAP + MAT + years + vegetation``, back-transformed
with Duan's smearing factor. It is scored by 10-fold CV (R2 and RMSE on the Mg ha-1 scale) and
by study-grouped folds (a study without deep samples is what the function is used for).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.schema import VEGETATION

COVARIATES = ("map_mm", "mat_c", "years")
MIN_PROFILES = 20
N_FOLDS = 10


def _design(wide: pd.DataFrame, shallow: list[str]) -> np.ndarray:
    cols = [np.log(wide[s].to_numpy(dtype=float)) for s in shallow]
    cols += [wide[c].to_numpy(dtype=float) for c in COVARIATES]
    veg = wide["vegetation"].astype("object")
    cols += [(veg == v).to_numpy(dtype=float) for v in VEGETATION[1:]]
    return np.column_stack(cols)


class ShallowToDeep:
    """Log-linear OLS with smearing; ``fit(x, y)`` and ``predict(x)`` on stocks in Mg ha-1."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> ShallowToDeep:
        from sklearn.linear_model import LinearRegression

        self.model = LinearRegression().fit(x, np.log(y))
        resid = np.log(y) - self.model.predict(x)
        self.smearing = float(np.mean(np.exp(resid)))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.model.predict(x)) * self.smearing


def _cv(x: np.ndarray, y: np.ndarray, splits) -> dict:
    pred = np.full(y.shape, np.nan)
    for train, test in splits:
        pred[test] = ShallowToDeep().fit(x[train], y[train]).predict(x[test])
    sse = float(np.sum((y - pred) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    return {
        "n_splits": len(splits),
        "r2": 1.0 - sse / sst if sst > 0 else None,
        "rmse": float(np.sqrt(sse / y.size)),
        "n": int(y.size),
    }


def fill_deep_layer(
    layers: pd.DataFrame,
    profiles: pd.DataFrame,
    layer_names: list[str],
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Predict the deepest layer where every shallower layer exists and the deepest does not.

    Parameters
    ----------
    layers : kept layer rows (profile_id, element, layer, stock_mg_ha, coverage, bd_method,
        obs_ids), none imputed yet.
    profiles : one row per profile_id with study_id, vegetation and COVARIATES.
    layer_names : the standard layers, shallow to deep.

    Returns
    -------
    new rows (``deep_imputed`` True, ``coverage`` 0, ``bd_method`` and ``obs_ids`` from the
    shallow layers) and a report per element (training size, CV scores, number filled).
    """
    from sklearn.model_selection import GroupKFold, KFold

    shallow, deep = list(layer_names[:-1]), layer_names[-1]
    report: dict = {"model": "OLS on log stocks + MAP, MAT, years, vegetation; Duan smearing"}
    new_rows = []
    for element, sub in layers.groupby("element", sort=True):
        wide = sub.pivot(index="profile_id", columns="layer", values="stock_mg_ha")
        for name in layer_names:
            if name not in wide.columns:
                wide[name] = np.nan
        wide = wide.join(profiles.set_index("profile_id"), how="left")
        has_shallow = wide[shallow].notna().all(axis=1) & (wide[shallow] > 0).all(axis=1)
        covs_ok = wide[list(COVARIATES)].notna().all(axis=1)
        train = has_shallow & covs_ok & wide[deep].notna() & (wide[deep] > 0)
        target = has_shallow & covs_ok & wide[deep].isna()
        rep: dict = {
            "n_training_profiles": int(train.sum()),
            "n_missing_deep": int((wide[deep].isna()).sum()),
            "n_fillable": int(target.sum()),
        }
        report[element] = rep
        if train.sum() < MIN_PROFILES:
            rep["skipped"] = f"only {int(train.sum())} complete profiles (need {MIN_PROFILES})"
            rep["n_filled"] = 0
            continue
        x = _design(wide.loc[train], shallow)
        y = wide.loc[train, deep].to_numpy(dtype=float)
        kf = KFold(min(N_FOLDS, len(y)), shuffle=True, random_state=seed)
        rep["cv"] = _cv(x, y, list(kf.split(x)))
        groups = wide.loc[train, "study_id"].to_numpy(dtype=object)
        n_groups = len(pd.unique(groups))
        if n_groups >= 2:
            gk = GroupKFold(min(N_FOLDS, n_groups), shuffle=True, random_state=seed)
            rep["cv_grouped_by_study"] = _cv(x, y, list(gk.split(x, y, groups)))
        model = ShallowToDeep().fit(x, y)
        rep["coefficients"] = dict(
            zip(
                [f"log_{s}" for s in shallow]
                + list(COVARIATES)
                + [f"veg_{v}" for v in VEGETATION[1:]],
                map(float, model.model.coef_),
                strict=True,
            )
        )
        rep["smearing"] = model.smearing
        rep["n_filled"] = int(target.sum())
        if not target.any():
            continue
        pred = model.predict(_design(wide.loc[target], shallow))
        src = sub[sub["layer"].isin(shallow)]
        agg = (
            src[src["profile_id"].isin(wide.index[target])]
            .groupby("profile_id", sort=False)
            .agg(bd_method=("bd_method", _combine), obs_ids=("obs_ids", ";".join))
        )
        new_rows.append(
            pd.DataFrame(
                {
                    "profile_id": wide.index[target],
                    "element": element,
                    "layer": deep,
                    "stock_mg_ha": pred,
                    "coverage": 0.0,
                    "coverage_scaled": False,
                    "deep_imputed": True,
                }
            ).join(agg, on="profile_id")
        )
    new = (
        pd.concat(new_rows, ignore_index=True)
        if new_rows
        else pd.DataFrame(
            columns=[
                "profile_id",
                "element",
                "layer",
                "stock_mg_ha",
                "coverage",
                "coverage_scaled",
                "deep_imputed",
                "bd_method",
                "obs_ids",
            ]
        )
    )
    return new, report


def _combine(methods: pd.Series) -> str:
    values = set(methods)
    return values.pop() if len(values) == 1 else "mixed"
