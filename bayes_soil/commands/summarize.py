"""``summarize``: posterior tables (CSV) from a stored fit, with the interval named."""

from __future__ import annotations

import argparse

HELP = (
    "write posterior summary tables of a fit: rates_posterior.csv (hier_rates) or "
    "breakpoints_posterior.csv (climate_breakpoints), plus ratios / time to gain / psi_C - psi_N"
)
EXAMPLE = "python -m bayes_soil summarize fits/hier_rates/RUN.nc --out out/posterior"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit", metavar="FIT.nc", help="a fit written by 'fit'")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--data",
        default=None,
        metavar="FILE_OR_DIR",
        help="optional: refuse the fit unless it was made from these data (SHA-256 check)",
    )
    parser.add_argument(
        "--hdi-prob",
        type=float,
        default=0.94,
        help="probability of the highest-density interval (default 0.94)",
    )


def expected_sha(data: str | None) -> str | None:
    """The SHA-256 the fit must carry when --data is given (as load_harmonized computes it)."""
    if data is None:
        return None
    from bayes_soil.harmonize import load_harmonized

    return load_harmonized(data).data_sha256


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bayes_soil import posterior
    from bayes_soil.errors import InputError
    from bayes_soil.fits import diagnostics_of, load_fit
    from bayes_soil.io import SYNTHETIC_LABEL, AtomicOutputs

    if not 0 < args.hdi_prob < 1:
        raise InputError(f"--hdi-prob must be between 0 and 1, got {args.hdi_prob}")
    dt = load_fit(args.fit, expected_sha256=expected_sha(args.data))
    console = Console(width=140)
    written = []
    with AtomicOutputs(args.out) as out:
        post = dt["posterior"]
        if "rate" in post:
            out.write_csv(posterior.rates_table(dt, args.hdi_prob), "rates_posterior.csv")
            out.write_csv(
                posterior.years_to_gain_table(dt, args.hdi_prob), "years_to_gain_posterior.csv"
            )
            written += ["rates_posterior.csv", "years_to_gain_posterior.csv"]
            if "rate_ratio" in post:
                out.write_csv(
                    posterior.rate_ratio_table(dt, args.hdi_prob), "rate_ratios_posterior.csv"
                )
                written.append("rate_ratios_posterior.csv")
        elif "psi" in post:
            out.write_csv(
                posterior.breakpoints_table(dt, args.hdi_prob), "breakpoints_posterior.csv"
            )
            written.append("breakpoints_posterior.csv")
            if "psi_diff" in post:
                out.write_csv(posterior.psi_diff_table(dt, args.hdi_prob), "psi_diff_posterior.csv")
                written.append("psi_diff_posterior.csv")
        else:
            raise InputError(
                f"{args.fit}: no `rate` or `psi` in the posterior; nothing to summarise"
            )
    if int(dt.attrs.get("synthetic", 0)):
        console.print(f"[red]{SYNTHETIC_LABEL}[/]")
    # fits made before stock methods existed were all fixed-depth
    console.print(f"stock method: {dt.attrs.get('stock_method', 'fixed')}")
    diag = diagnostics_of(dt)
    if diag.get("verdict") != "pass":
        console.print(
            f"[bold red]this fit FAILED its diagnostics[/] ({diag.get('problems', '?')}); "
            f"every table says so in diagnostics_verdict. Advice: {diag.get('advice', '')}"
        )
    for name in written:
        console.print(f"wrote {args.out}/{name}")
    return 0
