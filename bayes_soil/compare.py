"""Posterior versus frequentist: the tables behind the ``compare`` command and the report.

For every element x layer x vegetation x stage the OLS slope (``rates.csv``) sits beside the
hierarchical posterior of the same rate; for every element x layer x driver the segmented
breakpoint (``breakpoints.csv``) sits beside the posterior turning point. The join is an outer
join: a cell the frequentist side could not estimate still shows what the partially pooled
model says about it, which is the point of the hierarchical model.

Vegetation ``all`` on the frequentist side (OLS over every vegetation type) is paired with the
posterior ``rate_mean`` (the equal-weight mean over vegetation types).

Overlapping intervals are not agreement (an OLS rate of -3.26 and a posterior mean of 0.03 with
wide intervals overlap). Each cell reports the difference posterior mean - frequentist estimate
with a 95% interval, difference +- 1.96 sqrt(se^2 + sd^2) (normal approximation; the OLS
estimate's sampling distribution and the posterior taken as independent, which errs towards a
wider interval since both use the same rows), and the rule a reader can check from the columns:
'disagree' where that interval excludes 0, 'agree' where it includes 0 and |difference| is at
most the practical threshold (``PRACTICAL_RATE``, ``PRACTICAL_PSI``), else 'inconclusive'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayes_soil import schema
from bayes_soil.errors import InputError
from bayes_soil.fits import load_fit
from bayes_soil.io import AtomicOutputs
from bayes_soil.posterior import (
    BREAK_CERTAIN,
    break_decision,
    breakpoints_table,
    psi_diff_table,
    rates_table,
)

FREQ_INTERVAL = "OLS 95% CI"
SEGMENTED_INTERVAL = "segmented psi +- 1.96 SE (Wald 95% CI)"
DEFAULT_HDI_PROB = 0.94

# The difference posterior mean - frequentist estimate has a 95% interval from a normal
# approximation with the two sides independent: difference +- 1.96 sqrt(se^2 + sd^2). Below
# these sizes a difference is too small to matter (Mg ha-1 yr-1 per element; mm / degC per driver).
DIFF_Z = 1.959964
PRACTICAL_RATE = {"C": 0.2, "N": 0.02}
PRACTICAL_PSI = {"map_mm": 50.0, "mat_c": 1.0}
DIFF_INTERVAL = "95% CI of the difference: difference +- 1.96 sqrt(se_freq^2 + sd_posterior^2)"

RATE_KEYS = ("element", "layer", "vegetation", "stage")
BREAK_KEYS = ("element", "layer", "driver")

# comparison.csv: the keys, the frequentist columns of rates.csv, the posterior columns of
# rates_posterior.csv (names kept from docs/data_format.md sections 4 and 5), then the comparison.
COMPARISON_COLUMNS = (
    *RATE_KEYS,
    "k",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "n",
    "freq_interval",
    "freq_status",
    "mean",
    "sd",
    "hdi_low",
    "hdi_high",
    "interval",
    "p_positive",
    "r_hat",
    "ess_bulk",
    "difference",
    "difference_low",
    "difference_high",
    "practical_threshold",
    "intervals_overlap",
    "pooled_mean",
    "shrinkage",
    "agree",
    "agreement",
    "agreement_rule",
    "fit_verdict",
)
BREAKPOINTS_COMPARISON_COLUMNS = (
    *BREAK_KEYS,
    "psi",
    "psi_se",
    "k1",
    "k2",
    "davies_p",
    "n",
    "freq_interval",
    "freq_status",
    "p_break",
    "decision",
    "carried_by",
    "psi_mean",
    "psi_sd",
    "psi_hdi_low",
    "psi_hdi_high",
    "interval",
    "k1_mean",
    "k2_mean",
    "p_k1_neg_k2_pos",
    "r_hat",
    "difference",
    "difference_low",
    "difference_high",
    "practical_threshold",
    "intervals_overlap",
    "break_agreement",
    "agree",
    "agreement",
    "agreement_rule",
    "fit_verdict",
)


def interval_name(hdi_prob: float) -> str:
    """The name every table and figure gives the posterior interval, e.g. '94% HDI'."""
    pct = hdi_prob * 100
    return f"{pct:.0f}% HDI" if abs(pct - round(pct)) < 1e-9 else f"{pct:g}% HDI"


def _threshold_text(thresholds: Mapping[str, float], unit: str) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in thresholds.items()) + f" {unit}"


def difference_rule(thresholds: Mapping[str, float], unit: str) -> str:
    """How 'agree', 'disagree' and 'inconclusive' follow from the difference and its interval."""
    return (
        "difference = posterior mean - frequentist estimate, with its "
        f"{DIFF_INTERVAL} (normal approximation, the two sides independent); 'disagree' where "
        "that interval excludes 0; 'agree' where it includes 0 and |difference| <= the practical "
        f"threshold ({_threshold_text(thresholds, unit)}); otherwise 'inconclusive' (the data "
        "cannot tell a difference that matters from none). Overlapping intervals alone are not "
        "agreement (intervals_overlap is shown for reference)"
    )


def rate_rule(hdi_prob: float = DEFAULT_HDI_PROB) -> str:
    """The agreement rule for rates, written into comparison.csv, its sidecar and the report."""
    return (
        difference_rule(PRACTICAL_RATE, "Mg ha-1 yr-1")
        + f"; intervals_overlap: the {FREQ_INTERVAL} and the posterior "
        f"{interval_name(hdi_prob)} overlap; 'posterior only' where OLS could not estimate "
        "the cell"
    )


def breakpoint_rule(hdi_prob: float = DEFAULT_HDI_PROB) -> str:
    """The agreement rule for turning points."""
    return (
        difference_rule(PRACTICAL_PSI, "(mm / degC)")
        + f" with psi_se and psi_sd given a turning point; intervals_overlap: the "
        f"{SEGMENTED_INTERVAL} and the posterior psi {interval_name(hdi_prob)} given a turning "
        "point overlap; 'posterior only' where segmented regression gave no estimate. "
        "break_agreement: segmented claims a break where Davies p < 0.05; the model where "
        f"P(break) >= {BREAK_CERTAIN:g}, none where P(break) <= {1 - BREAK_CERTAIN:g}, else the "
        "data do not decide"
    )


def difference_verdict(diff, low, high, threshold) -> pd.Series:
    """'agree' / 'disagree' / 'inconclusive' by :func:`difference_rule` (NA where missing)."""
    diff, low, high, threshold = (
        pd.to_numeric(pd.Series(v), errors="coerce").reset_index(drop=True)
        for v in (diff, low, high, threshold)
    )
    excludes = (low > 0) | (high < 0)
    small = diff.abs() <= threshold
    text = np.where(excludes, "disagree", np.where(small, "agree", "inconclusive"))
    ok = diff.notna() & low.notna() & high.notna() & threshold.notna()
    return pd.Series(text, dtype=object).where(ok, None)


def break_agreement(davies_p: float, p_break: float) -> str:
    """Do segmented regression (Davies p < 0.05) and the model (P(break)) agree on a break?"""
    model = break_decision(p_break) if _is_number(p_break) else ""
    if not _is_number(davies_p) or not np.isfinite(davies_p):
        return f"model: {model}" if model else ""
    seg = "break" if davies_p < 0.05 else "no break"
    if not model:
        return f"segmented only: {seg}"
    said = {"turning point": "break", "no turning point": "no break"}.get(model)
    if said is None:
        return f"segmented: {seg} (Davies p = {davies_p:.2g}); model: the data do not decide"
    if said == seg:
        return f"both: {seg}"
    return f"segmented: {seg} (Davies p = {davies_p:.2g}); model: {said} (P(break) = {p_break:.2f})"


def definitions(hdi_prob: float = DEFAULT_HDI_PROB) -> dict[str, str]:
    """What each derived column means (the sidecar comparison_rules.json and the report)."""
    name = interval_name(hdi_prob)
    return {
        "interval": f"posterior interval: {name} (highest density interval)",
        "freq_interval": FREQ_INTERVAL,
        "rate_agreement_rule": rate_rule(hdi_prob),
        "breakpoint_agreement_rule": breakpoint_rule(hdi_prob),
        "difference": (
            "posterior mean - frequentist estimate (rates: mean - k; psi: psi_mean - psi)"
        ),
        "difference_low": f"lower end of the {DIFF_INTERVAL}",
        "difference_high": f"upper end of the {DIFF_INTERVAL}",
        "practical_threshold": (
            "the size below which a difference does not matter: rates "
            f"{_threshold_text(PRACTICAL_RATE, 'Mg ha-1 yr-1')}; psi "
            f"{_threshold_text(PRACTICAL_PSI, '(mm / degC)')}"
        ),
        "intervals_overlap": (
            "the frequentist interval and the posterior interval overlap (not agreement: "
            "wide intervals overlap whatever the estimates)"
        ),
        "agreement": "agree / disagree / inconclusive by the agreement rule; or which side only",
        "agree": "True for 'agree', False for 'disagree', empty otherwise",
        "p_positive": "posterior probability that the rate is > 0",
        "pooled_mean": (
            "posterior mean of rate_mean (equal-weight mean over vegetation types) for the same "
            "element, layer and stage"
        ),
        "shrinkage": (
            "(k - mean) / (k - pooled_mean): the fraction of the distance between the OLS slope "
            "and the pooled mean that partial pooling removed; 0 = posterior at the OLS slope, "
            "1 = at the pooled mean, > 1 past it, < 0 further away than OLS; empty for "
            "vegetation 'all' and where OLS gave no slope"
        ),
        "p_k1_neg_k2_pos": (
            "posterior probability that k1 < 0 < k2 (loss before, gain after psi), given a "
            "turning point"
        ),
        "p_break": (
            "posterior probability of a turning point in this driver (exact, from the psi grid; "
            "prior 0.5)"
        ),
        "decision": (
            f"'turning point' where P(break) >= {BREAK_CERTAIN:g}, 'no turning point' where "
            f"P(break) <= {1 - BREAK_CERTAIN:g}, else 'the data do not decide'"
        ),
        "carried_by": (
            "with both drivers in one model: the most probable of no turning point, MAP only, "
            "MAT only, both, with its probability"
        ),
        "break_agreement": "segmented regression (Davies p < 0.05) vs the model's decision",
    }


@dataclass
class Comparison:
    """Result of :func:`compare`: the two tables and the rules that produced them."""

    rates: pd.DataFrame
    breakpoints: pd.DataFrame
    psi_diff: pd.DataFrame
    hdi_prob: float = DEFAULT_HDI_PROB
    fits: list[dict] = field(default_factory=list)

    @property
    def interval(self) -> str:
        return interval_name(self.hdi_prob)

    def rules(self) -> dict:
        """The sidecar written beside the CSVs."""
        return {
            "interval": self.interval,
            "hdi_prob": self.hdi_prob,
            "definitions": definitions(self.hdi_prob),
            "fits": self.fits,
        }


# --------------------------------------------------------------------------------------------
# posterior summaries


def posterior_rates(dt: xr.DataTree, hdi_prob: float = DEFAULT_HDI_PROB) -> pd.DataFrame:
    """Posterior rates (``bayes_soil.posterior.rates_table``: ``rate`` plus ``rate_mean`` as
    vegetation ``all``) with ``pooled_mean``, the posterior mean of ``rate_mean`` for the same
    element, stage and layer, against which shrinkage is measured."""
    if "rate" not in dt["posterior"].data_vars:
        raise InputError("fit has no posterior variable 'rate' (not a hier_rates fit)")
    out = rates_table(dt, hdi_prob).copy()
    for col in RATE_KEYS:
        out[col] = out[col].astype(str)
    pooled = out.loc[
        out["vegetation"] == schema.ALL_VEGETATION, ["element", "stage", "layer", "mean"]
    ]
    out = out.merge(
        pooled.rename(columns={"mean": "pooled_mean"}), on=["element", "stage", "layer"], how="left"
    )
    out["interval"] = interval_name(hdi_prob)
    return out[
        [
            *RATE_KEYS,
            "mean",
            "sd",
            "hdi_low",
            "hdi_high",
            "p_positive",
            "r_hat",
            "ess_bulk",
            "pooled_mean",
            "interval",
        ]
    ]


def parse_loo_attr(value: object) -> dict[tuple[str, str], float]:
    """Read the LOO attribute of a climate_breakpoints fit into {(element, driver): value}.

    Accepts a JSON object nested by element then driver ({"C": {"map_mm": 3.1}}) or flat with
    keys joined by one of ``:/|_,`` ({"C:map_mm": 3.1}); anything else gives an empty dict.
    """
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except (TypeError, ValueError):
            return {}
    if not isinstance(value, Mapping):
        return {}
    out: dict[tuple[str, str], float] = {}
    for key, val in value.items():
        if isinstance(val, Mapping):
            for driver, v in val.items():
                if _is_number(v):
                    out[(str(key), str(driver))] = float(v)
            continue
        if not _is_number(val):
            continue
        key = str(key)
        for el in schema.ELEMENTS:
            for drv in schema.DRIVERS:
                for sep in (":", "/", "|", "_", ","):
                    if key in (f"{el}{sep}{drv}", f"{drv}{sep}{el}"):
                        out[(el, drv)] = float(val)
    return out


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def posterior_breakpoints(dt: xr.DataTree, hdi_prob: float = DEFAULT_HDI_PROB) -> pd.DataFrame:
    """Posterior turning points per element x driver x layer
    (``bayes_soil.posterior.breakpoints_table``: P(break), its decision, and psi, k1, k2,
    P(k1 < 0 < k2) given a turning point)."""
    if "psi" not in dt["posterior"].data_vars:
        raise InputError("fit has no posterior variable 'psi' (not a climate_breakpoints fit)")
    out = breakpoints_table(dt, hdi_prob).copy()
    for col in ("k1_mean", "k2_mean", "p_k1_neg_k2_pos", "carried_by"):
        if col not in out:
            out[col] = np.nan
    for col in BREAK_KEYS:
        out[col] = out[col].astype(str)
    out["interval"] = interval_name(hdi_prob) + " given a turning point"
    return out[
        [
            *BREAK_KEYS,
            "p_break",
            "decision",
            "carried_by",
            "psi_mean",
            "psi_sd",
            "psi_hdi_low",
            "psi_hdi_high",
            "r_hat",
            "k1_mean",
            "k2_mean",
            "p_k1_neg_k2_pos",
            "interval",
        ]
    ]


def posterior_psi_diff(dt: xr.DataTree, hdi_prob: float = DEFAULT_HDI_PROB) -> pd.DataFrame:
    """psi_C - psi_N per driver x layer (``posterior.psi_diff_table``), when fitted."""
    if "psi_diff" not in dt["posterior"].data_vars:
        return pd.DataFrame()
    out = psi_diff_table(dt, hdi_prob)
    out["interval"] = interval_name(hdi_prob)
    return out


# --------------------------------------------------------------------------------------------
# the comparison


def fit_kind(dt: xr.DataTree) -> str:
    """'rates' for a fit with ``rate`` in its posterior, 'breakpoints' for one with ``psi``."""
    if "posterior" not in dt.children:
        raise InputError(f"fit {dt.attrs.get('model', '')!s} has no posterior group")
    names = set(dt["posterior"].to_dataset().data_vars)
    if "rate" in names:
        return "rates"
    if "psi" in names:
        return "breakpoints"
    raise InputError(
        f"fit of model {dt.attrs.get('model', '?')!s} has neither 'rate' nor 'psi' in its "
        "posterior: nothing to compare"
    )


def _overlap(a_low, a_high, b_low, b_high) -> pd.Series:
    """Boolean (nullable) whether [a_low, a_high] and [b_low, b_high] overlap."""
    a_low, a_high, b_low, b_high = (
        pd.to_numeric(x, errors="coerce") for x in (a_low, a_high, b_low, b_high)
    )
    ok = a_low.notna() & a_high.notna() & b_low.notna() & b_high.notna()
    res = (a_low <= b_high) & (b_low <= a_high)
    return res.astype("boolean").where(ok, pd.NA)


def _agreement_text(verdict: pd.Series, has_freq: pd.Series, has_post: pd.Series) -> pd.Series:
    text = verdict.fillna("inconclusive").to_numpy(dtype=object).copy()
    text[~np.asarray(has_post)] = "frequentist only"
    text[np.asarray(has_post) & ~np.asarray(has_freq)] = "posterior only"
    return pd.Series(text, index=verdict.index, dtype=object)


def _difference_columns(
    out: pd.DataFrame, est: str, se: str, mean: str, sd: str, threshold: pd.Series
) -> pd.DataFrame:
    """difference, its 95% interval, the practical threshold, the verdict and ``agree``."""
    out = out.copy()
    half = DIFF_Z * np.sqrt(out[se] ** 2 + pd.to_numeric(out[sd], errors="coerce") ** 2)
    out["difference"] = out[mean] - out[est]
    out["difference_low"] = out["difference"] - half
    out["difference_high"] = out["difference"] + half
    out["practical_threshold"] = threshold.to_numpy()
    verdict = difference_verdict(
        out["difference"], out["difference_low"], out["difference_high"], threshold
    )
    verdict.index = out.index
    out["_diff_verdict"] = verdict
    out["agree"] = verdict.map({"agree": True, "disagree": False}).astype("boolean")
    return out


def _join_freq(
    post: pd.DataFrame, freq: pd.DataFrame, keys, numeric: tuple[str, ...], file_name: str
) -> pd.DataFrame:
    """Outer-join posterior rows with a frequentist table on ``keys`` (both kept, flagged).

    ``numeric[0]`` is the estimate whose status is reported; duplicate keys are an input error.
    """
    freq = freq.copy()
    for col in keys:
        freq[col] = freq[col].astype(str)
        post[col] = post[col].astype(str)
    freq["freq_status"] = _freq_status(freq, numeric[0])
    freq["_freq_row"] = True
    keep = [*keys, *numeric, "freq_status", "_freq_row"]
    freq = freq[[c for c in keep if c in freq]]
    if freq.duplicated(list(keys)).any():
        dup = freq.loc[freq.duplicated(list(keys)), list(keys)].iloc[0].to_dict()
        raise InputError(f"{file_name}: duplicate rows for {dup}")
    out = post.merge(freq, on=list(keys), how="outer")
    for col in numeric:
        out[col] = pd.to_numeric(out.get(col), errors="coerce")
    return out


def _freq_status(df: pd.DataFrame, estimate: str) -> pd.Series:
    """'ok', or why the frequentist side has no estimate (its status/reason columns)."""
    has = pd.to_numeric(df.get(estimate), errors="coerce").notna()
    status = pd.Series("ok", index=df.index, dtype=object)
    reason = df["reason"] if "reason" in df else pd.Series(None, index=df.index, dtype=object)
    st = df["status"] if "status" in df else pd.Series(None, index=df.index, dtype=object)
    for i in df.index[has]:  # estimated, with a caveat (e.g. no_break: Davies p >= 0.05)
        s, r = st.loc[i], reason.loc[i]
        if isinstance(s, str) and s and s != "ok":
            status.loc[i] = f"{s}: {r}" if isinstance(r, str) and r else s
    for i in df.index[~has]:
        r = reason.loc[i]
        s = st.loc[i]
        if isinstance(r, str) and r:
            status.loc[i] = f"not estimated: {r}"
        elif isinstance(s, str) and s and s != "ok":
            status.loc[i] = f"not estimated: {s}"
        else:
            status.loc[i] = "not estimated"
    return status


def _order(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sort rows in the schema's order of elements, layers, vegetation, stages, drivers."""
    orders = {
        "element": list(schema.ELEMENTS),
        "layer": list(schema.ALL_LAYERS),
        "vegetation": [schema.ALL_VEGETATION, *schema.VEGETATION],
        "stage": list(schema.STAGES),
        "driver": list(schema.DRIVERS),
    }
    sort_cols = []
    tmp = df.copy()
    for key in keys:
        order = orders.get(key, [])
        known = {v: i for i, v in enumerate(order)}
        tmp[f"_o_{key}"] = tmp[key].map(lambda v, known=known: known.get(v, len(known)))
        sort_cols += [f"_o_{key}", key]
    tmp = tmp.sort_values(sort_cols, kind="stable")
    return tmp.drop(columns=[c for c in tmp.columns if c.startswith("_o_")]).reset_index(drop=True)


