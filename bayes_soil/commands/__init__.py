"""One module per CLI subcommand: HELP, EXAMPLE, add_arguments(parser), run(args) -> int."""

from __future__ import annotations

import argparse

DATA_HELP = "input observations (CSV, XLSX or Parquet); default: the bundled SYNTHETIC demo dataset"


def add_data_argument(parser: argparse.ArgumentParser, help: str = DATA_HELP) -> None:
    """The shared ``--data`` flag; None means the bundled demo."""
    parser.add_argument("--data", default=None, metavar="FILE", help=help)
