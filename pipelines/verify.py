"""Checking a published dataset against its manifest before anything reads it for training or scoring.

`check_dataset` is the cheap check (Parquet footers only, no window is read) that `convlstm train` and
`convlstm evaluate` run before any MLflow run starts: the manifest's fingerprint is recomputed (an
edited manifest no longer matches it), and every split read has exactly the shard files the manifest
lists (`files`), each with the listed number of windows and the schema's columns (tensor columns as
fixed-size binary of shape x dtype bytes). Manifests from before `files` was recorded are checked by
the split's total window count. `verify_dataset` (`convlstm verify --data`) does that for every split,
then reads every window: each tensor decodes to its shape, and the windows per split and per class
are counted again and compared with the manifest.

Every mismatch is a ValueError naming the split and the file. The shard layout is known only to
`footer_rows` (file name -> rows and Arrow schema), so a new layout changes that one function.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.manifest import Manifest, fingerprint, manifest_path
from pipelines.runs import frame_schema
from pipelines.shards import DTYPE_KEY, SHAPE_KEY, footer_windows, read_windows


def footer_rows(dataset: str, split: str) -> dict[str, tuple[int, pa.Schema]]:
    """{file name: (windows, Arrow schema)} of the split's shard files, from their Parquet footers;
    ValueError naming a file whose footer cannot be read (truncated, not Parquet)."""
    folder = storage.join(dataset, split)
    fs, root = storage.resolve(folder)
    found = {}
    for name in storage.list_files(folder, ".parquet"):
        try:
            meta = pq.read_metadata(f"{root}/{name}", filesystem=fs)
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"split {split}: {storage.join(folder, name)} is not a readable Parquet shard "
                             f"({_first_line(exc)})") from None
        found[name] = (footer_windows(meta), meta.schema.to_arrow_schema())
    return found


def check_fingerprint(dataset: str, manifest: Manifest) -> None:
    """ValueError when the manifest's content no longer gives its recorded fingerprint (edited by hand)."""
    actual = fingerprint(manifest)
    if actual != manifest.fingerprint:
        raise ValueError(f"{manifest_path(dataset)}: its content does not match its fingerprint "
                         f"({manifest.fingerprint[:12]} recorded, {actual[:12]} recomputed): edited after "
                         "publishing; prepare the dataset again")


def check_dataset(dataset: str, manifest: Manifest, splits: Sequence[str] | None = None) -> dict[str, int]:
    """The cheap check (module docstring) of `splits` (default: all); returns {split: windows}."""
    check_fingerprint(dataset, manifest)
    return {split: _check_split(dataset, manifest, split) for split in (splits or sorted(manifest.splits))}


def _check_split(dataset: str, manifest: Manifest, split: str) -> int:
    if split not in manifest.splits:
        raise ValueError(f"split {split!r} is not in the dataset at {dataset} "
                         f"(splits: {', '.join(sorted(manifest.splits))})")
    folder = storage.join(dataset, split)
    found = footer_rows(dataset, split)
    listed = (manifest.files or {}).get(split)
    if listed is not None:
        missing = sorted(set(listed) - set(found))
        if missing:
            raise ValueError(f"split {split}: {storage.join(folder, missing[0])} is missing "
                             f"({len(missing)} of the manifest's {len(listed)} files)")
        extra = sorted(set(found) - set(listed))
        if extra:
            raise ValueError(f"split {split}: {storage.join(folder, extra[0])} is not in the manifest "
                             "(added after publishing)")
        for name, rows in sorted(listed.items()):
            if found[name][0] != rows:
                raise ValueError(f"split {split}: {storage.join(folder, name)} holds {found[name][0]} windows, "
                                 f"the manifest says {rows}")
    columns = frame_schema(manifest.column_specs()) if manifest.layout == "runs" else manifest.column_specs()
    for name, (_, schema) in sorted(found.items()):
        _check_columns(storage.join(folder, name), split, schema, columns)
    total, expected = sum(rows for rows, _ in found.values()), manifest.splits[split].count
    if total != expected:
        raise ValueError(f"split {split}: {folder} holds {total} windows in {len(found)} files, "
                         f"the manifest says {expected}")
    return total


def _check_columns(file: str, split: str, schema: pa.Schema, columns: dict) -> None:
    for name, spec in columns.items():
        index = schema.get_field_index(name)
        if index < 0:
            raise ValueError(f"split {split}: {file} has no column {name!r}")
        if not spec["shape"]:
            continue
        width = math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize
        field = schema.field(index)
        if not pa.types.is_fixed_size_binary(field.type) or field.type.byte_width != width:
            raise ValueError(f"split {split}: {file} stores column {name!r} as {field.type}, the manifest's "
                             f"{spec['dtype']} {spec['shape']} needs fixed_size_binary[{width}]")
        stored = _stored_spec(field)
        if stored is not None and stored != (list(spec["shape"]), spec["dtype"]):
            raise ValueError(f"split {split}: {file} holds column {name!r} as {stored[1]} {stored[0]}, "
                             f"the manifest says {spec['dtype']} {spec['shape']}")


def _stored_spec(field: pa.Field) -> tuple[list, str] | None:
    """(shape, dtype) a tensor column's Parquet field metadata records (`pipelines.shards`), if any."""
    meta = field.metadata or {}
    if SHAPE_KEY not in meta or DTYPE_KEY not in meta:
        return None
    return json.loads(meta[SHAPE_KEY]), meta[DTYPE_KEY].decode()


def verify_dataset(dataset: str, manifest: Manifest) -> dict[str, int]:
    """Everything: the cheap check of every split, then every window read and recounted (windows per
    split and per class). Returns {split: windows}."""
    counts = check_dataset(dataset, manifest)
    label = manifest.columns.get("label")
    classes = label.classes if label is not None else None
    for split, info in sorted(manifest.splits.items()):
        try:
            columns = read_windows(dataset, split)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise ValueError(f"split {split}: {storage.join(dataset, split)}: windows do not decode "
                             f"({_first_line(exc)})") from None
        rows = {name: len(values) for name, values in columns.items()}
        if set(rows.values()) != {info.count}:
            raise ValueError(f"split {split}: {storage.join(dataset, split)} decodes to {rows} windows, "
                             f"the manifest says {info.count}")
        if "label" in columns and info.per_class:
            labels = Counter(int(k) for k in columns["label"])
            per_class = {(classes[k] if classes else str(k)): n for k, n in labels.items()}
            if per_class != info.per_class:
                raise ValueError(f"split {split}: {storage.join(dataset, split)} holds {dict(sorted(per_class.items()))} "
                                 f"windows per class, the manifest says {info.per_class}")
    return counts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