def compare_rates(
    freq_rates: pd.DataFrame | None,
    post_rates: pd.DataFrame,
    hdi_prob: float = DEFAULT_HDI_PROB,
    fit_verdict: str = "",
) -> pd.DataFrame:
    """Join OLS rates (rates.csv) with posterior rates (:func:`posterior_rates`).

    Every posterior cell appears; frequentist rows without a posterior cell are kept too
    (``agreement`` = 'frequentist only').
    """
    post = post_rates.copy()
    post["_post"] = True
    if freq_rates is None or len(freq_rates) == 0:
        freq = pd.DataFrame(columns=[*schema.RATES_COLUMNS])
    else:
        freq = freq_rates.copy()
    out = _join_freq(post, freq, RATE_KEYS, ("k", "se", "ci_low", "ci_high", "p", "n"), "rates.csv")
    has_post = out["_post"].fillna(False).astype(bool)
    has_freq = out["k"].notna() & out["ci_low"].notna()
    out.loc[~out["_freq_row"].fillna(False).astype(bool), "freq_status"] = (
        "not estimated: no row in rates.csv"
    )
    out["freq_interval"] = FREQ_INTERVAL
    out["interval"] = interval_name(hdi_prob)
    threshold = out["element"].map(PRACTICAL_RATE).astype(float)
    out = _difference_columns(out, "k", "se", "mean", "sd", threshold)
    denom = out["k"] - out["pooled_mean"]
    shrink = (out["k"] - out["mean"]) / denom.where(denom.abs() > 1e-12)
    is_all = out["vegetation"] == schema.ALL_VEGETATION
    out["shrinkage"] = shrink.where(~is_all)
    out["intervals_overlap"] = _overlap(
        out["ci_low"], out["ci_high"], out["hdi_low"], out["hdi_high"]
    )
    out["agreement"] = _agreement_text(out["_diff_verdict"], has_freq, has_post)
    out["agreement_rule"] = rate_rule(hdi_prob)
    out["fit_verdict"] = np.where(has_post, fit_verdict, "")
    return _order(out[list(COMPARISON_COLUMNS)], RATE_KEYS)


