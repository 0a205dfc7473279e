"""Study-level cluster bootstrap intervals beside the R-equal stage rates and turning points.

Why: rows are not independent. Profiles of one study share a site, a design and a control; the
demo has 1,033 change rates from 41 climates, and its stage 6-10 has 204 rows from 5 distinct
ages. The R-equal intervals (``lm``'s t interval, segmented's psi +- 1.96 SE) treat every row as
independent and are too narrow. The cluster bootstrap resamples whole *studies* with
replacement, refits the same estimator on the rows of the drawn studies and takes the 2.5% and
97.5% percentiles of the refitted values (``ci95_cluster_low`` / ``ci95_cluster_high``).

- Rates: the OLS slope of stock on years, computed from per-study sums (a resample is a vector
  of study counts, so B resamples are one matrix product).
- psi: the exact global minimum of the profile RSS of the broken line (what ``segmented``
  returns after its restarts and polishing) over the resample's own admissible range; a
  resample whose best breakpoint leaves fewer than two distinct driver values on one side has
  no breakpoint (as in ``segmented``) and is left out, and the share left out is reported.

Every cell gets its own random stream from (seed, cell key), so a cell's interval does not
depend on which other cells exist. With few studies the percentile interval is itself too
narrow; cells with fewer than ``FEW_CLUSTERS`` studies say so.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bayes_soil.defaults import DEFAULT_SEED
from bayes_soil.frequentist.segmented import _Profile, psi_bounds

CLUSTER_COLUMN = "study_id"
DEFAULT_B = 999
DEFAULT_B_PSI = 199  # a psi refit costs ~1.4 ms per resample and cell on the demo
FEW_CLUSTERS = 10
LEVEL = 0.95
CLUSTER_COLUMNS = (
    "ci95_cluster_low",
    "ci95_cluster_high",
    "n_studies",
    "cluster_bootstrap_B",
    "cluster_interval",
    "cluster_note",
)
PSI_CLUSTER_COLUMNS = (
    "psi_ci95_cluster_low",
    "psi_ci95_cluster_high",
    "n_studies",
    "psi_cluster_bootstrap_B",
    "psi_cluster_interval",
    "psi_cluster_note",
)


def interval_label(B: int) -> str:
    """The name of the interval in every table and figure."""
    return f"95% CI, study cluster bootstrap (percentile, B={B})"


def cell_rng(seed: int, key: Sequence[object]) -> np.random.Generator:
    """A random stream for one cell, fixed by the seed and the cell's key."""
    tag = zlib.crc32("|".join(str(k) for k in key).encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag]))


def study_counts(n_studies: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n_studies) counts: how often each study is drawn in each resample."""
    return rng.multinomial(n_studies, np.full(n_studies, 1.0 / n_studies), size=B)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite values (type-7 quantiles); NaN when none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_slopes(
    x: np.ndarray, y: np.ndarray, cluster: np.ndarray, B: int, rng: np.random.Generator
) -> np.ndarray:
    """B OLS slopes of y on x, each on the rows of studies drawn with replacement.

    NaN where a resample has fewer than 3 rows or a single x value (no slope).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    codes, uniq = pd.factorize(np.asarray(cluster, dtype=object))
    xc, yc = x - x.mean(), y - y.mean()  # slope is shift-invariant; centring avoids cancellation
    k = len(uniq)
    sums = np.column_stack(
        [np.bincount(codes, minlength=k).astype(float)]
        + [np.bincount(codes, weights=w, minlength=k) for w in (xc, yc, xc * xc, xc * yc)]
    )
    t = study_counts(len(uniq), B, rng) @ sums
    n, sx, sy, sxx, sxy = t.T
    with np.errstate(divide="ignore", invalid="ignore"):
        vxx = sxx - sx * sx / n
        slope = (sxy - sx * sy / n) / vxx
    scale = max(float(np.max(xc * xc)), 1e-300)
    bad = (n < 3) | ~(vxx > 1e-10 * scale * np.maximum(n, 1))
    return np.where(bad, np.nan, slope)


def cluster_note(n_studies: int, n_dropped: int, B: int, what: str) -> str:
    """Why a cluster interval is missing or should be read with care ('' when fine)."""
    notes = []
    if n_studies < FEW_CLUSTERS:
        notes.append(
            f"only {n_studies} studies: a cluster bootstrap with fewer than {FEW_CLUSTERS} "
            "studies tends to be too narrow"
        )
    if n_dropped:
        notes.append(f"{n_dropped} of {B} resamples had no {what} and were left out")
    return "; ".join(notes)


def _interval_columns(
    bootstrap, x, y, cluster, B: int, rng: np.random.Generator, prefix: str, what: str
) -> dict:
    """The cluster-bootstrap columns of one cell: ``bootstrap`` gives B estimates (NaN where a
    resample cannot give one); the column names start with ``prefix``."""
    cluster = np.asarray(cluster, dtype=object)
    n_studies = int(pd.Series(cluster).nunique())
    row = {
        "n_studies": n_studies,
        f"{prefix}cluster_bootstrap_B": B,
        f"{prefix}cluster_interval": interval_label(B),
    }
    if n_studies < 2:
        return row | {f"{prefix}cluster_note": "one study: a study-level interval cannot be formed"}
    estimates = bootstrap(x, y, cluster, B, rng)
    lo, hi = percentile_interval(estimates)
    dropped = int((~np.isfinite(estimates)).sum())
    return row | {
        f"{prefix}ci95_cluster_low": lo,
        f"{prefix}ci95_cluster_high": hi,
        f"{prefix}cluster_note": cluster_note(n_studies, dropped, B, what),
    }


