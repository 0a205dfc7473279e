"""climate_breakpoints as a user runs it: import to saved fit file, with truth where known.

One fresh process per call (so the wall time includes imports, data preparation, nutpie's
compilation, sampling, the numpy post-processing and the write):

    .venv/bin/python benchmarks/bench_climate.py --data out/harm --driver map_mm
    .venv/bin/python benchmarks/bench_climate.py --data /tmp/sim/harm --driver both \\
        --truth /tmp/sim/truth.json

``--data`` is a folder written by ``harmonize`` (its ``changes.csv``); without it the bundled
demo is harmonized first (not timed). Prints one JSON record and appends it to
``benchmarks/climate_results.jsonl``: wall and CPU seconds, the load average before and after
(on a shared machine, a load above the core count inflates the wall time), the diagnostics gate,
bulk and tail ESS of the sampled parameters and P(break), and per cell P(break) and the 90%
HDI of psi given a break (exact grid posterior) beside the true psi.
"""

from __future__ import annotations

import time

T0 = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=None, help="harmonized folder (default: the demo)")
    p.add_argument("--driver", default="map_mm", choices=["map_mm", "mat_c", "both"])
    p.add_argument("--element", default="both", choices=["C", "N", "both"])
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--truth", default=None, help="truth.json of the simulation")
    p.add_argument("--label", default="")
    p.add_argument("--out", default=None, help="fit file (default: a temporary file)")
    args = p.parse_args()
    load0 = Path("/proc/loadavg").read_text().strip()

    import numpy as np
    import pandas as pd

    if args.data is None:  # not timed: the demo's harmonized tables
        from bayes_soil.harmonize import load_harmonized

        t = time.time()
        changes = load_harmonized(None).changes
        harm_s = time.time() - t
    else:
        changes = pd.read_csv(Path(args.data) / "changes.csv")
        harm_s = 0.0
    import arviz_stats as azs

    from bayes_soil.fits import save_fit
    from bayes_soil.models import get_model
    from bayes_soil.posterior import grid_interval

    drivers = ["map_mm", "mat_c"] if args.driver == "both" else [args.driver]
    elements = ["C", "N"] if args.element == "both" else [args.element]
    m = get_model("climate_breakpoints", {"data": {"drivers": drivers, "elements": elements}})
    kw = {} if args.seed is None else {"seed": args.seed}
    dt = m.fit(
        changes,
        chains=args.chains,
        draws=args.draws,
        tune=args.tune,
        progressbar=False,
        **kw,
    )
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "fit.nc"
    save_fit(dt, out)
    wall = time.time() - T0 - harm_s
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    post = dt["posterior"].to_dataset()
    sampled = [v for v in m.diagnostic_vars if v in post]
    sub = post[sampled]
    ess_b = azs.ess(sub, method="bulk")
    ess_t = azs.ess(sub, method="tail")
    rhat = azs.rhat(sub)

    def worst(ds, fn):
        return {v: round(float(fn(ds[v].values)), 4) for v in ds.data_vars}

    diag = json.loads(dt.attrs["diagnostics"])
    truth = {}
    if args.truth:
        for r in json.loads(Path(args.truth).read_text())["turning_points"]:
            truth[(r["element"], r["driver"], r["layer"])] = r
    g = dt["psi_grid"].to_dataset()
    cells = {}
    for e in g["p_no_break"]["element"].values:
        for d in g["p_no_break"]["driver"].values:
            for lay in g["p_no_break"]["layer"].values:
                pb = 1 - float(g["p_no_break"].sel(element=e, driver=d, layer=lay))
                row = {"p_break": round(pb, 3)}
                gv = g[f"psi_prob_{d}"].sel(element=e, layer=lay)
                iv = grid_interval(gv[f"psi_{d}"].values, gv.values, 0.9)
                row["psi_hdi90_given_break"] = [
                    None if iv[k] is None else round(iv[k], 2)
                    for k in ("psi_hdi_low", "psi_hdi_high")
                ]
                t = truth.get((str(e), str(d), str(lay)))
                if t is not None:
                    row["true_psi"] = t["psi"] if t.get("has_break") else None
                    row["approximate"] = bool(t.get("approximate", False))
                    if t.get("has_break") and iv["psi_hdi_low"] is not None:
                        row["covered"] = bool(iv["psi_hdi_low"] <= t["psi"] <= iv["psi_hdi_high"])
                cells[f"{e}|{d}|{lay}"] = row
    if "p_break_pattern" in g:
        pat = g["p_break_pattern"]
        for e in pat["element"].values:
            for lay in pat["layer"].values:
                vals = pat.sel(element=e, layer=lay).values
                cells[f"{e}|pattern|{lay}"] = dict(
                    zip(
                        [str(x) for x in pat["pattern"].values],
                        np.round(vals, 3).tolist(),
                        strict=True,
                    )
                )
    summary = {}
    if truth:
        cov = [c["covered"] for c in cells.values() if "covered" in c and not c["approximate"]]
        false = [
            c["p_break"] > 0.5 for c in cells.values() if "true_psi" in c and c["true_psi"] is None
        ]
        summary = {
            "covered_exact_layers": f"{sum(cov)}/{len(cov)}",
            "no_break_cells_with_p_gt_0.5": f"{sum(false)}/{len(false)}",
        }
    rec = {
        "label": args.label,
        "data": args.data or "demo",
        "driver": args.driver,
        "elements": elements,
        "chains": args.chains,
        "draws": args.draws,
        "tune": args.tune,
        "n_obs": int(dt.attrs["n_obs"]),
        "wall_import_to_saved_s": round(wall, 1),
        "sampling_time_s": round(float(post.attrs.get("sampling_time", float("nan"))), 1),
        "cpu_user_s": round(cpu.ru_utime, 1),
        "cpu_sys_s": round(cpu.ru_stime, 1),
        "load_before": load0,
        "load_after": Path("/proc/loadavg").read_text().strip(),
        "verdict": diag["verdict"],
        "max_rhat": round(diag["max_rhat"], 4),
        "min_ess_bulk": round(diag["min_ess_bulk"], 0),
        "worst_rhat_var": diag.get("worst_rhat_var"),
        "worst_ess_var": diag.get("worst_ess_var"),
        "divergences": diag["divergences"],
        "steps_per_draw": round(diag["mean_steps_per_draw"], 1),
        "ess_bulk_min": worst(ess_b, np.nanmin),
        "ess_tail_min": worst(ess_t, np.nanmin),
        "rhat_max": worst(rhat, np.nanmax),
        "summary": summary,
        "cells": cells,
    }
    print(json.dumps(rec, indent=1))
    with open(HERE / "climate_results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
