"""Paper-calibrated simulator of a revegetation chronosequence synthesis, with known truth.

Why: the paper's own table is not public, so every analysis (harmonization, the frequentist
reproduction, the Bayesian models) is checked against data whose generating rates and turning
points are known. The generative model is the one the hierarchical models assume, so that they
can recover it:

    stock[profile, element, layer] = alpha[l] + site[s, l] + unit[study x site, l]
        + F_{veg, l}(t) + t * clim_l(MAP_site) + t * dev[study, l] + plot noise (Student-t)
    F_{v, l}(t) = sum_g beta[v, g, l] * clip(t - a_g, 0, b_g - a_g),  knots a = 0, 5, 10, 20, 30
    clim_l(MAP) = k1[l] * min(MAP - psi[l], 0) + k2[l] * max(MAP - psi[l], 0) - c[l]

with ``c[l]`` chosen so that the climate term has mean zero over the study x site units of the
dataset; hence the population stage rates are exactly ``beta``. Layer stocks are then turned into
what the literature reports: per-study sampling-depth schemes (some straddling the standard layer
boundaries, some only to 100 cm), bulk density loosely following the pedotransfer function, and
four reporting types (concentration + BD, concentration only, SOM only, stocks only).

Size: at the default (183 studies, 41 sites) about 6,300 depth-interval rows and 1,400 profiles.
To stay near the paper's ~6,000 observations most chronosequences have 2-5 sampled ages plus a
year-0 control (90%), and 70% of studies report one plot per age (the rest 2-3); sites host
several studies and 14% of studies span 2-3 sites. Vegetation is drawn independently of MAP, MAT
co-varies with MAP but has no effect of its own, and origin (planted/natural) has no effect.

``Simulation.true_layers`` holds the latent layer stocks per profile, for checking the
harmonization against truth. Everything is synthetic and labelled so: every row's ``source``
starts with "synthetic".
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_soil.defaults import DEFAULT_SEED
from bayes_soil.io import DATASETS_DIR, AtomicOutputs
from bayes_soil.schema import (
    ALL_VEGETATION,
    ELEMENTS,
    LAYER_BOUNDS,
    LAYERS,
    SOM_TO_SOC,
    STAGE_LOWER,
    STAGE_UPPER,
    STAGES,
    TOTAL_LAYER,
    VEGETATION,
)

# bump when the generator's output for given settings changes (the demo must be regenerated)
SIMULATOR_VERSION = 1
VARIANTS = ("base", "no-turning-point", "one-turning-point")
# the one cell that keeps its turning point in "one-turning-point" (element, layer index): the
# sparse case, where a prior shared across cells must not talk a lone true break away
ONE_TURNING_POINT = ("C", 2)
MAX_AGE = 60.0

# --- stage rates beta[element][vegetation] = rows: stage (0-5 ... >30), columns: layer ---------
# Shaped like the paper's section 3 (Figs 2-5): all-vegetation 0-200 C rates -0.67, -2.72, 0.10,
# 1.36, 2.18 and N 0.03, 0.12, 0.03, -0.27, 0.09 Mg ha-1 yr-1 are reproduced exactly as the
# equal-weight mean of the three vegetation types. Forests lose (deep) C early and gain after
# 11 yr (their 6-10 yr loss is damped from the paper's -12.95 to stay realistic); shrubs gain
# topsoil C in the first decade and lose deep C at 6-10 yr; grassland accumulates topsoil C
# steadily while deeper layers fluctuate.
_BETA = {
    "C": {
        "forest": [
            [-0.15, 0.40, 0.31],
            [-0.80, -2.60, -2.10],
            [0.30, 0.50, 0.54],
            [0.60, 1.60, 1.33],
            [0.45, 0.70, 0.59],
        ],
        "shrub": [
            [0.25, 0.05, 0.00],
            [0.35, -1.45, -1.10],
            [-0.10, -0.40, -0.40],
            [0.05, 0.03, 0.02],
            [0.30, 0.70, 0.60],
        ],
        "grassland": [
            [0.30, -1.97, -1.20],
            [0.35, -0.11, -0.70],
            [0.25, -0.20, -0.19],
            [0.20, 0.00, 0.25],
            [0.30, 1.40, 1.50],
        ],
    },
    "N": {
        "forest": [
            [0.06, 0.13, 0.11],
            [-0.05, -0.17, -0.15],
            [-0.01, -0.03, -0.03],
            [-0.03, -0.07, -0.06],
            [0.01, 0.02, 0.02],
        ],
        "shrub": [
            [0.05, -0.06, -0.04],
            [0.07, 0.20, 0.18],
            [-0.02, 0.04, 0.03],
            [-0.04, -0.14, -0.12],
            [0.02, 0.04, 0.04],
        ],
        "grassland": [
            [0.03, -0.10, -0.09],
            [0.04, 0.14, 0.10],
            [0.03, 0.05, 0.03],
            [0.02, -0.20, -0.17],
            [0.03, 0.05, 0.04],
        ],
    },
}

# layer intercepts (Mg ha-1): Loess Plateau C ~15-35 in 0-20, 30-60 in 20-100, 25-50 in 100-200
_ALPHA = {"C": (24.0, 44.0, 36.0), "N": (2.4, 4.6, 3.8)}
# standard deviations per element and layer (Mg ha-1, and Mg ha-1 yr-1 for the study rate)
_SD = {
    "C": {
        "site": (3.5, 6.0, 5.0),
        "unit": (2.0, 3.5, 3.0),
        "rate": (0.06, 0.12, 0.10),
        "plot": (1.2, 2.5, 2.5),
    },
    "N": {
        "site": (0.35, 0.6, 0.5),
        "unit": (0.2, 0.35, 0.3),
        "rate": (0.006, 0.012, 0.010),
        "plot": (0.12, 0.25, 0.25),
    },
}
PLOT_NU = 6.0  # Student-t degrees of freedom of the plot noise
CN_CORRELATION = 0.7  # correlation of C and N site/unit/plot effects (C:N ratios stay plausible)

# V-shaped dependence of the change rate on MAP (paper Fig 6): psi in mm, k in Mg ha-1 yr-1 / mm
_CLIMATE = {
    "C": {
        "psi": (514.0, 430.0, 535.0),
        "k1": (-0.0016, -0.0025, -0.0018),
        "k2": (0.0017, 0.0022, 0.0020),
    },
    "N": {
        "psi": (514.0, 440.0, 451.0),
        "k1": (-0.00016, -0.00025, -0.00020),
        "k2": (0.00017, 0.00022, 0.00018),
    },
}

# within-layer exponential decline of stock density with depth (per cm)
_DECAY = (0.05, 0.015, 0.005)

# sampling-depth schemes (interval boundaries, cm) and how often studies use them
_SCHEMES = {
    "standard": [0, 20, 100, 200],
    "10cm-top": [0, 10, 20, 40, 60, 80, 100, 150, 200],
    "20cm": [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200],
    "30cm-straddle": [0, 30, 60, 100, 150, 200],
    "coarse": [0, 20, 50, 100, 200],
}
_SCHEME_P = (0.40, 0.15, 0.10, 0.15, 0.20)
P_ONLY_100 = 0.25
REPORTING_TYPES = ("conc_bd", "conc_no_bd", "som_only", "stocks_only")
_REPORTING_P = (0.55, 0.2, 0.1, 0.15)
P_N_MISSING = 0.15
P_CONTROL = 0.9


@dataclass
class Simulation:
    """One simulated dataset: observations in the input schema and its known truth."""

    observations: pd.DataFrame
    truth: dict
    settings: dict = field(default_factory=dict)
    true_layers: pd.DataFrame | None = None
    """True layer stocks per profile x element x layer (before depth schemes and reporting),
    keyed like docs/data_format.md section 2; for checking harmonization against truth."""


def source_label(seed: int, variant: str) -> str:
    """The ``source`` text of every simulated row (marks the data as synthetic)."""
    return f"synthetic: bayes_soil simulator seed={seed} variant={variant}"


def beta_array(element: str) -> np.ndarray:
    """True stage rates beta[vegetation, stage, layer] (Mg ha-1 yr-1) for one element."""
    return np.array([_BETA[element][v] for v in VEGETATION], dtype=float)


def stage_basis(years: np.ndarray) -> np.ndarray:
    """h_g(t) = clip(t - a_g, 0, b_g - a_g): time spent in each stage, shape (n, 5)."""
    t = np.asarray(years, dtype=float)[:, None]
    lo = np.asarray(STAGE_LOWER)[None, :]
    width = (np.asarray(STAGE_UPPER) - np.asarray(STAGE_LOWER))[None, :]
    return np.clip(t - lo, 0.0, width)


def hinge(x: np.ndarray, psi: float, k1: float, k2: float) -> np.ndarray:
    """k1 * min(x - psi, 0) + k2 * max(x - psi, 0): the V (or line when k1 == k2)."""
    d = np.asarray(x, dtype=float) - psi
    return k1 * np.minimum(d, 0.0) + k2 * np.maximum(d, 0.0)


def _climate_params(variant: str) -> dict[str, dict[str, tuple[float, ...]]]:
    """psi, k1, k2 per element and layer: no-turning-point is a straight line everywhere,
    one-turning-point keeps the V only in ONE_TURNING_POINT."""
    if variant == "base":
        return _CLIMATE
    out = {}
    for e, p in _CLIMATE.items():
        k = [0.5 * (abs(a) + b) for a, b in zip(p["k1"], p["k2"], strict=True)]
        k1, k2 = list(k), list(k)
        if variant == "one-turning-point" and e == ONE_TURNING_POINT[0]:
            li = ONE_TURNING_POINT[1]
            k1[li], k2[li] = p["k1"][li], p["k2"][li]
        out[e] = {"psi": p["psi"], "k1": tuple(k1), "k2": tuple(k2)}
    return out


def _climate_term(climate: dict, element: str, layer: int, x: np.ndarray) -> np.ndarray:
    """The uncentred V (or line) of one element and layer at MAP values ``x``."""
    p = climate[element]
    return hinge(x, p["psi"][layer], p["k1"][layer], p["k2"][layer])


def _layer_share(top: float, bottom: float, layer: int) -> float:
    """Share of layer ``layer``'s stock lying in [top, bottom) under an exponential density."""
    a, b = LAYER_BOUNDS[layer]
    lo, hi = max(top, a), min(bottom, b)
    if hi <= lo:
        return 0.0
    lam = _DECAY[layer]
    total = 1.0 - np.exp(-lam * (b - a))
    return float((np.exp(-lam * (lo - a)) - np.exp(-lam * (hi - a))) / total)