def compare_breakpoints(
    freq_breaks: pd.DataFrame | None,
    post_breaks: pd.DataFrame,
    hdi_prob: float = DEFAULT_HDI_PROB,
    fit_verdict: str = "",
) -> pd.DataFrame:
    """Join segmented breakpoints (breakpoints.csv) with posterior turning points."""
    post = post_breaks.copy()
    post["_post"] = True
    freq = (
        pd.DataFrame(columns=[*schema.BREAKPOINT_COLUMNS])
        if freq_breaks is None or len(freq_breaks) == 0
        else freq_breaks.copy()
    )
    numeric = ("psi", "psi_se", "k1", "k2", "davies_p", "n")
    out = _join_freq(post, freq, BREAK_KEYS, numeric, "breakpoints.csv")
    has_post = out["_post"].fillna(False).astype(bool)
    has_freq = out["psi"].notna() & out["psi_se"].notna()
    out.loc[~out["_freq_row"].fillna(False).astype(bool), "freq_status"] = (
        "not estimated: no row in breakpoints.csv"
    )
    out["freq_interval"] = SEGMENTED_INTERVAL
    out["interval"] = interval_name(hdi_prob)
    threshold = out["driver"].map(PRACTICAL_PSI).astype(float)
    out = _difference_columns(out, "psi", "psi_se", "psi_mean", "psi_sd", threshold)
    low = out["psi"] - 1.96 * out["psi_se"]
    high = out["psi"] + 1.96 * out["psi_se"]
    out["intervals_overlap"] = _overlap(low, high, out["psi_hdi_low"], out["psi_hdi_high"])
    out["agreement"] = _agreement_text(out["_diff_verdict"], has_freq, has_post)
    out["break_agreement"] = [
        break_agreement(dp, pb) for dp, pb in zip(out["davies_p"], out["p_break"], strict=True)
    ]
    out["agreement_rule"] = breakpoint_rule(hdi_prob)
    out["fit_verdict"] = np.where(has_post, fit_verdict, "")
    return _order(out[list(BREAKPOINTS_COMPARISON_COLUMNS)], BREAK_KEYS)


