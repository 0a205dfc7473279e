"""The harmonization pipeline: observations -> layers, changes, rejected rows and a report.

Steps (each in its own module): SOC from SOM (soc), bulk density where missing
(bulk_density), interval stocks (stocks), standard layers with the coverage rule (depth),
the shallow-to-deep fill of the deepest layer (deep), the 0-200 total, with ``stock_method="esm"``
equivalent-soil-mass stocks in place of fixed-depth ones where a profile allows it (esm), stages
(schema.stage_of) and changes against the year-0 controls (changes).

Row accounting is exact: every input row ends up either in ``obs_ids`` of at least one layer
row or in ``rejected`` with a reason, and ``len(input) == used + rejected`` is asserted.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_soil import __version__
from bayes_soil.errors import InputError
from bayes_soil.harmonize.bulk_density import (
    add_stock_sd,
    bd_predictive_sd,
    impute_bd,
    quiet_sklearn,
    score_bd_methods,
)
from bayes_soil.harmonize.changes import compute_changes
from bayes_soil.harmonize.deep import fill_deep_layer
from bayes_soil.harmonize.depth import (
    COVERAGE_TOLERANCE,
    apply_coverage_rule,
    layer_label,
    merge_duplicate_intervals,
    split_into_layers,
)
from bayes_soil.harmonize.esm import (
    ESM_COLUMNS,
    STOCK_METHODS,
    apply_esm,
    fixed_depth_twin,
    soil_mass_mg_ha,
    stock_method_of,
)
from bayes_soil.harmonize.soc import harmonized_soc
from bayes_soil.harmonize.stocks import interval_stocks
from bayes_soil.io import (
    DEMO_OBSERVATIONS,
    FIXED_TWIN_ATTR,
    AtomicOutputs,
    data_identity,
    is_synthetic,
    sha256_file,
    source_hash,
    stamp_identity,
)
from bayes_soil.schema import (
    C_COLUMNS,
    DRIVERS,
    LAYER_BOUNDS,
    LAYER_COLUMNS,
    N_COLUMNS,
    PROFILE_KEYS,
    stage_of,
)
from bayes_soil.validate import load_observations

BD_METHODS = ("rf", "ptf")
#: ``auto`` picks rf or ptf by study-grouped cross-validation on the data at hand
BD_CHOICES = ("auto", *BD_METHODS)
DEFAULT_BD_METHOD = "auto"
PROFILE_ATTRS = (
    "study_id",
    "site_id",
    "plot_id",
    "lon",
    "lat",
    "map_mm",
    "mat_c",
    "vegetation",
    "origin",
    "years",
)
LAYER_EXTRA_COLUMNS = ("plot_id", "coverage_scaled")
REJECTED_COLUMNS = ("obs_id", "line", "reason")
OUTPUT_FILES = ("layers.csv", "changes.csv", "rejected.csv", "harmonize_report.json")

REASON_NO_QUANTITY = "no C or N quantity (soc_g_kg, som_g_kg, soc_stock_mg_ha, stn_g_kg, "
REASON_NO_QUANTITY += "stn_stock_mg_ha all missing)"


@dataclass
class HarmonizeResult:
    """Output of :func:`harmonize` (and :func:`load_harmonized`).

    ``data_sha256`` is the data identity, :func:`bayes_soil.io.data_identity` of ``layers`` and
    ``changes``, computed here (not passed in) and recorded in both tables' ``attrs``, so that a
    model fitted on either table alone stores the same identity (``report["data_sha256"]`` too).
    """

    layers: pd.DataFrame
    changes: pd.DataFrame
    rejected: pd.DataFrame
    report: dict = field(default_factory=dict)
    synthetic: bool = False
    data_sha256: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.data_sha256 = stamp_identity(self.layers, self.changes)
        self.report["data_sha256"] = self.data_sha256
        self.report["stock_method"] = self.stock_method
        twin = (self.report.get("esm") or {}).get("fixed_data_sha256")
        if twin:  # an ESM table handed on alone (to a model) still names its fixed-depth twin
            for df in (self.layers, self.changes):
                df.attrs[FIXED_TWIN_ATTR] = twin

    @property
    def stock_method(self) -> str:
        """``fixed`` (fixed-depth stocks, the paper's) or ``esm`` (equivalent soil mass, with
        per-row fallbacks to fixed depth); read from the tables themselves."""
        return stock_method_of(self.layers)


def profile_ids(df: pd.DataFrame) -> pd.Series:
    """Stable profile id: 'p' + 12 hex digits of SHA-1 over the profile keys.

    The keys are schema.PROFILE_KEYS (study, site, plot, vegetation, origin, years); years are
    written with ``repr(float)`` so 5 and 5.0 give the same id.
    """
    keys = df[list(PROFILE_KEYS)].astype(object).copy()
    keys["years"] = [repr(float(y)) for y in df["years"]]
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(keys.astype(str)))
    ids = np.array(
        ["p" + hashlib.sha1("\x1f".join(u).encode()).hexdigest()[:12] for u in uniques],
        dtype=object,
    )
    return pd.Series(ids[codes], index=df.index, dtype=object)


def _prepare(obs: pd.DataFrame) -> pd.DataFrame:
    df = obs.copy()
    df.index = pd.RangeIndex(len(df))
    if "line" not in df.columns:
        df["line"] = np.arange(len(df)) + 2
    if "obs_id" not in df.columns:
        df["obs_id"] = ["row" + str(x) for x in df["line"]]
    df["obs_id"] = df["obs_id"].astype(str)
    if "plot_id" not in df.columns:
        df["plot_id"] = "p1"
    df["plot_id"] = df["plot_id"].astype(object).where(df["plot_id"].notna(), "p1").astype(str)
    dup = df["obs_id"].duplicated(keep=False)
    if dup.any():
        first = df.loc[dup].iloc[0]
        raise InputError(
            f"line {first['line']}: column obs_id: value {first['obs_id']!r} is not unique "
            f"({int(dup.sum())} rows share ids); obs_id must identify one row"
        )
    for c in ("study_id", "site_id", "vegetation", "origin"):
        df[c] = df[c].astype(object)
    df["vegetation"] = df["vegetation"].str.lower()
    df["origin"] = df["origin"].str.lower()
    return df


def _quantity_mask(df: pd.DataFrame) -> pd.Series:
    cols = [c for c in (*C_COLUMNS, *N_COLUMNS) if c in df.columns]
    if not cols:
        return pd.Series(False, index=df.index)
    return df[cols].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)


def _unique_join(ids: str) -> str:
    return ";".join(dict.fromkeys(ids.split(";")))


@dataclass(frozen=True)
class _Options:
    """harmonize's settings, checked once and handed whole to the steps that read them."""

    bd_method: str
    stock_method: str
    exclude_deep_imputed: bool
    seed: int
    layer_bounds: tuple[tuple[float, float], ...]
    coverage_tolerance: float
    score_bd: bool

    def __post_init__(self) -> None:
        if self.bd_method not in BD_CHOICES:
            raise ValueError(f"bd_method must be one of {BD_CHOICES}, not {self.bd_method!r}")
        if self.stock_method not in STOCK_METHODS:
            raise ValueError(
                f"stock_method must be one of {STOCK_METHODS}, not {self.stock_method!r}"
            )

    @property
    def layer_names(self) -> list[str]:
        return [layer_label(a, b) for a, b in self.layer_bounds]

    @property
    def total_label(self) -> str:
        return layer_label(self.layer_bounds[0][0], self.layer_bounds[-1][1])

    @property
    def max_depth(self) -> float:
        return float(self.layer_bounds[-1][1])


