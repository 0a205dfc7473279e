"""Stage-wise accumulation rates (paper Eq 6-7) and C:N rate ratios (Eq 8).

Why: the paper's rate of change in a restoration stage is the OLS slope of layer stock on years
since revegetation within that stage, ``lm(stock_mg_ha ~ years)``; the year-0 controls belong to
stage 0-5 by definition ([0, 5] years) and are kept, as Eq 6 regresses stock on years within the
stage. statsmodels gives the same numbers as R's ``lm`` (checked against R fixtures).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_soil.frequentist.fieller import INTERVAL as FIELLER_INTERVAL
from bayes_soil.frequentist.fieller import critical_value, fieller_interval, slope_covariance
from bayes_soil.schema import ALL_LAYERS, ALL_VEGETATION, ELEMENTS, STAGES, VEGETATION

MIN_N = 3
INTERVAL = "95% CI of the OLS slope (t distribution)"
BREAK_RATIO_INTERVAL = "none: the slopes before and after psi are conditional on psi"
RATE_COLUMNS = (
    "element",
    "layer",
    "vegetation",
    "stage",
    "k",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "n",
    "n_ages",
    "intercept",
    "status",
    "reason",
    "interval",
)
RATIO_COLUMNS = (
    "kind",
    "driver",
    "layer",
    "vegetation",
    "stage",
    "k_C",
    "k_N",
    "ratio",
    "ratio_ci95_low",
    "ratio_ci95_high",
    "ratio_interval",
    "cov_kc_kn",
    "status",
    "reason",
    "covariance_note",
)


def ols_slope(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Slope of y on x with SE, 95% CI and p, as ``summary(lm(y ~ x))`` and ``confint``."""
    import statsmodels.api as sm

    fit = sm.OLS(np.asarray(y, dtype=float), sm.add_constant(np.asarray(x, dtype=float))).fit()
    lo, hi = fit.conf_int(alpha=0.05)[1]
    return {
        "k": float(fit.params[1]),
        "se": float(fit.bse[1]),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p": float(fit.pvalues[1]),
        "intercept": float(fit.params[0]),
    }


def _cell_reason(n: int, n_ages: int) -> str | None:
    if n == 0:
        return "no observations in this cell"
    if n < MIN_N:
        return f"only {n} observation(s); a slope needs at least {MIN_N}"
    if n_ages < 2:
        return "all observations have the same age; no slope can be fitted"
    return None


def stage_rates(layers: pd.DataFrame) -> pd.DataFrame:
    """OLS rate k (Mg ha-1 yr-1) for every element x layer x vegetation (``all`` and each type
    present) x stage; cells with n < 3 or a single age are listed with status ``skipped`` and a
    reason, never as a bare NaN row."""
    rows: list[dict] = []
    present_veg = [v for v in VEGETATION if (layers["vegetation"] == v).any()]
    extra_veg = sorted(set(layers["vegetation"].dropna()) - set(VEGETATION))
    elements = [e for e in ELEMENTS if e in set(layers["element"])]
    ok = np.isfinite(layers["stock_mg_ha"]) & np.isfinite(layers["years"])
    data = layers.loc[ok, ["element", "layer", "vegetation", "stage", "years", "stock_mg_ha"]]
    by_veg = dict(list(data.groupby(["element", "layer", "vegetation", "stage"], sort=False)))
    pooled = dict(list(data.groupby(["element", "layer", "stage"], sort=False)))
    empty = data.iloc[:0]
    for element in ELEMENTS:
        if element not in elements:  # e.g. GROA has no N: say so instead of failing
            for layer in ALL_LAYERS:
                for stage in STAGES:
                    rows.append(
                        {
                            "element": element,
                            "layer": layer,
                            "stage": stage,
                            "vegetation": ALL_VEGETATION,
                            "n": 0,
                            "n_ages": 0,
                            "interval": INTERVAL,
                            "status": "absent",
                            "reason": f"no {element} data in the input",
                        }
                    )
            continue
        for layer in ALL_LAYERS:
            for veg in (ALL_VEGETATION, *present_veg, *extra_veg):
                for stage in STAGES:
                    if veg == ALL_VEGETATION:
                        cell = pooled.get((element, layer, stage), empty)
                    else:
                        cell = by_veg.get((element, layer, veg, stage), empty)
                    n, n_ages = len(cell), int(cell["years"].nunique())
                    row = {"element": element, "layer": layer, "vegetation": veg, "stage": stage}
                    row |= {"n": n, "n_ages": n_ages, "interval": INTERVAL}
                    reason = _cell_reason(n, n_ages)
                    if reason is None:
                        row |= ols_slope(cell["years"].to_numpy(), cell["stock_mg_ha"].to_numpy())
                        row |= {"status": "ok", "reason": ""}
                        if not np.isfinite(row["p"]):
                            row |= {"status": "degenerate", "reason": "perfect fit: p undefined"}
                    else:
                        row |= {"status": "skipped", "reason": reason}
                    rows.append(row)
    return pd.DataFrame(rows, columns=list(RATE_COLUMNS))


def _ratio(k_c: float, k_n: float) -> tuple[float, str, str]:
    if not (np.isfinite(k_c) and np.isfinite(k_n)):
        return np.nan, "skipped", "a rate is missing"
    if k_n == 0:
        return np.nan, "skipped", "k_N is exactly 0"
    return k_c / k_n, "ok", ""


