"""The column contract of docs/data_format.md: names, labels, stages and layers.

Everything that reads or writes a table takes its names from here, so the public
interface is defined once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ELEMENTS = ("C", "N")
VEGETATION = ("forest", "shrub", "grassland")
ORIGINS = ("planted", "natural")
STAGES = ("0-5", "6-10", "11-20", "21-30", ">30")
# stage g covers years in (STAGE_LOWER[g], STAGE_UPPER[g]]; the first stage includes 0
STAGE_LOWER = (0.0, 5.0, 10.0, 20.0, 30.0)
STAGE_UPPER = (5.0, 10.0, 20.0, 30.0, np.inf)
LAYER_BOUNDS = ((0.0, 20.0), (20.0, 100.0), (100.0, 200.0))
LAYERS = tuple(f"{int(a)}-{int(b)}" for a, b in LAYER_BOUNDS)  # "0-20", "20-100", "100-200"
TOTAL_LAYER = "0-200"
ALL_LAYERS = (*LAYERS, TOTAL_LAYER)
DRIVERS = ("map_mm", "mat_c")
#: required columns whose cells may be empty: a row without a climate driver is kept for every
#: analysis that does not need that driver (stage rates, Kruskal-Wallis) and left out, counted,
#: of the turning points on that driver and of the Bayesian climate model
MAY_BE_EMPTY = DRIVERS
ALL_VEGETATION = "all"

REQUIRED_COLUMNS = (
    "study_id",
    "site_id",
    "lon",
    "lat",
    "map_mm",
    "mat_c",
    "vegetation",
    "origin",
    "years",
    "depth_top_cm",
    "depth_bottom_cm",
)
OPTIONAL_COLUMNS = (
    "obs_id",
    "plot_id",
    "control_scope",
    "bd_g_cm3",
    "soc_g_kg",
    "som_g_kg",
    "soc_stock_mg_ha",
    "stn_g_kg",
    "stn_stock_mg_ha",
    "source",
)
NUMERIC_COLUMNS = (
    "lon",
    "lat",
    "map_mm",
    "mat_c",
    "years",
    "depth_top_cm",
    "depth_bottom_cm",
    "bd_g_cm3",
    "soc_g_kg",
    "som_g_kg",
    "soc_stock_mg_ha",
    "stn_g_kg",
    "stn_stock_mg_ha",
)
C_COLUMNS = ("soc_g_kg", "som_g_kg", "soc_stock_mg_ha")
N_COLUMNS = ("stn_g_kg", "stn_stock_mg_ha")
SOM_TO_SOC = 0.58

PROFILE_KEYS = ("study_id", "site_id", "plot_id", "vegetation", "origin", "years")
CONTROL_KEYS = ("study_id", "site_id", "vegetation", "origin")
#: ``control_scope`` (optional input column): where a profile's year-0 control may be found.
#: ``site`` (default): same study, site, vegetation and origin; ``study``: the source says the
#: study's control plots stand for every site of it (e.g. GROA's study_ref / study_chrono), so
#: when no same-site control exists the study's year-0 profiles (same vegetation and origin,
#: any site) are used, flagged ``control_rule = study reference`` in ``changes``.
CONTROL_SCOPES = ("site", "study")
STUDY_CONTROL_KEYS = ("study_id", "vegetation", "origin")
CONTROL_RULES = ("same site", "study reference")

LAYER_COLUMNS = (
    "profile_id",
    "study_id",
    "site_id",
    "lon",
    "lat",
    "map_mm",
    "mat_c",
    "vegetation",
    "origin",
    "years",
    "stage",
    "element",
    "layer",
    "stock_mg_ha",
    "bd_method",
    "coverage",
    "deep_imputed",
    "obs_ids",
)
#: optional layer columns (harmonize): relative sd of a stock from an estimated bulk density
#: (sd / stock), the part shared by the study's estimates and the part per row; 0 where BD was
#: measured or the study reported the stock
STOCK_SD_COLUMNS = ("stock_rel_sd_bd_study", "stock_rel_sd_bd_row")
#: optional change column: sd (Mg ha-1 yr-1) of the rate from estimated bulk densities
RATE_SD_COLUMN = "rate_sd_bd_mg_ha_yr"
CHANGE_COLUMNS = (
    "profile_id",
    "study_id",
    "site_id",
    "map_mm",
    "mat_c",
    "vegetation",
    "origin",
    "years",
    "stage",
    "element",
    "layer",
    "baseline_stock_mg_ha",
    "delta_stock_mg_ha",
    "rate_mg_ha_yr",
)
RATES_COLUMNS = (
    "element",
    "layer",
    "vegetation",
    "stage",
    "k",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "n",
)
RATE_RATIO_COLUMNS = ("layer", "vegetation", "stage", "ratio")
KRUSKAL_COLUMNS = ("element", "layer", "response", "factor", "H", "df", "p", "n")
BREAKPOINT_COLUMNS = ("element", "layer", "driver", "psi", "psi_se", "k1", "k2", "davies_p", "n")
RATES_POSTERIOR_COLUMNS = (
    "element",
    "layer",
    "vegetation",
    "stage",
    "mean",
    "sd",
    "hdi_low",
    "hdi_high",
    "p_positive",
    "r_hat",
    "ess_bulk",
)
BREAKPOINTS_POSTERIOR_COLUMNS = (
    "element",
    "layer",
    "driver",
    "psi_mean",
    "psi_sd",
    "psi_hdi_low",
    "psi_hdi_high",
    "k1_mean",
    "k2_mean",
    "r_hat",
)


def stage_of(years: pd.Series | np.ndarray) -> pd.Series:
    """Stage label for each age: [0,5] -> '0-5', (5,10] -> '6-10', ..., (30,inf) -> '>30'."""
    years = np.asarray(years, dtype=float)
    idx = np.searchsorted(np.asarray(STAGE_UPPER[:-1]), years, side="left")
    labels = np.asarray(STAGES, dtype=object)[idx]
    labels[np.isnan(years)] = None
    return pd.Series(labels, dtype="object")


def chosen(choice: str, options: tuple[str, ...]) -> list[str]:
    """A command-line choice as a list: ``"both"`` -> every option, else just the one."""
    return list(options) if choice == "both" else [choice]
