"""Validation of observation tables (docs/data_format.md section 1).

``load_observations`` reads a CSV/XLSX/Parquet table, checks every row and either returns a typed
copy or raises :class:`ObservationsError` (an ``InputError``, exit code 2) that lists every
problem with file, 1-based line, column and value. Checking everything before anything else runs
means a bad table never produces partial outputs and the user fixes all problems in one pass.

Rows that are valid but carry no C or N quantity are *not* errors here: harmonization puts them in
its rejection report. :func:`summarize_observations` counts them so ``validate`` can warn.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_soil import schema
from bayes_soil.errors import InputError
from bayes_soil.io import DEMO_OBSERVATIONS, MISSING_TOKENS, read_table_with_lines

# Plausible ranges; values outside them are errors (units of docs/data_format.md).
BD_RANGE = (0.3, 2.2)  # g cm-3, mineral soils
LAT_RANGE = (-90.0, 90.0)
LON_RANGE = (-180.0, 180.0)
MAP_RANGE = (0.0, 15000.0)  # mm yr-1
MAT_RANGE = (-60.0, 60.0)  # degC
MAX_CONCENTRATION = 1000.0  # g kg-1 cannot exceed the whole kilogram
ID_COLUMNS = ("obs_id", "study_id", "site_id", "plot_id")
LABEL_COLUMNS = {
    "vegetation": schema.VEGETATION,
    "origin": schema.ORIGINS,
    "control_scope": schema.CONTROL_SCOPES,
}
DEFAULT_PLOT_ID = "p1"
MAX_LISTED = 200  # problems printed in one error message
DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
#: common spellings of the contract's columns (keys: lower-case, spaces/dots/hyphens as "_")
ALIASES = {
    **dict.fromkeys(
        (
            "map",
            "precipitation",
            "mean_annual_precipitation",
            "annual_precipitation",
            "prec",
            "precip",
            "rainfall",
            "amp",
            "map_mm_",
            "p_mm",
        ),
        "map_mm",
    ),
    **dict.fromkeys(
        (
            "mat",
            "temperature",
            "mean_annual_temperature",
            "annual_temperature",
            "temp",
            "amt",
            "t_c",
            "mat_degc",
        ),
        "mat_c",
    ),
    **dict.fromkeys(
        (
            "soc",
            "oc",
            "organic_carbon",
            "soil_organic_carbon",
            "soc_gkg",
            "soc_g/kg",
            "c_g_kg",
            "toc",
        ),
        "soc_g_kg",
    ),
    **dict.fromkeys(("som", "organic_matter", "soil_organic_matter", "som_gkg"), "som_g_kg"),
    **dict.fromkeys(
        ("tn", "stn", "total_nitrogen", "soil_total_nitrogen", "n_g_kg", "stn_gkg", "tn_g_kg"),
        "stn_g_kg",
    ),
    **dict.fromkeys(("bd", "bulk_density", "bd_g_cm_3", "bulk_density_g_cm3"), "bd_g_cm3"),
    **dict.fromkeys(("soc_stock", "soc_density", "socs", "soc_storage"), "soc_stock_mg_ha"),
    **dict.fromkeys(("stn_stock", "tn_stock", "stn_density", "tn_density"), "stn_stock_mg_ha"),
    **dict.fromkeys(("longitude", "long", "lng", "long_dec", "x"), "lon"),
    **dict.fromkeys(("latitude", "lat_dec", "y"), "lat"),
    **dict.fromkeys(
        (
            "age",
            "stand_age",
            "year",
            "restoration_years",
            "years_since_restoration",
            "restoration_age",
            "time",
        ),
        "years",
    ),
    **dict.fromkeys(
        (
            "depth_top",
            "top",
            "upper_depth",
            "top_cm",
            "u_depth",
            "depth_from",
            "upper",
            "min_depth",
            "hrzdep_t",
        ),
        "depth_top_cm",
    ),
    **dict.fromkeys(
        (
            "depth_bottom",
            "bottom",
            "lower_depth",
            "bottom_cm",
            "l_depth",
            "depth_to",
            "lower",
            "max_depth",
            "hrzdep_b",
        ),
        "depth_bottom_cm",
    ),
    **dict.fromkeys(("study", "study_id_", "paper", "reference", "study_no"), "study_id"),
    **dict.fromkeys(("site", "site_name", "location"), "site_id"),
    **dict.fromkeys(("plot", "profile", "profile_id", "replicate"), "plot_id"),
    **dict.fromkeys(("veg", "vegetation_type", "veg_type", "land_use", "landuse"), "vegetation"),
    **dict.fromkeys(("restoration_type", "planted_or_natural"), "origin"),
}
KNOWN_COLUMNS = (*schema.REQUIRED_COLUMNS, *schema.OPTIONAL_COLUMNS)
#: every depth_bottom_cm at or above this many cm means centimetres; below it, metres are likely
METRE_DEPTH_LIMIT = 3.0
#: concentrations whose every value is at most this look like percent, not g kg-1
PERCENT_LIMIT = {"soc_g_kg": 6.0, "som_g_kg": 10.0, "stn_g_kg": 0.3}


def _alias_key(name: str) -> str:
    return re.sub(r"[\s.\-()]+", "_", name.strip().lower()).strip("_")


def suggest_column(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate a near-miss column name most likely means (alias table, then difflib)."""
    key = _alias_key(name)
    target = ALIASES.get(key)
    if target in candidates:
        return target
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.75)
    return close[0] if close else None


