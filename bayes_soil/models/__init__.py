"""Bayesian models: one class per model, registered by name, each with a TOML spec beside it.

Importing this package is cheap (PyMC is imported inside the methods that need it), so the CLI
can list the registered names for ``--model`` without paying for PyMC.
"""

from __future__ import annotations

from bayes_soil.models.base import REGISTRY, ModelData, SoilModel, get_model, register

# importing the model modules fills the registry
from bayes_soil.models import climate_breakpoints, hier_rates  # noqa: F401  isort: skip

__all__ = ["REGISTRY", "ModelData", "SoilModel", "get_model", "register"]
