"""Training throughput: samples/s of `convlstm train`'s loop and of its Ray Data feed alone.

Shards: synthetic KTH-style videos (`pipelines.synthetic`) through the real `prepare_kth`, 15-frame
grey windows at 60x80 (the tutorial's input). Training: `jobs.training.driver.train` with the `kth-tiny`
config (one 8-channel ConvLSTM layer, global batch 8), in one process without Ray (`workers=0`,
reference) and on 1 and 2 Ray Train CPU workers (gloo DDP, the CPU share `train` picks), with the
train split either materialized in the object store once (`train`'s default for small splits) or
streamed from the Parquet shards every epoch (`data.materialize_mb=0`). The rate is the loop's own
`samples_per_s` (training windows per second of an epoch's training phase, all workers together)
of the last epoch. Feed: the same dataset, data path and worker resources, a loop that only pulls
`iter_torch_batches` and scales uint8 to float on the worker, no model. The feed must deliver at
least 5x what the model consumes at the same worker count and data path.

    python benchmarks/train_throughput.py --persons 2 --epochs 2 --json results.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAIN_PERSONS = (11, 12, 13, 14, 15, 16, 17, 18)  # official split
VAL_PERSON = 1
PATHS = {"materialized": 1e6, "streaming": 0}  # data.materialize_mb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=2, help="training persons (96 windows each)")
    parser.add_argument("--frames", type=int, default=60, help="frames per video (4 windows of 15)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run (the last is reported)")
    parser.add_argument("--feed-epochs", type=int, default=3, help="passes over the data for the feed alone")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to train with")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                        help="data paths for the Ray runs: materialized once, or streamed every epoch")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if not 1 <= args.persons <= len(TRAIN_PERSONS):
        parser.error(f"--persons must be in 1..{len(TRAIN_PERSONS)}")
    if args.frames < 15 or args.epochs < 1 or args.feed_epochs < 1:
        parser.error("--frames must be >= 15, --epochs and --feed-epochs >= 1")
    return args


def make_shards(root: Path, persons: int, frames: int) -> str:
    from pipelines.kth import KthOptions, prepare_kth
    from pipelines.driver import Publish
    from pipelines.synthetic import write_kth_videos

    write_kth_videos(root / "videos", persons=[*TRAIN_PERSONS[:persons], VAL_PERSON], frames=frames)
    prepare_kth(root / "videos", str(root / "shards"), KthOptions(), publish=Publish(progress=False))
    return str(root / "shards")


def feed_loop(config: dict) -> list[dict[str, float]]:
    """Per worker: iterate the train shard `epochs` times, scale on the device, count windows.
    Returns per pass, all workers together: samples/s of the whole pass, seconds to the first
    batch (Ray Data's per-epoch start-up) and samples/s after it (steady state)."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    device = ray.train.torch.get_device()
    shard = ray.train.get_dataset_shard("train")
    passes = []
    for _ in range(config["epochs"]):
        started, first, rows, first_rows = time.perf_counter(), None, 0, 0
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"], device=device,
                                              local_shuffle_buffer_size=config["shuffle_buffer"] or None):
            frames = batch["frames"].float() / 255.0
            rows += frames.shape[0]
            if first is None:
                first, first_rows = time.perf_counter() - started, rows
        total = time.perf_counter() - started
        # rows and steady rows summed over workers; times: the slowest worker's
        stats = torch.tensor([float(rows), float(rows - first_rows), total, first or total, total - (first or 0)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats[:2], op=dist.ReduceOp.SUM)
            dist.all_reduce(stats[2:], op=dist.ReduceOp.MAX)
        rows_all, steady_rows, total, first_s, steady_s = stats.tolist()
        passes.append({"samples_per_s": rows_all / total, "first_batch_s": first_s,
                       "steady_samples_per_s": steady_rows / steady_s if steady_s > 0 else float("nan")})
    return passes


def feed_rate(data: str, cfg, workers: int, epochs: int, materialize: bool) -> list[dict[str, float]]:
    """`feed_loop`'s per-pass figures over the train split, with training's batch size, CPUs and
    data path."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.training.ray_fit import default_cpus_per_worker
    from pipelines.shards import read_dataset

    dataset = read_dataset(data, "train", columns=["frames", "label"])
    trainer = TorchTrainer(
        feed_loop,
        train_loop_config={"epochs": epochs, "batch_size": cfg.data.batch_size // workers,
                           "shuffle_buffer": cfg.data.shuffle_buffer},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, resources_per_worker={"CPU": default_cpus_per_worker(ray, workers, False)}),
        run_config=ray.train.RunConfig(name=f"feed-{workers}-{time.time_ns()}",
                                       storage_path=tempfile.mkdtemp(prefix="feed-")),
        datasets={"train": dataset.materialize() if materialize else dataset},
    )
    return trainer.fit().return_value


def train_rate(data: str, cfg, workers: int, storage: str) -> tuple[list[float], float]:
    """Per-epoch `samples_per_s` of `jobs.training.driver.train` and the run's wall time in seconds."""
    from jobs.registry import tracking
    from jobs.training.driver import Compute, RunOptions, train

    started = time.perf_counter()
    summary = train(cfg, data, compute=Compute(workers=workers),
                    run=RunOptions(storage_path=storage, run_name=f"bench-{workers}w-{time.time_ns()}"))
    wall = time.perf_counter() - started
    return [v for _, v in tracking.metric_history(None, summary.run_id, "samples_per_s")], wall


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="train-bench-"))
    os.environ.setdefault("CONVLSTM_HOME", str(home))  # keep benchmark runs out of the project's MLflow
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from jobs.training.config import load_config
    from pipelines.ray_session import init_ray

    ray = init_ray()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    data = make_shards(home, args.persons, args.frames)
    prepare_s = time.perf_counter() - started
    from pipelines.manifest import load_manifest

    counts = {k: v.count for k, v in load_manifest(data).splits.items()}
    overrides = [f"train.epochs={args.epochs}", "registry.register=false", "data.limit_train=null",
                 "data.limit_val=16", "train.keep_checkpoints=1"]
    runs = [(w, path) for w in args.workers for path in (["numpy"] if w == 0 else args.paths)]
    rows = []
    for workers, path in runs:
        cfg = load_config("kth-tiny", "kth", [*overrides, f"data.materialize_mb={PATHS.get(path, 0)}"])
        epochs, wall = train_rate(data, cfg, workers, str(home / "train"))
        row = {"workers": workers, "path": path, "train_samples_per_s": epochs[-1],
               "train_epochs_samples_per_s": epochs, "train_wall_s": wall}
        if workers > 0:
            passes = feed_rate(data, cfg, workers, args.feed_epochs, materialize=path == "materialized")
            last = passes[-1]
            row.update(feed_samples_per_s=last["samples_per_s"], feed_first_batch_s=last["first_batch_s"],
                       feed_steady_samples_per_s=last["steady_samples_per_s"], feed_passes=passes,
                       feed_over_train=last["samples_per_s"] / epochs[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "ray_cpus": ray.cluster_resources().get("CPU"),
                    "platform": platform.platform(), "processor": platform.processor(),
                    "load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
        "data": {"windows": counts, "frames": [15, 1, 60, 80], "prepare_s": prepare_s},
        "config": "kth-tiny", "overrides": overrides, "rows": rows,
    }
    print("| workers | data path | train samples/s | feed samples/s (pass) | feed / train | feed first batch s "
          "| feed steady samples/s | train run wall s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        feed = [f"{r['feed_samples_per_s']:.0f}", f"{r['feed_over_train']:.1f}x", f"{r['feed_first_batch_s']:.2f}",
                f"{r['feed_steady_samples_per_s']:.0f}"] if r["workers"] else ["-"] * 4
        print(f"| {r['workers']} | {r['path']} | {r['train_samples_per_s']:.1f} | {' | '.join(feed)} "
              f"| {r['train_wall_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
