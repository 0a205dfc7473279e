"""Frequentist reproduction of the paper (section 2.2-2.3), number for number with R.

``run_frequentist(layers, changes)`` returns the four tables that ``freq`` writes:
stage rates (``lm``), C:N rate ratios, Kruskal-Wallis tests (``kruskal.test``) and turning points
(``segmented`` + ``davies.test``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_soil.errors import InputError

LAYERS_NEEDS = ("element", "layer", "vegetation", "stage", "years", "stock_mg_ha")
CHANGES_NEEDS = (
    "element",
    "layer",
    "vegetation",
    "stage",
    "years",
    "rate_mg_ha_yr",
    "map_mm",
    "mat_c",
)
NUMERIC = ("years", "stock_mg_ha", "rate_mg_ha_yr", "map_mm", "mat_c")


@dataclass
class FrequentistResult:
    """The four result tables (docs/data_format.md section 4 columns plus status/reason columns)."""

    rates: pd.DataFrame
    rate_ratios: pd.DataFrame
    kruskal: pd.DataFrame
    breakpoints: pd.DataFrame

    TABLES = ("rates", "rate_ratios", "kruskal", "breakpoints")

    def tables(self) -> dict[str, pd.DataFrame]:
        """name -> table, in the order freq writes them (``<name>.csv``)."""
        return {name: getattr(self, name) for name in self.TABLES}


def check_table(df: pd.DataFrame, needs: tuple[str, ...], name: str) -> pd.DataFrame:
    """Typed copy of a harmonized table; InputError naming the file, line and column when a
    column is missing or a value is not a number."""
    missing = [c for c in needs if c not in df.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {', '.join(missing)}")
    out = df.copy()
    for col in needs:
        if col in NUMERIC:
            num = pd.to_numeric(out[col], errors="coerce")
            bad = num.isna() & out[col].notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(
                    f"{name}: line {i + 2}: column {col}: value {out[col].iloc[i]!r} "
                    "is not a number"
                )
            out[col] = num.astype(float)
        else:
            out[col] = out[col].astype(object).where(out[col].notna(), None)
            out[col] = out[col].map(lambda v: v if v is None else str(v))
    return out


def _beside(table: pd.DataFrame, extra: pd.DataFrame, after: str) -> pd.DataFrame:
    """``table`` with the columns of ``extra`` (same index) inserted after column ``after``."""
    cols = list(table.columns)
    at = cols.index(after) + 1
    new = [c for c in extra.columns if c not in cols]
    joined = pd.concat([table, extra[new]], axis=1)
    return joined[cols[:at] + new + cols[at:]]


def run_frequentist(
    layers: pd.DataFrame,
    changes: pd.DataFrame,
    *,
    bootstrap_b: int | None = None,
    psi_bootstrap_b: int | None = None,
    seed: int | None = None,
) -> FrequentistResult:
    """All four frequentist tables from the harmonized ``layers`` and ``changes``.

    The R-equal numbers are unchanged; beside them stand the study cluster bootstrap intervals
    of the rates (``bootstrap_b`` resamples, default ``cluster.DEFAULT_B``) and of psi
    (``psi_bootstrap_b``, default ``cluster.DEFAULT_B_PSI``; 0 skips either), seeded by
    ``seed`` (default ``DEFAULT_SEED``).
    """
    # imported here, not at the top: breakpoints loads scipy.stats (about 1 s), and the CLI
    # reads cluster's defaults while it builds --help
    from bayes_soil.frequentist import cluster
    from bayes_soil.frequentist.breakpoints import breakpoint_table
    from bayes_soil.frequentist.drivers import driver_columns
    from bayes_soil.frequentist.kruskal import kruskal_table
    from bayes_soil.frequentist.rates import (
        breakpoint_rate_ratios,
        stage_rate_ratios,
        stage_rates,
    )

    layers = check_table(layers, LAYERS_NEEDS, "layers.csv")
    changes = check_table(changes, CHANGES_NEEDS, "changes.csv")
    if layers.empty:
        raise InputError("layers.csv: no layer rows; nothing can be computed")
    b = cluster.DEFAULT_B if bootstrap_b is None else int(bootstrap_b)
    b_psi = cluster.DEFAULT_B_PSI if psi_bootstrap_b is None else int(psi_bootstrap_b)
    seed = cluster.DEFAULT_SEED if seed is None else int(seed)
    rates = stage_rates(layers)
    rates = _beside(rates, cluster.rate_cluster_columns(layers, rates, b, seed), "ci_high")
    breakpoints = breakpoint_table(changes)
    psi_cols = cluster.breakpoint_cluster_columns(changes, breakpoints, b_psi, seed)
    breakpoints = _beside(breakpoints, psi_cols, "psi_se")
    breakpoints = _beside(breakpoints, driver_columns(changes, breakpoints), "reason")
    ratios = pd.concat(
        [stage_rate_ratios(rates, layers), breakpoint_rate_ratios(breakpoints)], ignore_index=True
    )
    return FrequentistResult(
        rates=rates,
        rate_ratios=ratios,
        kruskal=kruskal_table(layers, changes),
        breakpoints=breakpoints,
    )


__all__ = ["FrequentistResult", "run_frequentist"]


PROVENANCE_FILE = "freq_provenance.json"


def write_freq_tables(out, tables: dict[str, pd.DataFrame], harmonized) -> None:
    """Stage the freq CSVs and a provenance record (data hash, synthetic flag, stock method:
    ``fixed`` or ``esm``, see ``harmonize --stocks``) in ``out``.

    ``out`` is an :class:`bayes_soil.io.AtomicOutputs`; the record lets ``compare`` and
    ``report`` refuse tables made from other data than the fits.
    """
    for name, df in tables.items():
        out.write_csv(df, f"{name}.csv")
    out.write_json(
        {
            "data_sha256": harmonized.data_sha256,
            "synthetic": bool(harmonized.synthetic),
            "stock_method": getattr(harmonized, "stock_method", "fixed"),
        },
        PROVENANCE_FILE,
    )
