"""Archive scale: prepare and training-feed cost at 1x, 4x and 16x of a base size.

Datasets:
- `kth`: KTH-style videos (`pipelines.synthetic`, persons 1..25 over the six actions and four scenarios,
  the official person split), 16x = the full corpus's 599 videos (`--kth-videos`), so 1x = 37 and
  4x = 150 videos, `--kth-frames` frames each at 160x120, prepared as `convlstm prepare kth` does
  (15-frame windows at stride 15, 60x80).
- `radar`: 5-minute radar made of the real KNMI sample (`../shared/data/radar-knmi-sample`) re-timed
  into whole days, 288 frames a day (the sample's frames in turn, linked under the names of later
  times), `--radar-days` days at 1x; prepared at 100x100, 5 + 15 frames at stride 1 in the runs layout,
  days split by a days file (one day in eight validation, the rest training).

Per dataset and size, each in its own process with its process tree's memory sampled (PSS, as
benchmarks/pipeline.py): `prepare` on a local Ray of `--cpus` CPUs (Ray start-up and a warm-up
excluded from the time), then `train`: one streamed pass of the training split through the Ray Data
read path (`pipelines.shards.read_dataset`, not materialized) in batches of the task's config
(`kth.yaml`, `radar.yaml`), against timed training steps of that config's model on the same batches
in the same process (torch on `--cpus` threads).

JSON rows: `dataset`, `size` (1, 4, 16), `inputs`, `frames` (source frames decoded), `windows`,
`prepare_s_per_frame`, `bytes_per_frame` (the dataset's Parquet bytes per source frame),
`prepare_peak_pss_mb`, `train_peak_pss_mb`, `feed_batches_per_s` (the whole pass, Ray Data's start-up
included; also `feed_first_batch_s` and `feed_steady_batches_per_s` after the first batch),
`consume_batches_per_s` (timed at `--consume-sizes`, reused elsewhere: `steps_timed`); radar at
1x also `frames_once_bytes` (the training split's frames and masks stored once, one Parquet file,
same compression) and `windows_layout_bytes` (the same dataset prepared with `layout="windows"`).

    .venv/bin/python benchmarks/scale.py --json scale.json
    .venv/bin/python benchmarks/scale.py --datasets radar --sizes 1,4 --radar-days 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import machine  # noqa: E402
import pipeline as bench  # noqa: E402  (benchmarks/pipeline.py: inputs, memory sampling, Ray warm-up)

DATASETS = ("kth", "radar")
KTH_FULL = 599
DAY_FRAMES = 288  # 5-minute frames a day
CONFIGS = {"kth": ("kth", ["frames", "label"]), "radar": ("radar", ["frames", "mask"])}
_IMPORTS = {"kth": ["cv2", "numpy", "pyarrow.parquet", "pipelines.kth"],
            "radar": ["h5py", "numpy", "pyarrow.parquet", "pipelines.radar.prepare"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="kth,radar", help="comma-separated, of kth, radar (default: both)")
    parser.add_argument("--sizes", default="1,4,16", help="multiples of the base size (default: 1,4,16)")
    parser.add_argument("--kth-videos", type=int, default=KTH_FULL, help="kth: videos at 16x (default: 599)")
    parser.add_argument("--kth-frames", default="60,120", help="kth: frames per video, MIN,MAX (default: 60,120)")
    parser.add_argument("--radar-days", type=int, default=2, help="radar: days of 288 frames at 1x (default: 2)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for Ray and torch threads (default: 2)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    parser.add_argument("--consume-sizes", default="1",
                        help="sizes at which training steps are timed (a step's cost does not depend on the "
                             "dataset's size; other rows reuse the rate; default: 1)")
    parser.add_argument("--workdir", help="inputs and outputs (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "DATASET", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    info = machine.describe()
    print(machine.line(info), flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    rows = []
    for dataset in args.datasets.split(","):
        consume = None
        for size in (int(s) for s in args.sizes.split(",")):
            rows.append(measure(dataset, size, workdir, args, consume))
            consume = consume or rows[-1]["consume_batches_per_s"]
            print(json.dumps(rows[-1]), flush=True)
            if args.json:  # after every row: a run cut short keeps what it measured
                Path(args.json).write_text(json.dumps({"machine": {**info, "load_average_now": machine.load_average()},
                                                       "rows": rows}, indent=1) + "\n")
    _print_table(rows)
    return 0


def measure(dataset: str, size: int, workdir: Path, args: argparse.Namespace, consume: float | None) -> dict:
    """Make the inputs, prepare them and read them back for training; one row of results. Training
    steps are timed at `--consume-sizes` (their peak PSS is then part of `train_peak_pss_mb`);
    elsewhere `consume` (the rate measured at another size) is reported."""
    src = workdir / f"{dataset}-{size}x"
    if dataset == "kth":
        videos = round(args.kth_videos * size / 16)
        frames, inputs = bench.kth_videos(src, videos, _pair(args.kth_frames)), f"{videos} videos"
    else:
        days = args.radar_days * size
        frames, inputs = radar_days(src, days), f"{days} days"
    out = workdir / f"{dataset}-{size}x-shards"
    prepared = _run("prepare", dataset, src, out, args)
    steps = args.steps if str(size) in args.consume_sizes.split(",") else 0
    trained = _run("train", dataset, out, out, args, steps)
    from pipelines.manifest import load_manifest

    manifest = load_manifest(out)
    row = {"dataset": dataset, "size": size, "inputs": inputs, "frames": frames,
           "windows": {split: info.count for split, info in manifest.splits.items()},
           "layout": manifest.layout,
           "prepare_s_per_frame": prepared["seconds"] / frames, "bytes_per_frame": _bytes(out) / frames,
           "prepare_peak_pss_mb": prepared["peak_pss_mb"], "train_peak_pss_mb": trained["peak_pss_mb"],
           "feed_batches_per_s": trained["feed_batches_per_s"],
           "feed_steady_batches_per_s": trained["feed_steady_batches_per_s"],
           "feed_first_batch_s": trained["feed_first_batch_s"],
           "consume_batches_per_s": trained["consume_batches_per_s"] or consume, "steps_timed": bool(steps),
           "batch_size": trained["batch_size"], "prepare_s": prepared["seconds"],
           "ray_startup_s": prepared["startup_s"], "load_average": machine.load_average()}
    if dataset == "radar" and size == 1:
        row["frames_once_bytes"] = frames_once_bytes(out, workdir / "frames-once.parquet")
        row["windows_layout_bytes"] = _bytes(_run("prepare-windows", dataset, src, workdir / "radar-windows", args)
                                             ["out"])
        row["train_bytes"] = _bytes(out / "train")
    return row


def radar_days(src: Path, days: int) -> int:
    """`days` days of 5-minute frames from 2010-08-26 on: the KNMI sample's frames in turn, linked under
    later times' names (KNMI's time is its name); returns the number of frames."""
    data = Path(os.environ.get("CONVLSTM_SHARED_DATA", bench.DATA))
    files = sorted(p for p in (data / "radar-knmi-sample").rglob("*.h5"))
    if not src.exists():
        first = _knmi_time(files[0]).replace(hour=0, minute=0)
        for k in range(days * DAY_FRAMES):
            path = files[k % len(files)]
            bench._knmi_copy(path, src, first + timedelta(minutes=5 * k) - _knmi_time(path))
    return days * DAY_FRAMES


def _knmi_time(path: Path) -> datetime:
    return datetime.strptime(path.stem.rsplit("_", 1)[1], "%Y%m%d%H%M")


def frames_once_bytes(dataset: Path, target: Path) -> int:
    """Bytes of the training split's frames and masks stored once, in one Parquet file with the
    shards' compression: the floor the runs layout is compared with."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=["frames", "mask"]) for f in sorted((dataset / "train").glob("*.parquet"))]
    pq.write_table(pa.concat_tables(tables).replace_schema_metadata(None), target, use_dictionary=False)
    return target.stat().st_size


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*.parquet"))