class _Timer:
    """Seconds per step for the report's ``timings_s``: a tick closes the step since the last."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def mark(self) -> None:
        self._last = time.perf_counter()

    def tick(self, name: str) -> None:
        t = time.perf_counter()
        self.seconds[name] = round(t - self._last, 3)
        self._last = t

    def close(self) -> None:
        self.seconds["total"] = round(time.perf_counter() - self._start, 3)


@dataclass
class _BulkDensity:
    """Step 3's output: the usable rows, their BD (measured or estimated) and its report."""

    work: pd.DataFrame
    bd: pd.Series
    source: pd.Series
    rel_sd: dict
    report: dict
    warnings: list[str]


@dataclass
class _LayerBook:
    """What steps 4-7 made and left out, for the report and the row accounting."""

    kept: pd.DataFrame  # layer rows the coverage rule kept (before the deep fill)
    dropped: pd.DataFrame  # layer rows it left out, with a reason
    dropped_el: pd.DataFrame  # element rows of intervals without a BD
    esm_intervals: pd.DataFrame | None  # interval stocks with their soil mass (esm only)
    n_interval_rows: int
    n_duplicates: int
    n_raw_layers: int
    n_inconsistent: int = 0  # profiles whose rows disagree on lon, lat, MAP or MAT
    n_filled: int = 0  # deepest-layer rows from the shallow-to-deep function
    deep_report: dict = field(default_factory=dict)
    n_total: int = 0
    n_deep_imputed: int = 0  # deep-imputed rows, the totals included, before any exclusion
    esm_report: dict | None = None


