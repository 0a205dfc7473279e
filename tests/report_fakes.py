"""Fake inputs for the compare/report tests: posteriors with the contract's names, dims and
attributes (built with ``arviz_base.from_dict``), frequentist tables with docs/data_format.md
section 4 columns, and a harmonized-data stand-in. The numbers are chosen so tests know the
answers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import xarray as xr
from arviz_base import from_dict

from bayes_soil import schema

CHAINS, DRAWS = 4, 250
LAYER3 = list(schema.LAYERS)


def true_rate(element: str, vegetation: str, stage: str, layer: str) -> float:
    """Known 'true' rate of each cell (Mg ha-1 yr-1): deterministic, sign varies by stage."""
    if layer == schema.TOTAL_LAYER:
        return sum(true_rate(element, vegetation, stage, lay) for lay in LAYER3)
    g = schema.STAGES.index(stage)
    li = LAYER3.index(layer)
    vi = schema.VEGETATION.index(vegetation)
    scale = 1.0 if element == "C" else 0.1
    return scale * (np.array([0.8, -1.2, 0.5, 0.3, 0.2])[g] * (1 + 0.5 * li) + 0.15 * (vi - 1))


def root_attrs(model: str, *, synthetic: bool, verdict: str, seed: int) -> dict:
    return {
        "bayes_soil_version": "0.1.0",
        "model": model,
        "spec": json.dumps({"name": model, "priors": {"beta_sd": 1.0}}),
        "sampler": json.dumps({"sampler": "nutpie", "chains": CHAINS, "draws": DRAWS, "tune": 500}),
        "data_sha256": "ab" * 32,
        "seed": seed,
        "created_at": "2026-11-25T12:00:00+00:00",
        "library_versions": json.dumps({"pymc": "6.4.0", "arviz": "1.3.0"}),
        "synthetic": int(synthetic),
        "diagnostics_verdict": verdict,
        "diagnostics": json.dumps(
            {
                "max_rhat": 1.004 if verdict == "pass" else 1.31,
                "min_ess_bulk": 812.0 if verdict == "pass" else 12.0,
                "divergences": 0 if verdict == "pass" else 37,
                "advice": "" if verdict == "pass" else "increase target_accept; reparameterise",
            }
        ),
    }


def fake_rates_fit(
    seed: int = 1,
    *,
    synthetic: bool = True,
    verdict: str = "pass",
    elements: tuple[str, ...] = schema.ELEMENTS,
    sd: float = 0.2,
    bad_chain: bool = False,
) -> xr.DataTree:
    """A hier_rates-like fit: rate, rate_mean, rate_ratio, years_to_gain, ppc, sample_stats."""
    rng = np.random.default_rng(seed)
    veg, stages = list(schema.VEGETATION), list(schema.STAGES)
    shape = (CHAINS, DRAWS, len(elements), len(veg), len(stages), len(LAYER3))
    truth = np.array(
        [
            [[[true_rate(e, v, s, la) for la in LAYER3] for s in stages] for v in veg]
            for e in elements
        ]
    )
    draws3 = truth + sd * (1 + 0.1 * truth**2) ** 0.5 * rng.standard_normal(shape)
    if bad_chain:
        draws3[0] += 3 * sd  # one chain stuck elsewhere: R-hat >> 1
    rate = np.concatenate([draws3, draws3.sum(-1, keepdims=True)], axis=-1)
    rate_mean = rate.mean(axis=3)
    layers = list(schema.ALL_LAYERS)
    post = {
        "rate": rate,
        "rate_mean": rate_mean,
        "sd_unit": np.abs(rng.normal(1, 0.05, (CHAINS, DRAWS))),
    }
    dims = {
        "rate": ["element", "vegetation", "stage", "layer"],
        "rate_mean": ["element", "stage", "layer"],
        "rate_ratio": ["vegetation", "stage", "layer"],
        "years_to_gain": ["element", "vegetation", "layer"],
        "y": ["obs_id"],
    }
    if set(elements) == set(schema.ELEMENTS):
        post["rate_ratio"] = rate[:, :, 0] / rate[:, :, 1]
    post["years_to_gain"] = rng.uniform(
        3, 25, (CHAINS, DRAWS, len(elements), len(veg), len(layers))
    )
    n_obs = 120
    y_obs = rng.standard_t(5, n_obs)
    ppc = rng.standard_t(5, (CHAINS, DRAWS, n_obs))
    dt = from_dict(
        {
            "posterior": post,
            "posterior_predictive": {"y": ppc},
            "observed_data": {"y": y_obs},
            "sample_stats": {
                "diverging": (
                    rng.uniform(size=(CHAINS, DRAWS)) < (0.04 if verdict == "fail" else 0)
                ),
                "tree_depth": np.full((CHAINS, DRAWS), 5),
            },
        },
        dims=dims,
        coords={
            "element": list(elements),
            "vegetation": veg,
            "stage": stages,
            "layer": layers,
            "obs_id": [f"row{i}" for i in range(n_obs)],
        },
    )
    dt.attrs.update(root_attrs("hier_rates", synthetic=synthetic, verdict=verdict, seed=seed))
    return dt


TRUE_PSI = {
    ("C", "map_mm"): 520.0,
    ("N", "map_mm"): 470.0,
    ("C", "mat_c"): 9.0,
    ("N", "mat_c"): 8.5,
}


def fake_breakpoints_fit(
    seed: int = 2, *, synthetic: bool = True, verdict: str = "pass"
) -> xr.DataTree:
    """A climate_breakpoints-like fit: psi, k1, k2, p_break (element, driver, layer), psi_diff,
    P(no break) in psi_grid."""
    rng = np.random.default_rng(seed)
    els, drivers, layers = list(schema.ELEMENTS), list(schema.DRIVERS), LAYER3
    shape = (CHAINS, DRAWS, len(els), len(drivers), len(layers))
    centre = np.array(
        [
            [
                [
                    TRUE_PSI[(e, d)] + (20 if d == "map_mm" else 0.3) * li
                    for li in range(len(layers))
                ]
                for d in drivers
            ]
            for e in els
        ]
    )
    spread = np.array(
        [[[30.0 if d == "map_mm" else 0.6 for _ in layers] for d in drivers] for _ in els]
    )
    psi = centre + spread * rng.standard_normal(shape)
    kscale = np.array(
        [[[0.004 if d == "map_mm" else 0.2 for _ in layers] for d in drivers] for _ in els]
    )
    k1 = -kscale + 0.6 * kscale * rng.standard_normal(shape)
    k2 = kscale + 0.6 * kscale * rng.standard_normal(shape)
    dt = from_dict(
        {
            "posterior": {"psi": psi, "k1": k1, "k2": k2, "psi_diff": psi[:, :, 0] - psi[:, :, 1]},
            "sample_stats": {"diverging": np.zeros((CHAINS, DRAWS), bool)},
        },
        dims={
            "psi": ["element", "driver", "layer"],
            "k1": ["element", "driver", "layer"],
            "k2": ["element", "driver", "layer"],
            "psi_diff": ["driver", "layer"],
        },
        coords={"element": els, "driver": drivers, "layer": layers},
    )
    dt.attrs.update(
        root_attrs("climate_breakpoints", synthetic=synthetic, verdict=verdict, seed=seed)
    )
    # P(turning point): MAP carries the break, MAT does not (as in the simulator's truth)
    p_break = np.where(np.array(drivers) == "map_mm", 0.97, 0.1)[None, :, None]
    p_break = np.broadcast_to(p_break, (len(els), len(drivers), len(layers)))
    dt["posterior"] = (
        dt["posterior"]
        .to_dataset()
        .assign(
            p_break=(
                ("chain", "draw", "element", "driver", "layer"),
                np.clip(p_break + 0.01 * rng.standard_normal(shape), 0, 1),
            )
        )
    )
    dt["psi_grid"] = xr.Dataset(
        {
            "p_no_break": (("element", "driver", "layer"), 1 - p_break),
        },
        coords={"element": els, "driver": drivers, "layer": layers},
    )
    return dt


MISSING_CELL = ("N", "100-200", "shrub", ">30")
NO_BREAK_REASON = (
    "Davies p = 0.2 >= 0.05: one straight line"  # the OLS side could not estimate this one
)


def fake_freq_tables(seed: int = 3) -> dict[str, pd.DataFrame]:
    """rates / rate_ratios / kruskal / breakpoints tables close to the fake truth."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in schema.ELEMENTS:
        for la in schema.ALL_LAYERS:
            for v in (schema.ALL_VEGETATION, *schema.VEGETATION):
                for s in schema.STAGES:
                    if v == schema.ALL_VEGETATION:
                        t = np.mean([true_rate(e, vv, s, la) for vv in schema.VEGETATION])
                    else:
                        t = true_rate(e, v, s, la)
                    se = 0.3 if e == "C" else 0.03
                    k = t + se * rng.standard_normal()
                    row = {
                        "element": e,
                        "layer": la,
                        "vegetation": v,
                        "stage": s,
                        "k": k,
                        "se": se,
                        "ci_low": k - 2.0 * se,
                        "ci_high": k + 2.0 * se,
                        "p": 0.01,
                        "n": 30,
                        "status": "ok",
                        "reason": "",
                    }
                    if (e, la, v, s) == MISSING_CELL:
                        row.update(
                            k=np.nan,
                            se=np.nan,
                            ci_low=np.nan,
                            ci_high=np.nan,
                            p=np.nan,
                            n=2,
                            status="skipped",
                            reason="too few rows (n=2 < 3)",
                        )
                    rows.append(row)
    rates = pd.DataFrame(rows)
    ratios = []
    for la in schema.ALL_LAYERS:
        for v in (schema.ALL_VEGETATION, *schema.VEGETATION):
            for s in schema.STAGES:
                kc = rates.query("element=='C' and layer==@la and vegetation==@v and stage==@s")
                kn = rates.query("element=='N' and layer==@la and vegetation==@v and stage==@s")
                ratios.append(
                    {
                        "kind": "stage",
                        "driver": None,
                        "layer": la,
                        "vegetation": v,
                        "stage": s,
                        "k_C": float(kc.k.iloc[0]),
                        "k_N": float(kn.k.iloc[0]),
                        "ratio": float(kc.k.iloc[0] / kn.k.iloc[0]),
                        "status": "ok",
                        "reason": "",
                    }
                )
    kruskal = pd.DataFrame(
        [
            {
                "element": e,
                "layer": la,
                "response": "stock_mg_ha",
                "factor": f,
                "H": 12.5 + i,
                "df": {"vegetation": 2, "stage": 4, "vegetation x stage groups": 14}[f],
                "p": 0.002 * (i + 1),
                "n": 400,
            }
            for i, (e, la, f) in enumerate(
                (e, la, f)
                for e in schema.ELEMENTS
                for la in schema.ALL_LAYERS
                for f in ("vegetation", "stage", "vegetation x stage groups")
            )
        ]
    )
    bps = []
    for e in schema.ELEMENTS:
        for d in schema.DRIVERS:
            for li, la in enumerate(schema.ALL_LAYERS):
                if la == schema.TOTAL_LAYER:
                    bps.append(
                        {
                            "element": e,
                            "layer": la,
                            "driver": d,
                            "psi": np.nan,
                            "psi_se": np.nan,
                            "k1": np.nan,
                            "k2": np.nan,
                            "davies_p": np.nan,
                            "n": 4,
                            "status": "too_few",
                            "reason": "only 4 rates; need at least 6",
                        }
                    )
                    continue
                c = TRUE_PSI[(e, d)] + (20 if d == "map_mm" else 0.3) * li
                se = 25.0 if d == "map_mm" else 0.5
                bps.append(
                    {
                        "element": e,
                        "layer": la,
                        "driver": d,
                        "psi": c + se * rng.standard_normal(),
                        "psi_se": se,
                        "k1": -0.004 if d == "map_mm" else -0.2,
                        "k2": 0.004 if d == "map_mm" else 0.2,
                        "davies_p": 0.001 * (li + 1),
                        "n": 300,
                        "status": "ok",
                        "reason": "",
                    }
                )
                # columns the freq module adds (the paper-style figure draws the line)
                x_min, x_max = (250.0, 750.0) if d == "map_mm" else (5.0, 13.0)
                bps[-1].update(
                    intercept=0.5, x_min=x_min, x_max=x_max, slope_linear=0.0, intercept_linear=0.2
                )
    bps = pd.DataFrame(bps)
    nb = (bps.element == "N") & (bps.layer == "100-200") & (bps.driver == "mat_c")
    bps.loc[nb, ["davies_p", "status", "reason"]] = [0.2, "no_break", NO_BREAK_REASON]
    return {
        "rates": rates,
        "rate_ratios": pd.DataFrame(ratios),
        "kruskal": kruskal,
        "breakpoints": bps,
    }


