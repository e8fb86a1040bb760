"""The dataset manifest (`<out>/manifest.json`): what was built, from what, with which parameters.

`Manifest` is the one definition of the file: `build_manifest` makes one, `write_manifest` writes it,
`load_manifest` reads and validates it (a missing or ill-typed field is a one-line ValueError naming
the file and the field), and every layer above passes the model, not a dict. Keys: `pipeline_version`,
`task`, `params`, `schema` ({column: {shape, dtype, unit?, encoding?, classes?}}; `shape` excludes
the row axis, [] for scalars; the model's attribute is `columns`), `splits` ({split: {members, count,
per_class}}), `sources` ({name: {size, sha256, split, windows, per_class}}), `fingerprint`,
`rejected` ([{file, source, reason}]), `created` (UTC ISO time), `layout` (`windows` when absent),
radar's `time_step_s`, `grid`, `encoding`, `gaps`, `seen`, and `files` ({split: {file name:
windows}}, the shard files as published, for checking them on read: `pipelines.verify`). Older
manifests lack `layout`, `files`, `seen` or `created`; they load with those unset, and a manifest is
written back with exactly the keys it was read or built with. The fingerprint covers everything that
determines the data and nothing about when or where it was written (nor how the windows were cut
into files, which depends on the cluster's CPUs), so the same inputs and parameters give the same
fingerprint.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from pipelines import storage
from pipelines.jsonmodel import JsonModel, Number

# Bump when any pipeline's output for the same inputs and parameters changes.
PIPELINE_VERSION = "1"
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")  # the standard splits, in this order
# Keys that describe the run or the inputs looked at rather than the windows (`rejected` names input
# paths on this machine; radar `gaps` and `seen` list frames, which change without adding a window;
# `files` is how this machine's tasks cut the windows into files).
_NOT_FINGERPRINTED = ("fingerprint", "created", "rejected", "gaps", "seen", "files")
_CHUNK = 1 << 20
Layout = Literal["windows", "runs"]  # "windows": one row per window (the original layout, the default)


class Column(JsonModel):
    """One window column: `shape` per window (no row axis; [] for a scalar), numpy `dtype` or `str`."""

    shape: list[PositiveInt]
    dtype: str
    unit: str | None = None
    encoding: str | None = None
    classes: list[str] | None = None  # a label column's class names, in label order


class Split(JsonModel):
    """One split: its `count` of windows, the `members` it holds (KTH person ids, source names), and
    windows per class name for a labelled dataset."""

    count: NonNegativeInt
    members: list[int | str] | None = None
    per_class: dict[str, int] | None = None


class SourceInfo(JsonModel):
    """One source (a video, a radar day or block): its files' total `size` in bytes and `sha256`,
    the `split` it went to and the `windows` it gave."""

    size: NonNegativeInt
    sha256: str
    split: str
    windows: NonNegativeInt
    per_class: dict[str, int] | None = None


class Rejection(JsonModel):
    """An input left out: the `file`, the `source` it belongs to (when known) and why."""

    file: str
    reason: str
    source: str | None = None


class Grid(JsonModel):
    """Radar: the stored `height` x `width` (pixels) and the source composite's, with the centred
    `crop` [height, width] taken from it before resizing (None: the whole composite)."""

    height: PositiveInt
    width: PositiveInt
    source_height: PositiveInt
    source_width: PositiveInt
    crop: list[int] | None = None


class Manifest(JsonModel):
    """A dataset's manifest.json (see the module docstring); `columns` is the file's `schema`."""

    kind: ClassVar[str] = "manifest"

    pipeline_version: str
    task: str = Field(min_length=1)
    params: dict[str, Any]
    columns: dict[str, Column] = Field(alias="schema")
    splits: dict[str, Split]
    sources: dict[str, SourceInfo]
    fingerprint: str
    rejected: list[Rejection] = []
    created: str | None = None
    layout: Layout = "windows"
    files: dict[str, dict[str, NonNegativeInt]] | None = None
    time_step_s: Number | None = None
    grid: Grid | None = None
    encoding: dict[str, Any] | None = None
    gaps: list[Any] | None = None  # radar: [{after, before, missing}] between frames
    seen: dict[str, Any] | None = None

    def column_specs(self) -> dict[str, dict[str, Any]]:
        """The `schema` as plain {column: {shape, dtype, ...}}, the form the shard reader and writer take."""
        return {name: column.to_json() for name, column in self.columns.items()}

    def count(self, split: str) -> int:
        """Windows in `split`; 0 for a split the dataset does not have."""
        return self.splits[split].count if split in self.splits else 0


def manifest_path(dataset: str) -> str:
    return storage.join(dataset, MANIFEST_NAME)


def load_manifest(path: str) -> Manifest:
    """Read and validate the manifest of the dataset folder `path` (or the manifest.json file itself)."""
    return Manifest.read(path, MANIFEST_NAME, "published dataset")


def write_manifest(dataset: str, manifest: Manifest) -> None:
    storage.write_text(manifest_path(dataset), manifest_text(manifest))


def manifest_text(manifest: Manifest) -> str:
    """manifest.json's text: indented JSON, keys sorted."""
    return json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n"


def fingerprint(manifest: Manifest | dict) -> str:
    """sha256 (hex) of the manifest's JSON without the keys of _NOT_FINGERPRINTED, keys sorted: the
    same windows from the same inputs and parameters give the same fingerprint."""
    data = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    content = {k: v for k, v in data.items() if k not in _NOT_FINGERPRINTED}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def source_checksum(path: str) -> dict:
    """{"size": bytes, "sha256": hex} of one input file (local path or URI)."""
    fs, p = storage.resolve(path)
    digest = hashlib.sha256()
    size = 0
    with fs.open_input_stream(p) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def sources_checksum(paths: list[str]) -> dict:
    """Checksum of a source made of several files: total size, sha256 over the per-file digests in order."""
    if len(paths) == 1:
        return source_checksum(paths[0])
    digest = hashlib.sha256()
    size = 0
    for path in paths:
        one = source_checksum(path)
        digest.update(one["sha256"].encode("ascii"))
        size += one["size"]
    return {"size": size, "sha256": digest.hexdigest()}


def build_manifest(*, task: str, params: dict, schema: dict, splits: dict, sources: dict,
                   rejected: list[dict], extra: dict | None = None, files: dict | None = None) -> Manifest:
    """Assemble a manifest from plain parts (as `Manifest`'s JSON keys) and stamp its fingerprint and
    creation time. `files`: {split: {name: windows}}."""
    parts = {
        "pipeline_version": PIPELINE_VERSION,
        "task": task,
        "params": params,
        "schema": schema,
        "splits": splits,
        "sources": dict(sorted(sources.items())),
        "rejected": rejected,
        **(extra or {}),
        **({"files": files} if files is not None else {}),
    }
    # Round-trip through JSON so the fingerprint sees exactly what load_manifest will return.
    parts = json.loads(json.dumps(parts, default=str))
    parts["fingerprint"] = fingerprint(parts)
    parts["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Manifest.parse(parts, f"the {task} manifest being built")