def harmonize(
    obs: pd.DataFrame,
    *,
    bd_method: str = DEFAULT_BD_METHOD,
    exclude_deep_imputed: bool = False,
    seed: int = 0,
    layer_bounds: tuple[tuple[float, float], ...] = LAYER_BOUNDS,
    coverage_tolerance: float = COVERAGE_TOLERANCE,
    score_bd: bool = True,
    stock_method: str = "fixed",
) -> HarmonizeResult:
    """Turn validated observations into standard-layer stocks and changes.

    Parameters
    ----------
    obs : typed observations (``bayes_soil.validate.load_observations``), with ``obs_id`` and
        ``line`` (generated when absent).
    bd_method : ``auto`` (default: whichever of rf and ptf has the higher study-grouped CV
        R^2 on the rows with measured BD; rf when that cannot be scored), ``rf`` (random
        forest) or ``ptf`` (Eq. 4-5) for rows without measured BD. A method chosen by hand
        that scores worse than the other is kept and named in ``report["warnings"]``.
    exclude_deep_imputed : drop layer rows whose deepest layer came from the shallow-to-deep
        function (the deepest layer and the total).
    seed : random state of the forest and every CV split.
    layer_bounds : standard layers (cm), contiguous from the surface.
    coverage_tolerance : minimum coverage kept (scaled up by 1/coverage); see ``depth``.
    score_bd : run the BD cross-validation for the report (the slowest step) even when no row
        needs an estimated BD; where one does, it always runs (the estimate's predictive sd
        comes from it).
    stock_method : ``fixed`` (fixed-depth stocks, the paper's method) or ``esm`` (equivalent
        soil mass against the chronosequence's year-0 controls, see ``harmonize.esm``; rows ESM
        cannot serve keep the fixed-depth stock and say why in ``esm_status``).
    """
    opts = _Options(
        bd_method=bd_method,
        stock_method=stock_method,
        exclude_deep_imputed=exclude_deep_imputed,
        seed=seed,
        layer_bounds=layer_bounds,
        coverage_tolerance=coverage_tolerance,
        score_bd=score_bd,
    )
    timer = _Timer()
    df = _prepare(obs)
    timer.mark()
    # 1. SOC from SOM (Eq. 3)
    df["soc_g_kg"], from_som = harmonized_soc(df)
    timer.tick("soc")
    # 2. rows that cannot enter any layer
    row_reason = _screen_rows(df, opts.max_depth)
    usable = row_reason.isna()
    timer.tick("screen")
    # 3. bulk density where a concentration needs one (ticks bd_cv and bd_impute)
    bulk = _bulk_density(df.loc[usable], opts, timer)
    # 4-5. interval stocks (Eq. 1-2), standard layers and the coverage rule
    book = _interval_and_layer_stocks(bulk, opts, timer)
    # 6. shallow-to-deep fill of the deepest layer
    profiles, book.n_inconsistent = _profiles(df.loc[usable])
    layers = _fill_deep(book, profiles, opts)
    timer.tick("deep")
    # 7. total layer, only where every standard layer exists
    layers = _total_layer(layers, book, opts)
    timer.tick("total_layer")
    # 7b. equivalent soil mass in place of fixed depth, where the profile allows it
    if stock_method == "esm":
        layers, book.esm_report = apply_esm(
            layers, book.esm_intervals, profiles, layer_bounds, opts.total_label
        )
        timer.tick("esm")
    # 8. profile attributes, stage, column order; the sd each stock has from an estimated BD
    layers = _finish_layers(layers, profiles, bulk, opts)
    # 9. changes against the year-0 controls
    changes, changes_report = compute_changes(layers)
    timer.tick("changes")
    # 10. row accounting, every input row used or rejected with a reason
    rejected = _row_accounting(df, row_reason, layers, book, exclude_deep_imputed)
    timer.tick("accounting")
    report = _report(
        df, usable, from_som, rejected, layers, changes, changes_report, bulk, book, opts, timer
    )
    report["synthetic"] = is_synthetic(obs)
    timer.close()
    return HarmonizeResult(layers, changes, rejected, report, synthetic=report["synthetic"])


def _screen_rows(df: pd.DataFrame, max_depth: float) -> pd.Series:
    """Step 2: why each row cannot enter any layer (None where it can); numeric depths, ids."""
    top = pd.to_numeric(df["depth_top_cm"], errors="coerce").astype(float)
    bottom = pd.to_numeric(df["depth_bottom_cm"], errors="coerce").astype(float)
    df["depth_top_cm"], df["depth_bottom_cm"] = top, bottom
    years = pd.to_numeric(df["years"], errors="coerce").astype(float)
    df["years"] = years
    checks = [
        (~_quantity_mask(df), REASON_NO_QUANTITY),
        (~(top.notna() & bottom.notna() & (top < bottom) & (top >= 0)), "invalid depth interval"),
        (years.isna() | (years < 0), "years missing or negative"),
        (top >= max_depth, f"interval entirely below {max_depth:g} cm (ignored)"),
    ]
    row_reason = pd.Series(None, index=df.index, dtype=object)
    for mask, reason in checks:
        row_reason = row_reason.where(~(mask & row_reason.isna()), reason)
    df["profile_id"] = profile_ids(df)
    return row_reason


def _bulk_density(work: pd.DataFrame, opts: _Options, timer: _Timer) -> _BulkDensity:
    """Step 3: a BD for every row whose concentration needs one, by the method CV favours."""

    def _num(name: str) -> pd.Series:
        if name not in work.columns:
            return pd.Series(np.nan, index=work.index)
        return pd.to_numeric(work[name], errors="coerce")

    needs_bd = (work["soc_g_kg"].notna() & _num("soc_stock_mg_ha").isna()) | (
        _num("stn_g_kg").notna() & _num("stn_stock_mg_ha").isna()
    )
    if "bd_g_cm3" not in work.columns:
        work = work.assign(bd_g_cm3=np.nan)
    if "stn_g_kg" not in work.columns:
        work = work.assign(stn_g_kg=np.nan)
    cv = None
    # an estimated BD needs its predictive sd, which the cross-validation gives
    if opts.score_bd or opts.bd_method == "auto" or bool(needs_bd.any()):
        cv = score_bd_methods(work, groups=work["study_id"], seed=opts.seed)
    timer.tick("bd_cv")
    choice = choose_bd_method(opts.bd_method, cv)
    bd, bd_source, bd_report = impute_bd(work, needs_bd, method=choice["chosen"], seed=opts.seed)
    if cv is not None:
        bd_report["cv"] = cv
    bd_report["choice"] = choice
    rel_sd = bd_predictive_sd(cv, choice["chosen"], bd[bd_source.eq("measured")])
    bd_report["predictive_sd_relative"] = rel_sd
    warnings_out = []
    if choice.get("warning") and int(needs_bd.sum()) > 0:
        warnings_out.append(choice["warning"])
    timer.tick("bd_impute")
    return _BulkDensity(work, bd, bd_source, rel_sd, bd_report, warnings_out)