def _ptf_bd(soc_g_kg: np.ndarray) -> np.ndarray:
    """Pedotransfer BD (paper Eq 4-5) from SOC in g kg-1."""
    pct = np.maximum(np.asarray(soc_g_kg, dtype=float) / 10.0, 0.01)
    return np.where(pct < 6.0, -0.1229 * np.log(pct) + 1.2901, 1.3774 * np.exp(-0.0413 * pct))


def _correlated_normals(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    """Standard normals for C and N (last axis = element) with correlation CN_CORRELATION."""
    z = rng.standard_normal((*size, 2))
    r = CN_CORRELATION
    return np.stack([z[..., 0], r * z[..., 0] + np.sqrt(1 - r * r) * z[..., 1]], axis=-1)


@dataclass
class _Sites:
    """The simulated sites (one entry each): climate, coordinates, share of the studies."""

    ids: list[str]
    map_mm: np.ndarray
    mat_c: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    pop: np.ndarray


def simulate(
    seed: int = DEFAULT_SEED,
    variant: str = "base",
    n_studies: int = 183,
    n_sites: int = 41,
    scale: float = 1.0,
    bd_error: float = 1.0,
) -> Simulation:
    """Simulate a paper-calibrated synthesis table with known truth.

    Parameters
    ----------
    seed
        Seed of the numpy Generator; the output is a deterministic function of the arguments.
    variant
        "base" (V-shaped dependence on MAP with a turning point per element and layer),
        "no-turning-point" (a straight line, k1 == k2) or "one-turning-point" (a line
        everywhere but C 100-200 cm, and so C 0-200 cm).
    n_studies, n_sites
        Size at ``scale`` 1 (the paper: 183 studies at 41 sites, about 6,000 rows).
    scale
        Multiplies the number of studies and sites (benchmarks use 0.5, 1, 2).
    bd_error
        Multiplies the sd of the true BD around the pedotransfer function: a per-study offset
        and a per-row deviation, 0.04 g cm-3 each at 1 (the demo), where BD imputed for a study
        without it is off by about 0.06 g cm-3 (study-grouped CV RMSE). Real compilations are
        off by 0.27-0.30 (README, bulk density); 4-5 makes data like those. The random draws
        are the same at any value (only their scale changes), so the stocks are unchanged.

    Returns
    -------
    Simulation
        ``observations`` in the input schema (docs/data_format.md section 1) and ``truth``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not bd_error >= 0:
        raise ValueError(f"bd_error must be >= 0, got {bd_error}")
    seed = int(seed)
    n_st = max(1, round(n_studies * scale))
    n_si = max(1, min(round(n_sites * scale), n_st))
    rng = np.random.default_rng(seed)
    climate = _climate_params(variant)

    # one random stream, drawn in this order (sites, studies, chronosequences, site/unit/plot
    # effects, BD noise): keep the order, or every dataset of a seed (the demo too) changes
    sites = _sites(rng, n_si)
    studies = _studies(rng, n_st, sites)
    units, chronos = _chronosequences(rng, studies)
    # climate centring: mean zero over the study x site units of this dataset
    clim_c = _climate_centring(climate, sites.map_mm[[s for _, s in units]])
    prof = _profile_table(chronos, studies)
    stocks, n_floored = _layer_stocks(rng, prof, studies, sites, len(units), climate, clim_c)
    o = _intervals(prof, studies, stocks)
    bd, soc, stn = _bd_and_concentrations(rng, o, studies, bd_error)
    out = _reported(o, studies, sites, bd, soc, stn, source_label(seed, variant))

    settings = {
        "seed": seed,
        "variant": variant,
        "n_studies": int(n_studies),
        "n_sites": int(n_sites),
        "scale": float(scale),
        "simulator_version": SIMULATOR_VERSION,
    }
    if bd_error != 1.0:  # only when set: the demo's stored settings stay as they were
        settings["bd_error"] = float(bd_error)
    truth = _truth(
        settings, climate, clim_c, out, prof, studies, chronos, units, sites.map_mm, n_floored
    )
    return Simulation(
        observations=out,
        truth=truth,
        settings=settings,
        true_layers=_true_layers(prof, stocks, studies, sites.ids),
    )


def _sites(rng: np.random.Generator, n_si: int) -> _Sites:
    """Sites on a MAP gradient like the plateau's; wetter is warmer, further south-east."""
    # stratified over 250-750 mm so the whole gradient is covered at any size
    map_mm = np.round(250.0 + 500.0 * (rng.permutation(n_si) + rng.uniform(0, 1, n_si)) / n_si)
    mat_c = np.round(np.clip(9.0 + 0.016 * (map_mm - 500.0) + rng.normal(0, 1.3, n_si), 4, 14), 1)
    lat = np.round(np.clip(37.5 - 0.011 * (map_mm - 500.0) + rng.normal(0, 0.8, n_si), 34, 41), 3)
    lon = np.round(
        np.clip(108.0 + 0.008 * (map_mm - 500.0) + rng.normal(0, 2.0, n_si), 101, 114), 3
    )
    site_ids = [f"site{i + 1:02d}" for i in range(n_si)]
    site_pop = rng.dirichlet(np.full(n_si, 1.5))  # some sites host many studies
    return _Sites(site_ids, map_mm, mat_c, lat, lon, site_pop)


def _studies(rng: np.random.Generator, n_st: int, sites: _Sites) -> list[dict]:
    """Studies: their sites, vegetation, depth scheme, reporting type, plots and ages."""
    n_si = len(sites.ids)
    primary = np.empty(n_st, dtype=int)
    first = min(n_st, n_si)
    primary[:first] = rng.permutation(n_si)[:first]  # every site hosts at least one study
    primary[first:] = rng.choice(n_si, size=n_st - first, p=sites.pop)
    study_sites: list[list[int]] = []
    for i in range(n_st):
        n_extra = rng.choice([0, 1, 2], p=[0.86, 0.10, 0.04]) if n_si > 2 else 0
        others = [s for s in rng.permutation(n_si) if s != primary[i]][:n_extra]
        study_sites.append([int(primary[i]), *[int(s) for s in others]])
    return [_study(rng, i, study_sites[i]) for i in range(n_st)]


def _study(rng: np.random.Generator, i: int, sites: list[int]) -> dict:
    """One study's design (the draws in the order of the dict's entries)."""
    scheme_names = list(_SCHEMES)
    n_veg = rng.choice([1, 2], p=[0.9, 0.1])
    vegs = list(rng.choice(len(VEGETATION), size=n_veg, replace=False, p=[0.36, 0.30, 0.34]))
    p_planted = {0: 0.95, 1: 0.7, 2: 0.3}
    return {
        "study_id": f"S{i + 1:03d}",
        "sites": sites,
        "vegs": [int(v) for v in vegs],
        "origin": {
            int(v): ("planted" if rng.random() < p_planted[int(v)] else "natural") for v in vegs
        },
        "scheme": scheme_names[rng.choice(len(scheme_names), p=_SCHEME_P)],
        "only_100": bool(rng.random() < P_ONLY_100),
        "reporting": REPORTING_TYPES[rng.choice(len(REPORTING_TYPES), p=_REPORTING_P)],
        "n_missing": bool(rng.random() < P_N_MISSING),
        "plots": int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])),
        "max_age": float(rng.choice([12, 20, 30, 40, 50, 60], p=[0.1, 0.2, 0.25, 0.2, 0.15, 0.1])),
        "bd_offset": float(rng.normal(0, 0.04)),
        "rate_dev": rng.standard_normal((2, 3)),  # element x layer, scaled below
    }


