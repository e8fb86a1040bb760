"""`convlstm demo`: the whole mission on one machine, on embedded defaults, in minutes."""
from __future__ import annotations

import logging

import argparse
import os
from pathlib import Path

from jobs.cli import options

from jobs import paths
from jobs.ops.demo import DemoPlan, bundled_radar_sample, run_demo, summary_table
from jobs.registry.tracking import experiment_urls
from pipelines.ray_session import init_ray


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline end to end on embedded defaults (minutes on a laptop CPU)",
        description="Synthetic KTH-style videos and the bundled MeteoSwiss radar sample -> Ray Data shards "
                    "(split by person / by time) -> Ray Train DDP on CPU (configs kth-demo; radar-demo, the motion-aware "
                    "forecaster that starts as the optical-flow forecast) -> "
                    "MLflow runs with the best checkpoints registered (@champion, later runs @challenger) -> evaluation "
                    "against persistence and optical flow -> a nowcast from the registered radar model. "
                    "Safe to rerun: unchanged datasets are reused.")
    p.add_argument("--out", type=Path, help="demo folder (default: <home>/outputs/demo)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers per training job (default: 2)")
    p.add_argument("--radar-src", type=Path, help="radar frames (MeteoSwiss GIF folder or archive; "
                                                  "default: the sample bundled with the package, jobs/samples/radar-mch)")
    options.ray_address(p)
    options.tracking_uri(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    radar_src = args.radar_src or bundled_radar_sample()
    if not radar_src.exists():
        raise FileNotFoundError(f"--radar-src {radar_src} does not exist")
    _quiet()
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    plan = DemoPlan(root=(args.out or paths.outputs_dir() / "demo").resolve(), radar_src=radar_src,
                    workers=args.workers, address=args.address, tracking_uri=tracking_uri)
    plan.root.mkdir(parents=True, exist_ok=True)
    plan.results["tracking_uri"] = tracking_uri
    _start_ray_quietly(args.address)
    results = run_demo(plan)
    print()
    print(summary_table(results))
    print()
    print(f"finished in {results['elapsed_s']:.0f} s; reports and the nowcast are under {plan.root}")
    if tracking_uri.startswith("sqlite:"):
        print("browse the runs and registered models (bound to 127.0.0.1):")
        print(f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000")
        print("then open the experiments on their training runs:")
        for name, url in experiment_urls(tracking_uri, "http://127.0.0.1:5000"):
            print(f"  {name}: {url}")
    else:
        print(f"browse the runs at {tracking_uri}")
    return 0


def _start_ray_quietly(address: str | None) -> None:
    """Start (or connect to) Ray now, then lower Ray Data's log level, which Ray sets at start-up."""
    init_ray(address)
    # deferred: Ray ~2-10 s to import; the module's other users skip it
    import ray.data  # noqa: F401  (configures its loggers on import)

    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _quiet() -> None:
    """The demo prints one line per stage; Ray Data's progress logs and MLflow's bars would drown them."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    for name in ("ray.data", "ray.train", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