def _concat_unique(frames: list[pd.DataFrame], keys: Sequence[str], what: str) -> pd.DataFrame:
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(list(keys))
    if dup.any():
        cell = df.loc[dup, list(keys)].iloc[0].to_dict()
        raise InputError(f"two {what} fits both hold the cell {cell}: pass only one of them")
    return df


def compare(
    fits: Iterable[xr.DataTree],
    freq: Mapping[str, pd.DataFrame],
    hdi_prob: float = DEFAULT_HDI_PROB,
    fit_labels: Sequence[str] | None = None,
) -> Comparison:
    """Compare fits (hier_rates and/or climate_breakpoints) with the frequentist tables.

    Parameters
    ----------
    fits : fitted DataTrees; each is recognised by its posterior (``rate`` or ``psi``).
        Several fits of one kind (e.g. one per element) are stacked; overlapping cells are an
        error.
    freq : frequentist tables by name: ``rates`` and/or ``breakpoints`` (docs/data_format.md
        section 4).
    hdi_prob : probability mass of the posterior HDI (named in every output).
    fit_labels : how each fit is named in the provenance (e.g. its path).
    """
    if not 0 < hdi_prob < 1:
        raise InputError(f"--hdi-prob must be between 0 and 1, got {hdi_prob}")
    fits = list(fits)
    labels = (
        list(fit_labels) if fit_labels is not None else [f"fit {i + 1}" for i in range(len(fits))]
    )
    rate_parts, break_parts, diff_parts, info = [], [], [], []
    for dt, label in zip(fits, labels, strict=True):
        kind = fit_kind(dt)
        verdict = str(dt.attrs.get("diagnostics_verdict", "unknown"))
        info.append(
            {
                "fit": label,
                "kind": kind,
                "model": str(dt.attrs.get("model", "")),
                "data_sha256": str(dt.attrs.get("data_sha256", "")),
                "diagnostics_verdict": verdict,
                "synthetic": bool(int(dt.attrs.get("synthetic", 0) or 0)),
                # fits made before stock methods existed were all on fixed-depth stocks
                "stock_method": str(dt.attrs.get("stock_method", "fixed")),
                # the data on fixed depth: itself, or an ESM fit's fixed-depth twin
                "fixed_data_sha256": str(
                    dt.attrs.get("fixed_data_sha256", "")
                    if str(dt.attrs.get("stock_method", "fixed")) == "esm"
                    else dt.attrs.get("data_sha256", "")
                ),
            }
        )
        if kind == "rates":
            df = posterior_rates(dt, hdi_prob)
            df["_verdict"] = verdict
            rate_parts.append(df)
        else:
            df = posterior_breakpoints(dt, hdi_prob)
            df["_verdict"] = verdict
            break_parts.append(df)
            diff_parts.append(posterior_psi_diff(dt, hdi_prob))
    hashes = {i["data_sha256"] for i in info if i["data_sha256"]}
    if len(hashes) > 1:
        methods = {i["stock_method"] for i in info}
        twins = {i["fixed_data_sha256"] for i in info}
        same = " of the same observations" if len(twins) == 1 and "" not in twins else ""
        hint = (
            "; they differ in stock method ("
            + ", ".join(f"{i['fit']}={i['stock_method']}" for i in info)
            + f"): a fixed-depth fit and an ESM fit{same} are different datasets here; "
            "'compare FIXED.nc ESM.nc --stock-shift --out DIR' puts their posteriors side by "
            "side, and the report of the ESM data the frequentist answers on both"
            if len(methods) > 1
            else ""
        )
        raise InputError(
            "the fits were made from different datasets (data_sha256 differ: "
            + ", ".join(f"{i['fit']}={i['data_sha256'][:12]}" for i in info)
            + ")"
            + hint
        )
    rates = _compare_parts(
        rate_parts,
        RATE_KEYS,
        "hier_rates",
        freq.get("rates"),
        hdi_prob,
        compare_rates,
        COMPARISON_COLUMNS,
    )
    breaks = _compare_parts(
        break_parts,
        BREAK_KEYS,
        "climate_breakpoints",
        freq.get("breakpoints"),
        hdi_prob,
        compare_breakpoints,
        BREAKPOINTS_COMPARISON_COLUMNS,
    )
    diff_parts = [d for d in diff_parts if len(d)]
    psi_diff = pd.concat(diff_parts, ignore_index=True) if diff_parts else pd.DataFrame()
    return Comparison(
        rates=rates, breakpoints=breaks, psi_diff=psi_diff, hdi_prob=hdi_prob, fits=info
    )


