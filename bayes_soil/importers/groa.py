"""Importer for the Global Reforestation Opportunity Assessment (GROA) soil data.

Cook-Patton et al. (2020) Nature 585:545-550, data release doi:10.5281/zenodo.3983644 (CC-BY-4.0).
The release has one row per plot x depth interval x variable (SOC stock in Mg C ha-1, %C or
%SOM); this module maps it onto the observations schema (docs/data_format.md section 1):

- study.id -> study_id, site.id -> site_id, plot.id -> plot_id, stand.age -> years,
  sites.csv lat_dec/long_dec/AMP/AMT -> lat/lon/map_mm/mat_c (first row per duplicated site.id),
  coV2_value (min_depth) / coV1_value (max_depth) -> depth_top_cm / depth_bottom_cm
  (read from whichever covar_1/covar_2 column names the depth),
  SOC -> soc_stock_mg_ha, soil_perC x 10 -> soc_g_kg, SOM_per x 10 -> som_g_kg,
  covar bulk_density -> bd_g_cm3; vegetation = forest, origin = natural (GROA is natural forest
  regrowth, refor.type SNR). Reference plots (refor.type C, PA, TMC, SC, H, ...: cropland,
  pasture, ... before regrowth; stand.age 0) become the years = 0 controls.
- A site without AMP or AMT in sites.csv keeps its rows with map_mm / mat_c empty (counted in
  the report and named in ``import_note``): they serve every analysis that does not need that
  driver.
- GROA's ``ref`` says how a study compares restored and unrestored plots; ``study_ref`` and
  ``study_chrono`` ("across sites") mean the study's reference plots stand for all its sites, so
  those rows get ``control_scope = study`` (harmonize may then use the study's year-0 profiles
  at another site id as their control, flagged ``control_rule = study reference``); every other
  row gets ``control_scope = site``.
- Rows of the same plot, age and interval (a stock row beside a %C row, say) are merged into one
  observation; repeated measurements of the same variable, plot, age and interval become separate
  profiles (plot_id suffixed ``r2``, ``r3``, ... in measurement.id order).
- Every source row ends up written (listed in ``groa_measurement_ids``) or in the rejection table
  with its soil.csv line and the reason; the importer runs the package's validation on its own
  output and rejects any row that would fail it, so the result always validates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_soil import schema
from bayes_soil.errors import InputError
from bayes_soil.io import MISSING_TOKENS, read_table_with_lines
from bayes_soil.validate import BD_RANGE, validate_observations

SOIL_FILE = "soil.csv"
SITES_FILE = "sites.csv"
LITERATURE_FILES = ("GROA_literature.csv", "GROA literature.csv")
NATURAL_REGROWTH = "SNR"
CITATION = "GROA (Cook-Patton et al. 2020, doi:10.5281/zenodo.3983644)"
# variables.name -> (observation column, factor from GROA units)
VARIABLES = {
    "SOC": ("soc_stock_mg_ha", 1.0),  # Mg C ha-1
    "soil_perC": ("soc_g_kg", 10.0),  # % -> g kg-1
    "SOM_per": ("som_g_kg", 10.0),  # % -> g kg-1
}
REJECTED_COLUMNS = ("measurement_id", "source_line", "reason")
#: GROA ``ref`` values whose comparison plots stand for the whole study (METADATA: "comparison of
#: restored and unrestored plots across sites", "chronosequence across sites")
STUDY_SCOPE_REFS = ("study_ref", "study_chrono")
EXTRA_COLUMNS = (
    "control_scope",
    "groa_measurement_ids",
    "groa_refor_type",
    "groa_prior",
    "groa_ref",
    "n_plots",
    "clay_pct",
    "silt_pct",
    "sand_pct",
    "import_note",
)


@dataclass
class ImportResult:
    """Observations in the input schema, rejected source rows, and the accounting."""

    observations: pd.DataFrame
    rejected: pd.DataFrame
    report: dict = field(default_factory=dict)


def import_groa(groa_dir: str | Path) -> ImportResult:
    """Convert a GROA release directory (soil.csv, sites.csv, GROA_literature.csv).

    Returns an :class:`ImportResult` whose ``report`` holds ``rows_read``, ``rows_written``
    (source rows merged into ``observation_rows``) and ``rows_rejected``, with
    ``rows_read == rows_written + rows_rejected``. Raises InputError when a required file or
    column is missing.
    """
    groa_dir = Path(groa_dir)
    if not groa_dir.is_dir():
        raise InputError(f"{groa_dir}: not a directory (expected the GROA release folder)")
    soil_path = groa_dir / SOIL_FILE
    soil, soil_lines = read_table_with_lines(soil_path)
    _require(soil, soil_path, _SOIL_COLUMNS)
    sites_path = groa_dir / SITES_FILE
    sites, _ = read_table_with_lines(sites_path)
    _require(sites, sites_path, ("site.id", "lat_dec", "long_dec", "AMT", "AMP"))
    literature = _read_literature(groa_dir)

    rows = _soil_rows(soil, soil_lines)
    rejected: list[dict] = []

    def reject(mask: pd.Series, reason: str | Callable[[pd.Series], str]) -> None:
        """Move the rows under ``mask`` to the rejection list; ``reason`` may use the row."""
        nonlocal rows
        for _, r in rows.loc[mask.fillna(False).astype(bool)].iterrows():
            rejected.append(
                {
                    "measurement_id": r["measurement_id"],
                    "source_line": int(r["line"]),
                    "reason": reason(r) if callable(reason) else reason,
                }
            )
        rows = rows.loc[~mask.fillna(False).astype(bool)]

    reject(
        ~rows["variable"].isin(list(VARIABLES)),
        lambda r: f"variables.name {r['variable']!r} is not SOC, soil_perC or SOM_per",
    )
    reject(rows["value"].isna(), "mean_ha is missing or not a number")
    reject(rows["value"] < 0, lambda r: f"negative mean_ha {r['value']:g}")
    reject(rows["top"].isna() | rows["bottom"].isna(), "no min_depth/max_depth covariate")
    reject(
        rows["bottom"] <= rows["top"],
        lambda r: f"max_depth {r['bottom']:g} is not below min_depth {r['top']:g}",
    )
    reject(rows["top"] < 0, lambda r: f"negative min_depth {r['top']:g}")
    reject(rows["age"].isna() & rows["is_regrowth"], "stand.age is missing")
    reject(rows["age"] < 0, lambda r: f"negative stand.age {r['age']:g}")

    # site attributes (first row per duplicated site.id)
    rows = rows.merge(_site_table(sites), on="site_id", how="left", validate="many_to_one")
    reject(rows["site_found"].isna(), lambda r: f"site.id {r['site_id']} is not in sites.csv")
    for col, label in (("lat", "lat_dec"), ("lon", "long_dec")):
        reject(
            rows[col].isna(),
            lambda r, label=label: f"site.id {r['site_id']} has no {label} in sites.csv",
        )

    observations, merged_report = _merge_intervals(rows)
    rejected.extend(merged_report["rejected"])
    observations["source"] = _sources(observations["study_id"], literature)

    # safety net: anything the validator would refuse is rejected with its reason
    problems = validate_observations(
        observations.assign(line=np.arange(len(observations)) + 2), "groa import"
    )
    if problems:
        bad: dict[int, str] = {}
        for p in problems:
            bad.setdefault(p.line - 2, f"fails validation: column {p.column}: {p.reason}")
        for i, why in bad.items():
            ids = observations["groa_measurement_ids"].iloc[i].split(";")
            lines = observations["_lines"].iloc[i]
            for mid, ln in zip(ids, lines, strict=True):
                rejected.append({"measurement_id": mid, "source_line": ln, "reason": why})
        observations = observations.drop(index=observations.index[list(bad)])

    n_written = int(observations["_lines"].map(len).sum())
    observations = observations.drop(columns=["_lines"]).reset_index(drop=True)
    rejected_df = pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS))
    rejected_df = rejected_df.sort_values("source_line", kind="stable").reset_index(drop=True)
    report = {
        "source": CITATION,
        "groa_dir": str(groa_dir),
        "rows_read": len(soil),
        "rows_written": n_written,
        "rows_rejected": len(rejected_df),
        "observation_rows": len(observations),
        "studies": int(observations["study_id"].nunique()),
        "sites": int(observations["site_id"].nunique()),
        "control_rows": int((observations["years"] == 0).sum()),
        "rows_without_driver": {d: int(observations[d].isna().sum()) for d in schema.DRIVERS},
        "rows_control_scope_study": int((observations["control_scope"] == "study").sum()),
        "bd_dropped_out_of_range": merged_report["bd_dropped"],
        "rejected_by_reason": _reason_counts(rejected_df),
    }
    return ImportResult(observations=observations, rejected=rejected_df, report=report)


_SOIL_COLUMNS = (
    "measurement.id",
    "plot.id",
    "site.id",
    "study.id",
    "refor.type",
    "stand.age",
    "variables.name",
    "mean_ha",
)


def _require(df: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path}: line 1: required GROA column(s) missing: {', '.join(missing)}")


def _num(col: pd.Series) -> pd.Series:
    """Text cells to float; 'NA' and other missing spellings (and junk) become NaN."""
    text = col.map(lambda v: None if v is None or v.strip().lower() in MISSING_TOKENS else v)
    return pd.to_numeric(text, errors="coerce").astype(float)


def _txt(col: pd.Series) -> pd.Series:
    return col.map(lambda v: "" if v is None or v.strip() == "NA" else v.strip()).astype(str)


def _covariate(soil: pd.DataFrame, name: str) -> pd.Series:
    """The value of covariate ``name`` from whichever covar_k / coVk_value pair holds it."""
    out = pd.Series(np.nan, index=soil.index)
    for k in (1, 2, 3):
        kind, value = f"covar_{k}", f"coV{k}_value"
        if kind in soil.columns and value in soil.columns:
            hit = _txt(soil[kind]).str.lower() == name
            out = out.where(~(hit & out.isna()), _num(soil[value]))
    return out


def _soil_rows(soil: pd.DataFrame, lines: np.ndarray) -> pd.DataFrame:
    refor = _txt(soil["refor.type"])
    age = _num(soil["stand.age"])
    is_regrowth = refor == NATURAL_REGROWTH
    rows = pd.DataFrame(
        {
            "line": lines.astype(int),
            "measurement_id": _txt(soil["measurement.id"]),
            "study_id": _txt(soil["study.id"]),
            "site_id": _txt(soil["site.id"]),
            "plot": _txt(soil["plot.id"]),
            "refor_type": refor,
            "prior": _txt(soil["prior"]) if "prior" in soil.columns else "",
            "ref": _txt(soil["ref"]) if "ref" in soil.columns else "",
            "is_regrowth": is_regrowth,
            # references (cropland, pasture, ...) are the year-0 controls
            "age": age,
            "years": age.where(is_regrowth, 0.0),
            "variable": _txt(soil["variables.name"]),
            "value": _num(soil["mean_ha"]),
            "top": _covariate(soil, "min_depth"),
            "bottom": _covariate(soil, "max_depth"),
            "bd": _covariate(soil, "bulk_density"),
            "n_plots": _num(soil["n"]) if "n" in soil.columns else np.nan,
        }
    )
    for col in ("clay", "silt", "sand"):
        rows[f"{col}_pct"] = _num(soil[col]) if col in soil.columns else np.nan
    return rows


def _site_table(sites: pd.DataFrame) -> pd.DataFrame:
    first = sites.loc[~_txt(sites["site.id"]).duplicated(keep="first")]
    return pd.DataFrame(
        {
            "site_id": _txt(first["site.id"]),
            "lat": _num(first["lat_dec"]),
            "lon": _num(first["long_dec"]),
            "map_mm": _num(first["AMP"]),
            "mat_c": _num(first["AMT"]),
            "site_found": True,
        }
    )


def _read_literature(groa_dir: Path) -> dict[str, str]:
    for name in LITERATURE_FILES:
        path = groa_dir / name
        if path.exists():
            lit, _ = read_table_with_lines(path)
            out = {}
            for _, r in lit.iterrows():
                parts = [r.get("citations.author"), r.get("citations.year")]
                text = " ".join(str(p).strip() for p in parts if p)
                if r.get("citations.journal"):
                    text += f", {str(r['citations.journal']).strip()}"
                out[str(r["study.id"]).strip()] = text
            return out
    return {}


def _sources(study_ids: pd.Series, literature: dict[str, str]) -> pd.Series:
    return study_ids.map(
        lambda s: (
            f"{literature[s]}; {CITATION} study.id {s}"
            if s in literature
            else f"{CITATION} study.id {s}"
        )
    )


def _merge_intervals(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One observation per plot x age x replicate x interval; overlapping intervals rejected."""
    rows = rows.assign(_mid=pd.to_numeric(rows["measurement_id"], errors="coerce"))
    rows = rows.sort_values(["_mid", "line"], kind="stable")
    same = ["study_id", "site_id", "plot", "years", "variable", "top", "bottom"]
    rows["rep"] = rows.groupby(same, dropna=False).cumcount() + 1
    suffixed = rows["plot"] + "r" + rows["rep"].astype(str)
    rows["plot_id"] = rows["plot"].where(rows["rep"] == 1, suffixed)
    groups: dict[tuple, list[dict]] = {}
    for r in rows.to_dict("records"):
        key = (r["study_id"], r["site_id"], r["plot_id"], r["years"], r["top"], r["bottom"])
        groups.setdefault(key, []).append(r)
    records = [_merged_record(key, grp) for key, grp in groups.items()]
    bd_dropped = sum(rec.pop("_bd_dropped") for rec in records)

    # overlapping intervals within a profile: keep the finest non-overlapping set
    rejected: list[dict] = []
    profiles: dict[tuple, list[dict]] = {}
    for rec in records:
        key = (rec["study_id"], rec["site_id"], rec["plot_id"], rec["years"])
        profiles.setdefault(key, []).append(rec)
    kept: list[dict] = []
    for recs in profiles.values():
        recs.sort(key=lambda d: (d["depth_top_cm"], d["depth_bottom_cm"] - d["depth_top_cm"]))
        reach, reach_iv = -np.inf, ""
        for rec in recs:
            top, bottom = rec["depth_top_cm"], rec["depth_bottom_cm"]
            if top < reach:
                why = (
                    f"interval {top:g}-{bottom:g} cm overlaps {reach_iv} cm of the same plot "
                    "and age"
                )
                ids = rec["groa_measurement_ids"].split(";")
                for mid, ln in zip(ids, rec["_lines"], strict=True):
                    rejected.append({"measurement_id": mid, "source_line": ln, "reason": why})
                continue
            reach, reach_iv = bottom, f"{top:g}-{bottom:g}"
            kept.append(rec)
    ordered = ["obs_id", *schema.REQUIRED_COLUMNS]
    ordered.insert(3, "plot_id")
    ordered += ["bd_g_cm3", *schema.C_COLUMNS, *schema.N_COLUMNS, *EXTRA_COLUMNS, "_lines"]
    obs = pd.DataFrame(kept, columns=ordered)
    obs = obs.sort_values(["study_id", "site_id", "plot_id", "years", "depth_top_cm"], key=_natural)
    return obs.reset_index(drop=True), {"rejected": rejected, "bd_dropped": bd_dropped}


