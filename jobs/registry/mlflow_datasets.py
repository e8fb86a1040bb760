"""A run's dataset inputs in MLflow: each split of a published shard set as an MLflow dataset (source =
the split's shard folder, digest = the manifest fingerprint's first `DIGEST_CHARS` hex digits, schema
and window counts from the manifest) with its `mlflow.data.context` (train / validation / test)."""
from __future__ import annotations

import json
import os
import warnings
from typing import Any

from jobs.registry import tracking
from jobs.registry.descriptions import digest
from jobs.registry.lineage import TAG_PREFIX
from pipelines import storage
from pipelines.manifest import Manifest, manifest_path

CONTEXT_TAG = "mlflow.data.context"
# Manifest split -> the `mlflow.data.context` of its dataset input (other split names are used as they are).
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}


def dataset_label(data: str) -> str:
    """The shard set's folder name, e.g. `mch32` for `/data/mch32` or `s3://bucket/mch32/`."""
    return str(data).rstrip("/").rsplit("/", 1)[-1]


def dataset_name(data: str, split: str, label: str | None = None) -> str:
    """`<dataset folder name>/<split>`, e.g. `mch32/train`: the MLflow dataset of one split (`label`
    instead of the folder name: a run's pooled datasets get unique names, see jobs.training.datasets)."""
    return f"{label or dataset_label(data)}/{split}"


def shard_dataset(data: str, manifest: Manifest, split: str, label: str | None = None):
    """One split of a published shard set as an MLflow dataset (`mlflow.entities.Dataset`) named
    `dataset_name(data, split, label)`.

    source: the split's shard folder (local path or `s3://` URI, as `mlflow.data` resolves it, so
    `mlflow.data.get_source(...)` finds it); digest: the first `DIGEST_CHARS` hex digits of the
    manifest fingerprint; schema: the manifest's columns (`mlflow_colspec`, type = dtype and shape per
    window); profile: task, windows of this split and of every split, sources, fingerprint, manifest."""
    # deferred: mlflow ~10 s to import; the module's other users skip it
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    # deferred: mlflow ~10 s to import; the module's other users skip it
    from mlflow.entities import Dataset as DatasetEntity

    root = str(data) if storage.is_remote(str(data)) else os.path.abspath(str(data))
    uri = storage.join(root, split)
    with warnings.catch_warnings():  # local paths match two equivalent source classes
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(uri)
    columns = [{"name": name, "type": f"{spec.dtype} {list(spec.shape)}" + (f" ({spec.unit})" if spec.unit else "")}
               for name, spec in manifest.columns.items()]
    profile = {"task": manifest.task, "split": split, "windows": manifest.count(split),
               **{f"windows_{name}": info.count for name, info in sorted(manifest.splits.items())},
               "sources": len(manifest.sources), "fingerprint": manifest.fingerprint,
               "pipeline_version": manifest.pipeline_version, "manifest": manifest_path(root)}
    return DatasetEntity(name=dataset_name(root, split, label),
                         digest=digest(manifest.fingerprint),
                         source_type=source._get_source_type(), source=source.to_json(),
                         schema=json.dumps({"mlflow_colspec": columns}), profile=json.dumps(profile))


def log_datasets(tracking_uri: str | None, run_id: str, data: str, manifest: Manifest,
                 splits: dict[str, str], label: str | None = None) -> dict[str, Any]:
    """Attach the `splits` ({split: context}) of the shard set at `data` as dataset inputs of the run,
    each with its `mlflow.data.context` (named `<label or folder name>/<split>`); returns {split:
    dataset entity}. Logging a dataset the run already has is a no-op."""
    # deferred: mlflow ~10 s to import; the module's other users skip it
    from mlflow.entities import DatasetInput, InputTag

    datasets = {split: shard_dataset(data, manifest, split, label) for split in splits}
    inputs = [DatasetInput(datasets[split], [InputTag(CONTEXT_TAG, context), InputTag(f"{TAG_PREFIX}split", split)])
              for split, context in splits.items()]
    tracking.client(tracking_uri).log_inputs(run_id, datasets=inputs)
    return datasets


def split_context(split: str) -> str:
    return SPLIT_CONTEXTS.get(split, split)
