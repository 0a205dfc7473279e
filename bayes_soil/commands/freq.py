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
    "observations file (harmonised first) or a folder holding layers.csv and changes.csv "
    "(used as is); default: the bundled SYNTHETIC demo dataset"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser, help=DATA_HELP)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")


def _summary(result, synthetic: bool, stock_method: str = "fixed") -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=140)
    if synthetic:
        from bayes_soil.io import SYNTHETIC_LABEL

        console.print(f"[bold red]{SYNTHETIC_LABEL}[/]")
    label = {"fixed": "fixed depth", "esm": "equivalent soil mass (esm)"}.get(stock_method)
    console.print(f"stock method: {label or stock_method}")
    rates = result.rates
    tab = Table(title="Rates, all vegetation, 0-200 cm (Mg ha-1 yr-1, 95% CI of the OLS slope)")
    for col in ("element", "stage", "k", "95% CI", "p", "n"):
        tab.add_column(col, justify="right" if col not in ("element", "stage") else "left")
    sel = rates[(rates["vegetation"] == "all") & (rates["layer"] == "0-200")]
    for _, r in sel.iterrows():
        if r["status"] == "absent" and r["stage"] != "0-5":
            continue
        if r["status"] == "ok":
            ci = f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
            tab.add_row(r["element"], r["stage"], f"{r['k']:.3g}", ci, f"{r['p']:.2g}", str(r["n"]))
        else:
            tab.add_row(r["element"], r["stage"], "-", r["reason"], "", str(r["n"]))
    console.print(tab)
    bp = Table(title="Turning points (segmented regression of the change rate; Davies test)")
    for col in ("element", "layer", "driver", "psi ± SE", "k1", "k2", "Davies p", "status"):
        bp.add_column(col)
    for _, r in result.breakpoints.iterrows():
        if r["status"] == "absent":
            bp.add_row(r["element"], r["layer"], r["driver"], "-", "-", "-", "-", "absent")
            continue
        psi = f"{r['psi']:.4g} ± {r['psi_se']:.2g}" if r["status"] in ("ok", "no_break") else "-"
        k1 = f"{r['k1']:.3g}" if r["status"] in ("ok", "no_break") else "-"
        k2 = f"{r['k2']:.3g}" if r["status"] in ("ok", "no_break") else "-"
        dp = f"{r['davies_p']:.2g}" if r["davies_p"] == r["davies_p"] else "-"
        bp.add_row(r["element"], r["layer"], r["driver"], psi, k1, k2, dp, r["status"])
    console.print(bp)
    skipped = int((~rates["status"].isin(["ok", "absent"])).sum())
    if skipped:
        console.print(f"{skipped} rate cell(s) not fitted (see the reason column of rates.csv)")


def run(args: argparse.Namespace) -> int:
    import time

    from bayes_soil.errors import InputError
    from bayes_soil.frequentist import run_frequentist, write_freq_tables
    from bayes_soil.harmonize import load_harmonised
    from bayes_soil.io import AtomicOutputs

    start = time.perf_counter()
    data = load_harmonised(args.data)
    if data.layers is None or len(data.layers) == 0:
        raise InputError(
            f"{args.data or 'demo'}: no layer rows after harmonisation; nothing can be computed"
        )
    result = run_frequentist(data.layers, data.changes)
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