def _compare_parts(parts, keys, what, freq_df, hdi_prob, func, columns) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=list(columns))
    post = _concat_unique(parts, keys, what)
    verdicts = set(post["_verdict"])
    verdict = verdicts.pop() if len(verdicts) == 1 else "/".join(sorted(verdicts))
    out = func(freq_df, post.drop(columns="_verdict"), hdi_prob, verdict)
    # per-cell verdict where several fits were stacked (e.g. one per element)
    if len(parts) > 1:
        v = post.set_index(list(keys))["_verdict"]
        idx = pd.MultiIndex.from_frame(out[list(keys)])
        out["fit_verdict"] = v.reindex(idx).fillna("").to_numpy()
    return out


# --------------------------------------------------------------------------------------------
# files


def read_freq_tables(freq_dir: str | Path, required: Sequence[str] = ("rates",)) -> dict:
    """Read the ``freq`` command's CSVs (rates, rate_ratios, kruskal, breakpoints) present.

    Raises InputError when the directory or a ``required`` table is missing, or a table lacks a
    column of docs/data_format.md section 4.
    """
    freq_dir = Path(freq_dir)
    if not freq_dir.is_dir():
        raise InputError(f"{freq_dir}: frequentist results directory not found (run 'freq')")
    expected = {
        "rates": schema.RATES_COLUMNS,
        "rate_ratios": schema.RATE_RATIO_COLUMNS,
        "kruskal": schema.KRUSKAL_COLUMNS,
        "breakpoints": schema.BREAKPOINT_COLUMNS,
    }
    out: dict[str, pd.DataFrame] = {}
    for name, cols in expected.items():
        path = freq_dir / f"{name}.csv"
        if not path.exists():
            if name in required:
                raise InputError(f"{path}: file not found (run 'freq --out {freq_dir}')")
            continue
        try:
            df = pd.read_csv(
                path,
                dtype={
                    "layer": str,
                    "stage": str,
                    "vegetation": str,
                    "element": str,
                    "driver": str,
                },
            )
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as CSV ({exc})") from exc
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
        out[name] = df
    return out


