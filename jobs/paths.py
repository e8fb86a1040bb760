"""Where the embedded defaults live: one project-local home for outputs, MLflow and Ray results.

`CONVLSTM_HOME` wins; otherwise the source checkout holding this package (editable installs),
otherwise `~/.convlstm`. Never the current working directory, so a job started from another
folder still finds the same MLflow store.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipelines import storage


def project_home() -> Path:
    env = os.environ.get("CONVLSTM_HOME")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "jobs").is_dir():
        return checkout
    return Path.home() / ".convlstm"


def outputs_dir() -> Path:
    """`<home>/outputs`: data shards, MLflow store, Ray Train results, reports."""
    return project_home() / "outputs"


def default_tracking_uri() -> str:
    """`sqlite:///<home>/outputs/mlflow/mlflow.db`, unless MLFLOW_TRACKING_URI is set."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = outputs_dir() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def default_artifact_root() -> str:
    """Artifact folder beside the sqlite store (used when an experiment is created locally)."""
    root = outputs_dir() / "mlflow" / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


STORAGE_ENV = "CONVLSTM_STORAGE"


def storage_root() -> str | None:
    """The shared storage root for job outputs (CONVLSTM_STORAGE, e.g. s3://bucket/convlstm or a folder
    every node mounts), or None: outputs then default to `<home>/outputs` (one machine only)."""
    return os.environ.get(STORAGE_ENV) or None


def output_location(kind: str, *parts: str) -> str:
    """Default location of a job's outputs: `<root>/<kind>/<parts>` under `storage_root()` (a URI or a
    path), else `<home>/outputs/<kind>/<parts>`. Kinds: train (checkpoints), evaluations, nowcasts, retrain."""
    root = storage_root()
    if root:
        return storage.join(root, kind, *parts)
    return str(outputs_dir().joinpath(kind, *parts))
