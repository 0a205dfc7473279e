"""One module per CLI subcommand: HELP, EXAMPLE, add_arguments(parser), run(args) -> int."""

from __future__ import annotations

import argparse

DATA_HELP = "input observations (CSV, XLSX or Parquet); default: the bundled SYNTHETIC demo dataset"


def add_data_argument(parser: argparse.ArgumentParser, help: str = DATA_HELP) -> None:
    """The shared ``--data`` flag; None means the bundled demo."""
    parser.add_argument("--data", default=None, metavar="FILE", help=help)


def read_spec_file(path: str | None, model: str) -> dict:
    """The user's ``--spec`` TOML (``{}`` without one), its keys checked against ``model``'s.

    Every problem is an InputError naming the file: missing, a directory, not TOML, or a key
    the model's spec does not have (with the valid names).
    """
    import tomllib

    from bayes_soil.errors import InputError
    from bayes_soil.models import REGISTRY

    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: spec file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, expected a TOML spec file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    REGISTRY[model].check_spec(spec, source=path)
    return spec
