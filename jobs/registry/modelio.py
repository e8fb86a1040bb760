"""Load a trained model and its lineage from the Registry, a run, or a checkpoint on disk.

Every logged model carries `extra_files/checkpoint.pt`: the weights, the model spec and the
lineage of the best checkpoint, read with `torch.load(weights_only=True)` and rebuilt through
`convlstm.factory`, so loading never unpickles code. References:
`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/RUN_ID/model`, a bare MLflow run id, or a
local checkpoint file / folder (`<storage>/<run>/epoch_NNNN`).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from jobs import checkpoints
from jobs.registry import tracking
from pipelines.manifest import Manifest, load_manifest

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_CHECKPOINT = f"extra_files/{checkpoints.CHECKPOINT_FILE}"


def load_model(ref: str, tracking_uri: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (eval mode, CPU) and its info: `task`, `config`, `model_spec`, `data_fingerprint`,
    `manifest_path`, `manifest` (the dataset manifest if reachable, else None), `datasets` (every
    dataset trained on: name, uri, manifest_path, fingerprint), `manifests` (theirs that are reachable),
    `run_id`, `score` (this checkpoint's validation value of `monitor`), `monitor`, `epoch`, `ref`.

    FileNotFoundError when `ref` resolves to nothing; ValueError for a malformed reference.
    """
    state = load_state(ref, tracking_uri)
    model = build_from_spec(state["model_spec"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, lineage(state, ref)


def build_from_spec(spec: dict[str, Any]) -> torch.nn.Module:
    """An untrained model from `convlstm.factory.model_spec(...)`'s output."""
    # deferred: convlstm.factory loads OpenCV ~4 s; the module's other users skip it
    from convlstm.factory import build_model

    return build_model(spec["name"], **spec["kwargs"])


def lineage(state: dict[str, Any], ref: str) -> dict[str, Any]:
    monitor = state["config"]["train"]["monitor"]
    # Checkpoints from before pooled datasets record one dataset, by its manifest.
    datasets = state.get("datasets") or [{"manifest_path": state["manifest_path"],
                                          "fingerprint": state["data_fingerprint"]}]
    manifests = [_manifest_or_none(d["manifest_path"]) for d in datasets]
    return {
        "task": state["task"], "config": state["config"], "model_spec": state["model_spec"],
        "data_fingerprint": state["data_fingerprint"], "manifest_path": state["manifest_path"],
        "manifest": manifests[0], "datasets": datasets, "manifests": [m for m in manifests if m is not None],
        "run_id": state["run_id"], "score": state["metrics"].get(monitor), "monitor": monitor,
        "epoch": state["epoch"], "ref": ref,
    }


def _manifest_or_none(path: str) -> Manifest | None:
    try:
        return load_manifest(path)
    except (FileNotFoundError, OSError, ValueError):
        return None


def load_state(ref: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """The checkpoint dict behind `ref` (see the module docstring), weights on the CPU."""
    if not ref:
        raise ValueError("ref must be a models:/ or runs:/ URI, a run id or a checkpoint path")
    if ref.startswith(("models:/", "runs:/")):
        return _from_mlflow(ref, tracking_uri)
    if _RUN_ID.match(ref) and not Path(ref).exists():
        return _from_mlflow(f"runs:/{ref}/model", tracking_uri)
    if ":/" in ref and not ref.startswith("file:"):
        return checkpoints.load(ref)  # object-store checkpoint
    path = Path(ref.removeprefix("file://")).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no model at {ref}: not a models:/ or runs:/ URI, run id or checkpoint path")
    return checkpoints.load(str(path))


def _from_mlflow(uri: str, tracking_uri: str | None) -> dict[str, Any]:
    import mlflow.artifacts  # deferred: mlflow ~10 s to import; the module's other users skip it
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    with tempfile.TemporaryDirectory() as tmp, tracking.fluent(tracking_uri) as resolved:
        try:
            local = mlflow.artifacts.download_artifacts(f"{uri.rstrip('/')}/{MODEL_CHECKPOINT}", dst_path=tmp)
        except MlflowException as exc:
            raise FileNotFoundError(f"cannot load {uri} from {resolved}: {exc.message}") from None
        return checkpoints.load(local)
