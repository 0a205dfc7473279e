"""``models``: list the Bayesian models, one line each, with their spec files: the packaged
models, then the project's named variants in ./models/ (base model and description)."""

from __future__ import annotations

import argparse

HELP = (
    "list the Bayesian models (name, one-line description, spec file) and the variants in "
    "./models/*.toml"
)
EXAMPLE = "python -m bayes_soil models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec",
        metavar="NAME",
        default=None,
        help="print the full TOML spec of one model (or the file of a variant)",
    )


def run(args: argparse.Namespace) -> int:
    from bayes_soil.models import REGISTRY
    from bayes_soil.models.variants import VARIANTS_DIR, list_variants, resolve_model

    if args.spec:
        base, variant = resolve_model(args.spec)
        if variant is not None:
            print(f"# variant of {base} ({variant.path}); the rest of the spec is {base}'s")
            print(variant.path.read_text())
        else:
            print(REGISTRY[base].spec_path().read_text())
        return 0
    for name, cls in sorted(REGISTRY.items()):
        print(f"{name}: {cls.description()}")
        print(f"    spec: {cls.spec_path()}")
    variants = list_variants()
    if variants:
        print(f"\nvariants in {VARIANTS_DIR}/ (fit --model NAME):")
    for v in variants:
        shadowed = " (hidden: a packaged model has this name)" if v.name in REGISTRY else ""
        print(f"{v.name}: variant of {v.base}{shadowed}: {v.description}")
        print(f"    spec: {v.path}")
    return 0
