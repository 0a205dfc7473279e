"""Sampler speed of the Bayesian models on simulated data at several sizes.

For each model x data size (simulate(scale=...), harmonized first) x sampler, a fresh Python
process imports bayes_soil and fits the model as ``fit`` does (prepare, build, compile, 4
chains x 1000 draws after 1000 tuning by default, pointwise groups, derived quantities, save),
so the wall time is what a user waits for ``fit`` (without reading and harmonizing the data,
which is done once beforehand and reported separately). Reported: wall
time, sampling time, min bulk ESS, ESS per second of wall time, max R-hat, divergences and
mean leapfrog steps per draw. numpyro is skipped (and said so) when it is not installed.

    .venv/bin/python benchmarks/bench_models.py                 # full matrix (long)
    .venv/bin/python benchmarks/bench_models.py --scales 1 --samplers nutpie --cases hier_C

Results are appended to benchmarks/results.jsonl and the table is rewritten in the generated
block of benchmarks/results.md (notes around it are kept). Timings depend on the machine and on
what else runs on it: the script records the CPU count and the load average before each run.
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
    "climate_CN_map": (
        "climate_breakpoints",
        {"data": {"elements": ["C", "N"], "drivers": ["map_mm"]}},
    ),
    "climate_CN_both": (
        "climate_breakpoints",
        {"data": {"elements": ["C", "N"], "drivers": ["map_mm", "mat_c"]}},
    ),
}

RUNNER = r"""
import json, sys, time, tempfile, os
t0 = time.time()
import pandas as pd
from bayes_soil import fits
from bayes_soil.models import get_model
args = json.loads(sys.argv[1])
table = pd.read_pickle(args["table"])
m = get_model(args["model"], args["spec"])
t1 = time.time()
# the whole fit path as `fit` runs it: prepare, build, compile, sample, pointwise groups,
# derived quantities, diagnostics, save
dt = m.fit(table, sampler=args["sampler"], draws=args["draws"], tune=args["tune"],
           chains=args["chains"], seed=args["seed"], progressbar=False)
t2 = time.time()
with tempfile.TemporaryDirectory() as d:
    fits.save_fit(dt, os.path.join(d, "fit.nc"))
t3 = time.time()
diag = json.loads(dt.attrs["diagnostics"])
post_attrs = dt["posterior"].attrs
print("RESULT " + json.dumps({
    "n_obs": int(dt.attrs["n_obs"]), "wall_s": t3 - t0, "import_s": t1 - t0,
    "fit_s": t2 - t1, "save_s": t3 - t2,
    "sampling_time_s": float(post_attrs.get("sampling_time", float("nan"))),
    "min_ess_bulk": diag["min_ess_bulk"], "max_rhat": diag["max_rhat"],
    "divergences": diag["divergences"], "steps_per_draw": diag["mean_steps_per_draw"],
}))
"""


def harmonized_tables(scale: float, workdir: Path) -> dict[str, Path]:
    """Simulate at ``scale``, harmonize, and pickle the layers and changes tables."""
    from bayes_soil.harmonize import harmonize
    from bayes_soil.simulate import simulate

    sim = simulate(scale=scale)
    t = time.time()
    res = harmonize(sim.observations)
    print(f"scale {scale}: harmonized in {time.time() - t:.1f} s", flush=True)
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


START, END = "<!-- bench_models:start -->", "<!-- bench_models:end -->"


def write_table(rows: list[dict], path: Path) -> None:
    """Rewrite the generated table between the markers of ``path``, keeping the notes around it."""
    head = (
        "| case | scale | n rows | sampler | wall s | import s | fit s | sampling s | "
        "min bulk ESS | ESS/s | max R-hat | divergences | steps/draw | load before |"
    )
    lines = [
        START,
        "Produced by `benchmarks/bench_models.py` (4 chains x 1000 draws after 1000 tuning unless "
        "stated). *wall* = a fresh process, import to saved file: import, prepare, build, "
        "compile, sample, pointwise groups, derived quantities and save (the data are "
        "harmonized beforehand). *ESS/s* = min bulk ESS / wall. *load before* = 1-minute load "
        "average when the run started: on the 2-core machine, a load above 2 inflates timings.",
        "",
        head,
        "|" + "---|" * 14,
    ]
    for r in rows:
        if "error" in r or "fit_s" not in r:
            continue  # failed runs and rows of the older runner (no fit_s) stay in the jsonl
        lines.append(
            f"| {r['case']} | {r['scale']} | {r['n_obs']} | {r['sampler']} | "
            f"{r['process_wall_s']:.0f} | {r['import_s']:.0f} | {r['fit_s']:.0f} | "
            f"{r['sampling_time_s']:.0f} | {r['min_ess_bulk']:.0f} | "
            f"{r['ess_per_s']:.1f} | {r['max_rhat']:.3f} | {r['divergences']} | "
            f"{r['steps_per_draw']:.0f} | {r['load_before']} |"
        )
    lines.append(END)
    block = "\n".join(lines)
    old = path.read_text() if path.exists() else "# Model benchmarks\n"
    if START in old and END in old:
        text = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        first, _, rest = old.partition("\n")
        text = first + "\n\n" + block + "\n\n" + rest
    path.write_text(text if text.endswith("\n") else text + "\n")


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
            tables = harmonized_tables(scale, Path(tmp))
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