def did_you_mean(present: list[str], missing: str) -> str | None:
    """Among the file's unknown columns, the one that most likely is ``missing``."""
    unknown = [c for c in present if c not in KNOWN_COLUMNS]
    for c in unknown:
        if ALIASES.get(_alias_key(c)) == missing:
            return c
    keyed = {_alias_key(c): c for c in unknown}
    close = difflib.get_close_matches(missing, list(keyed), n=1, cutoff=0.75)
    return keyed[close[0]] if close else None


def _column_notes(raw_columns: list[str], skip: tuple[str, ...] = ()) -> list[str]:
    """A "did you mean" for each column that is not in the contract but looks like an absent
    contract column (e.g. ``SOC`` -> ``soc_g_kg``)."""
    norm = [str(c).strip().lower() for c in raw_columns]
    free = [k for k in KNOWN_COLUMNS if k not in norm]
    unknown = [(o, c) for o, c in zip(raw_columns, norm, strict=True) if c not in KNOWN_COLUMNS]
    unknown = [(o, c) for o, c in unknown if c not in ("line", *skip)]
    found: dict[str, str] = {}
    # the alias table first, then string similarity, each contract column suggested once
    for orig, c in unknown:
        target = ALIASES.get(_alias_key(c))
        if target in free and target not in found.values():
            found[str(orig).strip()] = target
    for orig, c in unknown:
        if str(orig).strip() in found:
            continue
        target = suggest_column(c, [k for k in free if k not in found.values()])
        if target:
            found[str(orig).strip()] = target
    notes = [
        f"column {orig!r} is not a contract column (kept as an extra column); did you mean "
        f"{target!r}? (see docs/data_format.md)"
        for orig, target in found.items()
    ]
    if {"study.id", "stand.age", "variables.name"} <= set(norm):
        notes.append(
            "this looks like a GROA release table: convert the release folder with "
            "'bayes_soil import groa DIR --out observations.csv'"
        )
    return notes


