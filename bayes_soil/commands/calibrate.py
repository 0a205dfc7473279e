"""``calibrate``: fit a model on many simulated datasets and score it against the known truth."""

from __future__ import annotations

import argparse
import os

HELP = (
    "calibrate a model: simulate K SYNTHETIC datasets, harmonize, fit and score each against its "
    "truth (interval coverage, bias, R-hat, ESS, P(break)); in parallel on Dask; resumable"
)
EXAMPLE = (
    "python -m bayes_soil calibrate --model hier_rates --datasets 10 --scale 0.5 --out calib/hier"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bayes_soil.calibrate import MODELS
    from bayes_soil.models.base import SAMPLERS
    from bayes_soil.simulate import VARIANTS

    parser.add_argument("--model", required=True, choices=MODELS, help="model to calibrate")
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="base",
        help=(
            "simulator variant (no-turning-point: a straight MAP response, for false breaks; "
            "one-turning-point: a break in C 100-200 cm only, for power when breaks are rare)"
        ),
    )
    parser.add_argument("--datasets", type=int, default=10, metavar="K", help="datasets (10)")
    parser.add_argument(
        "--seed-start",
        type=int,
        default=1,
        metavar="S",
        help="dataset i is simulated with seed S + i (default 1; the demo's seed is refused)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=0.5,
        metavar="F",
        help="simulated studies and sites as a multiple of the demo's (default 0.5)",
    )
    parser.add_argument(
        "--bd-error",
        type=float,
        default=1.0,
        metavar="F",
        help="simulator: sd of true bulk density around the pedotransfer function, as a multiple "
        "of the demo's (default 1; 4-5 gives imputed-BD errors like real compilations)",
    )
    parser.add_argument(
        "--bd-method",
        choices=("auto", "rf", "ptf"),
        default="rf",
        help="harmonize: how BD is estimated where a study lacks it (default rf)",
    )
    parser.add_argument("--draws", type=int, default=None, help="draws per chain (spec default)")
    parser.add_argument("--tune", type=int, default=None, help="tuning steps (spec default)")
    parser.add_argument("--chains", type=int, default=None, help="chains (spec default)")
    parser.add_argument(
        "--element", choices=("C", "N", "both"), default="C", help="element(s) fitted (C)"
    )
    parser.add_argument(
        "--driver",
        choices=("map_mm", "mat_c", "both"),
        default="map_mm",
        help="climate_breakpoints: driver(s) (default map_mm)",
    )
    parser.add_argument("--sampler", choices=SAMPLERS, default=None, help="NUTS implementation")
    parser.add_argument(
        "--spec", default=None, metavar="TOML", help="TOML file overriding the model's spec"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="an existing Dask scheduler (tcp://HOST:8786); bayes_soil must be installed on "
        "its workers. Default: a LocalCluster on this machine",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="LocalCluster workers, one single-threaded fit each (default: CPU cores); "
        "0 = no Dask, datasets one after another in this process",
    )
    parser.add_argument(
        "--sbc",
        type=int,
        default=None,
        metavar="N",
        help="instead: simulation-based calibration (Talts et al. 2018, via simuk) with N prior "
        "draws on the design of dataset --seed-start (use a small --scale, e.g. 0.1)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace):
    from bayes_soil.calibrate import CalibrationConfig
    from bayes_soil.commands import read_spec_file

    spec = read_spec_file(args.spec, args.model)
    cfg = CalibrationConfig(
        model=args.model,
        variant=args.variant,
        datasets=args.datasets if args.sbc is None else 1,
        seed_start=args.seed_start,
        scale=args.scale,
        bd_error=args.bd_error,
        bd_method=args.bd_method,
        element=args.element,
        driver=args.driver,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        sampler=args.sampler,
        spec=spec,
    )
    cfg.validate()
    return cfg


def _client(args: argparse.Namespace, console):
    """(client, cluster) for the run; (None, None) for --workers 0."""
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
        console.print(f"Dask scheduler {args.scheduler}: {len(client.nthreads())} workers")
        return client, None
    n = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if n == 0:
        return None, None
    import dask
    from distributed import Client, LocalCluster

    # one single-threaded process per worker; no BLAS/OpenMP threads beside it
    dask.config.set(
        {
            "distributed.nanny.pre-spawn-environ": {
                "OMP_NUM_THREADS": 1,
                "MKL_NUM_THREADS": 1,
                "OPENBLAS_NUM_THREADS": 1,
                "NUMBA_NUM_THREADS": 1,
            }
        }
    )
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    console.print(f"Dask LocalCluster: {n} single-threaded workers")
    return client, cluster


def run(args: argparse.Namespace) -> int:
    import time

    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bayes_soil import calibrate as cal
    from bayes_soil.errors import InputError

    console = Console(stderr=True)
    out = Console(width=160)
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be >= 0 (got {args.workers})")
    cfg = _config(args)
    console.print("[bold red]SYNTHETIC[/] calibration data from the bayes_soil simulator")

    if args.sbc is not None:
        if args.sbc < 2:
            raise InputError(f"--sbc needs at least 2 simulations (got {args.sbc})")
        summary, files = cal.run_sbc(cfg, args.out, args.sbc, progressbar=not args.quiet)
        out.print(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        for f in files:
            out.print(f"wrote {f}")
        return 0

    done = cal.finished_datasets(args.out, cfg)
    todo = cfg.datasets - len(done)
    if done:
        console.print(f"resuming: {len(done)} of {cfg.datasets} datasets already finished")
    t0 = time.perf_counter()
    client, cluster = _client(args, console) if todo else (None, None)
    if args.workers == 0 and todo:
        console.print("no Dask (--workers 0): datasets one after another in this process")
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
    )
    failed_msgs = []

    def on_done(i: int, rows: pd.DataFrame | None, err: str | None) -> None:
        if rows is None:
            failed_msgs.append(f"dataset {i}: {(err or '').strip().splitlines()[-1:]}")
            progress.console.print(f"[red]dataset {i} failed[/] (see {args.out}/errors/)")
        else:
            fit_s = float(rows["fit_s"].iloc[0])
            verdict = rows["verdict"].iloc[0]
            progress.console.print(
                f"dataset {i} (seed {rows['seed'].iloc[0]}): fit {fit_s:.0f} s, "
                f"diagnostics {verdict}"
            )
        progress.advance(task)

    try:
        with progress:
            task = progress.add_task(f"{cfg.model} fits", total=todo)
            res = cal.run_calibration(
                cfg, args.out, client=client, on_done=on_done, figures=not args.no_figures
            )
    except KeyboardInterrupt:
        kept = len(cal.finished_datasets(args.out, cfg))
        console.print(
            f"interrupted: {kept} finished datasets are kept in {args.out}/results; run the same "
            "command again to resume"
        )
        return 130
    finally:
        import logging

        # workers whose numba/nutpie threads take a moment to exit are killed on close: expected
        logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    wall = time.perf_counter() - t0
    out.print(cal.summary_markdown(res.summary, cfg))
    for f in res.files:
        out.print(f"wrote {f}")
    out.print(
        f"{len(res.ran)} datasets fitted now, {len(res.skipped)} reused, {len(res.failed)} "
        f"failed; wall {wall:.0f} s"
    )
    if res.failed:
        out.print("[bold red]failed[/]: " + "; ".join(failed_msgs))
        return 1
    return 0
