"""The published datasets a training run reads: one, or several pooled (`convlstm train --data A,B`).

Pooled datasets keep their own manifests and lineage; training reads the union of their training
splits, and validation scores each one and all of them together (`jobs.training.validation`). They must
agree in everything that decides the model's inputs and outputs (`Task.pooling_fields`: the task,
every column's shape, dtype, unit and encoding, the forecast lengths, ...); the first field where two
differ is refused before any cluster work, as is a dataset listed twice (same folder or same
fingerprint).

Each dataset gets a `name`: its folder name, with anything but letters, digits, `_`, `.` and `-`
replaced by `_` and made unique (`mch32`, `mch32_2`). It names the dataset's MLflow datasets
(`<name>/<split>`) and, with several datasets, its validation metrics `val_<name>_<metric>`. With one
dataset the name is the folder name as it is, so a single-dataset run looks exactly as before.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from jobs.registry.mlflow_datasets import dataset_label
from jobs.tasks import get_task
from jobs.tasks import task_class
from jobs.training.config import Config, flatten
from pipelines import storage, verify
from pipelines.manifest import Manifest, fingerprint, load_manifest, manifest_path

NAME_CHARS = 32


@dataclass(frozen=True)
class TrainingData:
    """One dataset of a run: `uri` (absolute local path or object-store URI), its `manifest`, and the
    short unique `name` (see the module docstring)."""

    uri: str
    manifest: Manifest
    name: str

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def manifest_path(self) -> str:
        return manifest_path(self.uri)

    def lineage(self) -> dict[str, str]:
        """What checkpoints record about this dataset (`datasets` in `jobs.checkpoints`)."""
        return {"name": self.name, "uri": self.uri, "manifest_path": self.manifest_path,
                "fingerprint": self.fingerprint}


def data_paths(data: str | Path | Sequence[str | Path] | None, configured: Sequence[str] | None) -> list[str]:
    """The datasets to train on: `data` (a path, a comma-separated list or a sequence) when given,
    else the config's `data.paths`; ValueError naming `--data` when neither gives one."""
    if data is None or data == "":
        if not configured:
            raise ValueError("--data is required (a dataset folder or URI, or several comma-separated), "
                             "unless the config sets data.paths")
        data = list(configured)
    items = [str(data)] if isinstance(data, (str, Path)) else [str(item) for item in data]
    paths = [part.strip() for item in items for part in item.split(",")]
    if not all(paths):
        raise ValueError(f"--data: empty entry in {','.join(items)!r}")
    return paths


def load_datasets(paths: Sequence[str], cfg: Config) -> tuple[TrainingData, ...]:
    """Read the manifests of `paths` and check that they can be pooled for `cfg.task` (see the module
    docstring), then their training and validation shards against their manifests (`pipelines.verify`);
    FileNotFoundError for a missing manifest, ValueError for a dataset of another task, a repeated
    dataset, the first field two datasets disagree on, or shards unlike the manifest."""
    uris = [path if storage.is_remote(path) else os.path.abspath(path) for path in paths]
    manifests = [load_manifest(uri) for uri in uris]
    _check_distinct(uris, manifests)
    _check_poolable(cfg.task, uris, manifests)
    for uri, manifest in zip(uris, manifests):  # shards against the manifest, from their footers
        splits = [s for s in (cfg.data.train_split, cfg.data.val_split) if s in manifest.splits]
        verify.check_dataset(uri, manifest, splits)
    if len(uris) == 1:
        names = [dataset_label(uris[0])]
    else:
        names = dataset_names(uris, get_task(cfg, manifests[0]).metric_names())
    return tuple(TrainingData(uri, manifest, name) for uri, manifest, name in zip(uris, manifests, names))


def dataset_names(uris: Sequence[str], metric_names: Sequence[str] = ()) -> list[str]:
    """Short unique names from the folder names (see the module docstring). A name is never the start
    of a metric name either: `val_<name>_<metric>` could otherwise equal a pooled `val_<metric>`."""
    metrics = [m.removeprefix("val_") for m in metric_names]
    names: list[str] = []
    for uri in uris:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_label(uri)).strip("_")[:NAME_CHARS] or "data"
        name, n = base, 1
        while name in names or any(m.startswith(f"{name}_") for m in metrics):
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def _check_distinct(uris: list[str], manifests: list[Manifest]) -> None:
    """Refuse a folder listed twice, or two datasets of the same content (the fingerprint recomputed
    from each manifest, so a copy whose recorded fingerprint was altered is still the same dataset)."""
    seen: dict[str, str] = {}
    for uri, manifest in zip(uris, manifests):
        keys = (uri.rstrip("/"), fingerprint(manifest))
        first = next((seen[key] for key in keys if key in seen), None)
        if first is not None:
            raise ValueError(f"--data lists the same dataset twice: {first} and {uri} "
                             f"(fingerprint {keys[1][:12]})")
        seen.update(dict.fromkeys(keys, uri))


def _check_poolable(task: str, uris: list[str], manifests: list[Manifest]) -> None:
    cls = task_class(task)
    first = flatten(cls.pooling_fields(manifests[0]))
    for uri, manifest in zip(uris[1:], manifests[1:]):
        other = flatten(cls.pooling_fields(manifest))
        field = next((key for key in dict.fromkeys([*first, *other]) if first.get(key) != other.get(key)), None)
        if field is not None:
            raise ValueError(f"--data: {uris[0]} and {uri} cannot be pooled: their {field} differ "
                             f"({_shown(first.get(field))} vs {_shown(other.get(field))})")


def _shown(value: Any) -> str:
    return "missing" if value is None else repr(value)