def input_notes(df: pd.DataFrame, raw_columns: list[str]) -> list[str]:
    """Warnings about a valid table that is probably not what its author meant: unknown
    columns that look like contract columns, depths that look like metres, concentrations that
    look like percent. Nothing here stops the table from being used."""
    notes = _column_notes(raw_columns)
    bottom = df["depth_bottom_cm"].dropna() if "depth_bottom_cm" in df.columns else pd.Series()
    if len(bottom) and bottom.max() <= METRE_DEPTH_LIMIT:
        notes.append(
            f"depths look like metres: every depth_bottom_cm is <= {METRE_DEPTH_LIMIT:g} (max "
            f"{bottom.max():g}); the contract wants centimetres (multiply metres by 100)"
        )
    for col, limit in PERCENT_LIMIT.items():
        v = df[col].dropna() if col in df.columns else pd.Series(dtype=float)
        if len(v) >= 3 and v.max() <= limit:
            notes.append(
                f"{col} looks like percent: every value is <= {limit:g} (median "
                f"{v.median():.3g}); the contract wants g kg-1 (multiply percent by 10)"
            )
    return notes


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input table; ``str()`` gives a single readable line."""

    file: str
    line: int | None
    column: str | None
    value: str | None
    reason: str

    def __str__(self) -> str:
        where = [self.file]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column}")
        text = ", ".join(where)
        if self.value is not None:
            text += f", value {self.value!r}"
        return f"{text}: {self.reason}"


class ObservationsError(InputError):
    """Invalid observations table; ``problems`` holds every :class:`Problem` found."""

    def __init__(self, name: str, problems: list[Problem], note: str | None = None):
        self.problems = list(problems)
        text = format_problems(name, self.problems)
        super().__init__(f"{text}\n  note: {note}" if note else text)


def format_problems(name: str, problems: list[Problem], limit: int = MAX_LISTED) -> str:
    """Header line plus one line per problem, capped at ``limit`` with a count of the rest."""
    n = len(problems)
    head = f"{name}: {n} problem{'s' if n != 1 else ''} found; the table was not used"
    shown = [f"  {p}" for p in problems[:limit]]
    if n > limit:
        shown.append(f"  ... and {n - limit} more problems")
    return "\n".join([head, *shown])


def load_observations(
    path: str | Path | None = None, notes: list[str] | None = None
) -> pd.DataFrame:
    """Read and validate an observations table; return a typed copy.

    Parameters
    ----------
    path : CSV, XLSX or Parquet file; None means the bundled SYNTHETIC demo dataset.

    Returns
    -------
    DataFrame with every column of docs/data_format.md section 1 (absent optional columns added as
    missing), numeric columns float, vegetation/origin lower-case, ids as str (``obs_id``
    generated as ``row<line>`` and ``plot_id`` filled with ``p1`` where absent), extra input
    columns passed through, and an int column ``line`` = 1-based line in the file (header = 1).

    Raises
    ------
    ObservationsError (an InputError, exit code 2) listing every problem.

    ``notes``, when given, receives the warnings that do not stop the table from being used:
    the text encoding when it is not UTF-8, near-miss column names, depths that look like
    metres and concentrations that look like percent (:func:`input_notes`).
    """
    path = DEMO_OBSERVATIONS if path is None else Path(path)
    name = str(path)
    raw, lines = read_table_with_lines(path)
    raw = raw.copy()
    if "line" in [c.strip().lower() for c in raw.columns]:
        # keep a user column called "line" under another name; ours is the file line
        raw.columns = ["input_line" if c.strip().lower() == "line" else c for c in raw.columns]
    raw["line"] = lines
    typed, problems = _check(raw, name)
    if problems:
        hinted = tuple(
            m.group(1).lower()
            for p in problems
            if (m := re.search(r"did you mean '([^']+)'", p.reason))
        )
        extra = [raw.attrs.get("encoding_note"), *_column_notes(list(raw.columns), hinted)]
        note = "\n  note: ".join(n for n in extra if n) or None
        raise ObservationsError(name, problems, note=note)
    if notes is not None:
        if raw.attrs.get("encoding_note"):
            notes.append(raw.attrs["encoding_note"])
        notes.extend(f"{name}: {n}" for n in input_notes(typed, list(raw.columns)))
    return typed


def validate_observations(df: pd.DataFrame, name: str) -> list[Problem]:
    """Every problem in ``df`` (raw text cells or already-typed values).

    Line numbers come from a ``line`` column when present, otherwise row position + 2 (as if the
    table were a CSV with a header line). Rows without any C or N quantity are not problems.
    """
    return _check(df, name)[1]


def summarize_observations(df: pd.DataFrame) -> dict[str, int]:
    """Counts for the one-line summary of a valid, typed table."""
    has_quantity = df[[*schema.C_COLUMNS, *schema.N_COLUMNS]].notna().any(axis=1)
    return {
        "rows": len(df),
        "studies": int(df["study_id"].nunique()),
        "sites": int(df["site_id"].nunique()),
        "profiles": int(df.groupby(list(schema.PROFILE_KEYS), dropna=False).ngroups),
        "controls": int((df["years"] == 0).sum()),
        "no_quantity": int((~has_quantity).sum()),
        **{f"no_{d}": int(df[d].isna().sum()) for d in schema.DRIVERS},
    }


# --------------------------------------------------------------------------------------------
# checks


def _check(df: pd.DataFrame, name: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse and check ``df``; return the typed table and the list of problems."""
    problems: list[Problem] = []
    df = df.copy()
    original = {str(c).strip().lower(): str(c).strip() for c in df.columns}
    lines = _lines(df)
    df = df.drop(columns=["line"], errors="ignore")
    df = _normalise_columns(df, name, problems)
    df = df.reset_index(drop=True)

    missing = [c for c in schema.REQUIRED_COLUMNS if c not in df.columns]
    for col in missing:
        near = did_you_mean(list(df.columns), col)
        near = original.get(near, near)
        hint = f"; did you mean {near!r}? (rename it to {col})" if near else ""
        problems.append(Problem(name, 1, col, None, f"required column is missing{hint}"))
    if missing:
        for col in df.columns:
            seps = [w for sep, w in ((";", "semicolon"), ("\t", "tab")) if sep in col]
            if seps or len(df.columns) == 1:
                problems.append(
                    Problem(
                        name,
                        1,
                        str(col),
                        None,
                        f"the header looks {seps[0]}-separated; save the file as comma-separated"
                        if seps
                        else "only one column found: is the file separated by something other "
                        "than commas?",
                    )
                )

    out = pd.DataFrame(index=df.index)
    # ids and labels: text, stripped
    for col in ID_COLUMNS:
        if col in df.columns:
            out[col] = _text(df[col])
    for col in LABEL_COLUMNS:
        if col in df.columns:
            out[col] = _text(df[col]).str.lower()
    # numbers
    for col in schema.NUMERIC_COLUMNS:
        if col in df.columns:
            out[col] = _numeric(df[col], col, lines, name, problems)
        else:
            out[col] = np.nan
    # required values present
    for col in schema.REQUIRED_COLUMNS:
        if col in schema.MAY_BE_EMPTY:
            continue  # counted by summarize_observations; kept where the driver is not needed
        if col in out.columns and col not in missing:
            for i in np.flatnonzero(out[col].isna().to_numpy() & _is_missing(df[col])):
                shown = "" if df[col].iloc[i] is None else str(df[col].iloc[i])
                problems.append(
                    Problem(name, int(lines[i]), col, shown, "required value is missing")
                )

    _check_labels(out, df, lines, name, problems)
    _check_ranges(out, df, lines, name, problems)
    _fill_ids(out, lines)
    _check_duplicate_ids(out, lines, name, problems)
    if not missing:
        _check_overlaps(out, lines, name, problems)

    # source and extra columns pass through as text
    for col in df.columns:
        if col not in out.columns:
            out[col] = _text(df[col]) if df[col].dtype == object else df[col]
    if "source" not in out.columns:
        out["source"] = pd.Series(pd.NA, index=out.index, dtype="str")
    out["line"] = lines.astype(int)
    ordered = ["obs_id", *schema.REQUIRED_COLUMNS]
    ordered += [c for c in schema.OPTIONAL_COLUMNS if c not in ordered]
    ordered += [c for c in out.columns if c not in ordered]
    out = out[[c for c in ordered if c in out.columns]]
    problems.sort(key=lambda p: p.line if p.line is not None else 0)
    return out, problems


