"""Harmonisation (paper sections 2.1-2.2): observations -> standard-layer stocks and changes.

Public API: :func:`harmonize`, :func:`load_harmonised`, :class:`HarmonizeResult`,
:func:`write_harmonised`. The modules each do one step: ``soc`` (SOC from SOM),
``bulk_density`` (PTF, random forest, CV scores), ``stocks`` (interval stocks), ``depth``
(standard layers and the coverage rule), ``deep`` (shallow-to-deep fill), ``esm``
(equivalent soil mass, ``harmonize --stocks esm``), ``changes``
(changes against the year-0 controls), ``pipeline`` (the order and the row accounting).
"""

from bayes_soil.harmonize.pipeline import (
    HarmonizeResult,
    harmonize,
    load_harmonised,
    write_harmonised,
)

__all__ = ["HarmonizeResult", "harmonize", "load_harmonised", "write_harmonised"]
