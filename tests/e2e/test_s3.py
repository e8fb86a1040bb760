"""Object storage end to end against a local S3 server (moto in server mode on 127.0.0.1):
the retrain lock on s3://, then shards, Ray Train checkpoints and MLflow artifacts on s3://."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from jobs.registry.modelio import load_model
from pipelines.shards import read_windows
from pipelines.synthetic import write_kth_videos
from conftest import S3_BUCKET as BUCKET  # the bucket of the `s3_env` fixture (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def _keys(prefix: str) -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_retrain_lock_on_s3_is_exclusive_and_breaks_only_stale_leases(s3_env):
    from jobs.ops.locks import LockHeld, LockLost, RetrainLock, lock_uri_for

    uri = lock_uri_for(f"s3://{BUCKET}/data/kth")
    assert uri == f"s3://{BUCKET}/data/kth.retrain.lock"
    with RetrainLock(uri, ttl_s=60, owner="first") as first:
        assert json.loads(_read(uri))["token"] == first.token
        with pytest.raises(LockHeld, match="held by first"):
            RetrainLock(uri, ttl_s=60, owner="second").acquire()
    assert _keys("data/") == []

    stale = RetrainLock(uri, ttl_s=0.01, owner="crashed").acquire()
    time.sleep(0.05)
    with RetrainLock(uri, ttl_s=60, owner="next") as fresh:
        with pytest.raises(LockLost):
            stale.verify()
        stale.release()  # a conditional delete on the stale ETag: leaves the new lock alone
        assert fresh.holds()
    assert _keys("data/") == []


def _read(uri: str) -> str:
    from pipelines import storage

    return storage.read_text(uri)


# Prepare and train in one child process so that its own local Ray (and the Ray Train workers it
# spawns) start with the S3 environment; the session Ray of other tests may lack it.
_PREPARE_AND_TRAIN = """
import sys
from jobs.cli import main
from pipelines.ray_session import init_ray

videos, data, storage, experiment, model = sys.argv[1:6]
init_ray(num_cpus=2)
assert main(["prepare", "kth", "--src", videos, "--out", data, "--frame-len", "10", "--stride", "10",
             "--size", "30x40"]) == 0
sys.exit(main(["train", "--task", "kth", "--data", data, "--config", "kth-tiny", "--storage", storage,
               "--experiment", experiment, "--run-name", "s3-run", "--workers", "1",
               "train.epochs=1", f"registry.name={model}"]))
"""
MODEL = "convlstm-kth-s3"


@pytest.mark.slow
def test_shards_checkpoints_and_mlflow_artifacts_on_s3(s3_env, tmp_path):
    videos = tmp_path / "videos"
    write_kth_videos(videos, persons=[11, 1, 2], actions=("boxing", "walking"), scenarios=("d1",), frames=20)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("s3-e2e", artifact_location=f"s3://{BUCKET}/mlflow/s3-e2e")
    env = {**os.environ, **s3_env, "MLFLOW_TRACKING_URI": uri, "CONVLSTM_HOME": str(tmp_path / "home"),
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="rt", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    data = f"s3://{BUCKET}/data/kth"
    child = subprocess.run(
        [sys.executable, "-c", _PREPARE_AND_TRAIN, str(videos), data, f"s3://{BUCKET}/ray", "s3-e2e", MODEL],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-3000:]

    data_keys = _keys("data/kth/")
    assert "data/kth/manifest.json" in data_keys
    assert any(k.startswith("data/kth/train/") and k.endswith(".parquet") for k in data_keys)
    assert any(k.startswith("ray/s3-run/") and k.endswith("/checkpoint.pt") for k in _keys("ray/"))
    assert any(k.endswith("/MLmodel") for k in _keys("mlflow/s3-e2e/"))
    assert not (tmp_path / "home" / "outputs" / "train").exists()  # nothing fell back to local disk

    net, info = load_model(f"models:/{MODEL}@champion", tracking_uri=uri)
    assert info["data_fingerprint"] == json.loads(_read(f"{data}/manifest.json"))["fingerprint"]
    frames = read_windows(data, "test", columns=["frames"])["frames"][:3]
    with torch.no_grad():
        logits = net(torch.from_numpy(frames).float() / 255)
    assert logits.shape == (3, 6)


# A pySTEPS format reads object-store frames like the built-in ones: the decode tasks fetch them.
_PREPARE_PYSTEPS = """
import sys
from jobs.cli import main
from pipelines.ray_session import init_ray

src, data = sys.argv[1:3]
init_ray(num_cpus=2)
sys.exit(main(["prepare", "radar", "--src", src, "--format", "pysteps:mrms_grib", "--out", data,
               "--in-len", "3", "--out-len", "2", "--size", "16x32", "--split", "time",
               "--val-fraction", "0", "--test-fraction", "0.5"]))
"""


@pytest.mark.slow
def test_pysteps_format_reads_mrms_frames_from_s3(s3_env, tmp_path):
    import boto3

    files = sorted((REPO / "tests" / "data" / "radar-mrms-sample").rglob("*.grib2"))
    for path in files:
        boto3.client("s3").upload_file(str(path), BUCKET, f"mrms/2019/06/10/{path.name}")
    env = {**os.environ, **s3_env, "CONVLSTM_HOME": str(tmp_path / "home"),
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="rt", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    data = f"s3://{BUCKET}/data/mrms"
    child = subprocess.run([sys.executable, "-c", _PREPARE_PYSTEPS, f"s3://{BUCKET}/mrms/", data],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-3000:]
    manifest = json.loads(_read(f"{data}/manifest.json"))
    assert manifest["params"]["format"] == "pysteps:mrms_grib" and manifest["rejected"] == []
    assert sorted(manifest["sources"]) and sum(s["count"] for s in manifest["splits"].values()) >= 2
    windows = read_windows(data, "test", columns=["frames", "mask"])
    assert windows["frames"].shape[1:] == (5, 1, 16, 32) and (windows["mask"] == 0).any()
