"""Prepare throughput and memory: the Ray Data pipeline vs single-process loops over the same inputs.

Datasets (`--datasets`, each run on a base size and, with --double, on twice that):
- `kth`: synthetic KTH-style videos (--videos, --frames frames each at 160x120);
- `radar-knmi`, `radar-bom`: the real KNMI HDF5 and BoM Rainfields NetCDF samples in
  ../shared/data repeated to --radar-days days (KNMI: links renamed to later days; BoM: copies with
  their valid/start times moved by whole days), prepared at 100x100, 5 -> 15 frames;
- `mnist`: Moving MNIST generated from the real MNIST test set (--mnist-sequences sequences of 20 frames).

Runs, each in its own process:
- `tutorial` (kth only): the PyTorch tutorial's data_process (cv2 read, PIL gray via getdata,
  windows in lists, torch.save);
- `loop`: a lean single process doing the pipeline's own per-source work (the same planning and the
  same windows function per source, the shard encoding, one Parquet file per split, all windows held
  until written), without Ray, checksums, manifest or publishing;
- `pipeline`: the real prepare function on a local Ray with --cpus CPUs.

Rates are input frames (video frames decoded, radar files decoded, MNIST frames generated) per
second. Ray start-up (ray.init, one warm-up task per CPU that also imports the decoders, as the
loop's process imports them before its clock starts) is excluded from the rate and reported on its
own. Peak memory is sampled over each run's process tree: the sum of RSS and the sum of PSS (RSS
counts pages shared between processes, e.g. Ray's object store, once per process).

`--stages` also prints where the time goes: the loop's time per stage (windows function = decode
+ resize + windowing, stacking, Arrow encoding, Parquet writing) with the top functions of a
profile, and the pipeline's Ray Data stats (task wall and CPU time against the run's wall time
times its CPUs: what scheduling, transfers and idle slots cost), and for every run the CPU seconds of
every process on the machine by role (Ray workers, raylet, GCS, driver, ...) and the cores it may run
on, with each core's user, system, softirq and idle seconds (`machine.cpu_snapshot`/`cpu_delta`).

    .venv/bin/python benchmarks/pipeline.py --datasets kth --videos 96 --no-double --stages
    .venv/bin/python benchmarks/pipeline.py --datasets radar-knmi,radar-bom,mnist --modes loop,pipeline
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import machine  # noqa: E402

MODES = ("tutorial", "loop", "pipeline")
DATASETS = ("kth", "radar-knmi", "radar-bom", "mnist")
# Modules the decode work imports, loaded by every run before its clock starts (and by Ray's workers
# during the warm-up): import time is start-up, not throughput.
_IMPORTS = {"kth": ["cv2", "numpy", "pyarrow.parquet", "pipelines.kth", "pipelines.shards"],
            "radar-knmi": ["h5py", "numpy", "PIL.Image", "pyarrow.parquet", "pipelines.radar.prepare"],
            "radar-bom": ["h5py", "numpy", "PIL.Image", "pyarrow.parquet", "pipelines.radar.prepare"],
            "mnist": ["numpy", "pyarrow.parquet", "pipelines.mnist"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="kth", help=f"comma-separated, of {', '.join(DATASETS)} (default: kth)")
    parser.add_argument("--videos", type=int, default=48, help="kth: videos in the base set (default: 48)")
    parser.add_argument("--frames", default="300,600", help="kth: frames per video, MIN,MAX (default: 300,600)")
    parser.add_argument("--frame-len", type=int, default=15,
                        help="kth: frames per window, stride the same (default: 15)")
    parser.add_argument("--size", default="120x160", help="kth: output HxW (default: 120x160, as the tutorial)")
    parser.add_argument("--radar-days", type=int, default=12,
                        help="radar: days the sample is repeated to (default: 12; KNMI 93 and BoM 145 frames a day)")
    parser.add_argument("--mnist-sequences", type=int, default=3000,
                        help="mnist: training sequences of 20 frames (default: 3000)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs for the local Ray (default: all)")
    parser.add_argument("--address", help="run the pipeline on this Ray cluster instead of a local Ray "
                                          "(sources and output then on storage every node reads)")
    parser.add_argument("--double", action=argparse.BooleanOptionalAction, default=True,
                        help="also run on twice the input (default: on)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"which runs, comma-separated (default: {','.join(MODES)})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run loop and pipeline this many times, alternating; the best rate of each counts")
    parser.add_argument("--stages", action="store_true", help="also print per-stage timings and Ray Data's stats")
    parser.add_argument("--workdir", help="where inputs and outputs go (default: a temporary folder, removed)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", nargs=4, metavar=("DATASET", "MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    unknown = set(args.datasets.split(",")) - set(DATASETS)
    if unknown:
        parser.error(f"--datasets: unknown {sorted(unknown)} (known: {', '.join(DATASETS)})")

    info = machine.describe()
    print(machine.line(info), flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    results = []
    try:
        for dataset in args.datasets.split(","):
            for scale in (1, 2) if args.double else (1,):
                src, frames = _inputs(dataset, scale, workdir, args)
                modes = [m for m in args.modes.split(",") if m != "tutorial" or dataset == "kth"]
                runs = [m for m in modes if m == "tutorial"] + [m for m in modes if m != "tutorial"] * args.repeats
                best: dict[str, dict] = {}
                for mode in runs:
                    out = workdir / f"out-{dataset}-{mode}-{scale}"
                    result = _measure(dataset, mode, src, out, args, scale)
                    result.update(dataset=dataset, inputs=_size_label(dataset, scale, args), frames=frames,
                                  fps=frames / result["seconds"])
                    print(_row(result), flush=True)
                    if mode not in best or result["fps"] > best[mode]["fps"]:
                        best[mode] = result
                    shutil.rmtree(out, ignore_errors=True)
                results += best.values()
                if args.stages:
                    for result in best.values():
                        print(_stages(result))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(machine.line())
    print(_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "load_average_end": machine.load_average(),
                                               "results": results}, indent=1))
    return 0


# --- inputs -------------------------------------------------------------------------------------

def _inputs(dataset: str, scale: int, workdir: Path, args: argparse.Namespace) -> tuple[Path, int]:
    """(source path, input frames) for one dataset at `scale` times its base size, made once."""
    if dataset == "kth":
        low, high = (int(v) for v in args.frames.split(","))
        src = workdir / f"kth-{scale * args.videos}"
        return src, kth_videos(src, scale * args.videos, (low, high))
    if dataset.startswith("radar-"):
        fmt = dataset.split("-", 1)[1]
        src = workdir / f"{dataset}-{scale * args.radar_days}"
        return src, _radar_days(fmt, src, scale * args.radar_days)
    src = DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
    return src, _mnist_total(scale * args.mnist_sequences) * 20


def _size_label(dataset: str, scale: int, args: argparse.Namespace) -> str:
    if dataset == "kth":
        return f"{scale * args.videos} videos"
    if dataset.startswith("radar-"):
        return f"{scale * args.radar_days} days"
    return f"{_mnist_total(scale * args.mnist_sequences)} sequences"


def _mnist_counts(train: int) -> tuple[int, int, int]:
    """Sequences per split (train, val, test) for `train` training sequences."""
    return train, train // 4, train // 4


def _mnist_total(train: int) -> int:
    return sum(_mnist_counts(train))


def kth_videos(src: Path, videos: int, frames: tuple[int, int]) -> int:
    """`videos` KTH-style videos (persons 1..25 cycling over actions and scenarios); returns total frames."""
    import cv2

    from pipelines.kth import CATEGORIES
    from pipelines.synthetic import SCENARIOS, write_kth_videos

    if not src.exists():
        combos = [(p, a, s) for p in range(1, 26) for a in CATEGORIES for s in SCENARIOS]
        step = max(1, len(combos) // videos)
        for person, action, scenario in combos[::step][:videos]:
            write_kth_videos(src, [person], (action,), (scenario,), frames=frames, seed=person)
    return sum(int(cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT)) for p in src.rglob("*.avi"))


def _radar_days(fmt: str, src: Path, days: int) -> int:
    """The real `fmt` sample repeated to `days` days; returns the number of frames."""
    sample = {"knmi": DATA / "radar-knmi-sample", "bom": DATA / "radar-bom-sample"}[fmt]
    files = sorted(p for p in sample.rglob("*") if p.suffix in (".h5", ".nc"))
    if not src.exists():
        for day in range(days):
            for path in files:
                (_knmi_copy if fmt == "knmi" else _bom_copy)(path, src, timedelta(days=day))
    return days * len(files)


def _knmi_copy(path: Path, src: Path, shift: timedelta) -> None:
    """A link to a KNMI file under the name of the same minute `shift` later (KNMI's time is its name)."""
    stamp = path.stem.rsplit("_", 1)[1]
    moved = (datetime.strptime(stamp, "%Y%m%d%H%M") + shift).strftime("%Y%m%d%H%M")
    target = src / moved[:8] / path.name.replace(stamp, moved)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(path)


def _bom_copy(path: Path, src: Path, shift: timedelta) -> None:
    """A copy of a Rainfields file with valid_time and start_time `shift` later (BoM's time is inside)."""
    import h5py

    day, clock = path.stem.split(".")[0].split("_")[1:3]
    moved = datetime.strptime(day + clock, "%Y%m%d%H%M%S") + shift
    target = src / moved.strftime("%Y%m%d") / path.name.replace(day, moved.strftime("%Y%m%d"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    with h5py.File(target, "r+") as f:
        for name in ("valid_time", "start_time"):
            f[name][()] = f[name][()] + int(shift.total_seconds())


# --- one run --------------------------------------------------------------------------------------

def _measure(dataset: str, mode: str, src: Path, out: Path, args: argparse.Namespace, scale: int) -> dict:
    """Run one mode in a child process while sampling the memory of its process tree."""
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, __file__, "--frame-len", str(args.frame_len), "--size", args.size,
               "--cpus", str(args.cpus), "--mnist-sequences", str(scale * args.mnist_sequences),
               *(["--stages"] if args.stages else []), "--child", dataset, mode, str(src), str(out)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                             start_new_session=True, text=True)
    sampler = _TreeMemory(child.pid)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.stop()
    if child.returncode:
        raise RuntimeError(f"{dataset} {mode} run failed (exit {child.returncode}); rerun the child command "
                           f"to see why: {' '.join(command)}")
    return {"mode": mode, **json.loads(stdout.strip().splitlines()[-1]),
            "peak_rss_mb": sampler.peak_rss / 2**20, "peak_pss_mb": sampler.peak_pss / 2**20}


def _child(args: argparse.Namespace) -> int:
    dataset, mode, src, out = args.child
    for module in _IMPORTS[dataset] + (["torch", "PIL.Image"] if mode == "tutorial" else []):
        importlib.import_module(module)
    startup = _start_ray(args.cpus, _IMPORTS[dataset], args.address) if mode == "pipeline" else 0.0
    run = {"tutorial": _tutorial, "loop": _loop, "pipeline": _pipeline}[mode]
    stages: dict = {}
    snapshot = machine.cpu_snapshot() if args.stages else {}
    begin, cpu = time.perf_counter(), time.process_time()
    if mode == "loop" and args.stages:
        stages = _profiled(lambda: run(dataset, src, out, args, stages), stages)
    else:
        run(dataset, src, out, args, stages)
    seconds = time.perf_counter() - begin
    if args.stages:  # where every process's CPU time went during the run (Ray's daemons, workers, kernel)
        stages["cpu_accounting"] = machine.cpu_delta(snapshot, machine.cpu_snapshot(), _role)
    print(json.dumps({"seconds": seconds, "process_cpu_s": time.process_time() - cpu, "startup_s": startup,
                      "stages": stages}))
    return 0


_RAY_ROLES = (("ray::", "Ray workers"), ("raylet", "raylet"), ("gcs_server", "GCS"),
              ("runtime_env/agent", "runtime-env agent"), ("dashboard/agent", "dashboard agent"),
              ("dashboard/dashboard", "dashboard"), ("log_monitor", "log monitor"), ("monitor.py", "autoscaler"),
              ("job_supervisor", "job supervisor"), ("JobSupervisor", "job supervisor"))


def _role(proc: dict) -> str:
    """A process's role for the CPU accounting, prefixed with the cores it may run on (a pinned
    multi-node harness node runs on one core; the head and this driver on all)."""
    text = proc["cmdline"] or proc["name"]
    kind = ("driver (this process)" if "--child" in text and "pipeline.py" in text
            else next((label for key, label in _RAY_ROLES if key in text), "other"))
    return f"cores {proc['cores']}: {kind}"


def _start_ray(cpus: int, modules: list[str], address: str | None = None) -> float:
    """Start (or join) Ray and warm it: one task per CPU of every node, pinned there, importing the
    decoders, so that each CPU has a worker with the imports done; then one tiny Ray Data run."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipelines.ray_session import init_ray

    begin = time.perf_counter()
    ray = init_ray(address) if address else init_ray(num_cpus=cpus)

    @ray.remote(num_cpus=1)
    def warm() -> None:
        for module in modules:
            importlib.import_module(module)
        time.sleep(0.5)  # long enough for a node's tasks to overlap, so that each lands on its own worker

    pending = [warm.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
               for node in ray.nodes() if node["Alive"]
               for _ in range(int(node["Resources"].get("CPU", 0)))]
    ray.get(pending)
    ray.data.range(1).materialize()  # Ray Data's own start-up (its internal actors)
    return time.perf_counter() - begin


def _prepare(dataset: str, src: str, out: str, args: argparse.Namespace) -> None:
    """The dataset's real prepare function, as `convlstm prepare` calls it."""
    if dataset == "kth":
        from pipelines.kth import KthOptions, prepare_kth
        from pipelines.driver import Publish

        prepare_kth(src, str(out), KthOptions(frame_len=args.frame_len, stride=args.frame_len, size=_hw(args.size)),
                    publish=Publish(progress=False))
    elif dataset.startswith("radar-"):
        from pipelines.radar.prepare import RadarOptions, prepare_radar
        from pipelines.driver import Publish

        prepare_radar(src, str(out), dataset.split("-", 1)[1], RadarOptions(in_len=5, out_len=15, size=(100, 100)),
                      publish=Publish(progress=False))
    else:
        from pipelines.mnist import MnistOptions, prepare_mnist
        from pipelines.driver import Publish

        prepare_mnist(src, str(out), MnistOptions(counts=_mnist_counts(args.mnist_sequences)),
                      publish=Publish(progress=False))


def _pipeline(dataset: str, src: str, out: str, args: argparse.Namespace, stages: dict) -> None:
    import logging

    records: list[str] = []
    if args.stages:  # pipelines.decode logs Ray Data's execution stats at DEBUG
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        logger = logging.getLogger("pipelines.decode")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    _prepare(dataset, src, out, args)
    if records:
        stages["ray_data_stats"] = records[-1]


def _loop(dataset: str, src: str, out: str, args: argparse.Namespace, stages: dict) -> None:
    """The same prepare function with run_prepare swapped for `lean_prepare`: same sources and decoding."""
    import pipelines.kth
    import pipelines.mnist
    import pipelines.radar.prepare

    for module in (pipelines.kth, pipelines.mnist, pipelines.radar.prepare):
        module.run_prepare = lambda **kwargs: lean_prepare(stages=stages, **kwargs)
    _prepare(dataset, src, out, args)


def lean_prepare(*, sources, windows_fn, out, schema, stages: dict, **_ignored) -> None:
    """One process: each source's windows, stacked, encoded, one Parquet file per split at the end.
    Adds the seconds spent per stage to `stages`."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipelines.sources import Dropped
    from pipelines.shard_writer import stack_windows, to_table

    clock = partial(_timed, stages)
    parts: dict[str, list[dict]] = {}
    for source in sources:
        with clock("windows_fn (decode, resize, window)"):
            windows = [w for w in windows_fn(source) if not isinstance(w, Dropped)]
        with clock("stack windows"):
            if windows:
                parts.setdefault(source.split, []).append(stack_windows(iter(windows), schema))
    Path(out).mkdir(parents=True)
    for split, columns in parts.items():
        with clock("stack windows"):
            joined = {c: np.concatenate([p[c] for p in columns]) for c in schema}
        with clock("Arrow encoding"):
            table = to_table(joined, schema)
        with clock("Parquet writing"):
            pq.write_table(table, Path(out) / f"{split}.parquet")


@contextmanager
def _timed(totals: dict, stage: str):
    """Adds the seconds spent inside the block to `totals[stage]`."""
    begin = time.perf_counter()
    try:
        yield
    finally:
        totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - begin


def _profiled(run, stages: dict) -> dict:
    """Run under cProfile; stages plus the profile's top functions by own time."""
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile()
    profile.runcall(run)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
    top = text.getvalue()
    stages["profile_top"] = top[top.find("   ncalls"):].rstrip()
    return stages


def _tutorial(dataset: str, src: str, out: str, args: argparse.Namespace, stages: dict) -> None:
    """The tutorial's KTHData.data_process with is_gray=True, on the official split, saved with torch.save."""
    import cv2
    import numpy as np
    import torch
    from PIL import Image

    from pipelines.kth import CATEGORIES
    from pipelines.kth_splits import load_split, person_splits

    split_of = person_splits(load_split("official"))

    def load_avi_frames(path):
        video = cv2.VideoCapture(path)
        frames = []
        while video.isOpened():
            ret, frame = video.read()
            if not ret:
                break
            frame = Image.fromarray(frame).convert("L")
            frames.append(np.array(frame.getdata()).reshape((120, 160, 1)))
        return np.array(frames, dtype=np.uint8)

    data = {"train": [], "val": [], "test": []}
    for label, action in enumerate(CATEGORIES):
        folder = Path(src) / action
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            frames = load_avi_frames(str(folder / name))
            s, e = 0, args.frame_len
            while e <= len(frames):
                data[split_of[int(name[6:8])]].append((frames[s:e], label))
                s, e = e, e + args.frame_len
    Path(out).mkdir(parents=True)
    torch.save(data, Path(out) / "kth.pt")


# --- memory -------------------------------------------------------------------------------------

class _TreeMemory(threading.Thread):
    """Samples sum(RSS) and sum(PSS) over a process and all its descendants every 0.2 s (Linux /proc)."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.peak_rss, self.peak_pss = root, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            pids = _descendants(self.root)
            self.peak_rss = max(self.peak_rss, sum(_proc_kb(p, "status", "VmRSS:") for p in pids) * 1024)
            self.peak_pss = max(self.peak_pss, sum(_proc_kb(p, "smaps_rollup", "Pss:") for p in pids) * 1024)

    def stop(self) -> None:
        self.done.set()
        self.join()


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sorted(tree)


def _proc_kb(pid: int, file: str, key: str) -> int:
    try:
        for text in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if text.startswith(key):
                return int(text.split()[1])
    except OSError:
        pass
    return 0


# --- output -------------------------------------------------------------------------------------

def _hw(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.split("x"))
    return height, width


def _row(result: dict) -> str:
    return (f"{result['dataset']:10s} {result['mode']:9s} {result['inputs']:>16s}  frames {result['frames']:7d}  "
            f"{result['seconds']:7.2f} s  {result['fps']:8.0f} frames/s  startup {result['startup_s']:5.2f} s  "
            f"peak RSS {result['peak_rss_mb']:7.0f} MB  PSS {result['peak_pss_mb']:7.0f} MB")


def _stages(result: dict) -> str:
    stages = result.get("stages") or {}
    lines = [f"-- {result['dataset']} {result['mode']} ({result['inputs']}): {result['seconds']:.2f} s wall, "
             f"{result['process_cpu_s']:.2f} s CPU in the measuring process"]
    for name, seconds in stages.items():
        if isinstance(seconds, float):
            lines.append(f"   {name:38s} {seconds:7.2f} s  {100 * seconds / result['seconds']:5.1f} %")
    if "ray_data_stats" in stages:
        lines.append(stages["ray_data_stats"])
    if "cpu_accounting" in stages:
        lines += machine.cpu_lines(stages["cpu_accounting"])
    if "profile_top" in stages:
        lines.append(stages["profile_top"])
    return "\n".join(lines)


def _table(results: list[dict]) -> str:
    lines = ["| dataset | inputs | frames | run | seconds | frames/s | vs tutorial | vs loop | Ray start-up s | "
             "peak RSS MB | peak PSS MB |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        same = {o["mode"]: o["fps"] for o in results if (o["dataset"], o["inputs"]) == (r["dataset"], r["inputs"])}
        ratio = {m: f"{r['fps'] / same[m]:.2f}x" if m in same else "" for m in ("tutorial", "loop")}
        lines.append(f"| {r['dataset']} | {r['inputs']} | {r['frames']} | {r['mode']} | {r['seconds']:.1f} | "
                     f"{r['fps']:.0f} | {ratio['tutorial']} | {ratio['loop']} | {r['startup_s']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
