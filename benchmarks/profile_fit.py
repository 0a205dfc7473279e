"""Where the time of one ``fit`` goes: each phase of the fit path timed on its own.

Runs, in one fresh process, the steps ``SoilModel.fit`` runs for a model on the bundled
SYNTHETIC demo (harmonized beforehand, from the machine's cache): import, prepare, build,
nutpie compilation (and a second compilation in the same process: what a cache would save),
sampling alone, the sample call as ``fit`` makes it (compilation + sampling), the diagnostics
gate, pointwise log-likelihood / predictive draws, derived quantities and saving; the cost of
one logp + gradient evaluation is derived from the sampling time and the leapfrog steps.
Each run prints one JSON record and appends it to benchmarks/profile.jsonl with the load
average before and after.

    .venv/bin/python benchmarks/profile_fit.py --model hier_rates --element C
    .venv/bin/python benchmarks/profile_fit.py --model climate_breakpoints --element both
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hier_rates")
    p.add_argument("--element", default="C", choices=("C", "N", "both"))
    p.add_argument("--driver", default="both", choices=("map_mm", "mat_c", "both"))
    p.add_argument(
        "--plain-nutpie", action="store_true", help="without bayes_soil's loop-copy callbacks"
    )
    p.add_argument("--out", default=str(HERE / "profile.jsonl"))
    args = p.parse_args()
    load_before = os.getloadavg()
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    import numpy as np
    import nutpie

    from bayes_soil import fits
    from bayes_soil.harmonize import load_harmonized
    from bayes_soil.models import get_model
    from bayes_soil.models.base import sample_model
    from bayes_soil.models.nutpie_compile import use_fast_callbacks

    if not args.plain_nutpie:
        use_fast_callbacks()
    t["import"] = time.perf_counter() - t0
    harm = load_harmonized(None)
    elements = ["C", "N"] if args.element == "both" else [args.element]
    spec: dict = {"data": {"elements": elements}}
    if args.model == "climate_breakpoints":
        spec["data"]["drivers"] = ["map_mm", "mat_c"] if args.driver == "both" else [args.driver]
    m = get_model(args.model, spec)
    fs = m.settings()
    table, sha, syn = m.resolve_data(harm)

    def step(name, fn):
        s = time.perf_counter()
        out = fn()
        t[name] = time.perf_counter() - s
        return out

    data = step("prepare", lambda: m.prepare(table))
    model = step("build", lambda: m.build(data))
    compiled = step("compile (nutpie, numba)", lambda: nutpie.compile_pymc_model(model))
    step("compile again, same process", lambda: nutpie.compile_pymc_model(model))
    trace = step(
        "sampling (nutpie.sample)",
        lambda: nutpie.sample(
            compiled,
            draws=fs.draws,
            tune=fs.tune,
            chains=fs.chains,
            seed=fs.seed,
            progress_bar=False,
        ),
    )
    stats = trace["sample_stats"]
    steps = float(np.asarray(stats["n_steps"]).mean()) if "n_steps" in stats else float("nan")
    # a leapfrog step's cost (one logp + gradient): sampling time x cores over all the steps
    # (tuning steps counted at the sampling rate of steps per draw)
    n_grad = steps * fs.chains * (fs.draws + fs.tune)
    cores = min(fs.chains, os.cpu_count() or 1)
    t["logp+grad, one eval (ms, derived)"] = t["sampling (nutpie.sample)"] * cores / n_grad * 1e3
    dt = step("sample as fit does (compile + sampling)", lambda: sample_model(model, fs, False))
    step(
        "finish (gate, pointwise, derived, attrs)",
        lambda: m.finish(dt, model, data, fs, table, sha, syn),
    )
    path = Path("/tmp") / f"profile_{args.model}.nc"
    step("save", lambda: fits.save_fit(dt, path))
    t["total"] = time.perf_counter() - t0
    rec = {
        "model": args.model,
        "element": args.element,
        "driver": args.driver if args.model == "climate_breakpoints" else None,
        "n_obs": int(data.n_obs),
        "chains": fs.chains,
        "draws": fs.draws,
        "tune": fs.tune,
        "fast_callbacks": not args.plain_nutpie,
        "leapfrog_steps_per_draw": round(steps, 1),
        "seconds": {k: round(v, 3) for k, v in t.items()},
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(rec, indent=1))
    with open(args.out, "a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
