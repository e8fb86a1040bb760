"""A toy fourth dataset, "blobs" (bright squares drifting right), as a plugin package would ship it: a
pipeline part (sources -> windows through the generic Ray Data driver) and a task class. Not registered
on import: `tests/jobs/test_task_plugin.py` installs it through the `convlstm.tasks` entry point."""
from __future__ import annotations

from functools import partial

import numpy as np

from jobs.tasks import ForecastTask

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
    from pipelines.driver import DatasetSpec, Publish, Source, run_prepare

    sources = [Source(name=f"{split}-{i}", paths=[], split=split, meta={"seed": hash((split, i)) % 2**32})
               for split in ("train", "val", "test") for i in range(2)]
    schema = {"frames": {"shape": [FRAMES, 1, SIZE, SIZE], "dtype": "uint8", "unit": "intensity"},
              "source": {"shape": [], "dtype": "str"}, "start": {"shape": [], "dtype": "int64"}}
    spec = DatasetSpec(task="blobs", params={"windows_per_source": windows, "in_len": 3}, schema=schema)
    return run_prepare(spec, sources, partial(blob_windows, count=windows), out, publish=Publish(progress=False))


# --- the task module -------------------------------------------------------------------------------

class BlobsTask(ForecastTask):
    name = "blobs"
    primary_metric = "mse"
    lower_is_better = frozenset({"mse", "mae"})
    table_metrics = ("mse", "mae")  # scored by ForecastTask's default evaluator (video_metrics)
