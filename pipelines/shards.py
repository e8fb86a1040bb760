"""The shard format: Parquet files under `<dataset>/<split>/`, in one of two layouts (manifest `layout`).

`windows` (the default; datasets without a `layout` key): one row per window. `runs` (radar, and any
forecast task whose windows overlap): one row per frame, in time-ordered runs, and the file's window
index (the row offsets where windows start) in its footer metadata; windows are cut when read
(`pipelines.runs`), so both layouts read back as the same windows.

Columns follow the manifest `schema` ({column: {shape, dtype}}, `shape` without the row axis).
Tensor columns (`frames` uint8 `[T, C, H, W]`, `mask` uint8 `[T, 1, H, W]`) are stored as Parquet
fixed-length byte arrays holding each window's C-order bytes, with `shape` and `dtype` in the
field metadata: Parquet writes and reads these ~10x faster than nested lists (Ray's tensor
extension storage). Readers hand them back as arrays: `read_windows` (pyarrow only, no Ray)
as numpy `[N, *shape]`, `read_dataset` as a Ray Dataset whose tensor columns are Ray tensor
columns. Scalar columns are int64 or str. `window_counts` gives each file's windows from its footer.
Writing is `pipelines.shard_writer`.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.manifest import Manifest, load_manifest
from pipelines.runs import cut, frame_schema, window_length

if TYPE_CHECKING:
    import ray.data

# Reserved: a window column may not be called this (the split is the `<split>/` folder, not a column).
SPLIT_COLUMN = "split"
# Rows are returned in this order by read_windows (when the columns exist).
ORDER = ("source", "start")
SHAPE_KEY, DTYPE_KEY = b"convlstm:shape", b"convlstm:dtype"  # tensor field metadata (pipelines.verify reads it)
STARTS_KEY = b"convlstm:starts"  # runs layout: JSON list of the row offsets where the file's windows start
# Runs layout: decoded bytes per batch of cut windows (bounds a reader's memory; read_dataset ships
# each batch as its own block: docs/scaling.md, "Memory and disk per node").
_CUT_BYTES = 4 << 20


def split_dir(dataset: str, split: str) -> str:
    return storage.join(dataset, split)


def window_counts(path: str, split: str) -> dict[str, int]:
    """{file name: windows it holds} for one split's shard files, from the Parquet footers alone (no
    data pages read): the runs layout's window index, or the row count in the windows layout."""
    fs, root = storage.resolve(split_dir(path, split))
    counts = {}
    for name in storage.list_files(split_dir(path, split), ".parquet"):
        with fs.open_input_file(f"{root}/{name}") as f:
            counts[name] = footer_windows(pq.read_metadata(f))
    return counts


def footer_windows(footer: pq.FileMetaData) -> int:
    """Windows one shard file holds, from its footer: the runs layout's window index, else its rows."""
    starts = (footer.metadata or {}).get(STARTS_KEY)
    return len(json.loads(starts)) if starts is not None else footer.num_rows