def _lines(df: pd.DataFrame) -> np.ndarray:
    if "line" in df.columns:
        return pd.to_numeric(df["line"]).to_numpy(dtype=int)
    return np.arange(2, len(df) + 2)


def _normalise_columns(df: pd.DataFrame, name: str, problems: list[Problem]) -> pd.DataFrame:
    """Column names stripped and lower-cased; two columns with the same name is an error."""
    norm = [str(c).strip().lower() for c in df.columns]
    seen: dict[str, str] = {}
    for orig, new in zip(df.columns, norm, strict=True):
        if new in seen:
            problems.append(
                Problem(name, 1, str(orig), None, f"duplicated column (also {seen[new]!r})")
            )
        else:
            seen[new] = str(orig)
    keep = [i for i, n in enumerate(norm) if norm.index(n) == i]
    df = df.iloc[:, keep]
    df.columns = [norm[i] for i in keep]
    return df


def _is_missing(col: pd.Series) -> np.ndarray:
    """True where a cell is empty or a common missing-value spelling ('NA', 'nan', ...)."""
    miss = col.isna().to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        return miss
    text = col.astype("string").str.strip().str.lower()
    return miss | text.isin(MISSING_TOKENS).fillna(False).to_numpy(dtype=bool)


def _text(col: pd.Series) -> pd.Series:
    """Cells as stripped str, missing as NA; integral floats written without '.0'."""

    def conv(v: object) -> object:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip()

    miss = _is_missing(col)
    vals = [pd.NA if m else conv(v) for v, m in zip(col.tolist(), miss, strict=True)]
    return pd.Series(vals, index=col.index, dtype="str")


