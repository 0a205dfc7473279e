"""``freq``: the paper's frequentist analysis (rates, ratios, Kruskal-Wallis, turning points)."""

from __future__ import annotations

import argparse

from bayes_soil.commands import add_data_argument

HELP = (
    "frequentist reproduction: stage rates (OLS), C:N rate ratios, Kruskal-Wallis tests and "
    "turning points (segmented regression + Davies test), with paper-style figures"
)
EXAMPLE = "python -m bayes_soil freq --out out/freq"
DATA_HELP = (
    "observations file (harmonized first) or a folder holding layers.csv and changes.csv "
    "(used as is); default: the bundled SYNTHETIC demo dataset"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser, help=DATA_HELP)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    from bayes_soil.frequentist.cluster import DEFAULT_B, DEFAULT_B_PSI, DEFAULT_SEED

    parser.add_argument(
        "--bootstrap-b",
        type=int,
        default=DEFAULT_B,
        metavar="B",
        help=f"study cluster bootstrap resamples for the rates' intervals (default {DEFAULT_B}; "
        "0 skips)",
    )
    parser.add_argument(
        "--psi-bootstrap-b",
        type=int,
        default=DEFAULT_B_PSI,
        metavar="B",
        help="study cluster bootstrap resamples for psi's interval (default "
        f"{DEFAULT_B_PSI}, fewer than for rates because each refit searches the breakpoint; "
        "0 skips)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"bootstrap seed (default {DEFAULT_SEED})"
    )


def _interval(lo, hi) -> str:
    """'[lo, hi]' or '-' where the interval is missing."""
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return "-"
    return f"[{lo:.3g}, {hi:.3g}]" if lo == lo and hi == hi else "-"


def _rates_table(rates):
    import pandas as pd
    from rich.table import Table

    b = rates["cluster_bootstrap_B"].dropna()
    cluster = f"95% CI, study cluster bootstrap (B={int(b.iloc[0])})" if len(b) else "cluster CI"
    tab = Table(title="Rates, all vegetation, 0-200 cm (Mg ha-1 yr-1)")
    cols = ("element", "stage", "k", "95% CI (OLS, iid rows)", cluster, "p", "n", "studies")
    for col in cols:
        tab.add_column(col, justify="right" if col not in ("element", "stage") else "left")
    sel = rates[(rates["vegetation"] == "all") & (rates["layer"] == "0-200")]
    for _, r in sel.iterrows():
        if r["status"] == "absent" and r["stage"] != "0-5":
            continue
        if r["status"] == "ok":
            ols = _interval(r["ci_low"], r["ci_high"])
            clu = _interval(r["ci95_cluster_low"], r["ci95_cluster_high"])
            studies = "-" if pd.isna(r["n_studies"]) else str(int(r["n_studies"]))
            k, p = f"{r['k']:.3g}", f"{r['p']:.2g}"
            tab.add_row(r["element"], r["stage"], k, ols, clu, p, str(r["n"]), studies)
        else:
            tab.add_row(r["element"], r["stage"], "-", r["reason"], "", "", str(r["n"]), "")
    return tab


def _breakpoints_table(breakpoints):
    from rich.table import Table

    b = breakpoints["psi_cluster_bootstrap_B"].dropna()
    cluster = f"psi 95% CI, study cluster bootstrap (B={int(b.iloc[0])})" if len(b) else "-"
    bp = Table(title="Turning points (segmented regression of the change rate; Davies test)")
    cols = ("element", "layer", "driver", "psi ± SE", cluster, "k1", "k2", "Davies p")
    for col in (*cols, "r(MAP,MAT)", "better fit", "status"):
        bp.add_column(col)
    for _, r in breakpoints.iterrows():
        if r["status"] == "absent":
            bp.add_row(r["element"], r["layer"], r["driver"], *["-"] * 7, "absent")
            continue
        fitted = r["status"] in ("ok", "no_break")
        psi = f"{r['psi']:.4g} ± {r['psi_se']:.2g}" if fitted else "-"
        clu = _interval(r["psi_ci95_cluster_low"], r["psi_ci95_cluster_high"]) if fitted else "-"
        k1 = f"{r['k1']:.3g}" if fitted else "-"
        k2 = f"{r['k2']:.3g}" if fitted else "-"
        dp = f"{r['davies_p']:.2g}" if r["davies_p"] == r["davies_p"] else "-"
        corr = r["driver_correlation"]
        rr = f"{float(corr):.2f}" if corr is not None and corr == corr else "-"
        better = r["better_driver"] or "-"
        bp.add_row(
            r["element"], r["layer"], r["driver"], psi, clu, k1, k2, dp, rr, better, r["status"]
        )
    return bp


