"""Wall time of ``calibrate`` with 1 and 2 Dask workers (a block for benchmarks/calibration.md).

Each setting runs the command as users run it (a fresh process: LocalCluster start, simulate,
harmonize, compile, sample, score, figures) into its own folder, so nothing is resumed. The
per-fit cost (``dataset_s``: simulate + harmonize + fit + score of one dataset, measured inside
the worker) gives the extrapolation to larger clusters: with W workers and K datasets the wall
time is about ceil(K / W) x per-fit cost + start-up.

    python benchmarks/bench_calibrate.py --datasets 4 --scale 0.5 --workers 1 2
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def run_one(workers: int, args: argparse.Namespace, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    cmd = [
        sys.executable,
        "-m",
        "bayes_soil",
        "calibrate",
        "--model",
        args.model,
        "--datasets",
        str(args.datasets),
        "--seed-start",
        str(args.seed_start),
        "--scale",
        str(args.scale),
        "--workers",
        str(workers),
        "--out",
        str(out),
        "--quiet",
        "--no-figures",
    ]
    for name in ("draws", "tune", "chains"):
        v = getattr(args, name)
        if v is not None:
            cmd += [f"--{name}", str(v)]
    before = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = loadavg()
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"calibrate failed with {workers} workers (exit {proc.returncode})")
    table = pd.read_csv(out / "calibration.csv")
    fits = table.drop_duplicates("dataset")
    return {
        "workers": workers,
        "datasets": args.datasets,
        "wall_s": round(wall, 1),
        "mean_fit_s": round(float(fits["fit_s"].mean()), 1),
        "mean_dataset_s": round(float(fits["dataset_s"].mean()), 1),
        "max_rhat": round(float(fits["fit_max_rhat"].max()), 3),
        "fits_passing": f"{int((fits['verdict'] == 'pass').sum())}/{len(fits)}",
        "load_before": before,
        "load_after": after,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="hier_rates")
    p.add_argument("--datasets", type=int, default=4)
    p.add_argument("--seed-start", type=int, default=1)
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--draws", type=int, default=None)
    p.add_argument("--tune", type=int, default=None)
    p.add_argument("--chains", type=int, default=None)
    p.add_argument("--work", default="/tmp/bayes_soil_bench_calibrate")
    args = p.parse_args()
    start_load = loadavg()
    rows = [run_one(w, args, Path(args.work) / f"w{w}") for w in args.workers]
    end_load = loadavg()
    df = pd.DataFrame(rows)
    base = df.iloc[0]
    per_fit = float(base["mean_dataset_s"])  # one fit alone on a core (least contended)
    lines = [
        "## Measured",
        "",
        f"`python benchmarks/bench_calibrate.py --model {args.model} --datasets "
        f"{args.datasets} --scale {args.scale} --workers "
        f"{' '.join(map(str, args.workers))}`"
        + "".join(
            f" --{n} {getattr(args, n)}"
            for n in ("draws", "tune", "chains")
            if getattr(args, n) is not None
        ),
        "",
        f"`cat /proc/loadavg` at start: `{start_load}`; at end: `{end_load}`",
        "",
        "| " + " | ".join(df.columns) + " |",
        "|" + "---|" * len(df.columns),
    ]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    lines += ["", "## Extrapolation (from the measured per-fit cost)", ""]
    lines.append(
        f"Per-fit cost (1 worker, mean over datasets): **{per_fit:.0f} s** (simulate + harmonize "
        f"+ fit + score). Wall time with W workers and K datasets ~ ceil(K / W) x per-fit cost "
        "+ start-up (cluster, imports), if each worker has a core of its own."
    )
    lines += ["", "| K datasets | W workers | estimated wall |", "|---|---|---|"]
    for k, w in ((10, 2), (10, 32), (32, 32), (100, 32)):
        est = math.ceil(k / w) * per_fit
        lines.append(f"| {k} | {w} | {est / 60:.1f} min |")
    text = "\n".join(lines) + "\n"
    print(text)
    (Path(args.work) / "measured.md").write_text(text)


if __name__ == "__main__":
    main()
