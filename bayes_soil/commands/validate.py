"""``validate``: check an observations table and report every problem (exit 2) or a summary."""

from __future__ import annotations

import argparse

from bayes_soil.commands import add_data_argument

HELP = "check an observations table (CSV, XLSX, Parquet) and list every problem"
EXAMPLE = "python -m bayes_soil validate --data my_observations.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Exit 0 with a one-line summary when valid; ObservationsError (exit 2) otherwise."""
    from bayes_soil import io
    from bayes_soil.validate import load_observations, summarize_observations

    path = io.DEMO_OBSERVATIONS if args.data is None else args.data
    notes: list[str] = []
    df = load_observations(path, notes=notes)
    s = summarize_observations(df)
    synthetic = io.is_synthetic(df)
    parts = [
        f"valid: {path}: {s['rows']} rows, {s['studies']} studies, {s['sites']} sites, "
        f"{s['profiles']} profiles ({s['controls']} control rows with years=0)"
    ]
    if s["no_quantity"]:
        parts.append(
            f"warning: {s['no_quantity']} rows have no C or N quantity "
            "(harmonize will list them in rejected.csv)"
        )
    for d in ("map_mm", "mat_c"):
        if s[f"no_{d}"]:
            parts.append(
                f"note: {s[f'no_{d}']} rows without {d} (kept; left out only of turning points "
                f"on {d} and the Bayesian climate model)"
            )
    if synthetic:
        parts.append(io.SYNTHETIC_LABEL)
    print("; ".join(parts))
    for note in notes:
        print(f"warning: {note}")
    return 0
