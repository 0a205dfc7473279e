"""``compare``: posterior rates and turning points beside the frequentist estimates."""

from __future__ import annotations

import argparse

HELP = "compare fitted posteriors with the frequentist tables (comparison.csv and friends)"
EXAMPLE = (
    "python -m bayes_soil compare fits/hier_rates/RUN.nc fits/climate_breakpoints/RUN.nc "
    "--freq out/freq --out out/compare"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "fits",
        nargs="+",
        metavar="FIT.nc",
        help="fits written by 'fit' (hier_rates and/or climate_breakpoints)",
    )
    parser.add_argument(
        "--freq",
        required=True,
        metavar="FREQ_DIR",
        help="directory with rates.csv and breakpoints.csv written by 'freq'",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory for comparison.csv, breakpoints_comparison.csv, "
        "comparison_rules.json",
    )
    parser.add_argument(
        "--hdi-prob",
        type=float,
        default=0.94,
        help="probability mass of the posterior HDI (default 0.94)",
    )


def run(args: argparse.Namespace) -> int:
    from bayes_soil.compare import (
        compare,
        freq_dir_sha256,
        load_fits,
        read_freq_tables,
        write_comparison,
    )

    fits = load_fits(args.fits)
    freq = read_freq_tables(args.freq, required=())
    if "rates" not in freq and "breakpoints" not in freq:
        from bayes_soil.errors import InputError

        raise InputError(f"{args.freq}: neither rates.csv nor breakpoints.csv found (run 'freq')")
    recorded = freq_dir_sha256(args.freq)
    for path, dt in zip(args.fits, fits, strict=True):
        fit_sha = str(dt.attrs.get("data_sha256", ""))
        if recorded and fit_sha and fit_sha != recorded:
            from bayes_soil.errors import InputError

            raise InputError(
                f"{path}: made from other data (data_sha256 {fit_sha[:12]}...) than the tables in "
                f"{args.freq} ({recorded[:12]}...)"
            )
    result = compare(fits, freq, hdi_prob=args.hdi_prob, fit_labels=[str(p) for p in args.fits])
    written = write_comparison(result, args.out)
    n_post_only = (
        int((result.rates["agreement"] == "posterior only").sum()) if len(result.rates) else 0
    )
    counts = result.rates["agreement"].value_counts() if len(result.rates) else {}
    n_dis, n_inc = int(counts.get("disagree", 0)), int(counts.get("inconclusive", 0))
    for info in result.fits:
        if info["diagnostics_verdict"] != "pass":
            print(
                f"warning: {info['fit']} ({info['model']}) has diagnostics verdict "
                f"'{info['diagnostics_verdict']}': its cells are marked in fit_verdict"
            )
    if any(i["synthetic"] for i in result.fits):
        from bayes_soil.io import SYNTHETIC_LABEL

        print(f"note: {SYNTHETIC_LABEL}")
    methods = sorted({i["stock_method"] for i in result.fits})
    print(f"stock method: {', '.join(methods)}")
    print(
        f"{len(result.rates)} rate cells ({n_dis} disagree, {n_inc} inconclusive, "
        f"{n_post_only} posterior only), {len(result.breakpoints)} turning-point cells; "
        f"intervals: {result.interval}"
    )
    if len(result.rates):
        print(f"rule: {result.rates['agreement_rule'].iloc[0]}")
    for path in written:
        print(f"wrote {path}")
    return 0
