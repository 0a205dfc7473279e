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
        metavar="FREQ_DIR",
        help="directory with rates.csv and breakpoints.csv written by 'freq' (required unless "
        "--stock-shift)",
    )
    parser.add_argument(
        "--stock-shift",
        action="store_true",
        help="instead: two fits of one model, on fixed-depth and on ESM stocks of the same "
        "observations -> stock_shift_posterior.csv (how far rates or turning points move)",
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
    if args.stock_shift:
        return _stock_shift(fits, args)
    if not args.freq:
        from bayes_soil.errors import InputError

        raise InputError("--freq FREQ_DIR is required (or --stock-shift for a fixed vs ESM pair)")
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


def _stock_shift(fits, args: argparse.Namespace) -> int:
    """Write stock_shift_posterior.csv for a fixed-depth / ESM pair of fits and summarise it."""
    from bayes_soil.compare import posterior_stock_shift
    from bayes_soil.io import SYNTHETIC_LABEL, AtomicOutputs

    table = posterior_stock_shift(fits, hdi_prob=args.hdi_prob)
    with AtomicOutputs(args.out) as out:
        out.write_csv(table, "stock_shift_posterior.csv")
    if any(bool(int(dt.attrs.get("synthetic", 0) or 0)) for dt in fits):
        print(f"note: {SYNTHETIC_LABEL}")
    if "shift_in_sd" in table:
        big = int((table["shift_in_sd"].abs() > 1).sum())
        print(
            f"{len(table)} rate cells: ESM - fixed median |shift| "
            f"{table['shift'].abs().median():.3g} Mg ha-1 yr-1 "
            f"({table['shift_in_sd'].abs().median():.2f} posterior sd; > 1 sd in {big}); "
            f"sign of the mean flips in {int(table['sign_flip'].sum())}"
        )
    else:
        print(
            f"{len(table)} turning-point cells: the P(break) decision changes in "
            f"{int(table['decision_changed'].sum())}"
        )
    print(f"intervals: {table['interval'].iloc[0] if len(table) else ''}")
    print(f"wrote {args.out}/stock_shift_posterior.csv")
    return 0