def _interval_and_layer_stocks(bulk: _BulkDensity, opts: _Options, timer: _Timer) -> _LayerBook:
    """Steps 4-5: stocks per sampled interval (Eq. 1-2), cut into the standard layers kept."""
    work = bulk.work
    intervals, dropped_el = interval_stocks(work, bulk.bd, bulk.source)
    n_interval_rows = len(intervals)
    esm_intervals = None
    if opts.stock_method == "esm":  # soil mass per input row, before duplicates are merged
        thickness = work["depth_bottom_cm"] - work["depth_top_cm"]
        mass = pd.Series(soil_mass_mg_ha(bulk.bd, thickness).to_numpy(), index=work["obs_id"])
        esm_intervals = intervals.assign(soil_mass_mg_ha=intervals["obs_id"].map(mass))
    intervals, n_dup = merge_duplicate_intervals(intervals)
    timer.tick("stocks")
    raw_layers = split_into_layers(intervals, opts.layer_bounds)
    kept, dropped_layers = apply_coverage_rule(raw_layers, opts.coverage_tolerance)
    kept["deep_imputed"] = False
    timer.tick("layers")
    return _LayerBook(
        kept=kept,
        dropped=dropped_layers,
        dropped_el=dropped_el,
        esm_intervals=esm_intervals,
        n_interval_rows=n_interval_rows,
        n_duplicates=n_dup,
        n_raw_layers=len(raw_layers),
    )


