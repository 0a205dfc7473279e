"""The workflow behind ``report``: harmonize -> frequentist -> fits -> compare.

This module gathers what the report needs, reusing what exists and running what is missing.
It lives outside ``bayes_soil.report`` on purpose: ``report/`` only renders results already
computed (figures, sentences, the HTML page) and can be tested on fake posteriors, while this
module decides what to run. It returns ``report.html.ReportInputs``, the renderer's input.

Order: harmonize (or read a harmonized folder) -> frequentist tables (reuse ``--freq-dir`` when
it holds them, otherwise run and, when a folder was named, write them there) -> fits (those
pointed to, else the newest fit of each model in the store whose ``data_sha256`` matches the
data, else fit now with the default settings and save into the store) -> comparison -> inputs
for ``html.build_html``. Every step says on stderr what it reused or ran.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bayes_soil import fits
from bayes_soil.calibrate import load_calibration, report_section
from bayes_soil.compare import compare, fit_kind, freq_dir_sha256, read_freq_tables
from bayes_soil.errors import InputError
from bayes_soil.fits import load_fit, read_attrs
from bayes_soil.frequentist import run_frequentist, write_freq_tables
from bayes_soil.frequentist.stock_shift import esm_vs_fixed
from bayes_soil.harmonize import load_harmonized
from bayes_soil.io import DEMO_OBSERVATIONS, AtomicOutputs, is_demo
from bayes_soil.models import get_model
from bayes_soil.report.html import FitRecord, ReportInputs

MODELS = ("hier_rates", "climate_breakpoints")
# --quick: enough to exercise every step, far too little for inference (labelled in the page)
QUICK_SETTINGS = {"chains": 2, "draws": 150, "tune": 150}
QUICK_ATTR = "report_quick"


@dataclass
class ReportSettings:
    """What ``report`` was asked to do."""

    data: str | Path | None = None  # None = the bundled synthetic demo
    fits_dir: str | Path = "fits"
    freq_dir: str | Path | None = None
    fit_paths: Sequence[str | Path] = ()
    quick: bool = False
    reuse_only: bool = False  # never sample; report what exists
    hdi_prob: float = 0.94
    seed: int | None = None
    models: Sequence[str] = MODELS
    calibration_dirs: Sequence[str | Path] = ()  # outputs of `calibrate` for the report


@dataclass
class Progress:
    """Step-by-step messages on stderr, with elapsed time; collected for the provenance."""

    stream: object = field(default_factory=lambda: sys.stderr)
    lines: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def __call__(self, message: str) -> None:
        self.lines.append(message)
        elapsed = time.perf_counter() - self.t0
        print(f"[report {elapsed:6.1f}s] {message}", file=self.stream, flush=True)


def data_label(data: str | Path | None) -> str:
    if data is None or is_demo(data):
        return f"bundled synthetic demo ({DEMO_OBSERVATIONS.name})"
    return str(data)


# ------------------------------------------------------------------------------------------
# frequentist tables


def frequentist_tables(harmonized, freq_dir: str | Path | None, log: Callable) -> dict:
    """Reuse the tables in ``freq_dir`` when present, else run ``run_frequentist``."""
    if freq_dir is not None and (Path(freq_dir) / "rates.csv").exists():
        freq_dir = Path(freq_dir)
        recorded = freq_dir_sha256(freq_dir)
        if recorded is not None and recorded != harmonized.data_sha256:
            raise InputError(
                f"{freq_dir}: these frequentist tables were made from other data (data_sha256 "
                f"{recorded[:12]}... vs {harmonized.data_sha256[:12]}...); rerun 'freq' or drop "
                "--freq-dir"
            )
        tables = read_freq_tables(freq_dir, required=("rates",))
        note = "" if recorded else " (the folder records no data hash: not checked)"
        log(f"reused frequentist tables from {freq_dir}{note}")
        return tables
    log("running the frequentist analysis (OLS rates, Kruskal-Wallis, segmented regression)")
    result = run_frequentist(harmonized.layers, harmonized.changes)
    tables = result.tables()
    if freq_dir is not None:
        with AtomicOutputs(freq_dir) as out:
            write_freq_tables(out, tables, harmonized)
        log(f"wrote the frequentist tables to {freq_dir}")
    return tables


# ------------------------------------------------------------------------------------------
# fits


def _attrs(path: Path) -> dict:
    try:
        return read_attrs(path)
    except Exception:  # unreadable file in the store: skip it, say so
        return {}


def find_fit(
    fits_dir: str | Path,
    model: str,
    data_sha256: str,
    *,
    allow_quick: bool,
    log: Callable | None = None,
    spec_json: str | None = None,
) -> Path | None:
    """Newest fit of ``model`` under ``fits_dir`` made from the data with ``data_sha256``.

    With ``spec_json``, only a fit made with that spec (the model's default, as ``fit`` uses
    it) is reused: a fit of another spec answers another question.

    Looks at ``<fits_dir>/<model>/*.nc`` and, when ``allow_quick``, at the quick store
    ``<fits_dir>/quick/<model>/*.nc``. Fits made by ``report --quick`` are never reused by a
    full report.
    """
    fits_dir = Path(fits_dir)
    candidates = list((fits_dir / model).glob("*.nc"))
    if allow_quick:
        candidates += list((fits_dir / "quick" / model).glob("*.nc"))
    best, best_key, other, other_spec = None, None, 0, 0
    for p in candidates:
        a = _attrs(p)
        if a.get("model") != model:
            continue
        if a.get("data_sha256") != data_sha256:
            other += 1
            continue
        if spec_json is not None and a.get("spec") != spec_json:
            other_spec += 1
            continue
        if not allow_quick and int(a.get(QUICK_ATTR, 0) or 0):
            continue
        key = (str(a.get("created_at", "")), p.stat().st_mtime)
        if best_key is None or key > best_key:
            best, best_key = p, key
    if other and log is not None:
        log(f"ignored {other} {model} fit(s) in {fits_dir} made from other data")
    if other_spec and log is not None:
        log(f"ignored {other_spec} {model} fit(s) in {fits_dir} made with another spec")
    return best


def run_fit(
    model_name: str,
    harmonized,
    *,
    fits_dir: str | Path,
    quick: bool,
    seed: int | None,
    log: Callable,
) -> Path:
    """Fit ``model_name`` with its default spec on the harmonized data and save it."""
    model = get_model(model_name)
    table = getattr(harmonized, getattr(model, "table", "layers"))
    settings = dict(QUICK_SETTINGS) if quick else {}
    if seed is not None:
        settings["seed"] = seed
    fs = model.settings(**settings)
    log(
        f"fitting {model_name} ({fs.sampler}, {fs.chains} chains x {fs.draws} draws after "
        f"{fs.tune} tuning{', QUICK' if quick else ''}); this can take minutes"
    )
    t0 = time.perf_counter()
    dt = model.fit(
        table,
        data_sha256=harmonized.data_sha256,
        synthetic=harmonized.synthetic,
        progressbar=sys.stderr.isatty(),  # the sampler's own progress bar on a terminal
        **settings,
    )
    if quick:
        dt.attrs[QUICK_ATTR] = 1
    store = Path(fits_dir) / "quick" if quick else Path(fits_dir)
    path = fits.fit_path(model_name, fits.new_run_id(harmonized.data_sha256, fs.seed), store)
    fits.save_fit(dt, path)
    log(
        f"fitted {model_name} in {time.perf_counter() - t0:.0f} s: diagnostics "
        f"{dt.attrs.get('diagnostics_verdict', '?')}; saved {path}"
    )
    return path


def gather_fits(
    settings: ReportSettings, harmonized, log: Callable, errors: dict | None = None
) -> list:
    """Fits pointed to, then matching fits from the store, then new fits (unless reuse_only).

    A model whose fit raises is recorded in ``errors`` (model -> message) and left out, so the
    rest of the report is still written and says what failed.
    """
    records: list[FitRecord] = []
    have: set[str] = set()
    for p in settings.fit_paths:
        dt = load_fit(p, expected_sha256=harmonized.data_sha256)
        records.append(FitRecord(dt, str(p), "given"))
        have.add(str(dt.attrs.get("model", "")))
        log(f"using the fit given: {p} ({dt.attrs.get('model')})")
    for model in settings.models:
        if model in have:
            continue
        path = find_fit(
            settings.fits_dir,
            model,
            harmonized.data_sha256,
            allow_quick=settings.quick,
            log=log,
            spec_json=get_model(model).spec_json(),
        )
        origin = "reused from the store"
        if path is None:
            if settings.reuse_only:
                log(
                    f"no {model} fit for this data in {settings.fits_dir}; not fitting "
                    "(--reuse-only)"
                )
                continue
            try:
                path = run_fit(
                    model,
                    harmonized,
                    fits_dir=settings.fits_dir,
                    quick=settings.quick,
                    seed=settings.seed,
                    log=log,
                )
            except (InputError, KeyboardInterrupt):
                raise
            except Exception as exc:  # a crashed fit must not lose the rest of the report
                traceback.print_exc(file=sys.stderr)
                message = f"{type(exc).__name__}: {exc}"
                log(f"fitting {model} FAILED ({message}); the report is written without it")
                if errors is not None:
                    errors[model] = message
                continue
            origin = "run now"
        else:
            log(f"reused {model} fit {path}")
        dt = load_fit(path, expected_sha256=harmonized.data_sha256)
        records.append(FitRecord(dt, str(path), origin))
    for r in records:
        fit_kind(r.dt)  # refuse a fit with nothing to report early, with its name
    return records


# ------------------------------------------------------------------------------------------
# the whole thing


def calibration_table(dirs: Sequence[str | Path], log: Callable):
    """One small table of the calibrations in ``dirs`` (None when there are none)."""
    parts = []
    for d in dirs:
        table = load_calibration(d)
        if table is None:
            raise InputError(f"{d}: no calibration.csv (not an output folder of 'calibrate')")
        section = report_section(table)
        if section is not None:
            parts.append(section[0].assign(folder=str(d)))
            log(f"calibration table read from {d}")
    return pd.concat(parts, ignore_index=True) if parts else None


def prepare_report(settings: ReportSettings, progress: Callable | None = None):
    """Run or reuse every step and return ``html.ReportInputs``."""
    log = progress or Progress()
    label = data_label(settings.data)
    log(f"loading and harmonizing {label}")
    harmonized = load_harmonized(settings.data)
    log(
        f"{len(harmonized.layers)} layer rows, {len(harmonized.changes)} change rows"
        + (" (SYNTHETIC)" if harmonized.synthetic else "")
    )
    freq = frequentist_tables(harmonized, settings.freq_dir, log)
    fit_errors: dict[str, str] = {}
    fit_records = gather_fits(settings, harmonized, log, fit_errors)
    comparison = None
    if fit_records:
        log("comparing posterior and frequentist estimates")
        comparison = compare(
            [r.dt for r in fit_records],
            freq,
            hdi_prob=settings.hdi_prob,
            fit_labels=[r.path for r in fit_records],
        )
    # the label describes the fits shown: quick ones, whether run now or reused
    quick = any(int(r.dt.attrs.get(QUICK_ATTR, 0) or 0) for r in fit_records)
    calibration = calibration_table(settings.calibration_dirs, log)
    stock_shift = None
    if harmonized.stock_method == "esm":
        log("frequentist rates and turning points on the fixed-depth twin (ESM vs fixed)")
        stock_shift = esm_vs_fixed(harmonized.layers, harmonized.changes, freq)
    return ReportInputs(
        stock_shift=stock_shift,
        calibration=calibration,
        harmonized=harmonized,
        freq=freq,
        fits=fit_records,
        comparison=comparison,
        data_label=label,
        hdi_prob=settings.hdi_prob,
        quick=quick,
        log=list(getattr(log, "lines", [])),
        fit_errors=fit_errors,
    )