def _cell_rows(layers: pd.DataFrame | None, element: str, key) -> pd.DataFrame | None:
    """The rows stage_rates regressed for one element x layer x vegetation x stage."""
    if layers is None:
        return None
    sel = (layers["element"] == element) & (layers["layer"] == key.layer)
    sel &= (layers["stage"] == key.stage) & np.isfinite(layers["stock_mg_ha"])
    sel &= np.isfinite(layers["years"])
    if key.vegetation != ALL_VEGETATION:
        sel &= layers["vegetation"] == key.vegetation
    return layers.loc[sel]


def _fieller_columns(c: pd.Series, n: pd.Series, cells) -> dict:
    """Fieller's interval of k_C / k_N and, where it says so, why the ratio is undefined."""
    if cells[0] is None:
        cov, how = 0.0, "C and N rows not given; covariance taken as 0"
    else:
        cov, how = slope_covariance(*cells)
    crit = critical_value(int(min(c["n"], n["n"])) - 2)
    lo, hi, bounded = fieller_interval(c["k"], n["k"], c["se"] ** 2, n["se"] ** 2, cov, crit)
    row = {"ratio_ci95_low": lo, "ratio_ci95_high": hi, "ratio_interval": FIELLER_INTERVAL}
    row |= {"cov_kc_kn": cov, "covariance_note": how}
    if n["ci_low"] <= 0 <= n["ci_high"]:
        return row | {"status": "undefined", "reason": "N rate's CI includes 0"}
    if not bounded:
        return row | {"status": "undefined", "reason": "Fieller's 95% interval is unbounded"}
    return row


def stage_rate_ratios(rates: pd.DataFrame, layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """k_C / k_N per layer x vegetation x stage (Eq 8) where both rates exist; a cell where
    only one element has a rate is listed with its reason (``absent`` when there are no N data
    at all, as for GROA).

    Beside the ratio: Fieller's 95% interval (``bayes_soil.frequentist.fieller``; the slopes'
    covariance from ``layers`` when given, else 0), and status ``undefined`` where the N rate's
    95% CI includes 0 or Fieller's interval is unbounded (the point ratio is then not to be
    read).
    """
    ok = rates[rates["status"] == "ok"]
    present = set(rates.loc[rates["status"] != "absent", "element"])
    rows = []
    keys = rates[["layer", "vegetation", "stage"]].drop_duplicates()
    for _, key in keys.iterrows():
        sel = (ok["layer"] == key.layer) & (ok["vegetation"] == key.vegetation)
        sel &= ok["stage"] == key.stage
        cell = ok[sel].set_index("element")["k"]
        k_c, k_n = float(cell.get("C", np.nan)), float(cell.get("N", np.nan))
        row = {"kind": "stage", "driver": "", **key.to_dict(), "k_C": k_c, "k_N": k_n}
        if "N" not in present:
            row |= {"ratio": np.nan, "status": "absent", "reason": "no N data in the input"}
        elif "C" not in present:
            row |= {"ratio": np.nan, "status": "absent", "reason": "no C data in the input"}
        else:
            ratio, status, reason = _ratio(k_c, k_n)
            if status != "ok":
                missing = [e for e, k in (("C", k_c), ("N", k_n)) if not np.isfinite(k)]
                reason = f"no fitted rate for {' and '.join(missing)}" if missing else reason
            row |= {"ratio": ratio, "status": status, "reason": reason}
            if status == "ok":
                els = ok[sel].set_index("element")
                cells = tuple(_cell_rows(layers, e, key) for e in ("C", "N"))
                row |= _fieller_columns(els.loc["C"], els.loc["N"], cells)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RATIO_COLUMNS))


def breakpoint_rate_ratios(breakpoints: pd.DataFrame) -> pd.DataFrame:
    """C:N ratio of the slopes before (k1) and after (k2) the turning point per driver x layer
    (paper section 2.2, last paragraph). Rows say when either element has no break."""
    rows = []
    has = set(breakpoints.loc[breakpoints["status"] != "absent", "element"])
    for (driver, layer), grp in breakpoints.groupby(["driver", "layer"], sort=False):
        g = grp.set_index("element")
        for kind, col in (("before_psi", "k1"), ("after_psi", "k2")):
            row = {"kind": kind, "driver": driver, "layer": layer, "vegetation": ALL_VEGETATION}
            row["stage"] = ""
            k_c = float(g[col].get("C", np.nan)) if "C" in g.index else np.nan
            k_n = float(g[col].get("N", np.nan)) if "N" in g.index else np.nan
            row |= {"k_C": k_c, "k_N": k_n}
            if "N" not in has or "C" not in has:
                missing = "N" if "N" not in has else "C"
                row |= {"ratio": np.nan, "status": "absent", "reason": f"no {missing} data"}
            else:
                ratio, status, reason = _ratio(k_c, k_n)
                st = {e: str(g["status"].get(e, "")) for e in ("C", "N")}
                if status == "ok" and any(s == "no_break" for s in st.values()):
                    no = [e for e, s in st.items() if s == "no_break"]
                    status = "no_break"
                    reason = f"Davies p >= 0.05 for {' and '.join(no)}: no turning point"
                elif status != "ok":
                    bad = [f"{e}: {g['reason'].get(e, '')}" for e in ("C", "N") if st[e] != "ok"]
                    reason = "; ".join(bad) or reason
                row |= {"ratio": ratio, "status": status, "reason": reason}
                row["ratio_interval"] = BREAK_RATIO_INTERVAL
            rows.append(row)
    return pd.DataFrame(rows, columns=list(RATIO_COLUMNS))
