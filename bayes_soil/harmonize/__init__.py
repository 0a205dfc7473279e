"""Harmonization (paper sections 2.1-2.2): observations -> standard-layer stocks and changes.

Public API: :func:`harmonize`, :func:`load_harmonized`, :class:`HarmonizeResult`,
:func:`write_harmonized`. The modules each do one step: ``soc`` (SOC from SOM),
``bulk_density`` (PTF, random forest, CV scores), ``stocks`` (interval stocks), ``depth``
(standard layers and the coverage rule), ``deep`` (shallow-to-deep fill), ``esm``
(equivalent soil mass, ``harmonize --stocks esm``), ``changes``
(changes against the year-0 controls), ``pipeline`` (the order and the row accounting).
"""

from bayes_soil.harmonize import pipeline as _pipeline
from bayes_soil.harmonize.pipeline import (
    HarmonizeResult,
    harmonize,
    load_harmonized,
    write_harmonized,
)

# deprecated British spellings, kept importable for old code (they warn when called)
load_harmonised = _pipeline.load_harmonised
write_harmonised = _pipeline.write_harmonised

__all__ = ["HarmonizeResult", "harmonize", "load_harmonized", "write_harmonized"]