def _merged_record(key: tuple, grp: list[dict]) -> dict:
    """Merge the source rows of one plot, age and interval (at most one per variable)."""
    study, site, plot, years, top, bottom = key
    first = grp[0]
    rec = {
        "obs_id": f"groa-{first['measurement_id']}",
        "study_id": study,
        "site_id": site,
        "plot_id": plot,
        "lon": first["lon"],
        "lat": first["lat"],
        "map_mm": first["map_mm"],
        "mat_c": first["mat_c"],
        "vegetation": "forest",
        "origin": "natural",
        "years": years,
        "depth_top_cm": top,
        "depth_bottom_cm": bottom,
        "bd_g_cm3": np.nan,
        **{c: np.nan for c in (*schema.C_COLUMNS, *schema.N_COLUMNS)},
        "groa_measurement_ids": ";".join(r["measurement_id"] for r in grp),
        "groa_refor_type": first["refor_type"],
        "groa_prior": first["prior"],
        "groa_ref": first["ref"],
        "control_scope": "study" if first["ref"] in STUDY_SCOPE_REFS else "site",
        "n_plots": first["n_plots"],
        "clay_pct": first["clay_pct"],
        "silt_pct": first["silt_pct"],
        "sand_pct": first["sand_pct"],
        "_lines": [int(r["line"]) for r in grp],
        "_bd_dropped": 0,
    }
    for r in grp:
        col, factor = VARIABLES[r["variable"]]
        rec[col] = r["value"] * factor
    notes = []
    bds = [float(r["bd"]) for r in grp if not np.isnan(r["bd"])]
    if bds:
        bd = bds[0]
        if len(set(bds)) > 1:
            notes.append(f"bulk densities {sorted(set(bds))} differ; kept {bd:g}")
        if BD_RANGE[0] <= bd <= BD_RANGE[1]:
            rec["bd_g_cm3"] = bd
        else:
            rec["_bd_dropped"] = 1
            notes.append(f"bulk_density {bd:g} outside {BD_RANGE[0]}-{BD_RANGE[1]} g cm-3 dropped")
    for col, label in (("map_mm", "AMP"), ("mat_c", "AMT")):
        if np.isnan(first[col]):
            notes.append(f"site.id {site} has no {label} in sites.csv ({col} left empty)")
    if not first["is_regrowth"] and first["age"] != 0:
        notes.append(f"reference plot ({first['refor_type']}) with stand.age {first['age']:g}")
    rec["import_note"] = "; ".join(notes)
    return rec


def _natural(col: pd.Series) -> pd.Series:
    """Sort numeric-looking ids as numbers."""
    if col.dtype == object or pd.api.types.is_string_dtype(col):
        num = pd.to_numeric(col, errors="coerce")
        if num.notna().all():
            return num
    return col


def _reason_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """Rejections grouped by reason with ids and numbers stripped (for the printed summary)."""
    if rejected.empty:
        return {}
    generic = rejected["reason"].str.replace(r"site\.id \S+", "site.id X", regex=True)
    generic = generic.str.replace(r"\d+(\.\d+)?", "#", regex=True)
    return {str(k): int(v) for k, v in generic.value_counts().items()}
