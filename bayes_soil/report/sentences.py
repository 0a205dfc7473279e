"""Results as sentences with their uncertainty, generated from the numbers.

"The 20-100 cm C rate in years 6-10 is negative with probability 0.97; 94% HDI -3.9 to -1.6
Mg ha-1 yr-1" rather than "significant / not significant". Every function takes one row of a
comparison table (a mapping) and returns plain text; the HTML layer escapes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from bayes_soil.posterior import break_decision

RATE_UNITS = "Mg ha-1 yr-1"
DRIVER_NAME = {"map_mm": "MAP", "mat_c": "MAT"}
DRIVER_UNITS = {"map_mm": "mm", "mat_c": "°C"}


def _finite(x: object) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def decimals_for(*values: float, sig: int = 2) -> int:
    """Decimals that show ``sig`` significant digits of the largest magnitude (0 to 4; at least
    1 below 10 so that '-3.9 to -1.6' keeps its decimal)."""
    mags = [abs(float(v)) for v in values if _finite(v) and float(v) != 0]
    if not mags:
        return 1
    top = max(mags)
    d = sig - 1 - math.floor(math.log10(top))
    return int(min(max(d, 0 if top >= 10 else 1), 4))


def fmt_num(x: float, decimals: int | None = None) -> str:
    """A number for prose: '-3.9', '0.053', '1234'; 'n/a' when missing. Minus sign as '-'."""
    if not _finite(x):
        return "n/a"
    x = float(x)
    if decimals is None:
        decimals = decimals_for(x) if abs(x) < 100 else 0
    text = f"{x:.{decimals}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return text


def fmt_interval(low: float, high: float) -> str:
    """'-3.9 to -1.6' with the same number of decimals at both ends."""
    if not (_finite(low) and _finite(high)):
        return f"{fmt_num(low)} to {fmt_num(high)}"
    low, high = float(low), float(high)
    if max(abs(low), abs(high)) >= 100:
        d = 0
    else:
        # enough decimals for either end, but no more than the width needs (3 digits)
        d = max(decimals_for(low), decimals_for(high))
        if high > low:
            d = min(d, max(decimals_for(high - low, sig=3), 1))
    return f"{fmt_num(low, d)} to {fmt_num(high, d)}"


def fmt_prob(p: float) -> str:
    """A probability to two decimals, '> 0.99' / '< 0.01' at the ends."""
    if not _finite(p):
        return "n/a"
    p = float(p)
    if p > 0.995:
        return "> 0.99"
    if p < 0.005:
        return "< 0.01"
    return f"{p:.2f}"


def eq(value: str) -> str:
    """' = 0.42', but ' > 0.99' (not ' = > 0.99') for a bound."""
    return f" {value}" if value[:1] in "<>" else f" = {value}"


def fmt_p_value(p: float) -> str:
    if not _finite(p):
        return "n/a"
    return "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def stage_phrase(stage: str) -> str:
    """'0-5' -> 'in years 0-5'; '>30' -> 'after year 30'."""
    stage = str(stage)
    if stage.startswith(">"):
        return f"after year {stage[1:]}"
    return f"in years {stage}"


def vegetation_phrase(vegetation: str) -> str:
    v = str(vegetation)
    return "" if v == "all" else f" under {v}"


def direction(p_positive: float) -> tuple[str, float]:
    """('positive', p) or ('negative', 1 - p): the more probable sign and its probability."""
    p = float(p_positive)
    return ("positive", p) if p >= 0.5 else ("negative", 1.0 - p)


def rate_sentence(row: Mapping) -> str:
    """One posterior rate with its uncertainty."""
    sign, prob = direction(row["p_positive"])
    return (
        f"The {row['layer']} cm {row['element']} rate {stage_phrase(row['stage'])}"
        f"{vegetation_phrase(row['vegetation'])} is {sign} with probability {fmt_prob(prob)}; "
        f"{row['interval']} {fmt_interval(row['hdi_low'], row['hdi_high'])} {RATE_UNITS} "
        f"(mean {fmt_num(row['mean'])})."
    )


def ols_clause(row: Mapping) -> str:
    """What OLS said about the same cell, or why it said nothing."""
    if not _finite(row.get("k")):
        status = str(row.get("freq_status") or "not estimated")
        status = status.removeprefix("not estimated: ").removeprefix("not estimated")
        why = f" ({status})" if status else ""
        return f"OLS could not estimate this cell{why}"
    n = row.get("n")
    n_text = f", n = {int(n)}" if _finite(n) else ""
    return (
        f"OLS slope {fmt_num(row['k'])} {RATE_UNITS}, 95% CI "
        f"{fmt_interval(row['ci_low'], row['ci_high'])}{n_text}"
    )


def comparison_sentence(row: Mapping) -> str:
    """A rate cell with both sides, for disagreements and cells only the posterior estimates."""
    head = rate_sentence(row).rstrip(".")
    tail = ols_clause(row)
    if str(row.get("agreement")) == "posterior only":
        tail += "; the hierarchical model still estimates it by partial pooling"
    elif str(row.get("agreement")) == "disagree":
        tail += "; the 95% interval of their difference excludes 0"
    return f"{head}. {tail[0].upper()}{tail[1:]}."


def break_phrase(p_break: float) -> str:
    """How P(turning point) reads: a turning point, none, or 'the data do not decide'."""
    if not _finite(p_break):
        return "no probability of a turning point is stored"
    p = f"(P(turning point){eq(fmt_prob(p_break))})"
    decision = break_decision(p_break)
    if decision == "the data do not decide":
        return f"{decision} {p}"
    return f"the model finds {'a ' if decision == 'turning point' else ''}{decision} {p}"


def turning_point_sentence(row: Mapping) -> str:
    """One cell: P(turning point), psi given a break, which driver carries it, segmented."""
    drv = str(row["driver"])
    name, units = DRIVER_NAME.get(drv, drv), DRIVER_UNITS.get(drv, "")
    pb = row.get("p_break")
    text = f"{row['element']} along {name} in {row['layer']} cm: {break_phrase(pb)}"
    if _finite(row.get("psi_hdi_low")) and _finite(pb) and pb > 0.2:
        span = fmt_interval(row["psi_hdi_low"], row["psi_hdi_high"])
        text += f"; given a turning point, psi lies in {span} {units} ({row['interval']})"
        if _finite(row.get("p_k1_neg_k2_pos")):
            text += f", P(k1 < 0 < k2){eq(fmt_prob(row['p_k1_neg_k2_pos']))}"
    carried = row.get("carried_by")
    if isinstance(carried, str) and carried:
        text += f"; with both drivers in one model the turning point is carried by {carried}"
    if _finite(row.get("psi")):
        se = row.get("psi_se")
        lo_hi = (
            f" ({fmt_interval(row['psi'] - 1.96 * se, row['psi'] + 1.96 * se)} {units})"
            if _finite(se)
            else ""
        )
        se_text = f" ± 1.96 x {fmt_num(se)}" if _finite(se) else ""
        text += (
            f". Segmented regression puts it at {fmt_num(row['psi'])}{se_text} {units}{lo_hi}, "
            f"Davies p{eq(fmt_p_value(row.get('davies_p')))}"
        )
        dp = row.get("davies_p")
        if _finite(dp) and dp < 0.05 and _finite(pb) and pb <= 0.2:
            text += " (segmented regression claims a break the model does not find)"
    else:
        status = str(row.get("freq_status") or "").removeprefix("not estimated: ")
        text += ". Segmented regression gave no breakpoint" + (f" ({status})" if status else "")
    return text + "."


def psi_diff_sentence(row: Mapping) -> str:
    """psi_C - psi_N for one driver and layer."""
    drv = str(row["driver"])
    name, units = DRIVER_NAME.get(drv, drv), DRIVER_UNITS.get(drv, "")
    p = row.get("p_c_above_n", row.get("p_positive"))
    both = row.get("p_both_break")
    given = f" in the draws where both have one (P{eq(fmt_prob(both))})" if _finite(both) else ""
    return (
        f"Along {name} in {row['layer']} cm the C turning point lies above the N one with "
        f"probability {fmt_prob(p)}{given} (psi_C - psi_N: {row['interval']} "
        f"{fmt_interval(row['hdi_low'], row['hdi_high'])} {units})."
    )


def break_prior_text(dt) -> str:
    """How the fit set the prior probability of a turning point (its psi_grid attributes)."""
    attrs = dt["psi_grid"].attrs if "psi_grid" in dt.children else {}
    mode = str(attrs.get("break_prior", "fixed"))
    if mode.startswith("shared"):
        a, b = (float(v) for v in attrs.get("break_share_beta", (1.0, 1.0)))
        shape = "uniform" if a == b == 1.0 else f"Beta({a:g}, {b:g})"
        return (
            "(the prior probability of a turning point is one unknown share per driver, "
            f"{shape} a priori and learnt from all of that driver's element x layer cells, so "
            "a driver that turns in no other cell makes a lone turning point less likely)"
        )
    return f"(prior probability {float(attrs.get('prior_p_break', 0.5)):g})"
