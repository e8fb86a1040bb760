"""A fourth dataset is one pipeline module and one task module: a toy "blobs" dataset (bright squares
drifting right) prepared with the generic Ray Data driver, its task registered here, then trained and
evaluated by the unchanged `train` and `evaluate` (see docs/architecture.md, "Adding a dataset")."""
from __future__ import annotations

import sys
from functools import partial

import numpy as np
import pytest

from jobs.tasks import ForecastTask, register, task_class

FRAMES, SIZE = 6, 16


# --- the pipeline module: sources -> windows ------------------------------------------------------

def blob_windows(source, count: int):
    """Decode task: `count` windows of a square drifting one pixel right per frame."""
    rng = np.random.default_rng(source.meta["seed"])
    for index in range(count):
        frames = np.zeros((FRAMES, 1, SIZE, SIZE), dtype=np.uint8)
        row, col = rng.integers(2, SIZE - 6, size=2)
        for t in range(FRAMES):
            frames[t, 0, row:row + 4, col + t // 2:col + t // 2 + 4] = 220
        yield {"frames": frames, "source": source.name, "start": index}


def prepare_blobs(out: str, windows: int = 8) -> dict:
    from pipelines.driver import Source, run_prepare

    sources = [Source(name=f"{split}-{i}", paths=[], split=split, meta={"seed": hash((split, i)) % 2**32})
               for split in ("train", "val", "test") for i in range(2)]
    schema = {"frames": {"shape": [FRAMES, 1, SIZE, SIZE], "dtype": "uint8", "unit": "intensity"},
              "source": {"shape": [], "dtype": "str"}, "start": {"shape": [], "dtype": "int64"}}
    return run_prepare(task="blobs", sources=sources, windows_fn=partial(blob_windows, count=windows), out=out,
                       params={"windows_per_source": windows, "in_len": 3}, schema=schema, progress=False)


# --- the task module -------------------------------------------------------------------------------

@register
class BlobsTask(ForecastTask):
    name = "blobs"
    primary_metric = "mse"
    lower_is_better = frozenset({"mse", "mae"})
    table_metrics = ("mse", "mae")  # scored by ForecastTask's default evaluator (video_metrics)


@pytest.fixture(scope="module")
def blobs_data(ray_local, tmp_path_factory) -> str:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the decode tasks run this module's code
    out = str(tmp_path_factory.mktemp("blobs") / "data")
    manifest = prepare_blobs(out)
    assert manifest["task"] == "blobs" and manifest["splits"]["test"]["count"] == 16
    return out


def test_a_registered_task_trains_and_evaluates_like_the_builtins(blobs_data, tmp_path):
    from jobs.evaluation.evaluate import evaluate
    from jobs.training.config import from_dict
    from jobs.training.driver import train

    assert task_class("blobs") is BlobsTask
    cfg = from_dict({
        "task": "blobs",
        "model": {"name": BlobsTask.model_family,
                  "params": {"hidden_channels": [4], "input_kernel_size": 3, "hidden_kernel_size": 3,
                             "output_activation": "sigmoid"}},
        "loss": {"name": "mse"}, "data": {"batch_size": 4},
        "train": {"epochs": 2, "monitor": "val_mse", "mode": "min", "log_every_steps": 2},
        "registry": {"register": False},
    })
    summary = train(cfg, blobs_data, workers=0, storage_path=str(tmp_path / "ckpt"), run_name="blobs-run")
    assert summary.monitor == "val_mse" and summary.best_score >= 0 and summary.steps == 8

    result = evaluate(summary.best_checkpoint, blobs_data, "test", ("persistence",), out=tmp_path / "eval")
    assert result["task"] == "blobs" and result["data"]["windows"] == 16
    assert result["primary_metric"]["name"] == "mse" and not result["primary_metric"]["higher_is_better"]
    assert set(result["methods"]) == {"model", "persistence"}
    assert result["methods"]["persistence"]["summary"]["mse"] > 0
    assert len(result["methods"]["model"]["per_lead"]["mse"]) == FRAMES - 3
    assert "| persistence |" in (tmp_path / "eval" / "evaluation.md").read_text()


def test_unknown_tasks_are_refused_by_name():
    from jobs.training.config import from_dict

    with pytest.raises(ValueError, match=r"^task: must be one of kth, radar, mnist.*got 'nope'"):
        from_dict({"task": "nope", "model": {"name": "x"}, "loss": {"name": "mse"}})
