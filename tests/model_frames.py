"""Small layers/changes-shaped frames with known rates for the model tests.

Independent of the package simulator so the model tests stand on their own: every
chronosequence (study x site x vegetation x origin) has a control at year 0, ages drawn
within the stages, and stocks = baseline(site, study, layer) + F(t) + Student-t noise, where
F is the continuous piecewise-linear trajectory with the stage rates in ``RATES``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.schema import CHANGE_COLUMNS, LAYERS, STAGE_LOWER, STAGE_UPPER, STAGES, stage_of

# true rates (Mg ha-1 yr-1) per element x vegetation x stage x layer (layers 0-20, 20-100, 100-200)
BASE_RATES_C = {
    "forest": [[0.9, 0.5, 0.3], [0.6, 0.4, 0.2], [0.4, 0.3, 0.2], [0.3, 0.2, 0.1], [0.1, 0.1, 0.1]],
    "shrub": [[0.6, 0.3, 0.2], [0.5, 0.3, 0.2], [0.3, 0.2, 0.1], [0.2, 0.1, 0.1], [0.1, 0.1, 0.0]],
    "grassland": [
        [-0.4, -0.2, -0.1],
        [0.4, 0.2, 0.1],
        [0.3, 0.2, 0.1],
        [0.1, 0.1, 0.05],
        [0.05, 0.05, 0.0],
    ],
}
BASELINE = {"C": (25.0, 45.0, 35.0), "N": (2.5, 4.5, 3.5)}
N_FACTOR = 0.1  # N rates = C rates x 0.1 (so C:N of the rates is 10)


def true_rates(element: str, vegetation: str) -> np.ndarray:
    """(stage, layer) array of true rates."""
    r = np.asarray(BASE_RATES_C[vegetation], dtype=float)
    return r if element == "C" else r * N_FACTOR


def trajectory(years: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Cumulative change F(t) for each age (rows) and layer (columns)."""
    lower = np.asarray(STAGE_LOWER)
    upper = np.asarray(STAGE_UPPER)
    h = np.clip(years[:, None] - lower[None, :], 0.0, upper - lower)  # (n, stage)
    return h @ rates


