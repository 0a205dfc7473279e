"""How far stocks on an estimated bulk density are from the truth, against what harmonize says.

For simulated datasets (seeds, ``--bd-error``), harmonize as the command does (``--bd-method
auto``), join the layer stocks to the simulator's true layer stocks and split the relative error
of the stocks on estimated BD into a study mean and a within-study part; beside it the relative
predictive sd harmonize derived from its cross-validation (``predictive_sd_relative``), which
the Bayesian models use. Rows on measured BD show the simulator's own noise for comparison.

    .venv/bin/python benchmarks/bd_error_check.py --seeds 101 102 --bd-error 1 6
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import pandas as pd

KEYS = ["study_id", "site_id", "plot_id", "vegetation", "origin", "years", "element", "layer"]


def error_split(rel: pd.Series, study: pd.Series) -> dict:
    """sd of the study means and of the deviations from them (plain moments)."""
    means = rel.groupby(study).transform("mean")
    return {
        "n": len(rel),
        "study_mean_sd": float(rel.groupby(study).mean().std()),
        "within_sd": float((rel - means).std()),
        "mean": float(rel.mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[101, 102])
    p.add_argument("--bd-error", type=float, nargs="+", default=[1.0, 6.0])
    p.add_argument("--scale", type=float, default=0.5)
    args = p.parse_args()

    from bayes_soil.harmonize import harmonize
    from bayes_soil.simulate import simulate, write_simulation
    from bayes_soil.validate import load_observations

    rows = []
    by_layer = []
    for f in args.bd_error:
        for seed in args.seeds:
            sim = simulate(seed=seed, scale=args.scale, bd_error=f)
            with tempfile.TemporaryDirectory() as d:
                write_simulation(sim, d)
                obs = load_observations(os.path.join(d, "observations.csv"))
            res = harmonize(obs, bd_method="auto", score_bd=False)
            m = res.layers.merge(
                sim.true_layers, on=KEYS, suffixes=("", "_true"), validate="one_to_one"
            )
            m = m[~m["deep_imputed"] & (m["layer"] != "0-200") & (m["coverage"] >= 0.999)]
            rel = m["stock_mg_ha"] / m["stock_mg_ha_true"] - 1.0
            sd = res.report["bulk_density"]["predictive_sd_relative"]
            for method in ("rf", "ptf", "measured"):
                sel = m["bd_method"].eq(method)
                if sel.sum() < 10:
                    continue
                rows.append(
                    {
                        "bd_error": f,
                        "seed": seed,
                        "stocks on": method,
                        **error_split(rel[sel], m.loc[sel, "study_id"]),
                        "harmonize: study sd": sd["study"] if method != "measured" else np.nan,
                        "harmonize: row sd": sd["row"] if method != "measured" else np.nan,
                    }
                )
            # does a layer built from several rows average their errors? (the row part is
            # carried per layer as if from one row)
            est = m.assign(rel=rel, n_rows=m["obs_ids"].str.count(";") + 1)
            est = est[est["bd_method"].isin(["rf", "ptf"])]
            # deviation from the study's mean over all its layers (the study part is one offset
            # per study, as harmonize models it), not error_split's per-group mean
            est = est.assign(dev=est["rel"] - est.groupby("study_id")["rel"].transform("mean"))
            for layer, g in est.groupby("layer"):
                by_layer.append(
                    {
                        "bd_error": f,
                        "seed": seed,
                        "layer": layer,
                        "n": len(g),
                        "input rows per layer": g["n_rows"].mean(),
                        "within_sd": g["dev"].std(),
                        "harmonize: row sd": g["stock_rel_sd_bd_row"].mean(),
                    }
                )
    _print(pd.DataFrame(rows).round(3))
    print()
    _print(pd.DataFrame(by_layer).round(3))


def _print(table: pd.DataFrame) -> None:
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for r in table.itertuples(index=False):
        print("| " + " | ".join("" if pd.isna(v) else str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
