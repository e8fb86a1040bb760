"""KTH prepare throughput and memory: the Ray Data pipeline vs single-process loops over the same videos.

Generates a synthetic KTH-sized set (N videos of --frames frames at 160x120), then runs, each in
its own process: `tutorial` (the PyTorch tutorial's data_process: cv2 read, PIL gray via getdata,
windows in lists, torch.save), `loop` (a lean single-process OpenCV loop: the pipeline's decode
and shard encoding, one Parquet file per split, everything held in memory until written) and `pipeline` (pipelines.kth.prepare_kth on a local Ray). Rates are
video frames decoded, windowed and written per second; Ray start-up (ray.init plus one warm-up task
per CPU) is excluded from the rate and reported separately. Peak memory is sampled over the
process tree (driver, Ray's daemons and workers): the sum of RSS and the sum of PSS (RSS counts
pages shared between processes, e.g. Ray's object store, once per process). With --double the
whole comparison runs again on 2N videos: a streaming pipeline's peak memory stays flat.

    .venv/bin/python benchmarks/pipeline.py --videos 24 --frames 300,600
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("tutorial", "loop", "pipeline")
_IMPORTS = {"tutorial": ["cv2", "numpy", "torch", "PIL.Image", "pipelines.kth"],
            "loop": ["cv2", "numpy", "pyarrow.parquet", "pipelines.kth", "pipelines.shards"],
            "pipeline": ["cv2", "numpy", "pyarrow.parquet", "pipelines.kth", "ray.data"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24, help="videos in the base set (default: 24)")
    parser.add_argument("--frames", default="300,600", help="frames per video, MIN,MAX (default: 300,600)")
    parser.add_argument("--frame-len", type=int, default=15, help="frames per window, stride the same (default: 15)")
    parser.add_argument("--size", default="120x160", help="pipeline output HxW (default: 120x160, as the tutorial)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs for the local Ray (default: all)")
    parser.add_argument("--double", action=argparse.BooleanOptionalAction, default=True,
                        help="also run on twice the videos (default: on)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"which runs, comma-separated (default: {','.join(MODES)})")
    parser.add_argument("--workdir", help="where videos and outputs go (default: a temporary folder, removed)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    low, high = (int(v) for v in args.frames.split(","))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    results = []
    try:
        for videos in [args.videos, 2 * args.videos] if args.double else [args.videos]:
            src = workdir / f"videos-{videos}"
            frames = _generate(src, videos, (low, high))
            for mode in args.modes.split(","):
                out = workdir / f"out-{mode}-{videos}"
                result = _measure(mode, src, out, args)
                result.update(videos=videos, frames=frames, fps=frames / result["seconds"])
                results.append(result)
                print(_row(result), flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _generate(src: Path, videos: int, frames: tuple[int, int]) -> int:
    """`videos` KTH-style videos (persons 1..25 cycling over actions and scenarios); returns total frames."""
    from pipelines.kth import CATEGORIES
    from pipelines.synthetic import SCENARIOS, write_kth_videos

    paths = []
    combos = [(p, a, s) for p in range(1, 26) for a in CATEGORIES for s in SCENARIOS]
    step = max(1, len(combos) // videos)
    for person, action, scenario in combos[::step][:videos]:
        paths += write_kth_videos(src, [person], (action,), (scenario,), frames=frames, seed=person)
    import cv2

    return sum(int(cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT)) for p in paths)


def _measure(mode: str, src: Path, out: Path, args: argparse.Namespace) -> dict:
    """Run one mode in a child process while sampling the memory of its process tree."""
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, __file__, "--frame-len", str(args.frame_len), "--size", args.size,
               "--cpus", str(args.cpus), "--child", mode, str(src), str(out)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                             start_new_session=True, text=True)
    sampler = _TreeMemory(child.pid)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.stop()
    if child.returncode:
        raise RuntimeError(f"{mode} run failed (exit {child.returncode})")
    return {"mode": mode, **json.loads(stdout.strip().splitlines()[-1]),
            "peak_rss_mb": sampler.peak_rss / 2**20, "peak_pss_mb": sampler.peak_pss / 2**20}


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
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _child(args: argparse.Namespace) -> int:
    mode, src, out = args.child
    for module in _IMPORTS[mode]:  # imports are not part of the measured work
        importlib.import_module(module)
    startup = 0.0
    if mode == "pipeline":
        startup = _start_ray(args.cpus)
    begin = time.perf_counter()
    {"tutorial": _tutorial, "loop": _loop, "pipeline": _pipeline}[mode](Path(src), Path(out), args)
    print(json.dumps({"seconds": time.perf_counter() - begin, "startup_s": startup}))
    return 0


def _start_ray(cpus: int) -> float:
    from pipelines.ray_session import init_ray

    begin = time.perf_counter()
    ray = init_ray(num_cpus=cpus)
    # Ray Data's first execution starts its internal actors and the worker processes: start-up too
    ray.data.range(cpus, override_num_blocks=cpus).map_batches(lambda batch: batch).materialize()
    return time.perf_counter() - begin


def _pipeline(src: Path, out: Path, args: argparse.Namespace) -> None:
    from pipelines.kth import KthOptions, prepare_kth

    prepare_kth(src, str(out), KthOptions(frame_len=args.frame_len, stride=args.frame_len, size=_hw(args.size)),
                progress=False)


def _tutorial(src: Path, out: Path, args: argparse.Namespace) -> None:
    """The tutorial's KTHData.data_process with is_gray=True, on the official split, saved with torch.save."""
    import cv2
    import numpy as np
    import torch
    from PIL import Image

    from pipelines.kth import CATEGORIES
    from pipelines.kth_splits import person_splits, load_split

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
        folder = src / action
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            frames = load_avi_frames(str(folder / name))
            s, e = 0, args.frame_len
            while e <= len(frames):
                data[split_of[int(name[6:8])]].append((frames[s:e], label))
                s, e = e, e + args.frame_len
    out.mkdir(parents=True)
    torch.save(data, out / "kth.pt")


