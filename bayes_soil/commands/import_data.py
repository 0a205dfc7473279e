"""``import``: convert a public data release (GROA) into an observations table."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a public data release (GROA) into an observations table that validates"
EXAMPLE = "python -m bayes_soil import groa path/to/GROA/data --out groa_observations.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=["groa"], help="which release format to read")
    parser.add_argument(
        "directory",
        metavar="DIR",
        help="the release folder (for GROA: soil.csv, sites.csv, GROA_literature.csv)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="observations CSV to write; rejected source rows go to FILE_rejected.csv beside it",
    )


def rejected_path(out: Path) -> Path:
    """``obs.csv`` -> ``obs_rejected.csv`` (same folder)."""
    return out.with_name(f"{out.stem}_rejected.csv")


def run(args: argparse.Namespace) -> int:
    """Import, then write observations and rejections together (atomically) and print the count."""
    from bayes_soil.errors import InputError
    from bayes_soil.importers import IMPORTERS
    from bayes_soil.io import AtomicOutputs

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise InputError(f"{out}: --out must be a .csv file")
    result = IMPORTERS[args.source](args.directory)
    rej = rejected_path(out)
    with AtomicOutputs(out.parent) as staged:
        staged.write_csv(result.observations, out.name)
        staged.write_csv(result.rejected, rej.name)
    r = result.report
    print(
        f"read {r['rows_read']} rows = {r['rows_written']} written + {r['rows_rejected']} "
        f"rejected; {out}: {r['observation_rows']} observation rows, {r['studies']} studies, "
        f"{r['sites']} sites, {r['control_rows']} control rows (years=0); rejected rows: {rej}"
    )
    for reason, n in r.get("rejected_by_reason", {}).items():
        print(f"  rejected {n:5d}: {reason}")
    for driver, n in (r.get("rows_without_driver") or {}).items():
        if n:
            print(
                f"  kept  {n:5d} rows without {driver} (the site has none in sites.csv): left "
                f"out only of turning points on {driver} and the Bayesian climate model"
            )
    if r.get("rows_control_scope_study"):
        print(
            f"  {r['rows_control_scope_study']} rows with control_scope = study (GROA ref "
            "study_ref / study_chrono: the study's reference plots may be their control)"
        )
    if r.get("bd_dropped_out_of_range"):
        print(
            f"  note: {r['bd_dropped_out_of_range']} bulk densities outside the valid range were "
            "dropped (rows kept; see import_note)"
        )
    return 0