def _pair(text: str) -> tuple[int, int]:
    low, high = (int(v) for v in text.split(","))
    return low, high


# --- child processes ------------------------------------------------------------------------------

def _run(stage: str, dataset: str, src: Path, out: Path, args: argparse.Namespace, steps: int = 0) -> dict:
    """One stage in a child process (its process tree's memory sampled); its JSON line plus peak PSS."""
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, __file__, "--cpus", str(args.cpus), "--steps", str(steps),
               "--child", stage, dataset, str(src), str(out)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                             start_new_session=True, text=True)
    sampler = bench._TreeMemory(child.pid)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.stop()
    if child.returncode:
        raise RuntimeError(f"{dataset} {stage} failed (exit {child.returncode}); rerun: {' '.join(command)}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_pss_mb": sampler.peak_pss / 2**20, "out": str(out)}


def _child(args: argparse.Namespace) -> int:
    stage, dataset, src, out = args.child
    if stage.startswith("prepare"):
        startup = bench._start_ray(args.cpus, _IMPORTS[dataset])
        begin = time.perf_counter()
        _prepare(dataset, Path(src), out, "windows" if stage == "prepare-windows" else "runs")
        print(json.dumps({"seconds": time.perf_counter() - begin, "startup_s": startup}))
    else:
        print(json.dumps(_train_rates(dataset, out, args)))
    return 0


