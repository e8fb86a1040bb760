"""Training from a split whose decoded windows are larger than the memory the training process may
use: the runs layout holds each frame once and cuts each batch's windows when it is drawn, so one
epoch completes under a data-segment cap (RLIMIT_DATA, what `prlimit --data` sets) that reading the
split's windows whole does not fit in. The model is cheap (1x1 kernels, 2 channels, 10x10 patches)
and trains on a random 40 x 40 crop of each 400 x 400 window (`data.crop`), so that the bytes, not
the arithmetic, are large; the cap leaves room for torch and MLflow
(a `convlstm train --workers 0` process of this test maps 2.2 GB, 1.1 GB resident, with 60 frames)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import manifest as mf
from pipelines.radar.prepare import RadarOptions, schema
from pipelines.runs import Run, frame_schema
from pipelines.shard_writer import stack_runs, to_table, with_starts, write_shard

CAP = 3072 << 20  # bytes of private writable memory (heap, arrays, thread stacks) the process may map
OPTIONS = RadarOptions(size=(400, 400))  # 5 + 15 frames at stride 1: a window is 6.4 MB decoded
FRAMES = {"2020-01-01": ("train", 340), "2020-01-02": ("train", 340), "2020-01-03": ("val", 24)}
TINY = ["model.params.hidden_channels=[2]", "model.params.input_kernel_size=1", "model.params.hidden_kernel_size=1",
        "model.params.patch_size=10", "data.crop=40", "data.batch_size=8", "data.limit_train=null", "data.limit_val=4",
        "train.epochs=1", "registry.register=false", "train.keep_checkpoints=1"]


def noise_run(day: str, n: int) -> Run:
    """One day of pseudo-random frames (seeded by the day), every window of 20 frames."""
    frames = np.random.default_rng(sum(day.encode())).integers(0, 256, size=(n, 1, *OPTIONS.size), dtype=np.uint8)
    return Run({"frames": frames, "mask": np.ones_like(frames), "source": np.full(n, day, dtype=object),
                "start": np.array([f"{day}T{k:05d}" for k in range(n)], dtype=object)},
               list(range(n - OPTIONS.length + 1)))


@pytest.fixture(scope="module")
def big_split(tmp_path_factory) -> Path:
    """A runs-layout radar dataset of noise, written with the shard functions `prepare radar` uses."""
    out = tmp_path_factory.mktemp("ltm") / "noise"
    windows = schema(OPTIONS)
    splits = {}
    for day, (split, n) in FRAMES.items():
        columns, starts = stack_runs([noise_run(day, n)], windows)
        write_shard(str(out), split, with_starts(to_table(columns, frame_schema(windows)), starts), windows, day)
        splits[split] = {"members": [*splits.get(split, {}).get("members", []), day],
                         "count": splits.get(split, {}).get("count", 0) + len(starts), "per_class": {}}
    mf.write_manifest(str(out), mf.build_manifest(
        task="radar", params=OPTIONS.to_params("synthetic", None), schema=windows, splits=splits, sources={},
        rejected=[], extra={"time_step_s": 300.0, "layout": "runs"}))
    return out


def capped(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (CAP, CAP))

    env = {**__import__("os").environ, "CONVLSTM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true",
           "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, *argv], preexec_fn=limit, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.integration  # trains an epoch over a 4 GB split in a capped subprocess
def test_one_epoch_trains_from_a_split_larger_than_the_process_may_hold(big_split, tmp_path):
    manifest = json.loads((big_split / "manifest.json").read_text())
    windows = manifest["splits"]["train"]["count"]
    assert windows * 2 * 20 * 400 * 400 > 1.25 * CAP  # the decoded training windows
    whole = capped(["-c", f"from pipelines.shards import read_windows; read_windows({str(big_split)!r}, 'train')"],
                   tmp_path)
    assert whole.returncode != 0 and "MemoryError" in whole.stderr  # the cap bites when the windows are cut at once
    done = capped(["-m", "jobs.cli", "train", "--task", "radar", "--config", "radar-tiny", "--data", str(big_split),
                   "--workers", "0", "--json", *TINY], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["steps"] == -(-windows // 8)
