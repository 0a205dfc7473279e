"""``models``: list the registered Bayesian models, one line each, with their spec files."""

from __future__ import annotations

import argparse

HELP = "list the Bayesian models (name, one-line description, spec file)"
EXAMPLE = "python -m bayes_soil models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec", metavar="NAME", default=None, help="print the full TOML spec of one model"
    )


def run(args: argparse.Namespace) -> int:
    from bayes_soil.errors import InputError
    from bayes_soil.models import REGISTRY

    if args.spec:
        if args.spec not in REGISTRY:
            raise InputError(f"unknown model {args.spec!r}; available: {', '.join(REGISTRY)}")
        print(REGISTRY[args.spec].spec_path().read_text())
        return 0
    for name, cls in sorted(REGISTRY.items()):
        print(f"{name}: {cls.description()}")
        print(f"    spec: {cls.spec_path()}")
    return 0