def _chronosequences(
    rng: np.random.Generator, studies: list[dict]
) -> tuple[list[tuple[int, int]], list[dict]]:
    """Chronosequences (study x site x vegetation, their sampled ages) and study x site units."""
    units: list[tuple[int, int]] = []  # (study index, site index)
    chronos = []
    for i, st in enumerate(studies):
        for s in st["sites"]:
            units.append((i, s))
            for v in st["vegs"]:
                n_ages = int(rng.integers(2, 6))
                ages = np.unique(np.round(rng.uniform(1.0, st["max_age"], n_ages)))
                if rng.random() < P_CONTROL:
                    ages = np.concatenate([[0.0], ages])
                chronos.append(
                    {"study": i, "site": s, "unit": len(units) - 1, "veg": v, "ages": ages}
                )
    return units, chronos


def _climate_centring(climate: dict, unit_map: np.ndarray) -> dict[str, list[float]]:
    """c[l] per element: the climate term's mean over the units, so that beta are the rates."""
    return {
        e: [float(np.mean(_climate_term(climate, e, li, unit_map))) for li in range(3)]
        for e in ELEMENTS
    }


def _profile_table(chronos: list[dict], studies: list[dict]) -> pd.DataFrame:
    """One row per profile: each age of each chronosequence, times the study's plots."""
    prof_rows = []
    for c in chronos:
        st = studies[c["study"]]
        for t in c["ages"]:
            for p in range(st["plots"]):
                prof_rows.append((c["study"], c["site"], c["unit"], c["veg"], float(t), p))
    return pd.DataFrame(prof_rows, columns=["study", "site", "unit", "veg", "years", "plot"])