def fake_harmonized(seed: int = 4, *, synthetic: bool = True) -> SimpleNamespace:
    """A HarmonizeResult stand-in: layers, changes, rejected, report, synthetic, data_sha256."""
    rng = np.random.default_rng(seed)
    rows, changes = [], []
    for study in range(12):
        veg = schema.VEGETATION[study % 3]
        site = f"s{study // 2}"
        map_mm, mat_c = rng.uniform(300, 700), rng.uniform(6, 12)
        for years in (0, 4, 8, 15, 25, 35):
            stage = schema.stage_of([years])[0]
            for e in schema.ELEMENTS:
                total = 0.0
                for la in schema.ALL_LAYERS:
                    if la == schema.TOTAL_LAYER:
                        stock = total
                    else:
                        base = (30 if e == "C" else 3) * (1 + LAYER3.index(la))
                        stock = (
                            base
                            + 0.5 * true_rate(e, veg, stage, la) * years
                            + rng.normal(0, 0.05 * base)
                        )
                        total += stock
                    rows.append(
                        {
                            "profile_id": f"st{study}-y{years}",
                            "study_id": f"st{study}",
                            "site_id": site,
                            "lon": 110.0,
                            "lat": 37.0,
                            "map_mm": map_mm,
                            "mat_c": mat_c,
                            "vegetation": veg,
                            "origin": "planted",
                            "years": float(years),
                            "stage": stage,
                            "element": e,
                            "layer": la,
                            "stock_mg_ha": stock,
                            "bd_method": "ptf",
                            "coverage": 1.0,
                            "deep_imputed": False,
                            "obs_ids": f"row{study}",
                        }
                    )
    layers = pd.DataFrame(rows)
    ctrl = layers[layers.years == 0].set_index(["study_id", "element", "layer"])["stock_mg_ha"]
    for r in layers[layers.years > 0].itertuples():
        b = ctrl.loc[(r.study_id, r.element, r.layer)]
        changes.append(
            {
                "profile_id": r.profile_id,
                "study_id": r.study_id,
                "site_id": r.site_id,
                "map_mm": r.map_mm,
                "mat_c": r.mat_c,
                "vegetation": r.vegetation,
                "origin": r.origin,
                "years": r.years,
                "stage": r.stage,
                "element": r.element,
                "layer": r.layer,
                "baseline_stock_mg_ha": b,
                "delta_stock_mg_ha": r.stock_mg_ha - b,
                "rate_mg_ha_yr": (r.stock_mg_ha - b) / r.years,
            }
        )
    rejected = pd.DataFrame(
        {
            "obs_id": ["row900", "row901"],
            "line": [902, 903],
            "reason": ["no C or N quantity", "no C or N quantity"],
        }
    )
    # the structure of bayes_soil.harmonize's report (the parts the page reads)
    cv = {"rf": {"r2": 0.61, "rmse": 0.081, "n": 640}, "ptf": {"r2": 0.32, "rmse": 0.112, "n": 640}}
    report = {
        "rows": {
            "input": 1000,
            "used": 998,
            "rejected": 2,
            "rejected_by_reason": {"no C or N quantity": 2},
        },
        "bulk_density": {
            "method": "rf",
            "n_rows_measured": 640,
            "n_rows_needing_estimate": 360,
            "cv": {"kfold": {"n_splits": 10, **cv}, "group_kfold": {"n_splits": 10, **cv}},
        },
        "bd_method_counts": {"measured": 400, "rf": 176},
        "shallow_to_deep": {
            "model": "OLS on log stocks",
            "C": {
                "cv": {"r2": 0.74, "rmse": 6.3, "n": 50},
                "cv_grouped_by_study": {"r2": 0.70, "rmse": 6.9, "n": 50},
                "n_filled": 41,
            },
            "N": {
                "cv": {"r2": 0.52, "rmse": 0.6, "n": 50},
                "cv_grouped_by_study": {"r2": 0.45, "rmse": 0.7, "n": 50},
                "n_filled": 30,
            },
        },
        "changes": {
            "left_out": {
                "no year-0 control for study/site/vegetation/origin": {
                    "profiles": 7,
                    "layer_rows": 56,
                }
            }
        },
        "depth": {"coverage_rule": "a layer with coverage >= 0.95 is kept"},
        "settings": {"bd_method": "rf", "exclude_deep_imputed": False, "seed": 0},
        "synthetic": synthetic,
    }
    return SimpleNamespace(
        layers=layers,
        changes=pd.DataFrame(changes),
        rejected=rejected,
        report=report,
        synthetic=synthetic,
        data_sha256="ab" * 32,
    )


def fake_report_inputs(
    *, synthetic: bool = True, failed_breakpoints: bool = False, quick: bool = False
):
    """ReportInputs built from the fakes above (no sampling, no harmonizing)."""
    from bayes_soil.compare import compare
    from bayes_soil.report.html import FitRecord, ReportInputs

    rates_fit = fake_rates_fit(synthetic=synthetic)
    bp_fit = fake_breakpoints_fit(
        synthetic=synthetic, verdict="fail" if failed_breakpoints else "pass"
    )
    if quick:
        rates_fit.attrs["report_quick"] = 1
    freq = fake_freq_tables()
    fits = [
        FitRecord(rates_fit, "fits/hier_rates/fake.nc", "reused from the store"),
        FitRecord(bp_fit, "fits/climate_breakpoints/fake.nc", "reused from the store"),
    ]
    return ReportInputs(
        harmonized=fake_harmonized(synthetic=synthetic),
        freq=freq,
        fits=fits,
        comparison=compare([f.dt for f in fits], freq),
        data_label="fake harmonized data",
        quick=quick,
        log=["reused fake fits"],
    )