def _loop(src: Path, out: Path, args: argparse.Namespace) -> None:
    """Lean single process: the pipeline's decode (cv2 gray, INTER_AREA) and shard encoding, one Parquet file per split."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipelines.kth import CATEGORIES, KthOptions, decode_video, parse_name, schema
    from pipelines.shards import to_table
    from pipelines.kth_splits import load_split, person_splits

    split_of = person_splits(load_split("official"))
    options = KthOptions(frame_len=args.frame_len, stride=args.frame_len, size=_hw(args.size))
    rows = {"train": [], "val": [], "test": []}
    for path in sorted(src.rglob("*.avi")):
        person, action, scenario = parse_name(path.name)
        video = decode_video(str(path), options.size, color=False)
        for start in range(0, len(video) - options.frame_len + 1, options.stride):
            rows[split_of[person]].append({"frames": video[start:start + options.frame_len],
                                           "label": CATEGORIES.index(action), "person": person,
                                           "scenario": scenario, "source": path.stem, "start": start})
    out.mkdir(parents=True)
    for split, windows in rows.items():
        columns = {name: np.array([w[name] for w in windows]) for name in schema(options)}
        pq.write_table(to_table(columns, schema(options)), out / f"{split}.parquet")


def _hw(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.split("x"))
    return height, width


def _row(result: dict) -> str:
    return (f"{result['mode']:9s} videos {result['videos']:4d}  frames {result['frames']:7d}  "
            f"{result['seconds']:7.2f} s  {result['fps']:8.0f} frames/s  startup {result['startup_s']:5.2f} s  "
            f"peak RSS {result['peak_rss_mb']:7.0f} MB  PSS {result['peak_pss_mb']:7.0f} MB")


def _table(results: list[dict]) -> str:
    lines = ["| videos | frames | run | seconds | frames/s | vs tutorial | vs loop | Ray start-up s | peak RSS MB | peak PSS MB |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        same = {o["mode"]: o["fps"] for o in results if o["videos"] == r["videos"]}
        ratio = {m: f"{r['fps'] / same[m]:.2f}x" if m in same else "" for m in ("tutorial", "loop")}
        lines.append(f"| {r['videos']} | {r['frames']} | {r['mode']} | {r['seconds']:.1f} | {r['fps']:.0f} | "
                     f"{ratio['tutorial']} | {ratio['loop']} | {r['startup_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_pss_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
