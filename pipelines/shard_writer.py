"""Writing the shard format (`pipelines.shards`): window dicts or runs -> checked column batches ->
Arrow tables in shard encoding (tensors as fixed-length bytes with shape and dtype in the field
metadata; the runs layout's window index in the footer) -> `<dataset>/<split>/<name>.parquet`."""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.runs import Run, covered, frame_schema, window_length
from pipelines.shards import DTYPE_KEY, SHAPE_KEY, STARTS_KEY, split_dir

# Runs layout: rows per row group (bounds a reader's memory: it holds one group at a time).
_GROUP_BYTES = 16 << 20


class SchemaError(Exception):
    """A windows function yields columns other than the schema's: a bug, not a bad input."""


def stack_windows(windows: Iterable[dict], schema: dict) -> dict[str, np.ndarray]:
    """Window dicts -> one column batch {name: array [N, *shape]}, checked against `schema`.

    Raises SchemaError when a window's keys differ from the schema's columns and ValueError
    when a tensor's shape or dtype does not match (e.g. frames of the wrong size).
    """
    values: dict[str, list] = {name: [] for name in schema}
    for window in windows:
        if window.keys() != values.keys():
            raise SchemaError(f"window columns {sorted(window)} differ from the schema's {sorted(values)}")
        for name, value in window.items():
            values[name].append(value)
    return {name: _column(name, values[name], schema[name]) for name in schema}


def stack_runs(runs: Iterable[Run], schema: dict) -> tuple[dict[str, np.ndarray], list[int]]:
    """Runs of one shard -> (frame-row column batch {name: [n, *frame shape]}, window starts into it),
    checked against the window `schema` like stack_windows; rows no window covers are left out."""
    length, frames = window_length(schema), frame_schema(schema)
    values: dict[str, list] = {name: [] for name in schema}
    starts: list[int] = []
    rows = 0
    for run in runs:
        if run.columns.keys() != values.keys():
            raise SchemaError(f"run columns {sorted(run.columns)} differ from the schema's {sorted(values)}")
        run = covered(run, length)
        starts += [rows + start for start in run.starts]
        for name, column in run.columns.items():
            values[name].extend(column)
        rows += len(next(iter(run.columns.values())))
    return {name: _column(name, values[name], frames[name]) for name in schema}, starts


def with_starts(table: pa.Table, starts: list[int]) -> pa.Table:
    """A runs-layout table (frame rows) carrying its window index in the schema metadata (the file footer)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), STARTS_KEY: json.dumps(starts)})


def _column(name: str, values: list, spec: dict) -> np.ndarray:
    shape, dtype = tuple(spec["shape"]), spec["dtype"]
    if dtype == "str":
        return np.array([str(v) for v in values], dtype=object)
    if not shape:
        return np.asarray(values, dtype=dtype).reshape(len(values))
    if not values:
        return np.zeros((0, *shape), dtype=dtype)
    array = np.stack(values)
    if array.shape[1:] != shape or array.dtype != np.dtype(dtype):
        raise ValueError(f"column {name}: windows are {array.dtype} {list(array.shape[1:])}, "
                         f"the schema says {dtype} {list(shape)}")
    return array


def to_table(columns: dict[str, np.ndarray], schema: dict) -> pa.Table:
    """A column batch from stack_windows (plus any extra scalar columns) -> an Arrow table in shard encoding."""
    fields, arrays = [], []
    for name, values in columns.items():
        spec = schema.get(name, {"shape": [], "dtype": "str" if values.dtype == object else values.dtype.name})
        if spec["shape"]:
            values = np.ascontiguousarray(values)
            width = np.dtype(spec["dtype"]).itemsize * int(np.prod(spec["shape"]))
            arrays.append(pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values),
                                                               [None, pa.py_buffer(values)]))
            metadata = {SHAPE_KEY: json.dumps(list(spec["shape"])), DTYPE_KEY: spec["dtype"]}
            fields.append(pa.field(name, pa.binary(width), metadata=metadata))
        else:
            arrays.append(pa.array(values, type=pa.string() if spec["dtype"] == "str" else None))
            fields.append(pa.field(name, arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_shard(path: str, split: str, table: pa.Table, schema: dict, name: str) -> str:
    """Write `table` (to_table encoding; runs layout: frame rows `with_starts`) as
    `<path>/<split>/<name>.parquet`, replacing a file of that name (a retried task rewrites its own
    shard); returns the file's path. Runs-layout files get row groups of about _GROUP_BYTES, so a
    reader cutting windows holds one group at a time."""
    fs, root = storage.resolve(split_dir(path, split))
    fs.create_dir(root, recursive=True)
    target = f"{root}/{name}.parquet"
    scalars = [column for column, spec in schema.items() if not spec["shape"]]
    group = None
    if STARTS_KEY in (table.schema.metadata or {}):
        group = max(1, _GROUP_BYTES // max(1, table.nbytes // max(1, table.num_rows)))
    pq.write_table(table, target, filesystem=fs, use_dictionary=scalars, row_group_size=group)
    return target