def _numeric(
    col: pd.Series, name_col: str, lines: np.ndarray, name: str, problems: list[Problem]
) -> pd.Series:
    """Parse a numeric column; non-numbers and non-finite numbers are problems."""
    miss = _is_missing(col)
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = col.astype(float).to_numpy()
    else:
        text = col.map(lambda v: v.strip() if isinstance(v, str) else v)
        text = text.where(~miss, None)
        values = pd.to_numeric(text, errors="coerce").astype(float).to_numpy()
        bad = np.isnan(values) & ~miss
        for i in np.flatnonzero(bad):
            value = str(col.iloc[i])
            reason = "not a number"
            if DECIMAL_COMMA.match(value.strip()):
                reason += " (use a decimal point, not a comma)"
            problems.append(Problem(name, int(lines[i]), name_col, value, reason))
    values = np.where(miss, np.nan, values)
    for i in np.flatnonzero(np.isinf(values)):
        problems.append(
            Problem(name, int(lines[i]), name_col, str(col.iloc[i]), "not a finite number")
        )
    values = np.where(np.isinf(values), np.nan, values)
    return pd.Series(values, index=col.index, dtype=float)


def _check_labels(
    out: pd.DataFrame, raw: pd.DataFrame, lines: np.ndarray, name: str, problems: list[Problem]
) -> None:
    for col, allowed in LABEL_COLUMNS.items():
        if col not in out.columns:
            continue
        vals = out[col]
        bad = vals.notna() & ~vals.isin(allowed)
        for i in np.flatnonzero(bad.to_numpy()):
            problems.append(
                Problem(
                    name,
                    int(lines[i]),
                    col,
                    str(raw[col].iloc[i]),
                    f"unknown {col}; expected one of {', '.join(allowed)} (any case)",
                )
            )


def _check_ranges(
    out: pd.DataFrame, raw: pd.DataFrame, lines: np.ndarray, name: str, problems: list[Problem]
) -> None:
    """Value checks column by column (missing values are left to the required-value check)."""

    def flag(mask: np.ndarray, col: str, reason: str) -> None:
        for i in np.flatnonzero(mask):
            problems.append(Problem(name, int(lines[i]), col, _shown(raw, col, i), reason))

    def v(col: str) -> np.ndarray:
        return out[col].to_numpy(dtype=float)

    with np.errstate(invalid="ignore"):
        flag(v("lat") < LAT_RANGE[0], "lat", "latitude below -90")
        flag(v("lat") > LAT_RANGE[1], "lat", "latitude above 90")
        flag(v("lon") < LON_RANGE[0], "lon", "longitude below -180")
        flag(v("lon") > LON_RANGE[1], "lon", "longitude above 180")
        flag(v("years") < 0, "years", "years since revegetation must be >= 0")
        flag(v("map_mm") < MAP_RANGE[0], "map_mm", "precipitation (mm) must be >= 0")
        flag(v("map_mm") > MAP_RANGE[1], "map_mm", f"precipitation above {MAP_RANGE[1]:g} mm")
        flag(
            (v("mat_c") < MAT_RANGE[0]) | (v("mat_c") > MAT_RANGE[1]),
            "mat_c",
            f"temperature outside {MAT_RANGE[0]:g} to {MAT_RANGE[1]:g} degC",
        )
        top, bottom = v("depth_top_cm"), v("depth_bottom_cm")
        flag(top < 0, "depth_top_cm", "depth must be >= 0 cm")
        flag(bottom < 0, "depth_bottom_cm", "depth must be >= 0 cm")
        flag(
            (bottom <= top) & (top >= 0) & (bottom >= 0),
            "depth_bottom_cm",
            "bottom depth must be greater than top depth (inverted or empty interval)",
        )
        for col in (*schema.C_COLUMNS, *schema.N_COLUMNS, "bd_g_cm3"):
            flag(v(col) < 0, col, "must not be negative")
        for col in ("soc_g_kg", "som_g_kg", "stn_g_kg"):
            flag(v(col) > MAX_CONCENTRATION, col, "a concentration cannot exceed 1000 g kg-1")
        bd = v("bd_g_cm3")
        flag(
            (bd >= 0) & ((bd < BD_RANGE[0]) | (bd > BD_RANGE[1])),
            "bd_g_cm3",
            f"bulk density outside {BD_RANGE[0]}-{BD_RANGE[1]} g cm-3",
        )