def freq_dir_sha256(freq_dir: str | Path) -> str | None:
    """The data hash a freq folder records about itself (any JSON holding ``data_sha256``)."""
    for p in sorted(Path(freq_dir).glob("*.json")):
        try:
            obj = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("data_sha256"), str):
            return obj["data_sha256"]
    return None


def stock_method_pair(fits: Sequence[xr.DataTree]) -> tuple[xr.DataTree, xr.DataTree]:
    """(fixed, esm): two fits of one model, on fixed-depth and ESM stocks of the same data.

    Same data means the ESM fit's ``fixed_data_sha256`` (its fixed-depth twin) is the fixed
    fit's ``data_sha256``; anything else is an InputError naming what differs.
    """
    if len(fits) != 2:
        raise InputError(f"--stock-shift takes two fits (fixed depth and ESM), got {len(fits)}")
    methods = [str(dt.attrs.get("stock_method", "fixed")) for dt in fits]
    by = dict(zip(methods, fits, strict=True))
    if set(by) != {"fixed", "esm"}:
        raise InputError(
            "--stock-shift needs one fit on fixed-depth stocks and one on ESM stocks (harmonize "
            f"--stocks esm); got stock methods {methods}"
        )
    fixed, esm = by["fixed"], by["esm"]
    if fit_kind(fixed) != fit_kind(esm):
        raise InputError("--stock-shift: the two fits are of different models")
    twin, sha = str(esm.attrs.get("fixed_data_sha256", "")), str(fixed.attrs.get("data_sha256"))
    if not twin or twin != sha:
        raise InputError(
            "--stock-shift: the ESM fit's fixed-depth twin "
            f"({twin[:12] or 'not recorded'}) is not the fixed fit's data ({sha[:12]}): fit "
            "both on the same observations (harmonize --stocks fixed and --stocks esm)"
        )
    return fixed, esm