def make_layers(
    seed: int = 0,
    n_studies: int = 24,
    vegetation: tuple[str, ...] = ("forest", "shrub", "grassland"),
    elements: tuple[str, ...] = ("C", "N"),
    max_age: float = 45.0,
    noise_sd: float = 0.08,
    sd_study: float = 0.25,
) -> pd.DataFrame:
    """A layers table (docs/data_format.md section 2 columns, 0-200 included) with known rates.

    noise_sd and sd_study are relative to the baseline stock of each layer.
    """
    rng = np.random.default_rng(seed)
    rows = []
    n_sites = max(2, n_studies // 2)
    site_map = rng.uniform(300, 700, n_sites)
    site_mat = 6 + (site_map - 300) / 400 * 5 + rng.normal(0, 0.5, n_sites)
    site_eff = rng.normal(0, 0.2, (n_sites, 3))
    for s in range(n_studies):
        site = s % n_sites
        veg = vegetation[s % len(vegetation)]
        origin = "planted" if s % 3 else "natural"
        study_eff = rng.normal(0, sd_study, 3)
        n_ages = rng.integers(4, 8)
        ages = np.sort(rng.uniform(1, max_age, n_ages).round(0))
        ages = np.concatenate([[0.0], ages])
        for a in ages:
            for plot in range(2):
                for el in elements:
                    base = np.asarray(BASELINE[el])
                    f = trajectory(np.array([a]), true_rates(el, veg))[0]
                    noise = rng.standard_t(5, 3) * noise_sd * base
                    stock = base * (1 + site_eff[site] + study_eff) + f + noise
                    stock = np.maximum(stock, 0.05 * base)
                    for li, layer in enumerate(LAYERS):
                        rows.append(
                            dict(
                                study_id=f"S{s:03d}",
                                site_id=f"site{site:02d}",
                                plot_id=f"p{plot + 1}",
                                map_mm=site_map[site],
                                mat_c=site_mat[site],
                                vegetation=veg,
                                origin=origin,
                                years=float(a),
                                element=el,
                                layer=layer,
                                stock_mg_ha=float(stock[li]),
                            )
                        )
    df = pd.DataFrame(rows)
    df["profile_id"] = (
        df["study_id"] + "|" + df["site_id"] + "|" + df["plot_id"] + "|" + df["years"].astype(str)
    )
    total = (
        df.groupby(["profile_id", "element"], sort=False)
        .agg(
            {
                **{c: "first" for c in df.columns if c not in ("stock_mg_ha", "layer")},
                "stock_mg_ha": "sum",
            }
        )
        .reset_index(drop=True)
        .assign(layer="0-200")
    )
    df = pd.concat([df, total], ignore_index=True)
    df["stage"] = stage_of(df["years"]).to_numpy()
    df["lon"] = 108.0
    df["lat"] = 36.0
    df["bd_method"] = "measured"
    df["coverage"] = 1.0
    df["deep_imputed"] = False
    df["obs_ids"] = df["profile_id"]
    return df


def changes_from_layers(layers: pd.DataFrame) -> pd.DataFrame:
    """Changes (docs/data_format.md section 3) against the mean year-0 control of each
    chronosequence."""
    keys = ["study_id", "site_id", "vegetation", "origin", "element", "layer"]
    ctrl = (
        layers[layers["years"] == 0]
        .groupby(keys)["stock_mg_ha"]
        .mean()
        .rename("baseline_stock_mg_ha")
        .reset_index()
    )
    ch = layers[layers["years"] > 0].merge(ctrl, on=keys, how="inner")
    ch["delta_stock_mg_ha"] = ch["stock_mg_ha"] - ch["baseline_stock_mg_ha"]
    ch["rate_mg_ha_yr"] = ch["delta_stock_mg_ha"] / ch["years"]
    return ch[list(CHANGE_COLUMNS)].reset_index(drop=True)


def make_changes(
    seed: int = 0,
    n_studies: int = 40,
    psi: float = 500.0,
    k1: float = -0.002,
    k2: float = 0.003,
    elements: tuple[str, ...] = ("C", "N"),
    sd_study: float = 0.15,
    sd_noise: float = 0.1,
    has_break: bool = True,
) -> pd.DataFrame:
    """A changes table whose rates follow a hinge in MAP (known psi, k1, k2) per layer.

    MAT co-varies with MAP but has no effect of its own. Study effects are shared by all
    rows of a study, so iid-error segmented regression would be over-confident here.
    """
    rng = np.random.default_rng(seed)
    rows = []
    maps = rng.uniform(250, 750, n_studies)
    mats = 4 + (maps - 250) / 500 * 8 + rng.normal(0, 0.8, n_studies)
    layer_scale = {"0-20": 1.0, "20-100": 0.8, "100-200": 0.5}
    for s in range(n_studies):
        u = rng.normal(0, sd_study, 3)
        n_prof = rng.integers(3, 7)
        ages = rng.uniform(3, 40, n_prof).round(0)
        for p, a in enumerate(ages):
            for el in elements:
                f = 1.0 if el == "C" else N_FACTOR
                r = []
                for li, layer in enumerate(LAYERS):
                    x = maps[s] - psi
                    if has_break:
                        m = k1 * min(x, 0) + k2 * max(x, 0)
                    else:
                        m = 0.001 * (maps[s] - 500)
                    noise = rng.normal(0, sd_noise) + rng.normal(0, 2.0 / a) * sd_noise
                    r.append((0.2 + m + u[li] + noise) * layer_scale[layer] * f)
                r.append(sum(r))
                for layer, rate in zip((*LAYERS, "0-200"), r, strict=True):
                    rows.append(
                        dict(
                            profile_id=f"S{s:03d}|p{p}",
                            study_id=f"S{s:03d}",
                            site_id=f"site{s:03d}",
                            map_mm=maps[s],
                            mat_c=mats[s],
                            vegetation="forest",
                            origin="planted",
                            years=float(a),
                            element=el,
                            layer=layer,
                            baseline_stock_mg_ha=30.0 * f,
                            delta_stock_mg_ha=rate * a,
                            rate_mg_ha_yr=rate,
                        )
                    )
    df = pd.DataFrame(rows)
    df["stage"] = stage_of(df["years"]).to_numpy()
    return df


__all__ = ["STAGES", "changes_from_layers", "make_changes", "make_layers", "true_rates"]
