"""Training checkpoints: one `checkpoint.pt` per epoch folder `epoch_NNNN` under `<storage>/<run>`.

The file is a plain dict loadable with `torch.load(weights_only=True)`: `model` (state dict),
`optimizer`, `scheduler`, `epoch` (epochs completed), `step` (optimizer steps), `run_id` (MLflow),
`model_spec` (`convlstm.factory.model_spec`), `task`, `data_fingerprint` and `manifest_path` (the
first dataset's), `datasets` (every dataset trained on: name, uri, manifest_path, fingerprint; absent
in checkpoints from before pooled datasets), `config` (resolved), `metrics` (this epoch's),
`best_epoch` / `best_score` (so far, by the monitor), `evaluation` (this epoch's validation scores,
JSON-able; pooled datasets' own under `datasets`), `preview` (uint8 frames).
A `metrics.json` beside it holds the epoch's metrics for ranking without loading the weights.
Storage may be a local folder or an object-store URI (via `pipelines.storage`).
"""
from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from pipelines import storage

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
_EPOCH_DIR = re.compile(r"^epoch_(\d{4,})$")


def epoch_dir_name(epoch: int) -> str:
    """Folder of the checkpoint written after `epoch` completed epochs (1-based)."""
    return f"epoch_{epoch:04d}"


def save(state: dict[str, Any], metrics: dict[str, Any], directory: Path) -> Path:
    """Write `checkpoint.pt` and `metrics.json` into `directory`; returns the checkpoint file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    torch.save(state, path)
    (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    return path


def rank(metrics: dict[str, Any], monitor: str, mode: str) -> float:
    """Sort key, lower is better: the monitored value (negated for `max`), +inf when missing or NaN."""
    score = metrics.get(monitor)
    if score is None or math.isnan(score):
        return math.inf
    return score if mode == "min" else -score


def load(path: str) -> dict[str, Any]:
    """Read a checkpoint file, or the `checkpoint.pt` inside a checkpoint folder (local or URI)."""
    path = str(path)
    file = path if path.endswith(".pt") else storage.join(path, CHECKPOINT_FILE)
    if not storage.exists(file):
        raise FileNotFoundError(f"no checkpoint at {path}")
    fs, inner = storage.resolve(file)
    with fs.open_input_stream(inner) as f:
        blob = f.read()
    try:
        # weights_only: a checkpoint is tensors and plain data; never unpickle arbitrary objects.
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        raise ValueError(f"{file}: not a readable convlstm checkpoint ({type(exc).__name__} while loading "
                         "tensors and plain data only)") from None
    missing = sorted({"model", "model_spec"} - set(state)) if isinstance(state, dict) else ["model", "model_spec"]
    if missing:
        raise ValueError(f"{file}: not a convlstm checkpoint (missing {', '.join(missing)})")
    return state


def run_dir(storage_path: str, run_name: str) -> str:
    return storage.join(storage_path, run_name)


def list_epochs(storage_path: str, run_name: str) -> list[int]:
    """Epochs that have a checkpoint file directly under `<storage>/<run>/epoch_NNNN/`, ascending."""
    epochs = []
    for rel in storage.list_files(run_dir(storage_path, run_name), CHECKPOINT_FILE):
        parts = rel.split("/")
        match = _EPOCH_DIR.match(parts[0]) if len(parts) == 2 and parts[1] == CHECKPOINT_FILE else None
        if match:
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def best(storage_path: str, run_name: str, monitor: str, mode: str) -> str | None:
    """Folder of the run's best surviving checkpoint by `monitor` (the earliest among equals; the
    latest when no epoch has a value), or None when the run has none."""
    folders = [storage.join(run_dir(storage_path, run_name), epoch_dir_name(e)) for e in list_epochs(storage_path, run_name)]
    if not folders:
        return None
    ranked = [(rank(_metrics(f), monitor, mode), i) for i, f in enumerate(folders)]
    key, index = min(ranked)
    return folders[index] if key != math.inf else folders[-1]


def _metrics(folder: str) -> dict[str, Any]:
    path = storage.join(folder, METRICS_FILE)
    return json.loads(storage.read_text(path)) if storage.exists(path) else {}


def latest(storage_path: str, run_name: str) -> str | None:
    """Folder of the newest checkpoint of a run, or None when it has none."""
    epochs = list_epochs(storage_path, run_name)
    return storage.join(run_dir(storage_path, run_name), epoch_dir_name(epochs[-1])) if epochs else None
