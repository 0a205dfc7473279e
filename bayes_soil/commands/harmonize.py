"""``harmonize``: observations -> standard-layer stocks, changes, rejected rows and a report."""

from __future__ import annotations

import argparse

from bayes_soil.commands import add_data_argument

HELP = "harmonize observations into 0-20/20-100/100-200/0-200 cm stocks and changes"
EXAMPLE = (
    "python -m bayes_soil harmonize --data my_observations.csv --out out/harmonized [--stocks esm]"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--bd-method",
        choices=("auto", "rf", "ptf"),
        default="auto",
        help="bulk density where not measured: auto (default: whichever of rf and ptf has the "
        "higher study-grouped cross-validated R^2 on the rows with measured BD), random forest "
        "(rf) or the paper's pedotransfer function (ptf, Eq. 4-5)",
    )
    parser.add_argument(
        "--exclude-deep-imputed",
        action="store_true",
        help="leave out 100-200 and 0-200 rows filled by the shallow-to-deep function",
    )
    parser.add_argument(
        "--stocks",
        choices=("fixed", "esm"),
        default="fixed",
        help="fixed-depth stocks (fixed, default: the paper's method) or equivalent soil mass "
        "(esm: cumulative element mass at the soil mass of the chronosequence's year-0 "
        "controls; rows ESM cannot serve keep fixed depth, flagged in esm_status)",
    )
    parser.add_argument(
        "--allow-no-changes",
        action="store_true",
        help="write the outputs even when no change against a year-0 control can be computed "
        "(stage rates and Kruskal tests need only the layers); without it that is exit 2",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (forest, CV folds)")


def run(args: argparse.Namespace) -> int:
    """Harmonize and write the four outputs; exit 2 with the reason (nothing written) when no
    row is usable or no change against a year-0 control can be computed."""
    import sys

    from bayes_soil.errors import InputError
    from bayes_soil.harmonize import harmonize, write_harmonized
    from bayes_soil.harmonize.pipeline import empty_result_reason, summary_lines
    from bayes_soil.io import DEMO_OBSERVATIONS, SYNTHETIC_LABEL, sha256_file
    from bayes_soil.validate import load_observations

    notes: list[str] = []
    obs = load_observations(args.data, notes=notes)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    result = harmonize(
        obs,
        bd_method=args.bd_method,
        exclude_deep_imputed=args.exclude_deep_imputed,
        seed=args.seed,
        stock_method=args.stocks,
    )
    path = DEMO_OBSERVATIONS if args.data is None else args.data
    why = empty_result_reason(result, allow_no_changes=args.allow_no_changes)
    if why:
        raise InputError(f"{path}: {why}; nothing was written")
    # result.data_sha256 (the data identity) is that of the harmonized tables, as everywhere
    result.report["data_file"] = str(path)
    result.report["input_notes"] = notes
    result.report["data_file_sha256"] = sha256_file(path)
    if result.synthetic:
        result.report["label"] = SYNTHETIC_LABEL
    files = write_harmonized(result, args.out)
    rows = result.report["rows"]
    if result.synthetic:
        print(SYNTHETIC_LABEL)
    print(f"stock method: {result.stock_method}")
    print(
        f"{rows['input']} rows: {rows['used']} used, {rows['rejected']} rejected; "
        f"{len(result.layers)} layer rows, {len(result.changes)} change rows"
    )
    if "esm" in result.report:
        esm = result.report["esm"]
        print(
            f"ESM: {esm['layer_rows_esm']} layer rows on equivalent soil mass, "
            f"{esm['layer_rows_fixed_fallback']} kept on fixed depth (esm_status says why)"
        )
    for line in summary_lines(result.report):
        print(f"  {line}")
    for warning in result.report.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    for f in files:
        print(f"wrote {f}")
    return 0