def _profiles(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row of attributes per profile, and how many profiles' rows disagree on them."""
    with_scope = "control_scope" in rows.columns
    profile_attrs = [*PROFILE_ATTRS, *(["control_scope"] if with_scope else [])]
    profiles = rows.groupby("profile_id", sort=False)[profile_attrs].first().reset_index()
    attrs = ["lon", "lat", "map_mm", "mat_c"]
    n_inconsistent = int(
        (rows.groupby("profile_id")[attrs].nunique(dropna=False) > 1).any(axis=1).sum()
    )
    return profiles, n_inconsistent


def _fill_deep(book: _LayerBook, profiles: pd.DataFrame, opts: _Options) -> pd.DataFrame:
    """Step 6: the deepest layer predicted from the shallower ones where it was not sampled."""
    lib_warnings: dict = {}
    with quiet_sklearn(lib_warnings):  # scikit-learn's warnings go to the report, not stderr
        filled, deep_report = fill_deep_layer(book.kept, profiles, opts.layer_names, seed=opts.seed)
    if lib_warnings:
        deep_report["library_warnings"] = lib_warnings["library_warnings"]
    dropped_layers = book.dropped
    if len(filled):
        # the sampled fraction of a partly covered deepest layer stays visible in coverage
        part = dropped_layers.set_index(["profile_id", "element", "layer"])["coverage"]
        idx = pd.MultiIndex.from_frame(filled[["profile_id", "element", "layer"]])
        filled["coverage"] = part.reindex(idx).fillna(0.0).clip(upper=1.0).to_numpy()
        replaced = dropped_layers.set_index(["profile_id", "element", "layer"]).index.isin(idx)
        dropped_layers.loc[replaced, "reason"] += (
            "; the layer was predicted by the shallow-to-deep function instead"
        )
    book.n_filled, book.deep_report = len(filled), deep_report
    return pd.concat([book.kept.drop(columns="layer_index"), filled], ignore_index=True)


def _total_layer(layers: pd.DataFrame, book: _LayerBook, opts: _Options) -> pd.DataFrame:
    """Step 7: the whole-depth total where every layer exists; deep-imputed rows out if asked."""
    widths = {layer_label(a, b): b - a for a, b in opts.layer_bounds}
    per = layers.assign(_w=layers["layer"].map(widths))
    per["_cw"] = per["coverage"] * per["_w"]
    tot = per.groupby(["profile_id", "element"], sort=False).agg(
        n_layers=("layer", "nunique"),
        stock_mg_ha=("stock_mg_ha", "sum"),
        _cw=("_cw", "sum"),
        deep_imputed=("deep_imputed", "any"),
        coverage_scaled=("coverage_scaled", "any"),
        n_methods=("bd_method", "nunique"),
        bd_method=("bd_method", "first"),
        obs_ids=("obs_ids", ";".join),
    )
    tot.loc[tot["n_methods"] > 1, "bd_method"] = "mixed"
    tot = tot[tot["n_layers"] == len(opts.layer_names)].drop(columns="n_methods").reset_index()
    tot["layer"] = opts.total_label
    tot["coverage"] = tot["_cw"] / sum(widths.values())
    layers = pd.concat([layers, tot.drop(columns=["n_layers", "_cw"])], ignore_index=True)
    book.n_total = len(tot)
    book.n_deep_imputed = int(layers["deep_imputed"].sum())
    if opts.exclude_deep_imputed:
        layers = layers.loc[~layers["deep_imputed"]]
    layers["obs_ids"] = [_unique_join(s) for s in layers["obs_ids"]]
    return layers


def _finish_layers(
    layers: pd.DataFrame, profiles: pd.DataFrame, bulk: _BulkDensity, opts: _Options
) -> pd.DataFrame:
    """Step 8: the output table: profile attributes, stage, row and column order, BD's sd."""
    layers = layers.merge(profiles, on="profile_id", how="left", validate="many_to_one")
    layers["stage"] = stage_of(layers["years"]).to_numpy()
    order = {name: i for i, name in enumerate([*opts.layer_names, opts.total_label])}
    layers = (
        layers.assign(_o=layers["layer"].map(order))
        .sort_values(["study_id", "site_id", "profile_id", "element", "_o"], kind="stable")
        .drop(columns="_o")
    )
    layers["deep_imputed"] = layers["deep_imputed"].astype(bool)
    layers["coverage_scaled"] = layers["coverage_scaled"].astype(bool)
    extra_columns = list(LAYER_EXTRA_COLUMNS)
    if opts.stock_method == "esm":
        extra_columns += list(ESM_COLUMNS)
    # control_scope travels only when the input has it (the demo's tables stay as they were)
    if "control_scope" in profiles.columns:
        extra_columns.append("control_scope")
    layers = layers[[*LAYER_COLUMNS, *extra_columns]].reset_index(drop=True)
    # 8b. the sd each stock has from an estimated BD (imputed values are not data)
    return add_stock_sd(layers, bulk.work["obs_id"], bulk.source, bulk.rel_sd)


def _row_accounting(
    df: pd.DataFrame,
    row_reason: pd.Series,
    layers: pd.DataFrame,
    book: _LayerBook,
    exclude_deep_imputed: bool,
) -> pd.DataFrame:
    """Step 10: the rejected rows, each with its reason; asserts that no input row is lost."""
    used_ids = set(";".join(layers["obs_ids"]).split(";")) if len(layers) else set()
    used = df["obs_id"].isin(used_ids)
    reason = row_reason.copy()
    reason = reason.where(~used, None)
    need = ~used & reason.isna()
    if need.any():
        reason.loc[need] = _explain(
            df.loc[need],
            book.dropped_el,
            book.dropped,
            book.kept,
            exclude_deep_imputed,
        )
    rejected = pd.DataFrame(
        {
            "obs_id": df.loc[~used, "obs_id"],
            "line": df.loc[~used, "line"].astype(int),
            "reason": reason.loc[~used],
        }
    ).reset_index(drop=True)
    assert len(df) == int(used.sum()) + len(rejected), "row accounting broken"
    assert rejected["reason"].notna().all(), "a rejected row has no reason"
    return rejected[list(REJECTED_COLUMNS)]


def _step_counts(
    df: pd.DataFrame,
    usable: pd.Series,
    from_som: pd.Series,
    layers: pd.DataFrame,
    book: _LayerBook,
    opts: _Options,
) -> dict:
    """The report's ``steps``: how many rows each step took in, made and left out."""
    top, bottom, max_depth = df["depth_top_cm"], df["depth_bottom_cm"], opts.max_depth
    dropped_counts = (
        book.dropped.groupby(["reason", "element", "layer"]).size()
        if len(book.dropped)
        else pd.Series(dtype=int)
    )
    return {
        "soc_from_som": int((from_som & usable).sum()),
        "rows_usable": int(usable.sum()),
        "interval_element_rows": book.n_interval_rows,
        "duplicate_intervals_averaged": book.n_duplicates,
        "element_rows_without_bd": len(book.dropped_el),
        "intervals_below_bottom": int((top >= max_depth).sum()),
        "intervals_partly_below_bottom": int(((top < max_depth) & (bottom > max_depth)).sum()),
        "layer_rows_from_intervals": book.n_raw_layers,
        "layer_rows_kept": len(book.kept),
        "layer_rows_coverage_scaled": int(book.kept["coverage_scaled"].sum()),
        "layer_rows_dropped": {" | ".join(map(str, k)): int(v) for k, v in dropped_counts.items()},
        "deep_layer_rows_imputed": book.n_filled,
        "deep_imputed_rows_incl_total": book.n_deep_imputed,
        "deep_imputed_excluded": bool(opts.exclude_deep_imputed),
        "total_layer_rows": book.n_total,
        "final_layer_rows": len(layers),
        "final_layer_rows_by_element_layer": {
            f"{e} {lay}": int(n)
            for (e, lay), n in layers.groupby(["element", "layer"], sort=False).size().items()
        },
        "profiles": int(layers["profile_id"].nunique()),
        "profiles_with_varying_lon_lat_map_mat": book.n_inconsistent,
    }


def _report(
    df: pd.DataFrame,
    usable: pd.Series,
    from_som: pd.Series,
    rejected: pd.DataFrame,
    layers: pd.DataFrame,
    changes: pd.DataFrame,
    changes_report: dict,
    bulk: _BulkDensity,
    book: _LayerBook,
    opts: _Options,
    timer: _Timer,
) -> dict:
    """The harmonize report: row accounting, step counts, BD, depth rules, settings, timings."""
    total_label, tolerance = opts.total_label, opts.coverage_tolerance
    report = {
        "rows": {
            "input": len(df),
            "used": len(df) - len(rejected),
            "rejected": len(rejected),
            "rejected_by_reason": {
                str(k): int(v) for k, v in rejected["reason"].value_counts().items()
            },
        },
        "steps": _step_counts(df, usable, from_som, layers, book, opts),
        "bulk_density": bulk.report,
        "missing_drivers": _missing_drivers(df, usable, layers, changes),
        "bd_method_counts": {str(k): int(v) for k, v in layers["bd_method"].value_counts().items()},
        "depth": {
            "layer_bounds_cm": [list(map(float, b)) for b in opts.layer_bounds],
            "total_layer": total_label,
            "coverage_tolerance": tolerance,
            "coverage_rule": (
                f"a layer with coverage >= {tolerance:g} is kept with its stock scaled "
                "by 1/coverage (coverage_scaled = true); lower coverage, or overlapping "
                "intervals (coverage > 1), leave the layer out with a reason; exact duplicate "
                "intervals in a profile are averaged; the part of an interval below the deepest "
                f"boundary is ignored; {total_label} only where every layer exists"
            ),
        },
        "shallow_to_deep": book.deep_report,
        "changes": changes_report,
        "stages": "years in [0,5] -> 0-5, (5,10] -> 6-10, (10,20] -> 11-20, (20,30] -> 21-30, "
        "(30,inf) -> >30",
        "warnings": bulk.warnings,
        "settings": {
            "bd_method": bulk.report["choice"]["chosen"],
            "bd_method_requested": opts.bd_method,
            "stock_method": opts.stock_method,
            "exclude_deep_imputed": bool(opts.exclude_deep_imputed),
            "seed": opts.seed,
            "coverage_tolerance": tolerance,
            "layer_bounds_cm": [list(map(float, b)) for b in opts.layer_bounds],
            "bayes_soil_version": __version__,
        },
        "timings_s": timer.seconds,
    }
    if book.esm_report is not None:
        # the identity of the same data on fixed depth, so an ESM result names its twin
        book.esm_report["fixed_data_sha256"] = data_identity(*fixed_depth_twin(layers))
        report["esm"] = book.esm_report
    return report


def choose_bd_method(requested: str, cv: dict | None) -> dict:
    """Which BD method imputes, and why: ``auto`` takes the higher study-grouped CV R^2.

    Returns ``requested``, ``chosen``, ``group_cv_r2`` (rf and ptf, None where not scored),
    ``reason`` and, where the chosen method scores worse than the other across studies (only
    possible when chosen by hand), ``warning``.
    """
    gk = (cv or {}).get("group_kfold") or {}
    r2 = {m: (gk.get(m) or {}).get("r2") for m in BD_METHODS}
    out: dict = {"requested": requested, "group_cv_r2": r2}
    scored = all(v is not None for v in r2.values())
    if requested == "auto":
        if scored:
            best = "rf" if r2["rf"] >= r2["ptf"] else "ptf"
            out["chosen"] = best
            out["reason"] = (
                f"study-grouped CV R^2: rf {r2['rf']:.3f}, ptf {r2['ptf']:.3f}; "
                f"{best} is the better across studies"
            )
            return _poor_fit_warning(out)
        else:
            why = (cv or {}).get("skipped") or "fewer than 2 studies with measured BD"
            out["chosen"] = "rf"
            out["reason"] = (
                f"study-grouped CV not possible ({why}); rf (which falls back to the PTF when "
                "it cannot be trained)"
            )
        return out
    out["chosen"] = requested
    out["reason"] = f"chosen by hand (--bd-method {requested})"
    if scored:
        other = "ptf" if requested == "rf" else "rf"
        if r2[requested] < r2[other]:
            out["warning"] = (
                f"bulk density: --bd-method {requested} scores WORSE than {other} across "
                f"studies on these data (study-grouped CV R^2 {r2[requested]:.3f} vs "
                f"{r2[other]:.3f}); --bd-method auto would use {other}"
            )
    return _poor_fit_warning(out)


def _poor_fit_warning(out: dict) -> dict:
    """Add a warning when the chosen method predicts BD across studies worse than the mean."""
    r2 = out["group_cv_r2"].get(out["chosen"])
    if r2 is not None and r2 < 0 and "warning" not in out:
        out["warning"] = (
            f"bulk density: the chosen method ({out['chosen']}) has a study-grouped CV R^2 of "
            f"{r2:.3f}: across studies it predicts BD worse than the mean of the measured "
            "values; stocks from estimated BD are uncertain (see bd_method in layers.csv)"
        )
    return out


def _missing_drivers(
    df: pd.DataFrame, usable: pd.Series, layers: pd.DataFrame, changes: pd.DataFrame
) -> dict:
    """How many rows, profiles, layer rows and change rows lack each climate driver.

    Such rows stay in every analysis that does not need the driver; turning points on that
    driver and the Bayesian climate model leave them out (and say so).
    """
    out = {}
    for d in DRIVERS:
        miss = pd.to_numeric(df[d], errors="coerce").isna() if d in df.columns else usable
        out[d] = {
            "input_rows": int(miss.sum()),
            "usable_rows": int((miss & usable).sum()),
            "profiles": int(layers.loc[layers[d].isna(), "profile_id"].nunique()),
            "layer_rows": int(layers[d].isna().sum()),
            "change_rows": int(changes[d].isna().sum()),
        }
    out["note"] = (
        "rows without a driver are kept for layers, stage rates and Kruskal-Wallis tests; "
        "turning points on that driver, the shallow-to-deep fill (which uses both drivers) "
        "and the Bayesian climate model leave them out"
    )
    return out


def empty_result_reason(result: HarmonizeResult, allow_no_changes: bool = False) -> str | None:
    """Why a harmonized result is of no use (no layer row, or no change row unless
    ``allow_no_changes``), else None."""
    rep = result.report
    rows = rep.get("rows", {})
    top = list(rows.get("rejected_by_reason", {}).items())[:3]
    reasons = "; ".join(f"{n} x {r}" for r, n in top)
    if result.layers.empty:
        return (
            f"0 usable layer rows: all {rows.get('input', 0)} input rows were rejected "
            f"(most common reasons: {reasons or 'none'})"
        )
    if result.changes.empty and not allow_no_changes:
        ch = rep.get("changes", {})
        left = "; ".join(
            f"{v['profiles']} profiles: {k}"
            for k, v in ch.get("left_out", {}).items()
            if v.get("profiles")
        )
        return (
            f"0 change rows: {ch.get('n_control_profiles', 0)} year-0 control profiles and "
            f"{ch.get('n_treated_profiles', 0)} revegetated profiles, none paired "
            f"({left or 'no revegetated profile'}); a change needs a years = 0 control of the "
            "same study, site, vegetation and origin (or control_scope = study); "
            "--allow-no-changes writes the layers anyway (stage rates need only them)"
        )
    return None


def summary_lines(report: dict) -> list[str]:
    """The console summary of a harmonize report: BD choice, control rules, missing drivers."""
    out = []
    choice = report.get("bulk_density", {}).get("choice", {})
    r2 = choice.get("group_cv_r2", {})

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    if choice:
        out.append(
            f"bulk density: {choice.get('chosen')} (requested {choice.get('requested')}); "
            f"study-grouped CV R^2 rf {f(r2.get('rf'))}, ptf {f(r2.get('ptf'))}"
        )
    n_est = report.get("bulk_density", {}).get("n_rows_needing_estimate", 0)
    sd = report.get("bulk_density", {}).get("predictive_sd_relative")
    if n_est and sd:
        out.append(
            f"{n_est} rows on an estimated bulk density: relative sd {sd['study']:.1%} shared by "
            f"the study, {sd['row']:.1%} per row (carried into the Bayesian models as "
            "uncertainty, not as measurements)"
        )
    ch = report.get("changes", {})
    rules = {k: v for k, v in ch.get("by_control_rule", {}).items() if v["change_rows"]}
    if rules:
        out.append(
            "changes per control rule: "
            + ", ".join(
                f"{k} {v['change_rows']} rows ({v['profiles']} profiles)" for k, v in rules.items()
            )
        )
    for why, v in ch.get("left_out", {}).items():
        if v.get("profiles"):
            out.append(f"no change for {v['profiles']} profiles: {why}")
    elsewhere = (ch.get("study_control_elsewhere_not_used") or {}).get("profiles")
    if elsewhere:
        out.append(
            f"{elsewhere} of those profiles have year-0 profiles of their study at another site, "
            "not used: set control_scope = study where the source says they are the control"
        )
    md = report.get("missing_drivers", {})
    for d in DRIVERS:
        v = md.get(d) or {}
        if v.get("input_rows"):
            out.append(
                f"{v['input_rows']} rows without {d} kept ({v['change_rows']} change rows): "
                f"left out only of turning points on {d} and the climate model"
            )
    return out


def _explain(
    rows: pd.DataFrame,
    dropped_el: pd.DataFrame,
    dropped_layers: pd.DataFrame,
    kept: pd.DataFrame,
    exclude_deep_imputed: bool,
) -> list[str]:
    """Why each usable row reached no layer: no BD, profile without any full layer, or the
    layers it touched were left out (coverage rule)."""
    reasons: dict[str, list[str]] = {}
    for oid, r in zip(dropped_el["obs_id"], dropped_el["reason"], strict=True):
        reasons.setdefault(oid, []).append(r)
    if len(dropped_layers):
        exploded = dropped_layers.assign(obs_id=dropped_layers["obs_ids"].str.split(";")).explode(
            "obs_id"
        )
        for oid, el, lay, cov, r in zip(
            exploded["obs_id"],
            exploded["element"],
            exploded["layer"],
            exploded["coverage"],
            exploded["reason"],
            strict=True,
        ):
            reasons.setdefault(oid, []).append(f"{el} layer {lay}: {r}, coverage {cov:.2f}")
    kept_profiles = set(kept["profile_id"])
    out = []
    for oid, pid in zip(rows["obs_id"], rows["profile_id"], strict=True):
        parts = reasons.get(oid, [])
        if pid not in kept_profiles:
            parts = ["profile covers no standard layer fully", *parts]
        if not parts:
            parts = (
                ["contributed only to deep-imputed rows that were excluded"]
                if (exclude_deep_imputed)
                else ["contributed to no kept layer"]
            )
        out.append("; ".join(dict.fromkeys(parts)))
    return out


def write_harmonized(result: HarmonizeResult, out_dir: str | Path) -> list[Path]:
    """Write layers.csv, changes.csv, rejected.csv and harmonize_report.json atomically."""
    out_dir = Path(out_dir)
    with AtomicOutputs(out_dir) as out:
        out.write_csv(result.layers, "layers.csv")
        out.write_csv(result.changes, "changes.csv")
        out.write_csv(result.rejected, "rejected.csv")
        out.write_json(result.report, "harmonize_report.json")
    return [out_dir / name for name in OUTPUT_FILES]


_STR_COLUMNS = (
    "profile_id",
    "study_id",
    "site_id",
    "plot_id",
    "vegetation",
    "origin",
    "stage",
    "element",
    "layer",
    "bd_method",
    "obs_ids",
    "stock_method",
    "esm_status",
    "control_scope",
    "control_rule",
)
_BOOL_COLUMNS = ("deep_imputed", "coverage_scaled")


def _read_output_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(
        path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=False, na_values=[""]
    )
    for c in _STR_COLUMNS:
        if c in df.columns:
            df[c] = df[c].astype(object)
    for c in _BOOL_COLUMNS:
        if c in df.columns:
            df[c] = df[c].astype(str).str.lower().isin(["true", "1"])
    return df


def _read_directory(directory: Path) -> HarmonizeResult:
    layers = _read_output_csv(directory / "layers.csv")
    changes = _read_output_csv(directory / "changes.csv")
    report: dict = {}
    report_path = directory / "harmonize_report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
    rejected_path = directory / "rejected.csv"
    rejected = (
        pd.read_csv(rejected_path, dtype={"obs_id": str, "reason": str})
        if rejected_path.exists()
        else pd.DataFrame(columns=list(REJECTED_COLUMNS))
    )
    synthetic = bool(report.get("synthetic", False)) or is_synthetic(layers)
    return HarmonizeResult(layers, changes, rejected, report, synthetic)


_CACHE: dict[tuple, HarmonizeResult] = {}
CACHE_ENV = "BAYES_SOIL_CACHE"


def disk_cache_dir() -> Path | None:
    """Where harmonized results of input files are kept between runs (None: caching off).

    ``$BAYES_SOIL_CACHE`` (``0`` or ``off`` disables it), else ``$XDG_CACHE_HOME/bayes_soil``,
    else ``~/.cache/bayes_soil``. Harmonizing the demo costs seconds (the bulk-density forest
    and its cross-validation); every ``fit`` and ``report`` would otherwise pay it again.
    """
    import os

    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("0", "off", "no", "false", ""):
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bayes_soil"


def _code_hash() -> str:
    """Hash of the code that makes harmonized tables, so a changed pipeline never reads old ones."""
    here = Path(__file__).resolve().parent
    pkg = here.parent
    files = [*here.glob("*.py"), *(pkg / n for n in ("validate.py", "io.py", "schema.py"))]
    return source_hash(files, salt=__version__, length=12)


def _disk_cached(
    key_sha: str, bd_method: str, exclude: bool, make, stock_method: str = "fixed"
) -> HarmonizeResult:
    """Read the harmonized folder for this input from the disk cache, or make and store it."""
    root = disk_cache_dir()
    if root is None:
        return make()
    name = f"{key_sha[:20]}-{bd_method}-{int(exclude)}-{_code_hash()}"
    if stock_method != "fixed":
        name += f"-{stock_method}"
    folder = root / "harmonized" / name
    if (folder / "layers.csv").exists() and (folder / "changes.csv").exists():
        try:
            return _read_directory(folder)
        except Exception:  # a damaged cache entry is remade, never trusted
            pass
    result = make()
    try:  # written beside, then renamed: a reader never sees half a folder
        import os
        import shutil

        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        write_harmonized(result, tmp)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return _read_directory(folder)  # as every later run will see it (same identity)
    except OSError:
        return result


def load_harmonized(
    data: str | Path | None = None,
    *,
    bd_method: str = DEFAULT_BD_METHOD,
    exclude_deep_imputed: bool = False,
    stock_method: str = "fixed",
) -> HarmonizeResult:
    """Harmonized layers and changes from the demo, an observations file or an output folder.

    ``None`` -> the bundled SYNTHETIC demo; a directory holding layers.csv and changes.csv ->
    read as written by ``harmonize``; any other path -> ``load_observations`` +
    :func:`harmonize`. Either way ``data_sha256`` is :func:`bayes_soil.io.data_identity` of the
    harmonized layers and changes, so a file and the folder harmonized from it have one
    identity. Results for files are cached in-process by (path, file hash, settings); callers
    get copies. ``stock_method`` (``fixed``/``esm``) applies to files; a folder is read with
    the stock method it was harmonized with (``result.stock_method`` says which).
    """

    if data is not None and Path(data).is_dir():
        directory = Path(data)
        missing = [n for n in ("layers.csv", "changes.csv") if not (directory / n).exists()]
        if missing:
            raise InputError(f"{directory}: not a harmonize output folder (missing {missing})")
        return _read_directory(directory)
    path = Path(DEMO_OBSERVATIONS if data is None else data)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    sha = sha256_file(path)
    key = (str(path.resolve()), sha, bd_method, bool(exclude_deep_imputed), stock_method)
    if key not in _CACHE:

        def make() -> HarmonizeResult:
            obs = load_observations(None if data is None else path)
            result = harmonize(
                obs,
                bd_method=bd_method,
                exclude_deep_imputed=exclude_deep_imputed,
                stock_method=stock_method,
            )
            result.report["data_file"] = str(path)
            result.report["data_file_sha256"] = sha
            return result

        result = _disk_cached(sha, bd_method, bool(exclude_deep_imputed), make, stock_method)
        result.report["data_file"] = str(path)
        _CACHE[key] = result
    cached = _CACHE[key]
    return replace(
        cached,
        layers=cached.layers.copy(),
        changes=cached.changes.copy(),
        rejected=cached.rejected.copy(),
        report=copy.deepcopy(cached.report),
    )


# ------------------------------------------------------------------------------------------
# deprecated British spellings (the CLI says "harmonize"; these names are kept for old code)


def load_harmonised(*args, **kwargs) -> HarmonizeResult:
    """Deprecated alias of :func:`load_harmonized`."""
    warnings.warn(
        "load_harmonised is deprecated; use load_harmonized", DeprecationWarning, stacklevel=2
    )
    return load_harmonized(*args, **kwargs)


def write_harmonised(*args, **kwargs) -> list[Path]:
    """Deprecated alias of :func:`write_harmonized`."""
    warnings.warn(
        "write_harmonised is deprecated; use write_harmonized", DeprecationWarning, stacklevel=2
    )
    return write_harmonized(*args, **kwargs)
