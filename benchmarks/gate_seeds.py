"""Does the default fit of the demo pass its gate with other sampler seeds? (issue 10)

Runs ``python -m bayes_soil fit`` on the bundled SYNTHETIC demo with the model's default
settings, once per sampler seed, each in a fresh process (as a user would), and reads the
diagnostics the fit file stores. Prints a Markdown table (seed, verdict, max R-hat, min bulk
and tail ESS, divergences, steps per draw, wall s, load average before) and appends one JSON
record per fit to ``benchmarks/gate_seeds.jsonl``.

    .venv/bin/python benchmarks/gate_seeds.py --model hier_rates --element both --seeds 1-10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seeds_from(text: str) -> list[int]:
    """'1-10' or '3,5,8' -> a list of seeds."""
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def one_fit(model: str, element: str, seed: int, out: Path) -> dict:
    import xarray as xr

    from bayes_soil.fits import json_attr

    cmd = [sys.executable, "-m", "bayes_soil", "fit", "--model", model, "--element", element]
    cmd += ["--seed", str(seed), "--out", str(out), "--quiet"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rec = {"model": model, "element": element, "seed": seed, "rc": proc.returncode}
    rec.update(wall_s=round(wall, 1), load_before=round(load, 2))
    files = sorted((out / model).glob(f"*seed{seed}.nc"))
    if not files:
        rec["error"] = proc.stderr[-500:]
        return rec
    with xr.open_datatree(files[-1], engine="h5netcdf") as dt:
        diag = json_attr(dt, "diagnostics")
    keys = ("verdict", "max_rhat", "min_ess_bulk", "min_ess_tail", "divergences")
    rec.update({k: diag.get(k) for k in (*keys, "mean_steps_per_draw", "worst_rhat_var")})
    for k in ("nuisance_max_rhat", "nuisance_min_ess_bulk", "worst_nuisance_ess_var"):
        if k in diag:  # models whose gate lists nuisance parameters apart
            rec[k] = diag[k]
    return rec


def nuisance_cell(r: dict) -> str:
    """'1.006 / 612 (sd_site)': the nuisance parameters' max R-hat / min bulk ESS, or ''."""
    if "nuisance_max_rhat" not in r:
        return ""
    return (
        f"{r['nuisance_max_rhat']:.3f} / {r['nuisance_min_ess_bulk']:.0f} "
        f"({r.get('worst_nuisance_ess_var', '')})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hier_rates")
    p.add_argument("--element", default="both", choices=("C", "N", "both"))
    p.add_argument("--seeds", default="1-10", help="e.g. 1-10 or 3,5,8")
    p.add_argument("--out", default=str(HERE / "gate_seeds.jsonl"))
    args = p.parse_args()
    print(
        "| seed | verdict | max R-hat | min bulk ESS | min tail ESS | nuisance R-hat / bulk ESS "
        "| div | steps/draw | wall s | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds_from(args.seeds):
            r = one_fit(args.model, args.element, seed, Path(tmp))
            r["date"] = time.strftime("%Y-%m-%d %H:%M")
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
            if "verdict" not in r:
                print(
                    f"| {seed} | no fit (rc {r['rc']}) | | | | | | | {r['wall_s']} | "
                    f"{r['load_before']} |"
                )
                continue
            print(
                f"| {seed} | {r['verdict']} | {r['max_rhat']:.3f} | {r['min_ess_bulk']:.0f} | "
                f"{r['min_ess_tail']:.0f} | {nuisance_cell(r)} | {r['divergences']} | "
                f"{r['mean_steps_per_draw']:.1f} "
                f"| {r['wall_s']} | {r['load_before']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
