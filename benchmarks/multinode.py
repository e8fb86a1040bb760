"""The multi-node harness end to end, 2-node against 1-node training on the same CPUs, and prepare's
throughput on one worker node against two (--part prepare-scaling).

Starts tests/helpers/cluster_harness.py's cluster (a head with 0 CPUs, two worker nodes with 2 logical CPUs
each in private mount namespaces, moto S3, `mlflow server` with basic auth; sqlite backend unless
--postgres), then times through `convlstm submit` only: KTH videos on S3 -> prepare -> train with 2
Ray Train workers spread over the two nodes (CONVLSTM_TRAIN_PLACEMENT=SPREAD) -> the same training
with both workers packed on one node (STRICT_PACK) -> evaluate. Training throughput is the mean of
the per-epoch `samples/s` rank 0 prints, without the first epoch (start-up). Needs root and unshare.

`--part prepare-scaling`: worker nodes with --prepare-cpus-per-node CPUs each (default 1: on one
machine two 1-CPU nodes use its 2 cores), synthetic KTH videos in a folder every node sees (declared
in CONVLSTM_SHARED_PATHS; --via-s3 puts videos and shards on the harness's S3 instead), and
benchmarks/pipeline.py's pipeline run submitted as a Ray job (Ray start-up and a warm-up task per
CPU outside the clock) on one worker node and on two, alternating: the second node is added, lost,
added again.

    sudo .venv/bin/python benchmarks/multinode.py --json multinode.json
    sudo .venv/bin/python benchmarks/multinode.py --part prepare-scaling --videos 48 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "helpers")]

from cluster_harness import (MlflowServer, MultiNodeCluster, Postgres, S3Server,  # noqa: E402
                             postgres_unavailable)

EPOCH = re.compile(r"epoch (\d+)/(\d+) .*?([\d.]+) samples/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", default="11,12,19,22", help="KTH person ids of the synthetic videos")
    parser.add_argument("--frames", type=int, default=60, help="frames per video")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1,
                        help="train each placement this many times, alternating (the machine's load drifts)")
    parser.add_argument("--part", choices=("end-to-end", "prepare-scaling"), default="end-to-end")
    parser.add_argument("--videos", type=int, default=96, help="prepare-scaling: KTH-style videos (300-600 frames)")
    parser.add_argument("--size", default="120x160", help="prepare-scaling: output frame size HxW")
    parser.add_argument("--via-s3", action="store_true",
                        help="prepare-scaling: videos and shards on the harness's S3 (moto, on the same cores) "
                             "instead of a shared folder")
    parser.add_argument("--pin-cores", action=argparse.BooleanOptionalAction, default=True,
                        help="prepare-scaling: worker node i runs on core i-1 only (taskset), like its own machine")
    parser.add_argument("--prepare-cpus-per-node", type=float, default=1, help="prepare-scaling: CPUs per worker node")
    parser.add_argument("--head-nice", type=int, default=0, choices=range(-20, 20), metavar="-20..19",
                        help="prepare-scaling: niceness of the head's processes and the job driver; 19 lets them "
                             "run only on cycles the pinned worker nodes leave, a negative niceness lets them "
                             "preempt the nodes (a head with its own machine answers at once)")
    parser.add_argument("--postgres", action="store_true", help="MLflow on PostgreSQL (as the test) instead of sqlite")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.part == "prepare-scaling":
        return prepare_scaling(args)

    from pipelines.synthetic import write_kth_videos

    folder = Path(tempfile.mkdtemp(prefix="multinode-bench-"))
    times: dict[str, float] = {}
    results: dict = {"times_s": times}
    started = time.monotonic()
    s3, pg, server, cluster = S3Server(), None, None, None
    try:
        s3.start(folder)
        if args.postgres and postgres_unavailable() is None:
            pg = Postgres().start()
        backend = pg.uri if pg else f"sqlite:///{folder / 'mlflow.db'}"
        server = MlflowServer(backend, s3.uri("mlflow-artifacts"), s3.env).start(folder)
        cluster = MultiNodeCluster(folder, workers=2, cpus_per_node=2, env=s3.env).start()
        times["harness start-up"] = time.monotonic() - started
        env = {**s3.env, **server.client_env, "CONVLSTM_STORAGE": s3.uri("convlstm"), "MLFLOW_DISABLE_TELEMETRY": "true"}
        videos = folder / "videos"
        write_kth_videos(videos, persons=[int(p) for p in args.persons.split(",")], actions=("boxing", "walking"),
                         scenarios=("d1", "d2"), frames=args.frames)
        raw = s3.upload(videos, "raw", "kth")
        data = s3.uri("data", "kth")

        done = _timed(times, "prepare kth (S3 -> S3)", cluster, "prepare", "kth", "--src", raw, "--out", data,
                      "--frame-len", "5", "--stride", "5", "--size", "24x32", env=env)
        results["windows"] = json.loads(s3.read("data/kth/manifest.json"))["splits"]
        train = ("train", "--task", "kth", "--data", data, "--config", "kth-tiny", "--workers", "2",
                 "--cpus-per-worker", "0.5", f"train.epochs={args.epochs}", "data.limit_train=1000",
                 "data.limit_val=64", "registry.register=false")
        for repeat in range(args.repeats):
            for label, placement in (("2 nodes", "SPREAD"), ("1 node", "STRICT_PACK"))[::1 if repeat % 2 == 0 else -1]:
                key = f"{label} #{repeat + 1}"
                done = _timed(times, f"train 2 workers, {key}", cluster, *train, "--run-name",
                              f"bench-{placement.lower()}-{repeat}", env={**env, "CONVLSTM_TRAIN_PLACEMENT": placement})
                # Ray Train V2 tees a worker's print into its logger too: each epoch line may come twice.
                rates = list({int(m.group(1)): float(m.group(3)) for m in EPOCH.finditer(done.stdout)}.values())
                results[f"samples/s, {key}"] = sum(rates[1:]) / max(len(rates) - 1, 1) if rates else None
                results[f"epoch samples/s, {key}"] = rates
        _timed(times, "train 1 worker (register the model)", cluster, "train", "--task", "kth", "--data", data,
               "--config", "kth-tiny", "--workers", "1", "train.epochs=1", "registry.name=convlstm-kth-bench", env=env)
        _timed(times, "evaluate", cluster, "evaluate", "--model", "models:/convlstm-kth-bench@champion", "--data", data,
               "--split", "test", env=env)
        times["end to end"] = time.monotonic() - started
    finally:
        for part in (cluster, server, pg, s3):
            if part is not None:
                part.stop()
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def prepare_scaling(args: argparse.Namespace) -> int:
    """Prepare's frames/s with one worker node and with two (same CPUs per node), alternating."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import machine
    from pipeline import kth_videos

    # A folder outside /tmp is one every node sees (the nodes' /tmp is private): the stand-in for a
    # shared mount, declared in CONVLSTM_SHARED_PATHS and verified by pipelines.cluster.
    shared = Path(tempfile.mkdtemp(prefix="multinode-prepare-", dir="/var/tmp"))
    s3 = S3Server() if args.via_s3 else None
    cluster, runs = None, []
    print(machine.line(), flush=True)
    try:
        frames = kth_videos(shared / "videos", args.videos, (300, 600))
        env = {"CONVLSTM_SHARED_PATHS": str(shared)}
        if s3:
            s3.start(shared)
            env.update(s3.env)
        src = s3.upload(shared / "videos", "raw", "kth") if s3 else str(shared / "videos")
        cluster = MultiNodeCluster(shared, workers=1, cpus_per_node=args.prepare_cpus_per_node, env=env,
                                   pin_cores=args.pin_cores, head_nice=args.head_nice).start()
        second = None
        for repeat in range(args.repeats):
            for nodes in (1, 2) if repeat % 2 == 0 else (2, 1):
                if nodes == 2 and second is None:
                    second = cluster.add_node(2)
                elif nodes == 1 and second is not None:
                    cluster.kill_node(second)
                    cluster.nodes.remove(second)
                    second = None
                cluster.wait_nodes(1 + nodes, 240)
                out = s3.uri("data", f"kth-{nodes}-{repeat}") if s3 else str(shared / f"out-{nodes}-{repeat}")
                done = cluster.head.convlstm(
                    "submit", "--address", cluster.head.address, "--wait", "--no-install", "--",
                    "python", "benchmarks/pipeline.py", "--address", "auto", "--size", args.size, "--stages",
                    "--child", "kth", "pipeline", src, out, timeout=1800, **env)
                if done.returncode != 0:
                    raise RuntimeError(f"prepare on {nodes} node(s) failed: {(done.stdout + done.stderr)[-3000:]}")
                result = next(json.loads(line) for line in reversed(done.stdout.splitlines())
                              if line.startswith('{"seconds"'))
                stats = result["stages"].get("ray_data_stats", "")
                used = re.findall(r"Tasks per node: .*?(\d+) nodes used", stats)
                stage = re.findall(r"MapBatches\(_decode_batch\)\S*: \d+ tasks executed, .*? in ([\d.]+)s", stats)
                decode_s = float(stage[-1]) if stage else float("nan")
                accounting = result["stages"].get("cpu_accounting", {})
                runs.append({"worker_nodes": nodes, "repeat": repeat, "seconds": result["seconds"],
                             "startup_s": result["startup_s"], "fps": frames / result["seconds"],
                             "decode_write_s": decode_s, "decode_write_fps": frames / decode_s,
                             "decode_nodes_used": int(used[-1]) if used else None, "ray_data_stats": stats,
                             "cpu_accounting": accounting})
                print(f"{nodes} worker node(s), run {repeat + 1}: {result['seconds']:.2f} s, "
                      f"{frames / result['seconds']:.0f} frames/s; decode+write stage {decode_s:.2f} s, "
                      f"{frames / decode_s:.0f} frames/s on {runs[-1]['decode_nodes_used']} node(s) "
                      f"(start-up {result['startup_s']:.1f} s)", flush=True)
                if accounting:  # pinned nodes: node i on core i - 1; the head and the driver on every core
                    print("\n".join(machine.cpu_lines(accounting, min_s=0.02)), flush=True)
    finally:
        for part in (cluster, s3):
            if part is not None:
                part.stop()
        shutil.rmtree(shared, ignore_errors=True)
    best = {n: max(r["fps"] for r in runs if r["worker_nodes"] == n) for n in (1, 2)}
    stage = {n: max(r["decode_write_fps"] for r in runs if r["worker_nodes"] == n) for n in (1, 2)}
    summary = {"videos": args.videos, "size": args.size, "frames": frames, "cpus_per_node": args.prepare_cpus_per_node,
               "pinned_cores": args.pin_cores, "head_nice": args.head_nice,
               "storage": "s3 (moto)" if args.via_s3 else "shared folder", "best_fps": best,
               "scaling_2_vs_1": best[2] / best[1], "best_decode_write_fps": stage,
               "decode_write_scaling_2_vs_1": stage[2] / stage[1], "runs": runs, "machine": machine.describe()}
    print(f"prepare kth, {frames} frames: 1 node {best[1]:.0f} frames/s, 2 nodes {best[2]:.0f} frames/s, "
          f"{best[2] / best[1]:.2f}x; decode+write stage {stage[1]:.0f} -> {stage[2]:.0f} frames/s, "
          f"{stage[2] / stage[1]:.2f}x")
    print(machine.line())
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def _timed(times: dict, label: str, cluster: MultiNodeCluster, *argv: str, env: dict):
    done = cluster.submit(*argv, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed: {done.output[-3000:]}")
    times[label] = done.seconds
    print(f"{label}: {done.seconds:.1f} s", flush=True)
    return done


if __name__ == "__main__":
    sys.exit(main())
