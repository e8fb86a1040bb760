"""The multi-node harness end to end, and 2-node against 1-node training on the same CPUs.

Starts tests/helpers/cluster_harness.py's cluster (a head with 0 CPUs, two worker nodes with 2 logical CPUs
each in private mount namespaces, moto S3, `mlflow server` with basic auth; sqlite backend unless
--postgres), then times through `convlstm submit` only: KTH videos on S3 -> prepare -> train with 2
Ray Train workers spread over the two nodes (CONVLSTM_TRAIN_PLACEMENT=SPREAD) -> the same training
with both workers packed on one node (STRICT_PACK) -> evaluate. Training throughput is the mean of
the per-epoch `samples/s` rank 0 prints, without the first epoch (start-up). Needs root and unshare.

    sudo .venv/bin/python benchmarks/multinode.py --json multinode.json
"""
from __future__ import annotations

import argparse
import json
import re
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
    parser.add_argument("--postgres", action="store_true", help="MLflow on PostgreSQL (as the test) instead of sqlite")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

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


def _timed(times: dict, label: str, cluster: MultiNodeCluster, *argv: str, env: dict):
    done = cluster.submit(*argv, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed: {done.output[-3000:]}")
    times[label] = done.seconds
    print(f"{label}: {done.seconds:.1f} s", flush=True)
    return done


if __name__ == "__main__":
    sys.exit(main())
