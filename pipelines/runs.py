"""The runs layout: each frame stored once, in time-ordered runs, and windows cut when read.

A forecast window of `T` frames at stride `s < T` shares `T - s` frames with the next one, so storing
windows whole writes each frame up to `T / s` times (20 for the paper's 5 + 15 frames at stride 1).
In the runs layout a shard row is one frame: the window schema's tensor columns with the window axis
dropped (`frames` uint8 `[T, 1, H, W]` -> `[1, H, W]` per row) and its scalar columns per frame
(`source`, and `start` = the frame's own time). The shard's window index is the list of row offsets
where windows start; window `k` is rows `starts[k] .. starts[k] + T - 1` of the tensor columns and
the scalar columns of its first row, which is exactly the window the windows layout stores whole.

This module is the arithmetic (numpy only); `pipelines.shards` reads the files, `pipelines.shard_writer`
writes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, get_args

import numpy as np

from pipelines.manifest import Layout

LAYOUTS = get_args(Layout)  # "windows": one row per window (the original layout, the default)


@dataclass
class Run:
    """Time-ordered frames of one source, yielded by a windows function in the runs layout.

    `columns`: every window-schema column per frame: tensors `[n, *shape[1:]]`, scalars `[n]`.
    `starts`: row offsets into the run where windows start (consecutive rows are consecutive in time).
    """

    columns: dict[str, np.ndarray]
    starts: Sequence[int]


def window_length(schema: dict) -> int:
    """T: the leading axis of the window schema's tensor columns (all must agree)."""
    lengths = {spec["shape"][0] for spec in schema.values() if spec["shape"]}
    if len(lengths) != 1:
        raise ValueError(f"the runs layout needs tensor columns with one window length, got {sorted(lengths)}")
    return lengths.pop()


def frame_schema(schema: dict) -> dict:
    """The window schema with the window axis dropped from tensor columns: a runs-layout row."""
    return {name: {**spec, "shape": list(spec["shape"][1:])} if spec["shape"] else spec
            for name, spec in schema.items()}


def covered(run: Run, length: int) -> Run:
    """`run` without the rows no window covers (frames of runs shorter than a window), starts renumbered."""
    rows = len(next(iter(run.columns.values())))
    starts = np.asarray(run.starts, dtype=np.int64)
    if starts.size and (starts.min() < 0 or starts.max() + length > rows):
        raise ValueError(f"window starts {starts.min()}..{starts.max()} of length {length} "
                         f"fall outside a run of {rows} frames")
    keep = np.zeros(rows, dtype=bool)
    for start in starts:
        keep[start:start + length] = True
    if keep.all():
        return Run(run.columns, starts.tolist())
    renumbered = np.cumsum(keep) - 1
    return Run({name: values[keep] for name, values in run.columns.items()}, renumbered[starts].tolist())


def cut(columns: dict[str, np.ndarray], starts: Sequence[int], schema: dict) -> dict[str, np.ndarray]:
    """Windows from frame rows: the window `schema`'s tensor columns `[n, *f]` -> `[len(starts), T, *f]`
    (copies), its scalar columns `[n]` -> the first frame's value `[len(starts)]`."""
    starts = np.asarray(starts, dtype=np.int64)
    rows = starts[:, None] + np.arange(window_length(schema))
    return {name: values[rows] if schema[name]["shape"] else values[starts] for name, values in columns.items()}