def _layer_stocks(
    rng: np.random.Generator,
    prof: pd.DataFrame,
    studies: list[dict],
    sites: _Sites,
    n_units: int,
    climate: dict,
    clim_c: dict,
) -> tuple[np.ndarray, int]:
    """True stocks (profile x layer x element) from the generative model, floored at 10% of
    alpha; and how many were floored."""
    site_z = _correlated_normals(rng, (len(sites.ids), 3))
    unit_z = _correlated_normals(rng, (n_units, 3))
    n_prof = len(prof)
    basis = stage_basis(prof["years"].to_numpy())
    t = prof["years"].to_numpy()
    plot_z = rng.standard_t(PLOT_NU, (n_prof, 3, 2))
    r = CN_CORRELATION
    plot_z = np.stack(
        [plot_z[..., 0], r * plot_z[..., 0] + np.sqrt(1 - r * r) * plot_z[..., 1]], axis=-1
    )
    stocks = np.empty((n_prof, 3, 2))
    n_floored = 0
    for ei, e in enumerate(ELEMENTS):
        beta = beta_array(e)
        sd = _SD[e]
        for li in range(3):
            clim = _climate_term(climate, e, li, sites.map_mm[prof["site"]]) - clim_c[e][li]
            dev = np.array([studies[i]["rate_dev"][ei, li] for i in prof["study"]])
            mu = (
                _ALPHA[e][li]
                + sd["site"][li] * site_z[prof["site"], li, ei]
                + sd["unit"][li] * unit_z[prof["unit"], li, ei]
                + (basis * beta[prof["veg"].to_numpy(), :, li]).sum(axis=1)
                + t * clim
                + t * sd["rate"][li] * dev
                + sd["plot"][li] * plot_z[:, li, ei]
            )
            floor = 0.1 * _ALPHA[e][li]
            n_floored += int((mu < floor).sum())
            stocks[:, li, ei] = np.maximum(mu, floor)
    return stocks, n_floored


