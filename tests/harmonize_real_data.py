"""Real public horizons with measured bulk density, mapped to the observation columns.

Used by tests/test_harmonize_data.py to score the BD methods (RF vs the paper's PTF) on real
soils; the files stay in the folder named by $BAYES_SOIL_SHARED_DATA (see conftest.py) and are never
copied into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bayes_soil.validate import BD_RANGE

SANDERMAN = Path("sanderman2017") / "derived_horizons_with_sites_utf8.csv"
DSP4SH_HORIZONS = Path("dsp4sh") / "dsp4sh_02_coop_data_horizons_valid.csv"
DSP4SH_CLIMATE = Path("dsp4sh") / "dsp4sh_05_site_clim.csv"


def _vegetation(text: pd.Series) -> pd.Series:
    t = text.astype(str).str.strip().str.lower()
    out = pd.Series(None, index=text.index, dtype=object)
    out[t.str.contains("forest|plantation|wood")] = "forest"
    out[t.str.contains("grass|savanna|grazing|range|pasture")] = "grassland"
    out[t.str.contains("shrub")] = "shrub"
    return out


# Measured BD outside validate.BD_RANGE (0.3-2.2 g cm-3; Sanderman has 0.05 and 9.7) is what
# load_observations would reject, so it is left out here too.


def sanderman_horizons(shared: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Sanderman et al. (2017) horizons: depths in METRES -> cm; OC g/kg; measured BD Mg m-3."""
    raw = pd.read_csv(shared / SANDERMAN, encoding="utf-8")
    df = pd.DataFrame(
        {
            "depth_top_cm": pd.to_numeric(raw["U_depth (m)"], errors="coerce") * 100.0,
            "depth_bottom_cm": pd.to_numeric(raw["L_depth (m)"], errors="coerce") * 100.0,
            "soc_g_kg": pd.to_numeric(raw["OC (g/kg)"], errors="coerce"),
            "bd_g_cm3": pd.to_numeric(raw["measured BD (Mg/m3)"], errors="coerce"),
            "lat": pd.to_numeric(raw["Latitude"], errors="coerce"),
            "lon": pd.to_numeric(raw["Longitude"], errors="coerce"),
            "vegetation": _vegetation(raw["LULC category"]),
        }
    )
    groups = raw["Source No."].astype(str)
    keep = df["bd_g_cm3"].between(*BD_RANGE) & df["soc_g_kg"].notna()
    return df.loc[keep].reset_index(drop=True), groups.loc[keep].reset_index(drop=True)


def dsp4sh_horizons(shared: Path) -> tuple[pd.DataFrame, pd.Series]:
    """DSP4SH cooperator horizons (cm depths, % SOC and TN -> g/kg, texture %) with MAP/MAT."""
    raw = pd.read_csv(shared / DSP4SH_HORIZONS, encoding="latin-1", na_values=["NA"])
    clim = pd.read_csv(shared / DSP4SH_CLIMATE, encoding="latin-1", na_values=["NA"])
    clim = clim.drop_duplicates("dsp_pedon_id")[["dsp_pedon_id", "map", "mat"]]
    raw = raw.merge(clim, on="dsp_pedon_id", how="left")
    df = pd.DataFrame(
        {
            "depth_top_cm": pd.to_numeric(raw["hrzdep_t"], errors="coerce"),
            "depth_bottom_cm": pd.to_numeric(raw["hrzdep_b"], errors="coerce"),
            "soc_g_kg": pd.to_numeric(raw["soc_pct"], errors="coerce") * 10.0,
            "stn_g_kg": pd.to_numeric(raw["tn_pct"], errors="coerce") * 10.0,
            "bd_g_cm3": pd.to_numeric(raw["bulk_density"], errors="coerce"),
            "map_mm": pd.to_numeric(raw["map"], errors="coerce"),
            "mat_c": pd.to_numeric(raw["mat"], errors="coerce"),
            "lat": pd.to_numeric(raw["pedon_y"], errors="coerce"),
            "lon": pd.to_numeric(raw["pedon_x"], errors="coerce"),
            "clay_pct": pd.to_numeric(raw["clay_pct"], errors="coerce"),
            "silt_pct": pd.to_numeric(raw["silt_pct"], errors="coerce"),
            "sand_pct": pd.to_numeric(raw["sand_pct"], errors="coerce"),
            "vegetation": _vegetation(raw["lu"]),
        }
    )
    groups = raw["project"].astype(str)
    keep = df["bd_g_cm3"].between(*BD_RANGE)
    return df.loc[keep].reset_index(drop=True), groups.loc[keep].reset_index(drop=True)