def _prepare(dataset: str, src: Path, out: str, layout: str) -> None:
    if dataset == "kth":
        from pipelines.kth import KthOptions, prepare_kth
        from pipelines.driver import Publish

        prepare_kth(src, out, KthOptions(), publish=Publish(progress=False, overwrite=True))
        return
    from pipelines.radar.prepare import RadarOptions, prepare_radar
    from pipelines.driver import Publish

    days = sorted({p.parent.name for p in src.rglob("*.h5")})
    split = {"train": [], "val": []}
    for i, day in enumerate(days):
        split["val" if i % 8 == 7 else "train"].append(f"{day[:4]}-{day[4:6]}-{day[6:]}")
    days_file = Path(out + ".days.json")
    days_file.write_text(json.dumps(split))
    prepare_radar(src, out, "knmi", RadarOptions(in_len=5, out_len=15, size=(100, 100), days_file=days_file),
                  layout=layout, publish=Publish(progress=False, overwrite=True))


def _train_rates(dataset: str, data: str, args: argparse.Namespace) -> dict:
    """Batches/s of one streamed pass of the training split through the Ray Data read path, and of
    training steps of the task's config model on those batches (torch on `--cpus` threads)."""
    import torch

    from jobs.tasks import get_task
    from jobs.training.config import load_config
    from convlstm.factory import build_model
    from jobs.training.optim import build_optimizer
    from pipelines.manifest import load_manifest
    from pipelines.ray_session import init_ray
    from pipelines.shards import read_dataset

    torch.set_num_threads(args.cpus)
    init_ray(num_cpus=args.cpus)
    name, columns = CONFIGS[dataset]
    cfg = load_config(name, name, [])
    manifest = load_manifest(data)
    begin, batches, first, first_s = time.perf_counter(), 0, None, 0.0
    ds = read_dataset(data, "train", columns)
    for batch in ds.iter_batches(batch_size=cfg.data.batch_size, batch_format="numpy"):
        batches += 1
        if first is None:
            first, first_s = batch, time.perf_counter() - begin
    total = time.perf_counter() - begin
    rates = {"feed_batches_per_s": batches / total, "feed_first_batch_s": first_s,
             "feed_steady_batches_per_s": (batches - 1) / (total - first_s) if batches > 1 else None,
             "batch_size": cfg.data.batch_size, "train_batches": batches, "consume_batches_per_s": None}
    if args.steps < 1:
        return rates
    task = get_task(cfg, manifest)
    model = build_model(cfg.model.name, **cfg.model.params)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    batch = {c: torch.from_numpy(first[c]) for c in columns}  # a step's cost is the same for every batch
    for i in range(args.steps + 1):
        if i == 1:  # the first step warms up (allocations, kernel choice)
            begin = time.perf_counter()
        loss = task.loss(model, batch, train=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {**rates, "consume_batches_per_s": args.steps / (time.perf_counter() - begin)}


def _print_table(rows: list[dict]) -> None:
    print("| dataset | size | inputs | frames | prepare ms/frame | bytes/frame | prepare peak PSS MB "
          "| train peak PSS MB | feed batches/s | consume batches/s | feed / consume |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['size']}x | {r['inputs']} | {r['frames']} | {1e3 * r['prepare_s_per_frame']:.2f} "
              f"| {r['bytes_per_frame']:.0f} | {r['prepare_peak_pss_mb']:.0f} | {r['train_peak_pss_mb']:.0f} "
              f"| {r['feed_batches_per_s']:.2f} | {_rate(r['consume_batches_per_s'])} "
              f"| {_rate(r['consume_batches_per_s'] and r['feed_batches_per_s'] / r['consume_batches_per_s'])} |")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


if __name__ == "__main__":
    sys.exit(main())