class WindowColumn:
    """A runs-layout tensor column cut on demand: the frame rows `[n, *f]` held once, and indexing
    with an int or an index array returns windows `[..., T, *f]` (copies); a slice stays lazy."""

    def __init__(self, frames: np.ndarray, starts: np.ndarray, length: int):
        self.frames, self.starts, self.length = frames, np.asarray(starts, dtype=np.int64), length

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.starts), self.length, *self.frames.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.frames.dtype

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return WindowColumn(self.frames, self.starts[index], self.length)
        return self.frames[self.starts[index][..., None] + np.arange(self.length)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        windows = self[np.arange(len(self))]
        return windows if dtype is None else windows.astype(dtype)


def concatenate(parts: list) -> np.ndarray | WindowColumn:
    """np.concatenate for columns from read_windows: WindowColumns of one window length stay lazy
    (frames and starts joined); mixed with arrays, all are cut."""
    lazy = [part for part in parts if isinstance(part, WindowColumn)]
    if len(lazy) < len(parts) or len({part.length for part in lazy}) > 1:
        return np.concatenate([np.asarray(part) for part in parts])
    offsets = np.cumsum([0] + [len(part.frames) for part in lazy])
    return WindowColumn(np.concatenate([part.frames for part in lazy]),
                        np.concatenate([part.starts + offset for part, offset in zip(lazy, offsets)]), lazy[0].length)


def read_windows(path: str, split: str, columns: list[str] | None = None,
                 lazy: bool = False) -> dict[str, np.ndarray | WindowColumn]:
    """All windows of one split as numpy arrays, without Ray: {column: [N, *shape]}.

    Rows are ordered by (source, start). Loads the whole split: use read_dataset to stream.
    `lazy` (runs layout): tensor columns are WindowColumns holding each frame once and cutting windows
    when indexed, so memory is the split's frames, not its windows (about T / stride times less).
    """
    manifest = _split_manifest(path, split)
    schema = manifest.column_specs()
    wanted = _check_columns(columns, schema)
    order = [c for c in ORDER if c in schema]
    fs, root = storage.resolve(split_dir(path, split))
    read = wanted + [c for c in order if c not in wanted]
    files = [f"{root}/{name}" for name in storage.list_files(split_dir(path, split), ".parquet")]
    if manifest.layout == "runs" and lazy:
        return _lazy_windows(fs, files, schema, read, wanted, order)
    if manifest.layout == "runs":
        return _ordered_windows([batch for file in files for batch in _file_windows(fs, file, schema, read)],
                                schema, wanted, order)
    tables = [pq.read_table(file, columns=read, filesystem=fs) for file in files]
    if not tables:
        return {c: _empty(schema[c]) for c in wanted}
    table = pa.concat_tables(tables)
    if order:
        table = table.take(pc.sort_indices(table, sort_keys=[(c, "ascending") for c in order]))
    return {c: _to_numpy(table.column(c), schema[c]) for c in wanted}


def read_dataset(path: str, split: str, columns: list[str] | None = None) -> "ray.data.Dataset":
    """One split as a streaming Ray Dataset (row order unspecified); tensor columns are Ray tensor columns."""
    import ray.data  # deferred: Ray ~2-10 s to import; the module's other users skip it

    manifest = _split_manifest(path, split)
    schema = manifest.column_specs()
    wanted = _check_columns(columns, schema)
    files = storage.list_files(split_dir(path, split), ".parquet")
    if not files:
        return ray.data.from_arrow(_empty_table(schema, wanted))
    if manifest.layout == "runs":  # one read task per file: a window never straddles two tasks
        items = [{"file": storage.join(split_dir(path, split), name)} for name in files]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _cut_files, batch_size=1, batch_format="numpy", fn_kwargs={"schema": schema, "columns": wanted})
        ds.context.target_max_block_size = _CUT_BYTES  # else Ray Data joins cut batches into 128 MB blocks
        return ds
    fs, root = storage.resolve(split_dir(path, split))
    ds = ray.data.read_parquet(root, filesystem=fs, columns=wanted, file_extensions=["parquet"])
    if not any(schema[c]["shape"] for c in wanted):
        return ds
    return ds.map_batches(_decode_batch, batch_format="pyarrow", fn_kwargs={"schema": schema})


def _decode_batch(table: pa.Table, *, schema: dict) -> dict[str, np.ndarray]:
    """Ray Data UDF: shard encoding -> numpy columns (tensors `[N, *shape]`)."""
    return {c: _to_numpy(table.column(c), schema[c]) for c in table.column_names}