def posterior_stock_shift(
    fits: Sequence[xr.DataTree], hdi_prob: float = DEFAULT_HDI_PROB
) -> pd.DataFrame:
    """How much the posterior answers move from fixed-depth to ESM stocks (issue 14).

    Rates (hier_rates): per element x layer x vegetation (incl. "all") x stage, both posterior
    means and HDIs, ``shift`` = ESM mean - fixed mean and ``shift_in_sd`` (in the fixed fit's
    posterior sd), ``sign_flip`` (posterior means of opposite sign) and ``p_positive`` of both.
    Turning points (climate_breakpoints): per element x driver x layer, P(break) of both and
    psi given a break with its shift. The two fits are separate posteriors of overlapping data,
    so the shift is descriptive, not a test.
    """
    fixed, esm = stock_method_pair(fits)
    label = interval_name(hdi_prob)
    if fit_kind(fixed) == "rates":
        keys = list(RATE_KEYS)
        cols = ["mean", "sd", "hdi_low", "hdi_high", "p_positive"]
        a = posterior_rates(fixed, hdi_prob)[keys + cols]
        b = posterior_rates(esm, hdi_prob)[keys + cols]
        m = a.merge(b, on=keys, suffixes=("_fixed", "_esm"), validate="one_to_one")
        m["shift"] = m["mean_esm"] - m["mean_fixed"]
        m["shift_in_sd"] = m["shift"] / m["sd_fixed"]
        m["sign_flip"] = np.sign(m["mean_esm"]) != np.sign(m["mean_fixed"])
    else:
        keys = list(BREAK_KEYS)
        cols = ["p_break", "decision", "psi_mean", "psi_sd", "psi_hdi_low", "psi_hdi_high"]
        a = posterior_breakpoints(fixed, hdi_prob)[keys + cols]
        b = posterior_breakpoints(esm, hdi_prob)[keys + cols]
        m = a.merge(b, on=keys, suffixes=("_fixed", "_esm"), validate="one_to_one")
        m["psi_shift"] = m["psi_mean_esm"] - m["psi_mean_fixed"]
        m["decision_changed"] = m["decision_esm"] != m["decision_fixed"]
    m["interval"] = label + (" given a turning point" if fit_kind(fixed) != "rates" else "")
    return m.reset_index(drop=True)


def write_comparison(result: Comparison, out_dir: str | Path) -> list[Path]:
    """Write comparison.csv, breakpoints_comparison.csv, psi_diff.csv and comparison_rules.json
    together (atomically)."""
    out_dir = Path(out_dir)
    names = ["comparison.csv", "breakpoints_comparison.csv", "comparison_rules.json"]
    with AtomicOutputs(out_dir) as out:
        out.write_csv(result.rates, "comparison.csv")
        out.write_csv(result.breakpoints, "breakpoints_comparison.csv")
        if len(result.psi_diff):
            out.write_csv(result.psi_diff, "psi_diff.csv")
            names.append("psi_diff.csv")
        out.write_json(result.rules(), "comparison_rules.json")
    return [out_dir / n for n in names]


def load_fits(paths: Sequence[str | Path]) -> list[xr.DataTree]:
    """Load fits with ``bayes_soil.fits.load_fit`` (which checks provenance)."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InputError(f"{path}: fit file not found")
        out.append(load_fit(path))
    return out