def slope_interval(
    x: np.ndarray, y: np.ndarray, cluster: np.ndarray, B: int, rng: np.random.Generator
) -> dict:
    """The cluster-bootstrap columns of one rate cell."""
    return _interval_columns(bootstrap_slopes, x, y, cluster, B, rng, "", "slope (one age only)")


def bootstrap_psi(
    x: np.ndarray, y: np.ndarray, cluster: np.ndarray, B: int, rng: np.random.Generator
) -> np.ndarray:
    """B breakpoints, each the global profile-RSS minimum on the rows of resampled studies.

    NaN where a resample has fewer than 6 rows or 4 distinct driver values, or where its best
    breakpoint leaves fewer than 2 distinct driver values on one side (``segmented``'s rule).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    codes, uniq = pd.factorize(np.asarray(cluster, dtype=object))
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    rows = [order[starts[i] : starts[i + 1]] for i in range(len(uniq))]
    out = np.full(B, np.nan)
    for b, counts in enumerate(study_counts(len(uniq), B, rng)):
        idx = np.concatenate([np.tile(rows[i], c) for i, c in enumerate(counts) if c])
        xb, yb = x[idx], y[idx]
        distinct = np.unique(xb)
        if xb.size < 6 or distinct.size < 4:
            continue
        bounds = psi_bounds(xb)
        if not bounds[1] > bounds[0]:
            continue
        psi, _ = _Profile(xb, yb).minimum(bounds)
        if min((distinct < psi).sum(), (distinct > psi).sum()) >= 2:
            out[b] = psi
    return out


def psi_interval(
    x: np.ndarray, y: np.ndarray, cluster: np.ndarray, B: int, rng: np.random.Generator
) -> dict:
    """The cluster-bootstrap columns of one turning-point cell."""
    return _interval_columns(bootstrap_psi, x, y, cluster, B, rng, "psi_", "breakpoint")


def rate_cluster_columns(
    layers: pd.DataFrame, rates: pd.DataFrame, B: int = DEFAULT_B, seed: int = DEFAULT_SEED
) -> pd.DataFrame:
    """The cluster-bootstrap columns for every row of ``rates`` (same index), from the same
    rows the OLS used; empty where OLS gave no slope or B is 0."""
    out = pd.DataFrame(index=rates.index, columns=list(CLUSTER_COLUMNS), dtype=object)
    if B <= 0:
        out["cluster_note"] = "cluster bootstrap not run (B = 0)"
        return out
    if CLUSTER_COLUMN not in layers.columns:
        out["cluster_note"] = f"no {CLUSTER_COLUMN} column: clusters unknown"
        return out
    ok = np.isfinite(layers["stock_mg_ha"]) & np.isfinite(layers["years"])
    data = layers.loc[ok]
    pooled = dict(list(data.groupby(["element", "layer", "stage"], sort=False)))
    by_veg = dict(list(data.groupby(["element", "layer", "vegetation", "stage"], sort=False)))
    for i, r in rates.iterrows():
        if r["status"] != "ok":
            continue
        key = (r["element"], r["layer"], r["vegetation"], r["stage"])
        cell = (
            pooled[(r["element"], r["layer"], r["stage"])]
            if r["vegetation"] == "all"
            else by_veg[key]
        )
        vals = slope_interval(
            cell["years"].to_numpy(),
            cell["stock_mg_ha"].to_numpy(),
            cell[CLUSTER_COLUMN].astype(str).to_numpy(),
            B,
            cell_rng(seed, key),
        )
        for col, v in vals.items():
            out.at[i, col] = v
    return out


def breakpoint_cluster_columns(
    changes: pd.DataFrame,
    breakpoints: pd.DataFrame,
    B: int = DEFAULT_B_PSI,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """psi's cluster-bootstrap columns for every row of ``breakpoints`` that has a psi."""
    out = pd.DataFrame(index=breakpoints.index, columns=list(PSI_CLUSTER_COLUMNS), dtype=object)
    if B <= 0:
        out["psi_cluster_note"] = "cluster bootstrap not run (B = 0)"
        return out
    if CLUSTER_COLUMN not in changes.columns:
        out["psi_cluster_note"] = f"no {CLUSTER_COLUMN} column: clusters unknown"
        return out
    for i, r in breakpoints.iterrows():
        if not np.isfinite(pd.to_numeric(r.get("psi"), errors="coerce")):
            continue
        sel = (changes["element"] == r["element"]) & (changes["layer"] == r["layer"])
        cell = changes.loc[sel]
        x = cell[r["driver"]].to_numpy(float)
        y = cell["rate_mg_ha_yr"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        key = (r["element"], r["layer"], r["driver"])
        vals = psi_interval(
            x[ok], y[ok], cell[CLUSTER_COLUMN].astype(str).to_numpy()[ok], B, cell_rng(seed, key)
        )
        for col, v in vals.items():
            out.at[i, col] = v
    return out


__all__ = [
    "CLUSTER_COLUMN",
    "CLUSTER_COLUMNS",
    "DEFAULT_B",
    "DEFAULT_B_PSI",
    "DEFAULT_SEED",
    "PSI_CLUSTER_COLUMNS",
    "bootstrap_psi",
    "bootstrap_slopes",
    "breakpoint_cluster_columns",
    "cell_rng",
    "interval_label",
    "percentile_interval",
    "psi_interval",
    "rate_cluster_columns",
    "slope_interval",
]