def _covary_notes(breakpoints) -> list[str]:
    """The co-varying-driver warning of breakpoints.csv's note column, one line per cell."""
    from bayes_soil.frequentist.drivers import COVARY_THRESHOLD, JOINT_MODEL

    noted = breakpoints[breakpoints["note"].fillna("").astype(str).str.contains("carried by")]
    if noted.empty:
        return []
    lines = [
        f"[bold]Drivers co-vary (|r| > {COVARY_THRESHOLD}): these turning points may be "
        f"carried by the other driver; see {JOINT_MODEL}[/]"
    ]
    for _, r in noted.iterrows():
        corr = float(r["driver_correlation"])
        better = f"; better segmented fit: {r['better_driver']}" if r["better_driver"] else ""
        lines.append(f"  {r['element']} {r['layer']} {r['driver']}: r = {corr:.2f}{better}")
    return lines


def _summary(result, synthetic: bool, stock_method: str = "fixed") -> None:
    import sys

    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=140)
    if synthetic:
        from bayes_soil.io import SYNTHETIC_LABEL

        console.print(f"[bold red]{SYNTHETIC_LABEL}[/]")
    label = {"fixed": "fixed depth", "esm": "equivalent soil mass (esm)"}.get(stock_method)
    console.print(f"stock method: {label or stock_method}")
    rates = result.rates
    console.print(_rates_table(result.rates))
    console.print(_breakpoints_table(result.breakpoints))
    for note in _covary_notes(result.breakpoints):
        console.print(note)
    ratios = result.rate_ratios[result.rate_ratios["kind"] == "stage"]
    undefined = int((ratios["status"] == "undefined").sum())
    if undefined:
        console.print(
            f"C:N rate ratios: {undefined} of {len(ratios)} stage ratios are undefined (the N "
            "rate's 95% CI includes 0 or Fieller's interval is unbounded; see rate_ratios.csv)"
        )
    skipped = int((~rates["status"].isin(["ok", "absent"])).sum())
    if skipped:
        console.print(f"{skipped} rate cell(s) not fitted (see the reason column of rates.csv)")


def run(args: argparse.Namespace) -> int:
    import time

    from bayes_soil.errors import InputError
    from bayes_soil.frequentist import run_frequentist, write_freq_tables
    from bayes_soil.harmonize import load_harmonized
    from bayes_soil.io import AtomicOutputs

    start = time.perf_counter()
    for flag, b in (
        ("--bootstrap-b", args.bootstrap_b),
        ("--psi-bootstrap-b", args.psi_bootstrap_b),
    ):
        if b < 0:
            raise InputError(f"{flag} must be 0 (skip) or a positive number of resamples, got {b}")
    data = load_harmonized(args.data)
    if data.layers is None or len(data.layers) == 0:
        raise InputError(
            f"{args.data or 'demo'}: no layer rows after harmonization; nothing can be computed"
        )
    result = run_frequentist(
        data.layers,
        data.changes,
        bootstrap_b=args.bootstrap_b,
        psi_bootstrap_b=args.psi_bootstrap_b,
        seed=args.seed,
    )
    with AtomicOutputs(args.out) as out:
        write_freq_tables(out, result.tables(), data)
        figures = []
        if not args.no_figures:
            from bayes_soil.report.freq_figures import write_freq_figures

            figures = write_freq_figures(
                result,
                data.layers,
                data.changes,
                out,
                synthetic=bool(data.synthetic),
                stock_method=data.stock_method,
            )
    _summary(result, bool(data.synthetic), data.stock_method)
    print(
        f"wrote {len(result.tables())} tables and {len(figures)} figure files to {args.out} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
