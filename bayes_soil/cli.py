"""Command line: ``python -m bayes_soil <command>``.

Each subcommand lives in ``bayes_soil/commands/<name>.py`` and exposes ``HELP`` (one line),
``EXAMPLE``, ``add_arguments(parser)`` and ``run(args) -> int``. Command modules import the
heavy libraries (PyMC, matplotlib) inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bayes_soil import __version__
from bayes_soil.errors import BayesSoilError

# name on the command line -> module in bayes_soil.commands
COMMANDS = {
    "simulate": "simulate",
    "validate": "validate",
    "harmonize": "harmonize",
    "import": "import_data",
    "freq": "freq",
    "models": "models",
    "fit": "fit",
    "summarize": "summarize",
    "fits": "fits",
    "compare": "compare",
    "report": "report",
    "calibrate": "calibrate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bayes_soil",
        description=(
            "Bayesian meta-analysis of soil organic carbon (SOC) and total nitrogen (STN) stocks "
            "after revegetation. Every command defaults to the bundled SYNTHETIC demo dataset."
        ),
        epilog="Run 'python -m bayes_soil COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_soil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"bayes_soil.commands.{module_name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the process exit code."""
    import warnings

    # R-hat of a quantity that is constant in every draw is undefined: arviz-stats divides
    # 0 / 0 and warns; our tables show it as "-" instead
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="arviz_stats")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except BayesSoilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        return 130