def _shown(raw: pd.DataFrame, col: str, i: int) -> str:
    if col in raw.columns:
        return str(raw[col].iloc[i]).strip()
    return ""


def _fill_ids(out: pd.DataFrame, lines: np.ndarray) -> None:
    """obs_id defaults to row<line>; plot_id to p1 (one plot per study, site and age)."""
    generated = pd.Series([f"row{n}" for n in lines], index=out.index, dtype="str")
    if "obs_id" in out.columns:
        out["obs_id"] = out["obs_id"].fillna(generated)
    else:
        out["obs_id"] = generated
    if "plot_id" in out.columns:
        out["plot_id"] = out["plot_id"].fillna(DEFAULT_PLOT_ID)
    else:
        out["plot_id"] = pd.Series(DEFAULT_PLOT_ID, index=out.index, dtype="str")


def _check_duplicate_ids(
    out: pd.DataFrame, lines: np.ndarray, name: str, problems: list[Problem]
) -> None:
    ids = out["obs_id"]
    first_line: dict[str, int] = {}
    for i, obs in enumerate(ids.tolist()):
        if obs in first_line:
            problems.append(
                Problem(
                    name,
                    int(lines[i]),
                    "obs_id",
                    obs,
                    f"duplicated obs_id (first on line {first_line[obs]})",
                )
            )
        else:
            first_line[obs] = int(lines[i])


def _check_overlaps(
    out: pd.DataFrame, lines: np.ndarray, name: str, problems: list[Problem]
) -> None:
    """Intervals of one profile must not overlap (they would be counted twice in a layer)."""
    top = out["depth_top_cm"].to_numpy(dtype=float)
    bottom = out["depth_bottom_cm"].to_numpy(dtype=float)
    keys = out[list(schema.PROFILE_KEYS)]
    ok = np.isfinite(top) & np.isfinite(bottom) & (top >= 0) & (bottom > top)
    ok &= keys.notna().all(axis=1).to_numpy()
    if ok.sum() < 2:
        return
    group = keys.loc[ok].groupby(list(schema.PROFILE_KEYS), sort=False).ngroup().to_numpy()
    t, b, ln = top[ok], bottom[ok], lines[ok]
    order = np.lexsort((ln, b, t, group))
    prev_group, reach, reach_top, reach_line = -1, -np.inf, -np.inf, 0
    for g, ti, bi, li in zip(group[order], t[order], b[order], ln[order], strict=True):
        if g != prev_group:
            prev_group, reach, reach_top, reach_line = g, -np.inf, -np.inf, 0
        if ti < reach:
            same = ti == reach_top and bi == reach
            problems.append(
                Problem(
                    name,
                    int(li),
                    "depth_top_cm",
                    f"{ti:g}",
                    f"interval {ti:g}-{bi:g} cm "
                    + ("repeats" if same else "overlaps")
                    + f" interval {reach_top:g}-{reach:g} cm on line {reach_line} of the"
                    " same profile (study_id, site_id, plot_id, vegetation, origin, years);"
                    " give one row per interval or distinct plot_id values",
                )
            )
        if bi > reach:
            reach, reach_top, reach_line = bi, ti, int(li)