def _cut_files(batch: dict[str, np.ndarray], *, schema: dict, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF (runs layout): shard file URIs -> their windows, in batches of about _CUT_BYTES."""
    for uri in batch["file"]:
        fs, file = storage.resolve(str(uri))
        yield from _file_windows(fs, file, schema, columns)


def _file_windows(fs, file: str, schema: dict, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """The windows of one runs-layout file as numpy column batches, in start order, reading one row
    group at a time and keeping only the frames a window still needs (memory: a row group plus
    one batch of windows)."""
    frames, length = frame_schema(schema), window_length(schema)
    per_batch = max(1, _CUT_BYTES // max(1, sum(_bytes(schema[c]) for c in columns)))
    with fs.open_input_file(file) as f:
        parquet = pq.ParquetFile(f)
        starts = json.loads(parquet.schema_arrow.metadata[STARTS_KEY])
        held: dict[str, np.ndarray] | None = None
        first, done = 0, 0  # file row of held's first row; windows yielded so far
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=columns)
            rows = {c: _to_numpy(table.column(c), frames[c]) for c in columns}
            held = rows if held is None else {c: np.concatenate([held[c], rows[c]]) for c in columns}
            end = first + len(held[columns[0]])
            ready = done
            while ready < len(starts) and starts[ready] + length <= end:
                ready += 1
            for k in range(done, ready, per_batch):
                yield cut(held, np.asarray(starts[k:min(k + per_batch, ready)]) - first, schema)
            done = ready
            keep = (starts[done] if done < len(starts) else end) - first
            held, first = {c: v[keep:] for c, v in held.items()}, first + keep


def _lazy_windows(fs, files: list[str], schema: dict, read: list[str], wanted: list[str],
                  order: list[str]) -> dict[str, np.ndarray | WindowColumn]:
    """read_windows(lazy=True) of a runs-layout split: every file's frame rows once, window starts
    offset into their concatenation, windows ordered by the `order` columns."""
    frames, rows, starts = frame_schema(schema), [], []
    for file in files:
        with fs.open_input_file(file) as f:
            table = pq.read_table(f, columns=read)
        starts.append(np.asarray(json.loads(table.schema.metadata[STARTS_KEY]), dtype=np.int64))
        rows.append({c: _to_numpy(table.column(c), frames[c]) for c in read})
    if not rows:
        return {c: _empty(schema[c]) for c in wanted}
    offsets = np.cumsum([0] + [len(part[read[0]]) for part in rows])
    starts = np.concatenate([s + offset for s, offset in zip(starts, offsets)])
    columns = {c: np.concatenate([part[c] for part in rows]) for c in read}
    if order:
        keys = list(zip(*(columns[c][starts] for c in order)))
        starts = starts[sorted(range(len(keys)), key=keys.__getitem__)]
    length = window_length(schema)
    return {c: WindowColumn(columns[c], starts, length) if schema[c]["shape"] else columns[c][starts] for c in wanted}


def _ordered_windows(batches: list[dict[str, np.ndarray]], schema: dict, wanted: list[str],
                     order: list[str]) -> dict[str, np.ndarray]:
    """Window batches -> one batch of the `wanted` columns, rows sorted by the `order` columns."""
    if not batches:
        return {c: _empty(schema[c]) for c in wanted}
    columns = {c: np.concatenate([b[c] for b in batches]) for c in batches[0]}
    if order:
        keys = list(zip(*(columns[c] for c in order)))
        rank = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
        return {c: columns[c][rank] for c in wanted}
    return {c: columns[c] for c in wanted}


def _bytes(spec: dict) -> int:
    return int(np.prod(spec["shape"], dtype=np.int64)) * (8 if spec["dtype"] == "str" else np.dtype(spec["dtype"]).itemsize)


def _split_manifest(path: str, split: str) -> Manifest:
    manifest = load_manifest(path)
    if split not in manifest.splits:
        raise ValueError(f"split {split!r} is not in the dataset at {path} "
                         f"(splits: {', '.join(sorted(manifest.splits))})")
    return manifest


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
    # deferred: Ray ~2-10 s to import; the module's other users skip it
    from ray.data.extensions import ArrowTensorArray

    arrays = {}
    for c in columns:
        spec = schema[c]
        if spec["shape"]:
            arrays[c] = ArrowTensorArray.from_numpy(_empty(spec))
        else:
            arrays[c] = pa.array([], type=pa.string() if spec["dtype"] == "str" else pa.from_numpy_dtype(spec["dtype"]))
    return pa.table(arrays)
