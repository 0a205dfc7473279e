"""``fits``: list the fits stored under fits/ with model, data hash, date and verdict."""

from __future__ import annotations

import argparse

HELP = "list stored fits (model, data hash, date, sampler, diagnostics verdict)"
EXAMPLE = "python -m bayes_soil fits --store fits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default="fits", metavar="DIR", help="fit store (default: fits)")
    parser.add_argument("--model", default=None, help="only fits of this model")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bayes_soil.fits import list_fits

    df = list_fits(args.store)
    if args.model:
        df = df[df["model"] == args.model]
    console = Console(width=160)
    if df.empty:
        console.print(f"no fits under {args.store}/ (run 'python -m bayes_soil fit --model ...')")
        return 0
    tab = Table(title=f"fits in {args.store}/")
    for col in (
        "model",
        "run_id",
        "data_sha256",
        "created_at",
        "sampler",
        "synthetic",
        "verdict",
        "max_rhat",
        "min_ess_bulk",
        "divergences",
    ):
        tab.add_column(col)
    for _, r in df.iterrows():
        verdict = r["verdict"]
        style = "green" if verdict == "pass" else "bold red"
        tab.add_row(
            str(r["model"]),
            str(r["run_id"]),
            str(r["data_sha256"]),
            str(r["created_at"]),
            str(r["sampler"]),
            "yes" if r["synthetic"] else "no",
            f"[{style}]{verdict}[/]",
            f"{r['max_rhat']:.3f}",
            f"{r['min_ess_bulk']:.0f}",
            f"{r['divergences']:.0f}",
        )
    console.print(tab)
    return 0