def _intervals(prof: pd.DataFrame, studies: list[dict], stocks: np.ndarray) -> pd.DataFrame:
    """C and N stock of each sampled interval of the study's depth scheme, as the literature
    reports them (a share of each layer's stock under the exponential density)."""
    obs = []
    for k, row in enumerate(prof.itertuples(index=False)):
        st = studies[row.study]
        bounds = _SCHEMES[st["scheme"]]
        if st["only_100"]:
            bounds = [b for b in bounds if b <= 100]
        for top, bottom in itertools.pairwise(bounds):
            shares = [_layer_share(top, bottom, li) for li in range(3)]
            c_stock = float(np.dot(shares, stocks[k, :, 0]))
            n_stock = float(np.dot(shares, stocks[k, :, 1]))
            obs.append(
                (
                    row.study,
                    row.site,
                    row.veg,
                    row.years,
                    row.plot + 1,
                    top,
                    bottom,
                    c_stock,
                    n_stock,
                )
            )
    return pd.DataFrame(
        obs, columns=["study", "site", "veg", "years", "plot", "top", "bottom", "c", "n"]
    )


def _bd_and_concentrations(
    rng: np.random.Generator, o: pd.DataFrame, studies: list[dict], bd_error: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True BD (loosely the pedotransfer function) and the SOC and N concentrations it gives."""
    thick = (o["bottom"] - o["top"]).to_numpy(dtype=float)
    mid = 0.5 * (o["top"] + o["bottom"]).to_numpy(dtype=float)
    bd_noise = bd_error * rng.normal(0.0, 0.04, len(o))
    offset = bd_error * np.array([studies[i]["bd_offset"] for i in o["study"]])
    bd = np.full(len(o), 1.3)
    # physical range of BD, wider when its spread is (0.9-1.7 g cm-3 at the demo's)
    bd_range = (max(0.5, 0.9 - 0.05 * (bd_error - 1)), 1.7 + 0.05 * max(bd_error - 1, 0))
    for _ in range(4):  # BD and concentration depend on each other: fixed-point iteration
        soc = o["c"].to_numpy() / (bd * thick / 10.0)
        bd = np.clip(_ptf_bd(soc) + 0.0006 * (mid - 50.0) + offset + bd_noise, *bd_range)
    bd = np.round(bd, 3)
    soc = o["c"].to_numpy() / (bd * thick / 10.0)
    stn = o["n"].to_numpy() / (bd * thick / 10.0)
    return bd, soc, stn


def _reported(
    o: pd.DataFrame,
    studies: list[dict],
    sites: _Sites,
    bd: np.ndarray,
    soc: np.ndarray,
    stn: np.ndarray,
    label: str,
) -> pd.DataFrame:
    """The observations table: each study's reporting type decides which quantities it gives."""
    reporting = np.array([studies[i]["reporting"] for i in o["study"]])
    n_missing = np.array([studies[i]["n_missing"] for i in o["study"]])
    nan = np.full(len(o), np.nan)
    is_conc = np.isin(reporting, ["conc_bd", "conc_no_bd", "som_only"])
    som_bd = np.array([int(i) % 2 == 0 for i in o["study"]])  # half the SOM studies give BD
    return pd.DataFrame(
        {
            "obs_id": [f"o{j + 1:05d}" for j in range(len(o))],
            "study_id": [studies[i]["study_id"] for i in o["study"]],
            "site_id": [sites.ids[s] for s in o["site"]],
            "plot_id": [f"p{p}" for p in o["plot"]],
            "lon": sites.lon[o["site"]],
            "lat": sites.lat[o["site"]],
            "map_mm": sites.map_mm[o["site"]],
            "mat_c": sites.mat_c[o["site"]],
            "vegetation": [VEGETATION[v] for v in o["veg"]],
            "origin": [studies[i]["origin"][v] for i, v in zip(o["study"], o["veg"], strict=True)],
            "years": o["years"].to_numpy(dtype=float),
            "depth_top_cm": o["top"].to_numpy(dtype=float),
            "depth_bottom_cm": o["bottom"].to_numpy(dtype=float),
            "bd_g_cm3": np.where(
                (reporting == "conc_bd") | ((reporting == "som_only") & som_bd), bd, nan
            ),
            "soc_g_kg": np.where(
                np.isin(reporting, ["conc_bd", "conc_no_bd"]), np.round(soc, 2), nan
            ),
            "som_g_kg": np.where(reporting == "som_only", np.round(soc / SOM_TO_SOC, 2), nan),
            "soc_stock_mg_ha": np.where(reporting == "stocks_only", np.round(o["c"], 3), nan),
            "stn_g_kg": np.where(is_conc & ~n_missing, np.round(stn, 3), nan),
            "stn_stock_mg_ha": np.where(
                (reporting == "stocks_only") & ~n_missing, np.round(o["n"], 4), nan
            ),
            "source": label,
        }
    )


def _true_layers(prof: pd.DataFrame, stocks: np.ndarray, studies: list, site_ids: list):
    """Long table of the latent layer stocks (0-20, 20-100, 100-200 and their 0-200 sum)."""
    keys = pd.DataFrame(
        {
            "study_id": [studies[i]["study_id"] for i in prof["study"]],
            "site_id": [site_ids[s] for s in prof["site"]],
            "plot_id": [f"p{p + 1}" for p in prof["plot"]],
            "vegetation": [VEGETATION[v] for v in prof["veg"]],
            "origin": [
                studies[i]["origin"][v] for i, v in zip(prof["study"], prof["veg"], strict=True)
            ],
            "years": prof["years"].to_numpy(dtype=float),
        }
    )
    full = np.concatenate([stocks, stocks.sum(axis=1, keepdims=True)], axis=1)
    parts = []
    for ei, e in enumerate(ELEMENTS):
        for li, lay in enumerate((*LAYERS, TOTAL_LAYER)):
            parts.append(keys.assign(element=e, layer=lay, stock_mg_ha=full[:, li, ei]))
    return pd.concat(parts, ignore_index=True)


def _years_to_gain(beta_l: np.ndarray, horizon: float = MAX_AGE) -> float | None:
    """First t after which F(t) > 0 up to ``horizon`` (None when F(horizon) <= 0)."""
    grid = np.linspace(0.0, horizon, int(horizon * 100) + 1)
    f = stage_basis(grid) @ beta_l
    if f[-1] <= 0:
        return None
    nonpos = np.nonzero(f[1:] <= 0)[0]
    return 0.0 if len(nonpos) == 0 else float(round(grid[1:][nonpos[-1]], 2))


def true_rates(element: str) -> np.ndarray:
    """beta extended to vegetation (forest, shrub, grassland, all) x stage x layer (+ 0-200)."""
    b = beta_array(element)
    b = np.concatenate([b, b.mean(axis=0, keepdims=True)], axis=0)
    return np.concatenate([b, b.sum(axis=2, keepdims=True)], axis=2)


_RATES_DEFINITION = (
    "rate = beta[element, vegetation, stage, layer], the slope of the continuous "
    "piecewise-linear trajectory F(t) = sum_g beta_g * clip(t - a_g, 0, b_g - a_g) with "
    "knots 0, 5, 10, 20, 30 yr; the climate term years * clim(MAP) has mean zero over "
    "the study x site units of this dataset, so these are exactly the population stage "
    "rates. vegetation 'all' = equal-weight mean of forest, shrub, grassland; layer "
    "'0-200' = sum of the three layers. Units Mg ha-1 yr-1."
)
_TURNING_POINTS_DEFINITION = (
    "rate deviation at MAP x = k1 * min(x - psi, 0) + k2 * max(x - psi, 0) - c "
    "(Mg ha-1 yr-1; k per mm or per degC). MAT co-varies with MAP but has no effect of "
    "its own (has_break false, k = 0), so a MAT turning point found by segmented "
    "regression is a shadow of MAP. The 0-200 entry for MAP is the least-squares "
    "single-break approximation of the sum of the three layer terms over the units' "
    "MAP values (approximate: true)."
)
_CLIMATE_MEAN_DEFINITION = (
    "mean over the chronosequences of each vegetation type of the centred climate "
    "term (Mg ha-1 yr-1): how far a model without climate would see that "
    "vegetation's rates shifted from beta (vegetation is drawn independently of MAP, "
    "so these are small)"
)
_SDS_DEFINITION = (
    "site: site intercept; unit: study x site intercept; rate: per-study rate deviation "
    "(Mg ha-1 yr-1); plot: scale of Student-t plot noise with nu = plot_nu"
)


def _truth(settings, climate, clim_c, out, prof, studies, chronos, units, map_mm, n_floored):
    """truth.json: what generated the data, for checking every analysis against it."""
    unit_map = map_mm[[s for _, s in units]]
    return {
        "synthetic": True,
        "label": "SYNTHETIC data from the bayes_soil simulator - not real observations",
        "seed": settings["seed"],
        "variant": settings["variant"],
        "settings": settings,
        "rates_definition": _RATES_DEFINITION,
        "rates": _true_rate_rows(),
        "turning_points_definition": _TURNING_POINTS_DEFINITION,
        "turning_points": _true_turning_points(climate, clim_c, unit_map),
        "effect_sizes": {
            "rate_ratios": _true_rate_ratios(),
            "years_to_gain": _true_years_to_gain(),
            "years_to_gain_definition": (
                f"first t after which F(t) > 0 up to {MAX_AGE:g} yr (null: not within "
                f"{MAX_AGE:g} yr)"
            ),
            "origin_effect": 0.0,
            "climate_mean_by_vegetation": _climate_by_vegetation(climate, clim_c, chronos, map_mm),
            "climate_mean_by_vegetation_definition": _CLIMATE_MEAN_DEFINITION,
        },
        "alpha": {e: dict(zip(LAYERS, _ALPHA[e], strict=True)) for e in ELEMENTS},
        "sds": {
            e: {k: dict(zip(LAYERS, v, strict=True)) for k, v in _SD[e].items()} for e in ELEMENTS
        },
        "sds_definition": _SDS_DEFINITION,
        "plot_nu": PLOT_NU,
        "cn_correlation": CN_CORRELATION,
        "counts": _truth_counts(out, prof, studies, chronos, units, n_floored),
    }


def _true_rate_rows() -> list[dict]:
    """The true stage rates, one row per element x vegetation (and all) x stage x layer."""
    rates = []
    for e in ELEMENTS:
        full = true_rates(e)
        for vi, v in enumerate((*VEGETATION, ALL_VEGETATION)):
            for gi, g in enumerate(STAGES):
                for li, lay in enumerate((*LAYERS, TOTAL_LAYER)):
                    rates.append(
                        {
                            "element": e,
                            "vegetation": v,
                            "stage": g,
                            "layer": lay,
                            "rate": float(full[vi, gi, li]),
                        }
                    )
    return rates


def _true_years_to_gain() -> list[dict]:
    """Per element x vegetation x layer, the years after which the trajectory stays a gain."""
    gain = []
    for e in ELEMENTS:
        full = true_rates(e)
        for vi, v in enumerate((*VEGETATION, ALL_VEGETATION)):
            for li, lay in enumerate((*LAYERS, TOTAL_LAYER)):
                gain.append(
                    {
                        "element": e,
                        "vegetation": v,
                        "layer": lay,
                        "years_to_gain": _years_to_gain(full[vi, :, li]),
                    }
                )
    return gain


def _true_rate_ratios() -> list[dict]:
    """C:N ratios of the true rates (None where the N rate is zero)."""
    c, n = true_rates("C"), true_rates("N")
    ratios = []
    for vi, v in enumerate((*VEGETATION, ALL_VEGETATION)):
        for gi, g in enumerate(STAGES):
            for li, lay in enumerate((*LAYERS, TOTAL_LAYER)):
                kn = n[vi, gi, li]
                ratios.append(
                    {
                        "vegetation": v,
                        "stage": g,
                        "layer": lay,
                        "ratio": None if abs(kn) < 1e-12 else round(float(c[vi, gi, li] / kn), 4),
                    }
                )
    return ratios


def _true_turning_points(climate, clim_c, unit_map: np.ndarray) -> list[dict]:
    """The true climate terms: MAP per layer and 0-200 (approximated); MAT has no effect."""
    turning = []
    for e in ELEMENTS:
        p = climate[e]
        for li, lay in enumerate(LAYERS):
            brk = p["k1"][li] != p["k2"][li]
            turning.append(
                {
                    "element": e,
                    "driver": "map_mm",
                    "layer": lay,
                    "psi": p["psi"][li] if brk else None,
                    "k1": p["k1"][li],
                    "k2": p["k2"][li],
                    "has_break": brk,
                    "c": clim_c[e][li],
                }
            )
        turning.append(_total_turning_point(e, climate, unit_map))
        for lay in (*LAYERS, TOTAL_LAYER):
            turning.append(
                {
                    "element": e,
                    "driver": "mat_c",
                    "layer": lay,
                    "psi": None,
                    "k1": 0.0,
                    "k2": 0.0,
                    "has_break": False,
                    "c": 0.0,
                }
            )
    return turning


def _truth_counts(out, prof, studies, chronos, units, n_floored) -> dict:
    """How big the dataset came out: rows, studies, sites, units, profiles, reporting types."""
    return {
        "rows": len(out),
        "studies": int(out["study_id"].nunique()),
        "sites": int(out["site_id"].nunique()),
        "units": len(units),
        "chronosequences": len(chronos),
        "profiles": len(prof),
        "controls_chronosequences": int(sum(1 for c in chronos if c["ages"][0] == 0)),
        "studies_only_to_100cm": int(sum(s["only_100"] for s in studies)),
        "studies_n_missing": int(sum(s["n_missing"] for s in studies)),
        "reporting_types": {
            r: int(sum(1 for s in studies if s["reporting"] == r)) for r in REPORTING_TYPES
        },
        "floored_layer_stocks": n_floored,
    }


def _climate_by_vegetation(climate, clim_c, chronos, map_mm) -> list[dict]:
    out = []
    for e in ELEMENTS:
        for li, lay in enumerate(LAYERS):
            for vi, v in enumerate(VEGETATION):
                x = np.array([map_mm[c["site"]] for c in chronos if c["veg"] == vi])
                val = float(np.mean(_climate_term(climate, e, li, x)) - clim_c[e][li])
                out.append({"element": e, "layer": lay, "vegetation": v, "mean": val})
    return out


def _total_turning_point(element, climate, unit_map) -> dict:
    """Best single-break (or line) approximation of the 0-200 climate term over the units."""
    total = sum(_climate_term(climate, element, li, unit_map) for li in range(3))
    c = float(np.mean(total))
    if climate[element]["k1"] == climate[element]["k2"]:  # a straight line in every layer
        k = float(sum(climate[element]["k1"]))
        return {
            "element": element,
            "driver": "map_mm",
            "layer": TOTAL_LAYER,
            "psi": None,
            "k1": k,
            "k2": k,
            "has_break": False,
            "c": c,
            "approximate": False,
        }
    best = None
    lo, hi = np.quantile(unit_map, [0.05, 0.95])
    for psi in np.arange(np.floor(lo), np.ceil(hi) + 1.0, 1.0):
        d = unit_map - psi
        x = np.column_stack([np.ones_like(d), np.minimum(d, 0), np.maximum(d, 0)])
        coef, *_ = np.linalg.lstsq(x, total, rcond=None)
        sse = float(np.sum((x @ coef - total) ** 2))
        if best is None or sse < best[0]:
            best = (sse, psi, coef)
    _, psi, coef = best
    return {
        "element": element,
        "driver": "map_mm",
        "layer": TOTAL_LAYER,
        "psi": float(psi),
        "k1": round(float(coef[1]), 7),
        "k2": round(float(coef[2]), 7),
        "has_break": True,
        "c": c,
        "approximate": True,
    }


def write_simulation(sim: Simulation, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``observations.csv`` and ``truth.json`` into ``out_dir`` atomically (both or none)."""
    out_dir = Path(out_dir)
    with AtomicOutputs(out_dir) as out:
        out.write_csv(sim.observations, "observations.csv")
        out.write_json(sim.truth, "truth.json")
    return out_dir / "observations.csv", out_dir / "truth.json"


DEMO_SETTINGS_NAME = "demo_synthetic_settings.json"


def demo_settings() -> dict:
    """The generator settings of the bundled demo dataset."""
    return json.loads((DATASETS_DIR / DEMO_SETTINGS_NAME).read_text())


def simulate_from_settings(settings: dict) -> Simulation:
    """Re-run the simulator with stored settings (e.g. the demo's)."""
    if settings.get("simulator_version", SIMULATOR_VERSION) != SIMULATOR_VERSION:
        raise ValueError(
            f"settings were made by simulator version {settings['simulator_version']}, "
            f"this is version {SIMULATOR_VERSION}"
        )
    return simulate(
        seed=settings["seed"],
        variant=settings["variant"],
        n_studies=settings["n_studies"],
        n_sites=settings["n_sites"],
        scale=settings["scale"],
        bd_error=settings.get("bd_error", 1.0),
    )


def write_demo(directory: str | Path | None = None, **kwargs) -> Simulation:
    """(Re)generate the bundled demo files: observations CSV, truth JSON and settings JSON."""
    directory = Path(directory) if directory is not None else DATASETS_DIR
    sim = simulate(**kwargs)
    with AtomicOutputs(directory) as out:
        out.write_csv(sim.observations, "demo_synthetic_observations.csv")
        out.write_json(sim.truth, "demo_synthetic_truth.json")
        out.write_json(sim.settings, DEMO_SETTINGS_NAME)
    for name in (
        DEMO_SETTINGS_NAME,
        "demo_synthetic_observations.csv",
        "demo_synthetic_truth.json",
    ):
        (directory / name).chmod(0o644)  # package data: readable by everyone
    return sim
