"""The shard format: Parquet files under `<dataset>/<split>/`, one row per window.

Columns follow the manifest `schema` ({column: {shape, dtype}}, `shape` without the row axis).
Tensor columns (`frames` uint8 `[T, C, H, W]`, `mask` uint8 `[T, 1, H, W]`) are stored as Parquet
fixed-length byte arrays holding each window's C-order bytes, with `shape` and `dtype` in the
field metadata: Parquet writes and reads these ~10x faster than nested lists (Ray's tensor
extension storage). Readers hand them back as arrays: `read_windows` (pyarrow only, no Ray)
as numpy `[N, *shape]`, `read_dataset` as a Ray Dataset whose tensor columns are Ray tensor
columns. Scalar columns are int64 or str.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.manifest import load_manifest

if TYPE_CHECKING:
    import ray.data

# Reserved: a window column may not be called this (the split is the `<split>/` folder, not a column).
SPLIT_COLUMN = "split"
# Rows are returned in this order by read_windows (when the columns exist).
ORDER = ("source", "start")
_SHAPE_KEY, _DTYPE_KEY = b"convlstm:shape", b"convlstm:dtype"  # tensor field metadata (pipelines.verify reads it)


class SchemaError(Exception):
    """A windows function yields columns other than the schema's: a bug, not a bad input."""


def split_dir(dataset: str, split: str) -> str:
    return storage.join(dataset, split)


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
            metadata = {_SHAPE_KEY: json.dumps(list(spec["shape"])), _DTYPE_KEY: spec["dtype"]}
            fields.append(pa.field(name, pa.binary(width), metadata=metadata))
        else:
            arrays.append(pa.array(values, type=pa.string() if spec["dtype"] == "str" else None))
            fields.append(pa.field(name, arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_shard(path: str, split: str, table: pa.Table, schema: dict, name: str) -> str:
    """Write `table` (to_table encoding) as `<path>/<split>/<name>.parquet`, replacing a file of that
    name (a retried task rewrites its own shard); returns the file's path."""
    fs, root = storage.resolve(split_dir(path, split))
    fs.create_dir(root, recursive=True)
    target = f"{root}/{name}.parquet"
    scalars = [column for column, spec in schema.items() if not spec["shape"]]
    pq.write_table(table, target, filesystem=fs, use_dictionary=scalars)
    return target


def read_windows(path: str, split: str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    """All windows of one split as numpy arrays, without Ray: {column: [N, *shape]}.

    Rows are ordered by (source, start). Loads the whole split: use read_dataset to stream.
    """
    schema = _split_schema(path, split)
    wanted = _check_columns(columns, schema)
    order = [c for c in ORDER if c in schema]
    fs, root = storage.resolve(split_dir(path, split))
    read = wanted + [c for c in order if c not in wanted]
    tables = [pq.read_table(f"{root}/{name}", columns=read, filesystem=fs)
              for name in storage.list_files(split_dir(path, split), ".parquet")]
    if not tables:
        return {c: _empty(schema[c]) for c in wanted}
    table = pa.concat_tables(tables)
    if order:
        table = table.take(pc.sort_indices(table, sort_keys=[(c, "ascending") for c in order]))
    return {c: _to_numpy(table.column(c), schema[c]) for c in wanted}


def read_dataset(path: str, split: str, columns: list[str] | None = None) -> "ray.data.Dataset":
    """One split as a streaming Ray Dataset (row order unspecified); tensor columns are Ray tensor columns."""
    import ray.data

    schema = _split_schema(path, split)
    wanted = _check_columns(columns, schema)
    if not storage.list_files(split_dir(path, split), ".parquet"):
        return ray.data.from_arrow(_empty_table(schema, wanted))
    fs, root = storage.resolve(split_dir(path, split))
    ds = ray.data.read_parquet(root, filesystem=fs, columns=wanted, file_extensions=["parquet"])
    if not any(schema[c]["shape"] for c in wanted):
        return ds
    return ds.map_batches(_decode_batch, batch_format="pyarrow", fn_kwargs={"schema": schema})


def _decode_batch(table: pa.Table, *, schema: dict) -> dict[str, np.ndarray]:
    """Ray Data UDF: shard encoding -> numpy columns (tensors `[N, *shape]`)."""
    return {c: _to_numpy(table.column(c), schema[c]) for c in table.column_names}


def _split_schema(path: str, split: str) -> dict:
    manifest = load_manifest(path)
    if split not in manifest["splits"]:
        raise ValueError(f"split {split!r} is not in the dataset at {path} "
                         f"(splits: {', '.join(sorted(manifest['splits']))})")
    return manifest["schema"]


def _check_columns(columns: list[str] | None, schema: dict) -> list[str]:
    if columns is None:
        return list(schema)
    unknown = [c for c in columns if c not in schema]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the schema (columns: {', '.join(schema)})")
    return list(columns)


def _to_numpy(column: pa.ChunkedArray, spec: dict) -> np.ndarray:
    if not spec["shape"]:
        return column.to_numpy(zero_copy_only=False)
    dtype = np.dtype(spec["dtype"])
    parts = []
    for chunk in column.chunks:
        width = chunk.type.byte_width
        data = np.frombuffer(chunk.buffers()[1], np.uint8, count=len(chunk) * width, offset=chunk.offset * width)
        parts.append(data.view(dtype).reshape(len(chunk), *spec["shape"]))
    return np.concatenate(parts) if parts else _empty(spec)


def _empty(spec: dict) -> np.ndarray:
    dtype = object if spec["dtype"] == "str" else spec["dtype"]
    return np.zeros((0, *spec["shape"]), dtype=dtype)


def _empty_table(schema: dict, columns: list[str]) -> pa.Table:
    from ray.data.extensions import ArrowTensorArray

    arrays = {}
    for c in columns:
        spec = schema[c]
        if spec["shape"]:
            arrays[c] = ArrowTensorArray.from_numpy(_empty(spec))
        else:
            arrays[c] = pa.array([], type=pa.string() if spec["dtype"] == "str" else pa.from_numpy_dtype(spec["dtype"]))
    return pa.table(arrays)
