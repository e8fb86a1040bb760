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

A checkpoint counts only when complete: each file is written under a temporary name and renamed,
and `complete.json` ({file: bytes}) is written last; a folder whose marker is missing or whose files
differ in size from it (a full disk, a kill, a partial upload by Ray Train) is incomplete, skipped
by `latest`/`best` and reported by `incomplete`. Runs written before the marker existed (no folder
has one) count the folders that have `metrics.json`, which was written after the weights.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from pipelines import storage

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
COMPLETE_FILE = "complete.json"
_EPOCH_DIR = re.compile(r"^epoch_(\d{4,})$")


def epoch_dir_name(epoch: int) -> str:
    """Folder of the checkpoint written after `epoch` completed epochs (1-based)."""
    return f"epoch_{epoch:04d}"


def save(state: dict[str, Any], metrics: dict[str, Any], directory: Path) -> Path:
    """Write `checkpoint.pt`, `metrics.json` and, last, the `complete.json` marker into `directory`
    (each file under a temporary name first); returns the checkpoint file. OSError naming the file
    when it cannot be written (no space, read-only): nothing half-written keeps the final name."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    blob = io.BytesIO()
    torch.save(state, blob)  # serialised in memory: a failed write is the OSError (ENOSPC...) of a plain write
    _write_atomically(path, lambda f: f.write(blob.getbuffer()))
    _write_atomically(directory / METRICS_FILE,
                      lambda f: f.write((json.dumps(metrics, indent=1, default=float) + "\n").encode()))
    sizes = {name: (directory / name).stat().st_size for name in (CHECKPOINT_FILE, METRICS_FILE)}
    _write_atomically(directory / COMPLETE_FILE, lambda f: f.write(json.dumps(sizes).encode()))
    return path


def _write_atomically(path: Path, write) -> None:
    """`write(binary file)` into `.<name>.tmp` beside `path`, then rename onto `path`; the temporary
    file is removed on failure, and the OSError names `path`."""
    partial = path.with_name(f".{path.name}.tmp")
    try:
        with open(partial, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def is_complete(folder: str) -> bool:
    """True when `folder`'s `complete.json` marker exists and every file it lists has its size."""
    marker = storage.join(folder, COMPLETE_FILE)
    try:
        sizes = json.loads(storage.read_text(marker))
        return bool(sizes) and all(storage.size_of(storage.join(folder, name)) == size for name, size in sizes.items())
    except (OSError, ValueError, AttributeError, TypeError):
        return False


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
    """Epochs with a complete checkpoint under `<storage>/<run>/epoch_NNNN/` (see the module docstring),
    ascending."""
    present, legacy = _epoch_folders(storage_path, run_name)
    folder = run_dir(storage_path, run_name)
    if legacy:
        return [e for e in present if storage.exists(storage.join(folder, epoch_dir_name(e), METRICS_FILE))]
    return [e for e in present if is_complete(storage.join(folder, epoch_dir_name(e)))]


def incomplete(storage_path: str, run_name: str) -> list[str]:
    """Folders of the run's epochs that hold a checkpoint file but are not complete (skipped)."""
    present, _ = _epoch_folders(storage_path, run_name)
    complete = set(list_epochs(storage_path, run_name))
    return [storage.join(run_dir(storage_path, run_name), epoch_dir_name(e)) for e in present if e not in complete]


def _epoch_folders(storage_path: str, run_name: str) -> tuple[list[int], bool]:
    """(epochs whose folder holds a checkpoint file, True when no folder of the run has a marker)."""
    files: dict[int, set[str]] = {}
    for rel in storage.list_files(run_dir(storage_path, run_name)):
        parts = rel.split("/")
        match = _EPOCH_DIR.match(parts[0]) if len(parts) == 2 else None
        if match:
            files.setdefault(int(match.group(1)), set()).add(parts[1])
    present = sorted(e for e, names in files.items() if CHECKPOINT_FILE in names)
    return present, not any(COMPLETE_FILE in names for names in files.values())


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
    """Folder of the newest complete checkpoint of a run, or None when it has none."""
    epochs = list_epochs(storage_path, run_name)
    return storage.join(run_dir(storage_path, run_name), epoch_dir_name(epochs[-1])) if epochs else None
