"""Sampler speed of the Bayesian models on simulated data at several sizes.

For each model x data size (simulate(scale=...), harmonised first) x sampler, a fresh Python
process imports bayes_soil, builds, compiles and samples the model (4 chains x 1000 draws after
1000 tuning by default), so the wall time is what a user waits for ``fit`` (without reading and
harmonising the data, which is done once beforehand and reported separately). Reported: wall
time, sampling time, min bulk ESS, ESS per second of wall time, max R-hat, divergences and
mean leapfrog steps per draw. numpyro is skipped (and said so) when it is not installed.

    .venv/bin/python benchmarks/bench_models.py                 # full matrix (long)
    .venv/bin/python benchmarks/bench_models.py --scales 1 --samplers nutpie --cases hier_C

Results are appended to benchmarks/results.jsonl and the table is rewritten in
benchmarks/results.md. Timings depend on the machine and on what else runs on it: the script
records the CPU count and the load average before each run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bayes_soil.defaults import DEFAULT_SEED

HERE = Path(__file__).resolve().parent
CASES = {
    "hier_C": ("hier_rates", {"data": {"elements": ["C"]}}),
    "hier_CN": ("hier_rates", {"data": {"elements": ["C", "N"]}}),
    "climate_CN_both": (
        "climate_breakpoints",
        {
            "data": {"elements": ["C", "N"], "drivers": ["map_mm", "mat_c"]},
            "structure": {"compare_no_break": False},
        },
    ),
}

RUNNER = r"""
import json, sys, time
t0 = time.time()
import pandas as pd
from bayes_soil import fits
from bayes_soil.models import get_model
from bayes_soil.models.base import sample_model
args = json.loads(sys.argv[1])
table = pd.read_pickle(args["table"])
m = get_model(args["model"], args["spec"])
data = m.prepare(table)
model = m.build(data)
fs = m.settings(sampler=args["sampler"], draws=args["draws"], tune=args["tune"],
                chains=args["chains"], seed=args["seed"])
t1 = time.time()
dt = sample_model(model, fs, progressbar=False)
t2 = time.time()
diag = fits.check_diagnostics(dt)
post_attrs = dt["posterior"].attrs
print("RESULT " + json.dumps({
    "n_obs": data.n_obs, "wall_s": t2 - t0, "import_build_s": t1 - t0,
    "compile_and_sample_s": t2 - t1,
    "sampling_time_s": float(post_attrs.get("sampling_time", float("nan"))),
    "min_ess_bulk": diag["min_ess_bulk"], "max_rhat": diag["max_rhat"],
    "divergences": diag["divergences"], "steps_per_draw": diag["mean_steps_per_draw"],
}))
"""


def harmonised_tables(scale: float, workdir: Path) -> dict[str, Path]:
    """Simulate at ``scale``, harmonise, and pickle the layers and changes tables."""
    from bayes_soil.harmonize import harmonize
    from bayes_soil.simulate import simulate

    sim = simulate(scale=scale)
    t = time.time()
    res = harmonize(sim.observations)
    print(f"scale {scale}: harmonised in {time.time() - t:.1f} s", flush=True)
    out = {}
    for name in ("layers", "changes"):
        p = workdir / f"{name}_{scale}.pkl"
        getattr(res, name).to_pickle(p)
        out[name] = p
    return out


def run_case(case: str, table: Path, sampler: str, scale: float, a: argparse.Namespace) -> dict:
    model, spec = CASES[case]
    payload = dict(
        model=model,
        spec=spec,
        table=str(table),
        sampler=sampler,
        draws=a.draws,
        tune=a.tune,
        chains=a.chains,
        seed=a.seed,
    )
    load = os.getloadavg()[0]
    t = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(payload)], capture_output=True, text=True
    )
    wall = time.time() - t
    row = {
        "case": case,
        "model": model,
        "scale": scale,
        "sampler": sampler,
        "chains": a.chains,
        "draws": a.draws,
        "tune": a.tune,
        "cpus": os.cpu_count(),
        "load_before": round(load, 2),
        "process_wall_s": wall,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
    }
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return row
    row.update(json.loads(lines[-1][len("RESULT ") :]))
    row["ess_per_s"] = row["min_ess_bulk"] / row["process_wall_s"]
    return row


def write_table(rows: list[dict], path: Path) -> None:
    head = (
        "| case | scale | n rows | sampler | wall s | sampling s | min bulk ESS | ESS/s | "
        "max R-hat | divergences | steps/draw | load before |"
    )
    lines = [
        "# Model benchmarks",
        "",
        "Produced by `benchmarks/bench_models.py` (4 chains x 1000 draws after 1000 tuning unless "
        "stated). *wall* = a fresh process: import, build, compile and sample (the data are read "
        "and harmonised beforehand). *ESS/s* = min bulk ESS / wall. *load before* = 1-minute load "
        "average when the run started: on a shared machine, timings with a load above the core "
        "count are inflated.",
        "",
        head,
        "|" + "---|" * 12,
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['case']} | {r['scale']} | - | {r['sampler']} | "
                f"error: {r['error']} |" + " |" * 7
            )
            continue
        lines.append(
            f"| {r['case']} | {r['scale']} | {r['n_obs']} | {r['sampler']} | "
            f"{r['process_wall_s']:.0f} | {r['sampling_time_s']:.0f} | {r['min_ess_bulk']:.0f} | "
            f"{r['ess_per_s']:.1f} | {r['max_rhat']:.3f} | {r['divergences']} | "
            f"{r['steps_per_draw']:.0f} | {r['load_before']} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--scales", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    p.add_argument("--samplers", nargs="+", default=["nutpie", "pymc", "numpyro"])
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    a = p.parse_args()
    samplers = []
    for s in a.samplers:
        if s == "numpyro" and not (
            importlib.util.find_spec("numpyro") and importlib.util.find_spec("jax")
        ):
            print(
                "numpyro/jax not installed: numpyro skipped (pip install 'bayes_soil[numpyro]')",
                flush=True,
            )
            continue
        samplers.append(s)
    jsonl = HERE / "results.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        for scale in a.scales:
            tables = harmonised_tables(scale, Path(tmp))
            for case in a.cases:
                table = tables[(CASES[case][0] == "hier_rates" and "layers") or "changes"]
                for sampler in samplers:
                    row = run_case(case, table, sampler, scale, a)
                    print(json.dumps(row), flush=True)
                    with open(jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")
    rows = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()]
    write_table(rows, HERE / "results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
