"""``report``: the whole analysis as one self-contained HTML page (runs what is missing)."""

from __future__ import annotations

import argparse

from bayes_soil.commands import add_data_argument
from bayes_soil.defaults import DEFAULT_SEED

HELP = "build a self-contained HTML report, reusing fits and tables and running what is missing"
EXAMPLE = "python -m bayes_soil report --out report.html   # the whole demo analysis"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(
        parser,
        help="observations file or a harmonized folder (layers.csv, changes.csv); default: the "
        "bundled SYNTHETIC demo dataset",
    )
    parser.add_argument(
        "--fits-dir",
        default="fits",
        metavar="DIR",
        help="fit store: fits whose data_sha256 matches the data are reused, new "
        "fits are saved here (default: fits)",
    )
    parser.add_argument(
        "--fit",
        action="append",
        default=[],
        metavar="FIT.nc",
        help="use this fit (repeatable); it must come from the same data",
    )
    parser.add_argument(
        "--freq-dir",
        default=None,
        metavar="DIR",
        help="frequentist tables written by 'freq'; reused when present, written "
        "there when missing (default: computed in memory)",
    )
    parser.add_argument(
        "--out",
        default="report.html",
        metavar="FILE",
        help="the HTML file to write (default: report.html)",
    )
    parser.add_argument(
        "--hdi-prob",
        type=float,
        default=0.94,
        help="probability mass of the posterior HDI (default 0.94)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"sampler seed for fits run now (default {DEFAULT_SEED}, as for 'fit')",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fit with few draws (2 chains x 150) for a smoke test; the report "
        "says so and such fits are never reused by a full report",
    )
    parser.add_argument(
        "--reuse-only", action="store_true", help="never sample: report only the fits that exist"
    )
    parser.add_argument(
        "--calibration",
        action="append",
        default=[],
        metavar="DIR",
        help="output folder of 'calibrate' (repeatable): adds a calibration section (coverage "
        "of the model's intervals on simulated data with known truth)",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from bayes_soil.report.html import write_report
    from bayes_soil.workflow import Progress, ReportSettings, prepare_report

    if not 0 < args.hdi_prob < 1:
        from bayes_soil.errors import InputError

        raise InputError(f"--hdi-prob must be between 0 and 1, got {args.hdi_prob}")
    progress = Progress()
    settings = ReportSettings(
        data=args.data,
        fits_dir=args.fits_dir,
        freq_dir=args.freq_dir,
        fit_paths=args.fit,
        quick=args.quick,
        reuse_only=args.reuse_only,
        hdi_prob=args.hdi_prob,
        seed=args.seed,
        calibration_dirs=args.calibration,
    )
    inputs = prepare_report(settings, progress)
    progress("drawing figures and writing the page")
    path = write_report(inputs, args.out)
    failed = [f"{r.model} ({r.path})" for r in inputs.fits if r.verdict != "pass"]
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    from bayes_soil.report.html import figures_dir_of

    fdir = figures_dir_of(path)
    n_fig = len(list(fdir.glob("*.svg"))) if fdir.is_dir() else 0
    print(f"wrote {n_fig} figures to {fdir} (SVG and 300 dpi PNG)")
    if inputs.synthetic:
        from bayes_soil.io import SYNTHETIC_LABEL

        print(f"note: {SYNTHETIC_LABEL}")
    for model, why in inputs.fit_errors.items():
        print(f"error: fitting {model} failed ({why}); the report says so", file=sys.stderr)
    if failed:
        print(
            "warning: fit(s) that failed their diagnostics are shown as failed: "
            + ", ".join(failed)
        )
    return 1 if inputs.fit_errors else 0
