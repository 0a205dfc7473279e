"""Calibration of the Bayesian models on many simulated datasets with known truth.

A model that recovers the demo can still be wrong on the next dataset; the honest check is many
fits on data whose truth is known. One calibration *dataset* is:

    simulate (seed) -> write observations -> load_observations -> harmonize (as the
    ``harmonize`` command) -> get_model(name, spec).fit(table) -> score against truth.json

and gives one row per quantity cell: ``rate`` (element x vegetation x stage x layer, 0-200
included) and ``rate_mean`` (vegetation "all") for ``hier_rates``; ``psi``, ``k1`` and ``k2``
(element x driver x layer) with ``P(break)`` for ``climate_breakpoints``. Each row carries the
posterior mean and sd, the bias, the central 50% and 90% intervals (their width and whether
they cover the truth), the rank of the truth among the draws (PIT), per-cell R-hat and ESS, the
fit's diagnostics and its wall time.

psi (and k1, k2) draws may be NaN (draws without a turning point, ``p_break`` contract): the
interval is that of the non-NaN draws, i.e. the interval *given a break*; a true break with no
psi draw at all counts as not covered (k1/k2 without any draw: not scored). Cells whose truth
is approximate (the 0-200 MAP turning point, a least-squares single break through three layer
hinges) are kept but flagged and left out of the headline coverage.

Everything here is a pure function of its arguments except :func:`run_calibration`, which
writes one result file per dataset (temp file + rename: a killed run resumes from the finished
datasets) and distributes the datasets over a Dask client when one is given. The same seeds and
settings give the same table (apart from the timing columns ``fit_s`` and ``dataset_s``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayes_soil.errors import InputError
from bayes_soil.io import atomic_path, source_hash
from bayes_soil.models import REGISTRY, get_model
from bayes_soil.models.base import deep_merge
from bayes_soil.schema import DRIVERS, ELEMENTS, LAYERS, STAGES, TOTAL_LAYER, chosen
from bayes_soil.simulate import VARIANTS, demo_settings, simulate, write_simulation
from bayes_soil.validate import load_observations

if TYPE_CHECKING:
    import xarray as xr

MODELS = ("hier_rates", "climate_breakpoints")
LEVELS = (0.5, 0.9)
TIMING_COLUMNS = ("fit_s", "dataset_s", "load_before")
SYNTHETIC_TITLE = "SYNTHETIC calibration"
KEY_COLUMNS = ("quantity", "element", "vegetation", "stage", "driver", "layer")
RESULT_COLUMNS = (
    "model",
    "variant",
    "dataset",
    "seed",
    *KEY_COLUMNS,
    "truth",
    "has_break",
    "approximate",
    "post_mean",
    "post_sd",
    "bias",
    "q05",
    "q25",
    "q75",
    "q95",
    "cover50",
    "cover90",
    "width50",
    "width90",
    "rank",
    "n_draws",
    "p_break",
    "rhat",
    "ess_bulk",
    "ess_tail",
    "fit_max_rhat",
    "fit_min_ess_bulk",
    "fit_worst_rhat_var",  # which parameter the gate's max R-hat / min bulk ESS belong to
    "fit_worst_ess_var",
    "divergences",
    "verdict",
    "n_rows",
    "fit_s",
    "dataset_s",
    "load_before",  # 1-minute load average when the fit started: timings are load-dependent
    "config_sha256",
)
FALSE_BREAK_THRESHOLD = 0.5  # a cell without a true break "finds" one when P(break) > this


# ---- configuration -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationConfig:
    """Everything that determines a calibration's results (not how it is distributed)."""

    model: str
    variant: str = "base"
    datasets: int = 10
    seed_start: int = 1
    scale: float = 0.5
    element: str = "C"  # C, N or both
    driver: str = "map_mm"  # climate_breakpoints: map_mm, mat_c or both
    draws: int | None = None  # None: the model spec's default
    tune: int | None = None
    chains: int | None = None
    sampler: str | None = None
    bd_method: str = "rf"
    bd_error: float = 1.0  # simulator: sd of true BD around the PTF, x the demo's
    spec: dict = field(default_factory=dict)  # user spec overrides (--spec TOML)

    def validate(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; calibrate knows {', '.join(MODELS)}")
        if self.variant not in VARIANTS:
            raise InputError(f"unknown variant {self.variant!r}; choose {', '.join(VARIANTS)}")
        if self.datasets < 1:
            raise InputError(f"--datasets must be >= 1 (got {self.datasets})")
        if self.scale <= 0:
            raise InputError(f"--scale must be positive (got {self.scale})")
        if self.bd_error < 0:
            raise InputError(f"--bd-error must be >= 0 (got {self.bd_error})")
        for name in ("draws", "tune", "chains"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InputError(f"--{name} must be >= 1 (got {v})")
        demo = demo_seed()
        if demo in self.seeds():
            raise InputError(
                f"the seeds {self.seed_start}..{self.seed_start + self.datasets - 1} include the "
                f"demo's seed {demo}; calibrate on data other than the demo (change --seed-start)"
            )

    def seeds(self) -> list[int]:
        """Simulator seed of each dataset (dataset i -> seed_start + i)."""
        return [self.seed_start + i for i in range(self.datasets)]

    def spec_overrides(self) -> dict:
        """The model spec: the user's overrides, then element/driver choices."""
        spec = deep_merge(self.spec, {})
        data = spec.setdefault("data", {})
        data["elements"] = chosen(self.element, ELEMENTS)
        if self.model == "climate_breakpoints":
            data["drivers"] = chosen(self.driver, DRIVERS)
        return spec

    def fingerprint(self) -> str:
        """SHA-256 of what determines one dataset's rows (not the dataset count): the settings,
        the model's whole spec (its defaults included) and the modelling code, so a folder
        made by another version of a model is never resumed as if it were this one."""
        d = asdict(self)
        d.pop("datasets")
        d["resolved_spec"] = get_model(self.model, self.spec_overrides()).spec
        d["code"] = modelling_code_hash()
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)


def modelling_code_hash() -> str:
    """Hash of the code a calibration result depends on: simulator, harmonize, models, scoring."""
    pkg = Path(__file__).resolve().parent
    files = [
        *pkg.glob("models/*.py"),
        *pkg.glob("models/*.toml"),
        *pkg.glob("harmonize/*.py"),
        pkg / "simulate.py",
        pkg / "calibrate.py",
        pkg / "posterior.py",
    ]
    return source_hash(files)


def demo_seed() -> int:
    """The bundled demo's simulator seed (calibration datasets must differ from it)."""
    return int(demo_settings()["seed"])


def spec_sha256(spec_json: str) -> str:
    """Short identity of a model spec (JSON as stored in a fit's ``spec`` attribute)."""
    return hashlib.sha256(spec_json.encode()).hexdigest()[:16]


# ---- scoring: pure functions --------------------------------------------------------------------
def score_samples(
    samples: np.ndarray,
    truth: np.ndarray,
    levels: Iterable[float] = LEVELS,
    missing_is_miss: bool = True,
) -> dict[str, np.ndarray]:
    """Score posterior draws of many cells against their truth.

    ``samples``: (n_draws, n_cells), NaN allowed (a draw without the quantity); ``truth``:
    (n_cells,), NaN where there is none. Returns arrays of n_cells: ``post_mean``, ``post_sd``,
    ``bias``, ``n_draws``, ``rank`` (share of draws below the truth, ties counted half: the PIT,
    uniform under calibration), and per level L (in percent): ``q<lo>``, ``q<hi>``,
    ``cover<L>`` (1.0 / 0.0; NaN where the truth is NaN; where a truth exists but no draw
    does: 0.0 when ``missing_is_miss``, else NaN), ``width<L>``.
    """
    s = np.asarray(samples, dtype=float)
    t = np.asarray(truth, dtype=float)
    if s.ndim != 2 or s.shape[1] != t.shape[0]:
        raise ValueError(f"samples {s.shape} and truth {t.shape} do not match")
    finite = np.isfinite(s)
    n = finite.sum(axis=0)
    has_truth = np.isfinite(t)
    out: dict[str, np.ndarray] = {"n_draws": n.astype(float)}
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        out["post_mean"] = np.nanmean(s, axis=0)
        out["post_sd"] = np.nanstd(s, axis=0, ddof=1) if s.shape[0] > 1 else np.full(len(t), np.nan)
        out["bias"] = out["post_mean"] - t
        below = np.where(finite, s < t[None, :], False).sum(axis=0)
        ties = np.where(finite, s == t[None, :], False).sum(axis=0)
        out["rank"] = np.where((n > 0) & has_truth, (below + 0.5 * ties) / n, np.nan)
        for level in levels:
            pct = round(100 * level)
            lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
            lo, hi = np.nanquantile(s, [lo_q, hi_q], axis=0)
            cover = ((lo <= t) & (t <= hi)).astype(float)
            none = 0.0 if missing_is_miss else np.nan
            cover = np.where(has_truth, np.where(n > 0, cover, none), np.nan)
            out[f"q{round(100 * lo_q):02d}"] = lo
            out[f"q{round(100 * hi_q):02d}"] = hi
            out[f"cover{pct}"] = cover
            out[f"width{pct}"] = hi - lo
    return out


def _cell_diagnostics(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell R-hat, bulk and tail ESS of ``da`` (chain, draw, cells...), NaN where any draw is
    NaN (psi without a break) or the cell does not vary."""
    import arviz_stats as azs

    cells = [d for d in da.dims if d not in ("chain", "draw")]
    n_cells = int(np.prod([da.sizes[d] for d in cells])) if cells else 1
    nan = np.full(n_cells, np.nan)
    try:
        ds = da.to_dataset(name="x")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rhat = azs.rhat(ds)["x"].transpose(*cells).values.ravel()
            bulk = azs.ess(ds, method="bulk")["x"].transpose(*cells).values.ravel()
            tail = azs.ess(ds, method="tail")["x"].transpose(*cells).values.ravel()
    except Exception:  # too few draws or chains for the estimators: report NaN
        return nan, nan.copy(), nan.copy()
    bad = ~np.isfinite(da.transpose("chain", "draw", *cells).values).all(axis=(0, 1)).ravel()
    return (
        np.where(bad, np.nan, rhat),
        np.where(bad, np.nan, bulk),
        np.where(bad, np.nan, tail),
    )


def score_quantity(
    da: xr.DataArray,
    truth: pd.DataFrame,
    quantity: str,
    levels: Iterable[float] = LEVELS,
    missing_is_miss: bool = True,
) -> pd.DataFrame:
    """Score the posterior ``da`` (chain, draw, cell dims...) against ``truth``.

    ``truth`` has one row per cell with the cell dims as columns (e.g. element, vegetation,
    stage, layer) and a ``truth`` column; extra columns (has_break, approximate, p_break) are
    carried over. Only cells present in both are scored. Returns one row per cell.
    """
    cells = [d for d in da.dims if d not in ("chain", "draw")]
    missing = [d for d in cells if d not in truth.columns]
    if missing:
        raise ValueError(f"truth for {quantity} lacks the cell column(s) {missing}")
    grid = pd.MultiIndex.from_product([list(da[d].values) for d in cells], names=cells)
    frame = grid.to_frame(index=False)
    keyed = truth.drop_duplicates(cells).set_index(cells)
    idx = keyed.index.get_indexer(grid)
    keep = idx >= 0
    if not keep.any():
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    samples = da.transpose("chain", "draw", *cells).values.reshape(-1, len(grid))
    t = keyed["truth"].to_numpy(dtype=float)[idx[keep]]
    scores = score_samples(samples[:, keep], t, levels, missing_is_miss)
    rhat, bulk, tail = _cell_diagnostics(da)
    out = frame[keep].reset_index(drop=True)
    out.insert(0, "quantity", quantity)
    out["truth"] = t
    for col in keyed.columns:
        if col != "truth":
            out[col] = keyed[col].to_numpy()[idx[keep]]
    for k, v in scores.items():
        out[k] = v
    out["rhat"], out["ess_bulk"], out["ess_tail"] = rhat[keep], bulk[keep], tail[keep]
    return out


def truth_rates(truth: dict) -> pd.DataFrame:
    """True stage rates (element, vegetation incl. 'all', stage, layer incl. 0-200, truth)."""
    df = pd.DataFrame(truth["rates"]).rename(columns={"rate": "truth"})
    df["approximate"] = False
    return df


def truth_turning_points(truth: dict) -> pd.DataFrame:
    """True turning points: element, driver, layer, psi (NaN: no break), k1, k2, has_break."""
    df = pd.DataFrame(truth["turning_points"])
    if "approximate" not in df.columns:
        df["approximate"] = False
    df["approximate"] = df["approximate"].fillna(False).astype(bool)
    df["psi"] = pd.to_numeric(df["psi"], errors="coerce")
    df["has_break"] = df["has_break"].astype(bool)
    return df


def fit_diagnostics(dt: xr.DataTree) -> dict[str, Any]:
    """The fit's stored diagnostics (max R-hat, min bulk ESS, divergences, verdict)."""
    raw = dt.attrs.get("diagnostics")
    diag = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    return {
        "fit_max_rhat": float(diag.get("max_rhat", np.nan)),
        "fit_min_ess_bulk": float(diag.get("min_ess_bulk", np.nan)),
        "fit_worst_rhat_var": str(diag.get("worst_rhat_var", "")),
        "fit_worst_ess_var": str(diag.get("worst_ess_var", "")),
        "divergences": int(diag.get("divergences", 0) or 0),
        "verdict": str(diag.get("verdict", "unknown")),
    }


def p_break_of(post: xr.Dataset) -> xr.DataArray | None:
    """P(break) per element x driver x layer: the posterior mean of ``p_break``; without it,
    the share of psi draws that are not NaN when psi has NaN draws; else None."""
    if "p_break" in post:
        return post["p_break"].mean(("chain", "draw"))
    if "psi" in post and bool(np.isnan(post["psi"].values).any()):
        return np.isfinite(post["psi"]).mean(("chain", "draw"))
    return None


def score_fit(dt: xr.DataTree, truth: dict, model: str) -> pd.DataFrame:
    """Score one fit against its simulator truth: one row per quantity cell (see module doc)."""
    post = dt["posterior"].to_dataset()
    parts = []
    if model == "hier_rates":
        rates = truth_rates(truth)
        if "rate" in post:
            parts.append(score_quantity(post["rate"], rates[rates["vegetation"] != "all"], "rate"))
        if "rate_mean" in post:
            mean = post["rate_mean"].expand_dims(vegetation=["all"], axis=-1)
            mean = mean.transpose("chain", "draw", "element", "vegetation", ...)
            parts.append(score_quantity(mean, rates[rates["vegetation"] == "all"], "rate_mean"))
    elif model == "climate_breakpoints":
        tp = truth_turning_points(truth)
        pb = p_break_of(post)
        extra = tp[["element", "driver", "layer", "has_break", "approximate"]]
        for name in ("psi", "k1", "k2"):
            if name not in post:
                continue
            t = extra.assign(truth=tp[name].to_numpy(dtype=float))
            # a true break without any psi draw is a miss; k1/k2 are NaN in draws without a
            # break (their truth exists with or without one): scored on the draws with one
            rows = score_quantity(post[name], t, name, missing_is_miss=name == "psi")
            if pb is not None and len(rows) and name == "psi":
                key = rows[["element", "driver", "layer"]]
                rows["p_break"] = [
                    float(pb.sel(element=e, driver=d, layer=lay))
                    for e, d, lay in key.itertuples(index=False)
                ]
            parts.append(rows)
    else:
        raise InputError(f"no scoring for model {model!r}")
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError(f"the {model} posterior has none of the scored quantities")
    out = pd.concat(parts, ignore_index=True)
    for k, v in fit_diagnostics(dt).items():
        out[k] = v
    out["n_rows"] = int(dt.attrs.get("n_obs", 0) or 0)
    return out


def _tidy(rows: pd.DataFrame) -> pd.DataFrame:
    """Columns in RESULT_COLUMNS order, missing ones as NA."""
    out = rows.copy()
    for c in RESULT_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out[list(RESULT_COLUMNS)]


# ---- one dataset: simulate, harmonize, fit, score -----------------------------------------------
def fit_model(model: Any, table: pd.DataFrame, config: CalibrationConfig, seed: int):
    """The fit of one dataset (through ``SoilModel.fit``, the shared fitting path).

    Chains run one after another in this process (``cores=1``): the parallelism is across
    datasets, one fit per single-threaded Dask worker. Tests replace this function.
    """
    return model.fit(
        table,
        progressbar=False,
        sampler=config.sampler,
        chains=config.chains,
        draws=config.draws,
        tune=config.tune,
        seed=seed,
        cores=1,
    )


def simulate_and_harmonize(config: CalibrationConfig, seed: int, workdir: str | Path):
    """Simulate dataset ``seed``, write it and harmonize it as the ``harmonize`` command does.

    Returns (HarmonizeResult, truth dict).
    """
    # imported here, not at the top: harmonize loads scipy, and the CLI imports this module
    # while it builds --help
    from bayes_soil.harmonize import harmonize

    sim = simulate(seed=seed, variant=config.variant, scale=config.scale, bd_error=config.bd_error)
    obs_path, _ = write_simulation(sim, workdir)
    obs = load_observations(obs_path)
    result = harmonize(obs, bd_method=config.bd_method, seed=0, score_bd=False)
    return result, sim.truth


def run_dataset(config: CalibrationConfig, index: int) -> pd.DataFrame:
    """Simulate, harmonize, fit and score dataset ``index``: its result rows (a Dask task)."""
    t0 = time.perf_counter()
    seed = config.seeds()[index]
    with tempfile.TemporaryDirectory(prefix="bayes_soil_calibrate_") as tmp:
        result, truth = simulate_and_harmonize(config, seed, tmp)
    model = get_model(config.model, config.spec_overrides())
    table = getattr(result, model.table)
    load = os.getloadavg()[0]
    t1 = time.perf_counter()
    dt = fit_model(model, table, config, seed)
    fit_s = time.perf_counter() - t1
    rows = score_fit(dt, truth, config.model)
    rows.insert(0, "model", config.model)
    rows.insert(1, "variant", config.variant)
    rows.insert(2, "dataset", index)
    rows.insert(3, "seed", seed)
    rows["fit_s"] = round(fit_s, 2)
    rows["dataset_s"] = round(time.perf_counter() - t0, 2)
    rows["load_before"] = round(load, 2)
    rows["config_sha256"] = config.fingerprint()
    return _tidy(rows)


# ---- the run: per-dataset files, resume, Dask ---------------------------------------------------
def result_path(out_dir: str | Path, config: CalibrationConfig, index: int) -> Path:
    return Path(out_dir) / "results" / f"dataset-{index:04d}-seed-{config.seeds()[index]}.csv"


def read_result(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=True)
    for c in ("vegetation", "stage", "driver", "layer", "element", "quantity"):
        if c in df.columns:
            df[c] = df[c].astype("object").where(df[c].notna(), None)
    return df


def finished_datasets(out_dir: str | Path, config: CalibrationConfig) -> list[int]:
    """Indices whose result file exists; refuses files made with other settings."""
    done = []
    expected = config.fingerprint()  # once: it hashes the spec and the modelling code
    for i in range(config.datasets):
        path = result_path(out_dir, config, i)
        if not path.exists():
            continue
        head = pd.read_csv(path, usecols=["config_sha256"], nrows=1)
        if len(head) and head["config_sha256"].iloc[0] != expected:
            raise InputError(
                f"{path} was made with other calibration settings; use another --out folder "
                "(or delete it) to calibrate with these"
            )
        done.append(i)
    return done


def write_result(rows: pd.DataFrame, path: Path) -> None:
    """Write one dataset's rows atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False)


def sort_table(table: pd.DataFrame) -> pd.DataFrame:
    """Deterministic row order (whatever order the datasets finished in)."""
    keys = ["dataset", *KEY_COLUMNS]
    return table.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


def combine_results(out_dir: str | Path, config: CalibrationConfig) -> pd.DataFrame:
    """The finished datasets' rows in one table, sorted."""
    parts = [
        read_result(result_path(out_dir, config, i)) for i in finished_datasets(out_dir, config)
    ]
    if not parts:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    return sort_table(pd.concat(parts, ignore_index=True))


@dataclass
class CalibrationRun:
    table: pd.DataFrame
    summary: pd.DataFrame
    skipped: list[int]
    ran: list[int]
    failed: dict[int, str]
    files: list[Path]


def run_calibration(
    config: CalibrationConfig,
    out_dir: str | Path,
    *,
    client: Any = None,
    on_done: Callable[[int, pd.DataFrame | None, str | None], None] | None = None,
    figures: bool = True,
) -> CalibrationRun:
    """Run (or resume) a calibration into ``out_dir``.

    Datasets whose result file exists are skipped. The rest run on ``client`` (a
    ``distributed.Client``; one task per dataset) or, when None, one after another in this
    process. Each finished dataset is written at once (atomically), so a killed run loses only
    the fits in flight. A dataset whose fit raises is reported in ``failed`` (and
    ``errors/``) and left for the next run. Then the combined table, the summary and the figures
    are written.
    """
    import traceback

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = finished_datasets(out, config)
    todo = [i for i in range(config.datasets) if i not in done]
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(config.to_json())
    failed: dict[int, str] = {}

    def finish(i: int, rows: pd.DataFrame | None, err: str | None) -> None:
        err_path = out / "errors" / f"dataset-{i:04d}.txt"
        if rows is not None:
            write_result(rows, result_path(out, config, i))
            err_path.unlink(missing_ok=True)
        else:
            failed[i] = err or "unknown error"
            err_path.parent.mkdir(parents=True, exist_ok=True)
            err_path.write_text(failed[i])
        if on_done is not None:
            on_done(i, rows, err)

    if client is None:
        for i in todo:
            try:
                rows = run_dataset(config, i)
            except Exception:
                finish(i, None, traceback.format_exc())
            else:
                finish(i, rows, None)
    elif todo:
        from distributed import as_completed

        futures = {
            client.submit(
                run_dataset, config, i, pure=False, key=f"calibrate-{i}-{config.seeds()[i]}"
            ): i
            for i in todo
        }
        for fut in as_completed(futures):
            i = futures[fut]
            if fut.status == "finished":
                finish(i, fut.result(), None)
            else:
                exc = fut.exception()
                tb = "".join(traceback.format_exception(exc)) if exc else "cancelled"
                finish(i, None, tb)
    table = combine_results(out, config)
    summary = summarize(table)
    files = write_outputs(table, summary, out, config, figures=figures)
    return CalibrationRun(table, summary, done, [i for i in todo if i not in failed], failed, files)


# ---- summaries ---------------------------------------------------------------------------------
def binomial_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (NaN, NaN when n == 0)."""
    if n == 0:
        return math.nan, math.nan
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return float(lo), float(hi)


def _coverage_cols(cov: pd.Series, prefix: str) -> dict[str, float]:
    c = cov.dropna()
    k, n = int(c.sum()), len(c)
    lo, hi = binomial_interval(k, n)
    return {
        f"{prefix}": k / n if n else math.nan,
        f"{prefix}_lo": lo,
        f"{prefix}_hi": hi,
    }


def summarize(table: pd.DataFrame, by: Iterable[str] = ("quantity",)) -> pd.DataFrame:
    """Coverage (with 95% Wilson intervals), bias, width and diagnostics per group.

    Cells with an approximate truth are left out. For psi the coverage is over cells with a
    true break; ``false_break_rate`` is the share of cells without a true break whose
    P(break) > 0.5 and ``mean_p_break_true`` the mean P(break) where a break is true.
    The binomial intervals treat cells as independent; cells of one dataset share its data,
    so the intervals are somewhat too narrow.
    """
    by = list(by)
    if table.empty:
        return pd.DataFrame(columns=[*by, "n_datasets", "n_cells"])
    missing = [c for c in RESULT_COLUMNS if c not in table.columns]
    t = table.assign(**dict.fromkeys(missing, np.nan)) if missing else table
    t = t[~t["approximate"].fillna(False).astype(bool)]
    rows = []
    for key, g in t.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        fits = g.drop_duplicates("dataset")
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["n_datasets"] = int(g["dataset"].nunique())
        row["n_cells"] = int(g["cover90"].notna().sum())
        row.update(_coverage_cols(g["cover50"], "coverage50"))
        row.update(_coverage_cols(g["cover90"], "coverage90"))
        row["mean_bias"] = float(g["bias"].mean())
        row["rmse"] = float(np.sqrt((g["bias"] ** 2).mean()))
        row["mean_width50"] = float(g["width50"].mean())
        row["mean_width90"] = float(g["width90"].mean())
        row["max_rhat"] = float(g["rhat"].max())
        row["min_ess_bulk"] = float(g["ess_bulk"].min())
        row["fit_max_rhat"] = float(fits["fit_max_rhat"].max())
        row["divergences"] = int(fits["divergences"].sum())
        row["fits_passing"] = int((fits["verdict"] == "pass").sum())
        row["mean_fit_s"] = float(fits["fit_s"].mean())
        pb = pd.to_numeric(g["p_break"], errors="coerce")
        if pb.notna().any():
            hb = g["has_break"].fillna(False).astype(bool)
            nob = pb[~hb].dropna()
            k = int((nob > FALSE_BREAK_THRESHOLD).sum())
            lo, hi = binomial_interval(k, len(nob))
            row["false_break_rate"] = k / len(nob) if len(nob) else math.nan
            row["false_break_lo"], row["false_break_hi"] = lo, hi
            row["mean_p_break_true"] = float(pb[hb].mean()) if hb.any() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_cov(row: pd.Series, prefix: str) -> str:
    v = row.get(prefix)
    if v is None or pd.isna(v):
        return "-"
    return f"{v:.2f} [{row[f'{prefix}_lo']:.2f}, {row[f'{prefix}_hi']:.2f}]"


def summary_markdown(summary: pd.DataFrame, config: CalibrationConfig | None = None) -> str:
    """The summary as a markdown table with its caveats (the interval is named; SYNTHETIC)."""
    lines = [f"# {SYNTHETIC_TITLE}"]
    if config is not None:
        lines.append(
            f"\nModel `{config.model}`, variant `{config.variant}`, {config.datasets} simulated "
            f"datasets (seeds {config.seed_start}..{config.seed_start + config.datasets - 1}, "
            f"scale {config.scale}), element {config.element}"
            + (f", driver {config.driver}" if config.model == "climate_breakpoints" else "")
            + "."
        )
    lines += [
        "",
        "Coverage: share of cells whose true value lies in the posterior's central 50% / 90% "
        "interval, with a 95% Wilson interval (cells treated as independent).",
        "",
        "| quantity | datasets | cells | 50% coverage | 90% coverage | mean bias | mean 90% width "
        "| max R-hat (cells / fits) | min ESS | divergences | fits passing | false-break rate "
        "| mean P(break) (true break) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        fb = "-"
        if "false_break_rate" in r and pd.notna(r.get("false_break_rate")):
            fb = (
                f"{r['false_break_rate']:.2f} [{r['false_break_lo']:.2f}, "
                f"{r['false_break_hi']:.2f}]"
            )
        pbt = r.get("mean_p_break_true")
        lines.append(
            f"| {r['quantity']} | {r['n_datasets']} | {r['n_cells']} | "
            f"{_fmt_cov(r, 'coverage50')} | {_fmt_cov(r, 'coverage90')} | "
            f"{r['mean_bias']:.3g} | {r['mean_width90']:.3g} | {r['max_rhat']:.3f} / "
            f"{r['fit_max_rhat']:.3f} | "
            f"{r['min_ess_bulk']:.0f} | {r['divergences']} | {r['fits_passing']}/"
            f"{r['n_datasets']} | {fb} | "
            f"{'-' if pbt is None or pd.isna(pbt) else f'{pbt:.2f}'} |"
        )
    lines.append(
        "\nCells with an approximate truth (the 0-200 MAP turning point) are left out. "
        "psi coverage is given a break (interval of the non-NaN draws), over cells with a true "
        f"break; false-break rate = share of cells without a true break with P(break) > "
        f"{FALSE_BREAK_THRESHOLD}."
    )
    return "\n".join(lines) + "\n"


def per_fit_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset: its gate (R-hat, ESS, divergences), cost with the load beside it,
    90% coverage of the model's main quantity, and false breaks where they apply.

    A summary over all datasets can hide one bad fit; this is the table that shows it."""
    first = table.groupby("dataset", sort=True)
    out = pd.DataFrame(
        {
            "seed": first["seed"].first(),
            "rows": first["n_rows"].first(),
            "fit_s": first["fit_s"].first(),
            "load_before": first["load_before"].first() if "load_before" in table else np.nan,
            "max_rhat": first["fit_max_rhat"].first(),
            "worst_rhat_var": first["fit_worst_rhat_var"].first()
            if "fit_worst_rhat_var" in table
            else "",
            "min_ess_bulk": first["fit_min_ess_bulk"].first(),
            "worst_ess_var": first["fit_worst_ess_var"].first()
            if "fit_worst_ess_var" in table
            else "",
            "divergences": first["divergences"].first(),
            "verdict": first["verdict"].first(),
        }
    )
    main = table[
        table["quantity"].isin(("rate", "psi")) & ~table["approximate"].fillna(False).astype(bool)
    ]
    main = main[main["cover90"].notna()]
    out["cells"] = main.groupby("dataset").size()
    out["cover90"] = main.groupby("dataset")["cover90"].mean()
    psi = table[table["quantity"] == "psi"]
    if len(psi) and psi["p_break"].notna().any():
        nb = psi[~psi["has_break"].fillna(False).astype(bool)]
        out["no_break_cells"] = nb.groupby("dataset").size()
        out["false_breaks"] = nb.groupby("dataset")["p_break"].apply(
            lambda v: int((v > FALSE_BREAK_THRESHOLD).sum())
        )
    return out.reset_index()


def per_fit_markdown(per_fit: pd.DataFrame) -> str:
    """The per-fit table in markdown (numbers rounded for reading)."""
    fmt = {
        "fit_s": "{:.0f}",
        "load_before": "{:.2f}",
        "max_rhat": "{:.3f}",
        "min_ess_bulk": "{:.0f}",
        "cover90": "{:.2f}",
    }
    cols = list(per_fit.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in per_fit.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if pd.isna(v):
                cells.append("-")
            elif c in fmt:
                cells.append(fmt[c].format(v))
            elif isinstance(v, float) and v.is_integer():
                cells.append(str(int(v)))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_section(table: pd.DataFrame, model: str | None = None, spec_json: str | None = None):
    """A small calibration table for the report, or None when there is nothing for ``model``.

    ``table``: a calibration table (``calibration.csv``); rows are filtered to ``model`` and,
    when ``spec_json`` is given, to calibrations run with that spec (``spec_sha256`` column of
    the table's ``config``, see :func:`load_calibration`). Returns (DataFrame, markdown).
    """
    t = table
    if model is not None:
        t = t[t["model"] == model]
    if spec_json is not None and "spec_sha256" in t.columns:
        t = t[t["spec_sha256"] == spec_sha256(spec_json)]
    if t.empty:
        return None
    s = summarize(t, by=("model", "variant", "quantity"))
    small = pd.DataFrame(
        {
            "model": s["model"],
            "variant": s["variant"],
            "quantity": s["quantity"],
            "datasets": s["n_datasets"],
            "cells": s["n_cells"],
            "90% coverage [95% CI]": [_fmt_cov(r, "coverage90") for _, r in s.iterrows()],
            "50% coverage [95% CI]": [_fmt_cov(r, "coverage50") for _, r in s.iterrows()],
            "false-break rate": [
                f"{r['false_break_rate']:.2f}"
                if "false_break_rate" in r and pd.notna(r.get("false_break_rate"))
                else "-"
                for _, r in s.iterrows()
            ],
            "fits passing": [f"{r['fits_passing']}/{r['n_datasets']}" for _, r in s.iterrows()],
        }
    )
    header = "| " + " | ".join(small.columns) + " |"
    md = [
        f"{SYNTHETIC_TITLE} (central posterior intervals vs simulator truth)",
        "",
        header,
        "|" + "---|" * len(small.columns),
    ]
    md += ["| " + " | ".join(str(v) for v in r) + " |" for r in small.itertuples(index=False)]
    return small, "\n".join(md) + "\n"


def load_calibration(out_dir: str | Path) -> pd.DataFrame | None:
    """The combined table of a calibration folder, with ``spec_sha256`` from its config
    (None when the folder holds no ``calibration.csv``)."""
    out = Path(out_dir)
    path = out / "calibration.csv"
    if not path.exists():
        return None
    table = pd.read_csv(path)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        spec = model_spec_json(cfg.get("model"), config_from_dict(cfg).spec_overrides())
        table["spec_sha256"] = spec_sha256(spec) if spec else None
    return table


def config_from_dict(d: dict) -> CalibrationConfig:
    known = CalibrationConfig.__dataclass_fields__
    return CalibrationConfig(**{k: v for k, v in d.items() if k in known})


def model_spec_json(model: str | None, overrides: dict) -> str | None:
    """The merged spec JSON a fit with these overrides would store (``spec`` attribute)."""
    if model not in REGISTRY:
        return None
    return get_model(model, overrides).spec_json()


# ---- outputs: table, summary, figures ----------------------------------------------------------
def write_outputs(
    table: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: str | Path,
    config: CalibrationConfig,
    figures: bool = True,
) -> list[Path]:
    """calibration.csv / .parquet, summary.json / .md and the figures, each atomically."""
    out = Path(out_dir)
    files = []
    with atomic_path(out / "calibration.csv") as tmp:
        table.to_csv(tmp, index=False)
    files.append(out / "calibration.csv")
    with atomic_path(out / "calibration.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    files.append(out / "calibration.parquet")
    per_fit = per_fit_table(table) if len(table) else None
    payload = {
        "label": SYNTHETIC_TITLE,
        "config": json.loads(config.to_json()),
        "datasets_finished": int(table["dataset"].nunique()) if len(table) else 0,
        "interval": "central posterior intervals (50% and 90%); coverage 95% Wilson intervals",
        "summary": json.loads(summary.to_json(orient="records")),
        "by_layer": json.loads(summarize(table, by=("quantity", "layer")).to_json(orient="records"))
        if len(table)
        else [],
    }
    if per_fit is not None:
        payload["per_fit"] = json.loads(per_fit.to_json(orient="records"))
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    files.append(out / "summary.json")
    md = summary_markdown(summary, config)
    if per_fit is not None:
        md += (
            "\n## Per fit\n\nGate: on the quantities the model reports, max R-hat <= 1.01, "
            "min bulk and tail ESS >= 400; 0 divergences; nuisance parameters (where the model "
            "names them) only R-hat <= 1.05. "
            "`fit_s` is the wall time of the fit on its worker; `load_before` the 1-minute "
            "load average when it started (the machine may be shared). `cover90`: share of "
            "the dataset's cells (rate, or psi given a break) inside the central 90% "
            "interval.\n\n" + per_fit_markdown(per_fit) + "\n"
        )
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(md)
    files.append(out / "summary.md")
    if figures and len(table):
        files += write_figures(table, out / "figures", config)
    return files


def write_figures(table: pd.DataFrame, fig_dir: Path, config: CalibrationConfig) -> list[Path]:
    """Coverage by layer (and stage), rank ECDF, and the P(break) histogram where it applies."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "png"):
        matplotlib.use("Agg", force=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    files = []
    made = {
        "coverage_by_layer_stage.png": coverage_figure(table, config),
        "rank_ecdf.png": rank_ecdf_figure(table, config),
    }
    if table["p_break"].notna().any():
        made["p_break_hist.png"] = p_break_figure(table, config)
    import matplotlib.pyplot as plt

    for name, fig in made.items():
        if fig is None:
            continue
        with atomic_path(fig_dir / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        files.append(fig_dir / name)
    return files


def _title(config: CalibrationConfig, what: str) -> str:
    return (
        f"{SYNTHETIC_TITLE}: {config.model} ({config.variant}), {what}\n"
        f"{config.datasets} simulated datasets, scale {config.scale}"
    )


def _ordered(values: pd.Series, order: Iterable[str]) -> list[str]:
    """The labels present in ``values``, in the schema's order (unknown ones last)."""
    present = list(dict.fromkeys(values.dropna()))
    known = [v for v in order if v in present]
    return known + [v for v in present if v not in known]


def coverage_figure(table: pd.DataFrame, config: CalibrationConfig):
    """Coverage of the central 90% (and 50%) intervals by layer (x stage for rates)."""
    import matplotlib.pyplot as plt

    t = table[~table["approximate"].fillna(False).astype(bool)]
    scored = t[t["cover90"].notna()]
    quantities = [q for q in ("rate", "psi", "k1") if (scored["quantity"] == q).any()]
    if not quantities:  # e.g. psi on the no-turning-point variant: no truth to cover
        return None
    q = quantities[0]
    sub = scored[scored["quantity"] == q]
    by_stage = sub["stage"].notna().any()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, level in zip(axes, (90, 50), strict=True):
        groups = ["layer", "stage"] if by_stage else ["layer"]
        s = summarize(sub, by=groups)
        col = f"coverage{level}"
        if by_stage:
            stages = _ordered(sub["stage"], STAGES)
            layers = _ordered(sub["layer"], (*LAYERS, TOTAL_LAYER))
            width = 0.8 / max(len(layers), 1)
            for j, lay in enumerate(layers):
                r = s[s["layer"] == lay].set_index("stage").reindex(stages)
                x = np.arange(len(stages)) + (j - (len(layers) - 1) / 2) * width
                y = r[col].to_numpy(float)
                err = np.array([y - r[f"{col}_lo"], r[f"{col}_hi"] - y], dtype=float)
                ax.errorbar(x, y, yerr=err, fmt="o", capsize=2, label=f"{lay} cm")
            ax.set_xticks(np.arange(len(stages)), stages)
            ax.set_xlabel("stage (years)")
        else:
            r = s.set_index("layer").loc[_ordered(sub["layer"], (*LAYERS, TOTAL_LAYER))]
            r = r.reset_index()
            x = np.arange(len(r))
            y = r[col].to_numpy(float)
            err = np.array([y - r[f"{col}_lo"], r[f"{col}_hi"] - y], dtype=float)
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
            ax.set_xticks(x, [f"{lay} cm" for lay in r["layer"]])
            ax.set_xlabel("layer")
        ax.axhline(level / 100, color="grey", ls="--", lw=1)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"central {level}% interval: coverage of true {q} (95% Wilson CI)")
    axes[0].set_ylabel("coverage")
    if by_stage:
        axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(_title(config, f"coverage of {q} by layer" + (" and stage" if by_stage else "")))
    fig.tight_layout()
    return fig


def rank_ecdf_figure(table: pd.DataFrame, config: CalibrationConfig):
    """ECDF of the rank of the truth among the posterior draws (PIT) minus the uniform CDF, with
    a 95% simultaneous (DKW) band; cells of one dataset are not independent, so the band is a
    guide, not a test."""
    import matplotlib.pyplot as plt

    t = table[~table["approximate"].fillna(False).astype(bool) & table["rank"].notna()]
    quantities = [q for q in dict.fromkeys(t["quantity"])]
    if not quantities:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    grid = np.linspace(0, 1, 201)
    n_min = None
    for q in quantities:
        r = np.sort(t.loc[t["quantity"] == q, "rank"].to_numpy(float))
        ecdf = np.searchsorted(r, grid, side="right") / len(r)
        ax.plot(grid, ecdf - grid, label=f"{q} ({len(r)} cells)")
        n_min = len(r) if n_min is None else min(n_min, len(r))
    eps = math.sqrt(math.log(2 / 0.05) / (2 * n_min))
    ax.fill_between(grid, -eps, eps, color="grey", alpha=0.2, label="95% DKW band (smallest n)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("rank of the truth among posterior draws (PIT)")
    ax.set_ylabel("ECDF - uniform")
    ax.legend(fontsize=8)
    ax.set_title(_title(config, "ECDF of ranks"), fontsize=10)
    fig.tight_layout()
    return fig


def p_break_figure(table: pd.DataFrame, config: CalibrationConfig):
    """Histogram of P(break) per cell, split by whether the truth has a break."""
    import matplotlib.pyplot as plt

    t = table[table["quantity"] == "psi"].dropna(subset=["p_break"])
    if t.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    bins = np.linspace(0, 1, 21)
    hb = t["has_break"].fillna(False).astype(bool)
    for flag, label in ((False, "no true turning point"), (True, "true turning point")):
        v = t.loc[hb == flag, "p_break"]
        if len(v):
            ax.hist(v, bins=bins, alpha=0.6, label=f"{label} ({len(v)} cells)")
    ax.axvline(FALSE_BREAK_THRESHOLD, color="grey", ls="--", lw=1)
    ax.set_xlabel("posterior P(break) per element x driver x layer")
    ax.set_ylabel("cells")
    ax.legend(fontsize=8)
    ax.set_title(_title(config, "P(break)"), fontsize=10)
    fig.tight_layout()
    return fig


# ---- simulation-based calibration (Talts et al. 2018) via simuk ----------------------------------
def run_sbc(
    config: CalibrationConfig,
    out_dir: str | Path,
    simulations: int,
    *,
    progressbar: bool = True,
) -> tuple[pd.DataFrame, list[Path]]:
    """Prior SBC (Talts et al. 2018) of the model built on one small simulated dataset.

    The design (covariates, groupings) comes from dataset ``seed_start`` at ``scale``. Each
    simulation draws parameters from the model's prior, simulates the observed stocks/rates
    from them, refits and ranks each prior draw among its posterior draws: uniform ranks when
    the fitting is right. A model with an observed variable goes through ``simuk``; a model
    whose likelihood is a ``pm.Potential`` (effects integrated out, as both of the package's
    models) through :func:`sbc_marginal` (the model's own prior predictive draws and one
    compiled model whose response data are swapped). Writes ``sbc_ranks.nc`` (group
    ``prior_sbc``: rank per simulation and cell), ``sbc_summary.csv`` (per variable: number of
    ranks and a chi-square uniformity p-value on 10 bins) and ``figures/sbc_ecdf.png``
    (arviz-plots' PIT ECDF-difference plot with its simultaneous band) for the main variables.
    """
    from scipy import stats

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed = config.seed_start
    with tempfile.TemporaryDirectory(prefix="bayes_soil_sbc_") as tmp:
        result, _ = simulate_and_harmonize(config, seed, tmp)
    model = get_model(config.model, config.spec_overrides())
    data = model.prepare(getattr(result, model.table))
    pm_model = model.build(data)
    fs = model.settings(
        sampler=config.sampler, chains=config.chains, draws=config.draws, tune=config.tune
    )
    if pm_model.observed_RVs:
        ranks, n_post = _sbc_simuk(pm_model, fs, simulations, seed, progressbar)
    elif hasattr(model, "with_response") and hasattr(model, "prior_predictive"):
        ranks, n_post = sbc_marginal(model, data, pm_model, fs, simulations, seed, progressbar)
    else:
        raise InputError(
            f"--sbc: the {config.model} model has no observed variable (its likelihood is a "
            "pm.Potential) and no prior predictive of its own to draw data from"
        )
    group = ranks["prior_sbc"].to_dataset()
    rows = []
    main = []
    for v in group.data_vars:
        r = group[v].values
        n_cells = int(np.prod(r.shape[2:])) if r.ndim > 2 else 1
        flat = r.reshape(-1)
        counts = np.histogram(flat, bins=10, range=(0, n_post + 1))[0]
        p = float(stats.chisquare(counts).pvalue) if flat.size >= 10 else math.nan
        rows.append({"variable": v, "cells": n_cells, "ranks": int(flat.size), "chi2_p": p})
        if n_cells <= 60:
            main.append(v)
    summary = pd.DataFrame(rows)
    files = []
    with atomic_path(out / "sbc_ranks.nc") as tmp:
        ranks.to_netcdf(tmp, engine="h5netcdf")
    files.append(out / "sbc_ranks.nc")
    with atomic_path(out / "sbc_summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    files.append(out / "sbc_summary.csv")
    fig_path = _sbc_figure(ranks, main[:6], n_post, out / "figures", config, simulations)
    if fig_path is not None:
        files.append(fig_path)
    return summary, files


def _sbc_simuk(pm_model, fs, simulations: int, seed: int, progressbar: bool):
    """SBC of a model with an observed variable, by ``simuk``: (ranks DataTree, draws ranked)."""
    try:
        import simuk
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InputError("--sbc needs the simuk package: pip install 'bayes_soil[sbc]'") from exc
    sample_kwargs = dict(
        draws=fs.draws,
        tune=fs.tune,
        chains=fs.chains,
        cores=1,
        nuts_sampler=fs.sampler,
        progressbar=False,
        compute_convergence_checks=False,
    )
    sbc = simuk.SBC(
        pm_model,
        num_simulations=simulations,
        sample_kwargs=sample_kwargs,
        seed=seed,
        keep_fits=False,
        progress_bar=progressbar,
    )
    sbc.run_simulations()
    return sbc.simulations, fs.draws * fs.chains


#: posterior draws each prior draw is ranked among (evenly thinned: SBC needs nearly
#: independent draws, Talts et al. 2018 section 5)
SBC_RANKED_DRAWS = 99


def sbc_marginal(model, data, pm_model, fs, simulations: int, seed: int, progressbar: bool):
    """SBC for a model whose likelihood is a Potential: (ranks DataTree, draws ranked).

    The model supplies ``prior_predictive(data, draws, seed)`` (parameters and the observed
    response drawn from the prior, effects included) and ``with_response(data, y)`` (the same
    design with response y); the response arrays are ``pm.Data`` (the model's
    ``response_data``), so one nutpie compilation serves every simulation. Each posterior is
    thinned evenly to :data:`SBC_RANKED_DRAWS` draws; a rank is the number of them below the
    prior draw (0..99). Ranked: every sampled parameter present in both prior and posterior.
    """
    import nutpie
    import xarray as xr

    prior = model.prior_predictive(data, draws=simulations, seed=seed)
    pri = prior["prior"].to_dataset()
    response = prior["prior_predictive"].to_dataset()
    (obs_var,) = list(response.data_vars)
    # the sampled parameters, and the judged quantities a reparameterisation made deterministic
    # (only functions of the parameters: p_break, say, also depends on the data)
    from pytensor.graph.traversal import ancestors

    judged = set(getattr(model, "diagnostic_vars", ())) | set(getattr(model, "nuisance_vars", ()))
    shared = set(pm_model.data_vars)
    names = [v.name for v in pm_model.free_RVs if v.name in pri]
    names += [
        d.name
        for d in pm_model.deterministics
        if d.name in judged and d.name in pri and not shared & set(ancestors([d]))
    ]
    from bayes_soil.models.nutpie_compile import use_fast_callbacks

    use_fast_callbacks()
    compiled = nutpie.compile_pymc_model(pm_model)
    ranks: dict[str, list[np.ndarray]] = {v: [] for v in names}
    from rich.progress import track

    steps = range(simulations)
    for i in track(steps, description="SBC fits", disable=not progressbar):
        y = response[obs_var].values[0, i]
        new = model.with_response(data, y)
        upd = {k: new.arrays[k] for k in model.response_data}
        trace = nutpie.sample(
            compiled.with_data(**upd),
            draws=fs.draws,
            tune=fs.tune,
            chains=fs.chains,
            seed=seed * 1000 + i,
            progress_bar=False,
        )
        post = trace["posterior"].to_dataset()
        flat = post.stack(sample=("chain", "draw"))
        keep = np.linspace(0, flat.sizes["sample"] - 1, SBC_RANKED_DRAWS).round().astype(int)
        for v in names:
            draws_v = flat[v].isel(sample=keep).transpose("sample", ...).values
            truth = pri[v].isel(chain=0, draw=i).values
            ranks[v].append((draws_v < truth[None]).sum(axis=0))
    ds = xr.Dataset(
        {v: (("chain", "draw", *pri[v].dims[2:]), np.stack(r)[None]) for v, r in ranks.items()},
        coords={k: pri.coords[k] for k in pri.coords if k not in ("chain", "draw")},
    )
    return xr.DataTree.from_dict({"prior_sbc": ds}), SBC_RANKED_DRAWS


def _sbc_figure(ranks, var_names, n_post, fig_dir: Path, config, simulations) -> Path | None:
    """PIT ECDF-difference plot of the SBC ranks (arviz-plots) for ``var_names``."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "png"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not var_names:
        return None
    try:
        import arviz_plots as azp
        import xarray as xr

        # ranks are integers 0..n_post: a randomised PIT (rank + U) / (n_post + 1) is uniform on
        # (0, 1) under calibration, where rank / (n_post + 1) puts mass on 0 that the
        # simultaneous test flags as a misfit (seeded: the figure is reproducible)
        ds = ranks["prior_sbc"].to_dataset()[var_names]
        rng = np.random.default_rng(0)
        pit = ds.map(lambda r: (r + rng.uniform(size=r.shape)) / (n_post + 1))
        dt = xr.DataTree.from_dict({"prior_sbc": pit})
        # pot_c: simultaneous uniformity test valid for dependent PIT values (arviz-plots)
        pc = azp.plot_ecdf_pit(dt, method="pot_c", backend="matplotlib")
        fig = pc.viz["figure"].item() if hasattr(pc.viz, "__getitem__") else plt.gcf()
    except Exception:  # pragma: no cover - plotting library differences
        fig = plt.gcf()
    fig.suptitle(
        f"SYNTHETIC SBC (Talts et al. 2018): {config.model}, {simulations} prior draws; "
        "PIT ECDF - uniform; p: simultaneous uniformity test (pot_c), flagged points",
        fontsize=9,
        y=1.0,
    )
    fig.subplots_adjust(top=0.82)
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / "sbc_ecdf.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
