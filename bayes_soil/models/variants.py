"""Named model variants: the project's ``models/`` folder of TOML specs a user writes.

The packaged models (``bayes_soil/models/<name>.toml`` beside their code) install with the
package and hold every default. A variant is a small file in the project's ``models/`` folder
that names its base model and overrides entries of that model's spec, e.g.
``models/hier_rates_origin_contrast.toml``::

    model = "hier_rates"
    description = "planted vs natural: rates differ by a pooled contrast"

    [structure]
    origin = "contrast"

``fit --model NAME`` looks for NAME among the packaged models first, then for
``./models/NAME.toml`` (relative to the working directory); ``models`` lists both. Every key
of a variant other than ``model`` is checked against the base model's spec like a ``--spec``
file (an unknown key is an error naming it and the valid names).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bayes_soil.errors import InputError
from bayes_soil.models.base import REGISTRY

#: the project's folder of variants, relative to the working directory
VARIANTS_DIR = Path("models")


@dataclass(frozen=True)
class Variant:
    """One variant file: its name (the file's stem), base model and spec overrides."""

    name: str
    path: Path
    base: str
    spec: dict = field(default_factory=dict)  # overrides of the base model's spec

    @property
    def description(self) -> str:
        """The variant's own description, else its base model's."""
        return str(self.spec.get("description") or REGISTRY[self.base].description())


def read_variant(path: str | Path) -> Variant:
    """Read and check one variant file; every problem is an InputError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            spec = tomllib.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: model variant file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    base = spec.pop("model", None)
    if base is None:
        raise InputError(
            f'{path}: a model variant names its base model, e.g. model = "hier_rates" '
            f"(packaged models: {', '.join(sorted(REGISTRY))})"
        )
    if base not in REGISTRY:
        raise InputError(
            f"{path}: unknown base model {base!r}; packaged models: {', '.join(sorted(REGISTRY))}"
        )
    REGISTRY[base].check_spec(spec, source=str(path))
    return Variant(name=path.stem, path=path, base=base, spec=spec)


def variant_paths(folder: str | Path | None = None) -> list[Path]:
    """The ``*.toml`` files of the variants folder (none when it does not exist)."""
    folder = Path(VARIANTS_DIR if folder is None else folder)
    return sorted(folder.glob("*.toml")) if folder.is_dir() else []


def list_variants(folder: str | Path | None = None) -> list[Variant]:
    """Every variant in ``folder`` (default ``./models``), read and checked."""
    return [read_variant(p) for p in variant_paths(folder)]


def resolve_model(name: str, folder: str | Path | None = None) -> tuple[str, Variant | None]:
    """``(base model name, variant or None)`` for ``--model NAME``.

    Search order: the packaged models, then ``<folder>/NAME.toml`` (default ``./models``).
    """
    if name in REGISTRY:
        return name, None
    folder = Path(VARIANTS_DIR if folder is None else folder)
    path = folder / f"{name}.toml"
    if path.is_file():
        variant = read_variant(path)
        return variant.base, variant
    found = [p.stem for p in variant_paths(folder)]
    where = f"variants in {folder}/: {', '.join(found)}" if found else f"no variants in {folder}/"
    raise InputError(
        f"unknown model {name!r}; packaged models: {', '.join(sorted(REGISTRY))}; {where}"
    )
