"""Where the training read's memory is: one streamed pass (or several) of a prepared split through
`pipelines.shards.read_dataset`, with every process of the tree's PSS split into anonymous, shared
(Ray's object store: Pss_Shmem) and file-backed pages (`/proc/<pid>/smaps_rollup`), sampled every
0.25 s; printed per process at the tree's peak, and as a timeline.

The pass runs in a child process on a local Ray of 2 CPUs (`pipelines.ray_session.init_ray`, so with
the product's read-ahead budget) in batches of 16 (radar.yaml's), as benchmarks/scale.py's `train`
stage without torch. Options change one thing at a time: `--object-store-mb` (the local store's
size, `ray.init(object_store_memory=...)`), `--budget-mb` (Ray Data's object-store budget,
`resource_limits.object_store_memory`, set before the dataset is made: a Dataset copies the
DataContext when created).

    .venv/bin/python benchmarks/scale.py --datasets radar --sizes 1,16 --radar-days 1 --steps 0 --workdir W
    .venv/bin/python benchmarks/read_pss.py W/radar-16x-shards --passes 4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import pipeline as bench  # noqa: E402  (benchmarks/pipeline.py: the process tree)

FIELDS = ("Pss", "Pss_Anon", "Pss_Shmem", "Pss_File")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a prepared dataset (runs or windows layout)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--columns", default="frames,mask")
    parser.add_argument("--passes", type=int, default=1, help="passes over the split in one process (default: 1)")
    parser.add_argument("--object-store-mb", type=int, help="the local Ray's object store (default: Ray's, 30 %% of RAM)")
    parser.add_argument("--budget-mb", type=int, help="Ray Data's object-store budget (default: the product's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    progress = Path(tempfile.mkdtemp(prefix="read-pss-")) / "batches"
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(REPO),
           "READ_PSS_PROGRESS": str(progress)}
    child = subprocess.Popen([sys.executable, __file__, "--child", *(argv if argv is not None else sys.argv[1:])],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
                             text=True)
    sampler = _Sampler(child.pid, progress)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.stop()
    if child.returncode:
        raise SystemExit(f"read pass failed (exit {child.returncode})")
    print(stdout.strip().splitlines()[-1])
    print(f"peak PSS of the tree: {sampler.peak // 1024} MB; per process (MB):")
    for name, fields in sorted(sampler.at_peak.values(), key=lambda item: -item[1]["Pss"]):
        if fields["Pss"] >= 20 << 10:
            print(f"  {name[:48]:48} " + " ".join(f"{key} {fields[key] >> 10:5}" for key in FIELDS))
    print("s, batches, tree PSS, consumer anon, consumer shmem, read workers anon, read workers shmem (MB)")
    for row in sampler.series:
        print(*row)
    return 0


class _Sampler(threading.Thread):
    def __init__(self, root: int, progress: Path):
        super().__init__(daemon=True)
        self.root, self.progress, self.done = root, progress, threading.Event()
        self.peak, self.at_peak, self.series = 0, {}, []

    def run(self) -> None:
        begin = time.time()
        while not self.done.wait(0.25):
            procs = {pid: info for pid in bench._descendants(self.root) if (info := _rollup(pid))}
            total = sum(fields["Pss"] for _, fields in procs.values())
            if total > self.peak:
                self.peak, self.at_peak = total, procs
            workers = [fields for name, fields in procs.values() if name.startswith("ray::") and
                       ("IDLE" in name or "MapBatches" in name)]
            consumer = procs.get(self.root, ("", dict.fromkeys(FIELDS, 0)))[1]
            self.series.append((round(time.time() - begin, 1), _read_int(self.progress), total >> 10,
                                consumer["Pss_Anon"] >> 10, consumer["Pss_Shmem"] >> 10,
                                sum(w["Pss_Anon"] for w in workers) >> 10, sum(w["Pss_Shmem"] for w in workers) >> 10))

    def stop(self) -> None:
        self.done.set()
        self.join()


def _rollup(pid: int) -> tuple[str, dict[str, int]] | None:
    """(command line, {field: kB}) of one process, or None when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = dict.fromkeys(FIELDS, 0)
    for line in lines:
        key, _, rest = line.partition(":")
        if key in fields:
            fields[key] = int(rest.split()[0])
    return name, fields


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def _child(args: argparse.Namespace) -> int:
    import ray
    import ray.data

    from pipelines.ray_session import bound_read_ahead, init_ray
    from pipelines.shards import read_dataset

    if args.object_store_mb:  # init_ray takes no store size
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=args.object_store_mb << 20,
                 logging_level="WARNING")
        bound_read_ahead(2)  # what init_ray does after starting a local Ray
    init_ray(num_cpus=2)
    context = ray.data.DataContext.get_current()
    if args.budget_mb:
        limits = context.execution_options.resource_limits
        context.execution_options.resource_limits = limits.copy(object_store_memory=args.budget_mb << 20)
    progress = Path(os.environ["READ_PSS_PROGRESS"])
    ds = read_dataset(args.dataset, args.split, args.columns.split(","))
    begin, batches = time.perf_counter(), 0
    for _ in range(args.passes):
        for _ in ds.iter_batches(batch_size=16, batch_format="numpy"):
            batches += 1
            if batches % 5 == 0:
                progress.write_text(str(batches))
    print(json.dumps({"batches": batches, "seconds": round(time.perf_counter() - begin, 2),
                      "object_store_mb": round(ray.cluster_resources().get("object_store_memory", 0) / 2**20),
                      "budget_mb": context.execution_options.resource_limits.object_store_memory / 2**20}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
