"""``fit``: sample a Bayesian model on harmonized data and store the fit under fits/."""

from __future__ import annotations

import argparse

from bayes_soil.commands import add_data_argument
from bayes_soil.defaults import DEFAULT_SEED

HELP = (
    "fit a Bayesian model (hier_rates: stage rates; climate_breakpoints: turning points along "
    "MAP/MAT) and store it as fits/<model>/<run_id>.nc with provenance and diagnostics"
)
EXAMPLE = "python -m bayes_soil fit --model hier_rates --element both --chains 4 --draws 1000"
DATA_HELP = (
    "observations file (harmonized first) or a folder holding layers.csv and changes.csv "
    "(used as is); default: the bundled SYNTHETIC demo dataset"
)


def _spec_default(table: str, key: str, models: list[str] | None = None) -> str:
    """The default of ``[table] key`` as the models' TOML specs state it (for --help)."""
    from bayes_soil.models import REGISTRY

    values = {
        name: REGISTRY[name].default_spec().get(table, {}).get(key)
        for name in sorted(models or REGISTRY)
    }
    shown = {
        name: ", ".join(map(str, v)) if isinstance(v, list) else str(v)
        for name, v in values.items()
    }
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return "; ".join(f"{name}: {v}" for name, v in shown.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bayes_soil.models import REGISTRY
    from bayes_soil.models.base import SAMPLERS

    parser.add_argument(
        "--model",
        required=True,
        metavar="NAME",
        help=f"a packaged model ({', '.join(sorted(REGISTRY))}) or a variant of one in "
        "./models/NAME.toml (see 'models')",
    )
    add_data_argument(parser, help=DATA_HELP)
    parser.add_argument(
        "--element",
        choices=("C", "N", "both"),
        default=None,
        help="element(s) to fit; sets the spec's data.elements (default: the spec's, "
        f"{_spec_default('data', 'elements')}; C:N ratios need both)",
    )
    parser.add_argument(
        "--driver",
        choices=("map_mm", "mat_c", "both"),
        default=None,
        help="climate_breakpoints only: driver(s); sets the spec's data.drivers (default: the "
        f"spec's, {_spec_default('data', 'drivers', ['climate_breakpoints'])}; 'both' fits "
        "hinges in both drivers in one model)",
    )
    parser.add_argument(
        "--chains",
        type=int,
        default=None,
        help=f"chains (default: the spec's [sampler] chains, {_spec_default('sampler', 'chains')})",
    )
    parser.add_argument(
        "--draws",
        type=int,
        default=None,
        help="draws per chain (default: the spec's [sampler] draws, "
        f"{_spec_default('sampler', 'draws')})",
    )
    parser.add_argument(
        "--tune",
        type=int,
        default=None,
        help="tuning steps (default: the spec's [sampler] tune, "
        f"{_spec_default('sampler', 'tune')})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"random seed (default: the spec's [sampler] seed if set, else {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help="NUTS implementation (default: the spec's [sampler] name, "
        f"{_spec_default('sampler', 'name')})",
    )
    parser.add_argument(
        "--target-accept",
        type=float,
        default=None,
        help="NUTS target acceptance (default: the spec's [sampler] target_accept, "
        f"{_spec_default('sampler', 'target_accept')}; raise towards 0.95 after divergences)",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="parallel chains (default: every CPU this process may use, at most one per chain)",
    )
    parser.add_argument(
        "--spec",
        default=None,
        metavar="TOML",
        help="TOML file whose entries override the model's default spec (see 'models' for "
        "the spec files; unknown keys are an error); the flags above override the file only "
        "when given",
    )
    parser.add_argument(
        "--no-break",
        action="store_true",
        help="climate_breakpoints: fit the no-break (linear) model only",
    )
    parser.add_argument("--out", default="fits", metavar="DIR", help="fit store (default fits)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with code 3 when the fit fails its diagnostics (still saved)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _spec_overrides(args: argparse.Namespace) -> dict:
    """The user's spec changes: the variant's (when --model names one in ./models), then the
    --spec file, then the command-line flags given.

    A flag left out leaves the file's entry (or the model's default) alone. Unknown keys in the
    files are an InputError naming the key and the valid names.
    """
    from bayes_soil.commands import read_spec_file
    from bayes_soil.errors import InputError
    from bayes_soil.models.base import deep_merge
    from bayes_soil.models.variants import resolve_model
    from bayes_soil.schema import DRIVERS, ELEMENTS, chosen

    base, variant = resolve_model(args.model)
    spec = deep_merge(variant.spec if variant else {}, read_spec_file(args.spec, base))
    climate = base == "climate_breakpoints"
    if not climate:
        given = [f for f, v in (("--driver", args.driver), ("--no-break", args.no_break)) if v]
        if given:
            raise InputError(
                f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to "
                f"climate_breakpoints only, not to {args.model}"
            )
    if args.element is not None:
        data = spec.setdefault("data", {})
        data["elements"] = chosen(args.element, ELEMENTS)
    if climate and args.driver is not None:
        data = spec.setdefault("data", {})
        data["drivers"] = chosen(args.driver, DRIVERS)
    if climate and args.no_break:
        spec.setdefault("structure", {})["breaks"] = False
    return spec


def _data_notes(model, table) -> list[str]:
    """What the model's data preparation leaves out, and why (before compiling and sampling):
    layers with too few rows, rows without the climate driver the model needs."""
    meta = model.prepare(table).meta
    out = []
    min_rows = model.spec["data"].get("min_rows_per_layer")
    for layer in meta.get("dropped_layers", []):
        need = f" (fewer than {min_rows} rows for an element)" if min_rows else ""
        out.append(f"layer {layer} left out{need}")
    for driver, n in (meta.get("rows_without_driver") or {}).items():
        if n:
            out.append(f"{n} change rows without {driver} left out (kept in freq's rates)")
    if meta.get("n_deep_imputed_left_out"):
        out.append(f"{meta['n_deep_imputed_left_out']} deep-imputed stocks left out (not data)")
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bayes_soil import fits
    from bayes_soil.errors import DiagnosticsError
    from bayes_soil.harmonize import load_harmonized
    from bayes_soil.io import SYNTHETIC_LABEL
    from bayes_soil.models import get_model
    from bayes_soil.models.variants import resolve_model
    from bayes_soil.posterior import main_quantities

    console = Console(stderr=True)
    base, variant = resolve_model(args.model)
    model = get_model(base, _spec_overrides(args))
    if variant is not None:
        console.print(f"model variant {variant.name} ({variant.path}): {base} with its overrides")
    with console.status("loading and harmonizing the data..."):
        data = load_harmonized(args.data)
    table = getattr(data, model.table)
    if data.synthetic:
        console.print(f"[bold red]{SYNTHETIC_LABEL}[/]")
    fits.clean_partials(args.out)
    console.print(f"stock method: {data.stock_method}")
    for note in _data_notes(model, table):
        console.print(f"data: {note}")
    console.print(
        f"fitting [bold]{model.name}[/] on {len(table)} {model.table} rows "
        f"(elements {model.spec['data']['elements']}); compiling, then sampling..."
    )
    dt = model.fit(
        data,  # the harmonized result: the model takes its table, and the data identity
        progressbar=not args.quiet,
        sampler=args.sampler,
        chains=args.chains,
        draws=args.draws,
        tune=args.tune,
        seed=args.seed,
        cores=args.cores,
        target_accept=args.target_accept,
    )
    path = fits.fit_path(
        model.name, fits.new_run_id(dt.attrs["data_sha256"], int(dt.attrs["seed"])), args.out
    )
    if variant is not None:
        dt.attrs["model_variant"] = variant.name
    fits.save_fit(dt, path)
    diag = fits.diagnostics_of(dt)
    out = Console(width=140)
    out.print(f"fit written: {path} (stock method: {dt.attrs.get('stock_method', 'fixed')})")
    verdict = diag["verdict"]
    colour = "green" if verdict == "pass" else "bold red"
    out.print(
        f"diagnostics: [{colour}]{verdict}[/] (max R-hat {diag['max_rhat']:.3f}, min bulk ESS "
        f"{diag['min_ess_bulk']:.0f}, min tail ESS {diag.get('min_ess_tail', float('nan')):.0f}, "
        f"divergences {diag['divergences']}, "
        f"{diag['mean_steps_per_draw']:.0f} leapfrog steps per draw)"
    )
    if nuisance := fits.nuisance_summary(diag):
        out.print(f"nuisance (not reported): {nuisance}")
    if verdict != "pass":
        out.print(f"[bold red]FAILED[/]: {diag['problems']}. Advice: {diag['advice']}")
    table_out = main_quantities(dt)
    if data.synthetic:
        out.print(f"[red]{SYNTHETIC_LABEL}[/]")
    out.print("main quantities (posterior mean, 94% HDI):")
    out.print(table_out.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if verdict != "pass" and args.strict:
        raise DiagnosticsError(
            f"{path}: the fit failed its diagnostics ({diag['problems']}); {diag['advice']}"
        )
    return 0
