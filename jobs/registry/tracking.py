"""MLflow for training jobs: experiments, runs, params/tags/metrics, the model and the Registry.

The default store is the embedded sqlite one from `jobs.paths` with artifacts beside it; a server
URI (`--tracking-uri`, MLFLOW_TRACKING_URI) works the same way. Metric logging goes through
`MlflowClient` with explicit run ids so that a Ray Train worker (rank 0 only) can log into the
run the driver created; model logging uses the fluent API inside `mlflow.start_run(run_id=...)`.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from jobs import paths

TAG_PREFIX = "convlstm."
CHAMPION, CHALLENGER = "champion", "challenger"
MAX_PARAM_CHARS = 6000


def resolve_uri(tracking_uri: str | None) -> str:
    """`tracking_uri`, else MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    return tracking_uri or paths.default_tracking_uri()


def client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def fluent(tracking_uri: str | None) -> Iterator[str]:
    """Aim MLflow's fluent API (`mlflow.start_run`, `log_model`, `register_model`; the registry
    follows the tracking URI) at `tracking_uri` for the block, then restore the process state:
    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which would otherwise redirect
    every later default-store call of this process."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(resolve_uri(tracking_uri)):
            yield resolve_uri(tracking_uri)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def ensure_experiment(tracking_uri: str | None, name: str) -> str:
    """Experiment id for `name`, created if missing (local stores put artifacts under
    `jobs.paths.default_artifact_root()/<name>`; a server uses its own artifact root)."""
    uri = resolve_uri(tracking_uri)
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"experiment {name!r} is deleted in {uri}; restore it or pick another name")
        return exp.experiment_id
    location = f"{paths.default_artifact_root()}/{name}" if _is_local_store(uri) else None
    return c.create_experiment(name, artifact_location=location)


def git_commit() -> str | None:
    """HEAD of the checkout holding this package (`<sha>-dirty` with local changes), if any."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def run_tags(task: str, manifest: dict, manifest_path: str) -> dict[str, str]:
    """Lineage tags: task, code version, stack versions, and the exact shards (fingerprint, path)."""
    tags = {
        f"{TAG_PREFIX}task": task,
        f"{TAG_PREFIX}ray_version": md.version("ray"),
        f"{TAG_PREFIX}torch_version": md.version("torch"),
        f"{TAG_PREFIX}data_fingerprint": str(manifest.get("fingerprint", "")),
        f"{TAG_PREFIX}manifest_path": manifest_path,
        f"{TAG_PREFIX}pipeline_version": str(manifest.get("pipeline_version", "")),
    }
    commit = git_commit()
    if commit:
        tags[f"{TAG_PREFIX}git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def create_run(tracking_uri: str | None, experiment_id: str, run_name: str, tags: dict[str, str],
               params: dict[str, Any]) -> str:
    """A new RUNNING run with `tags` and `params` (values stringified); returns its id."""
    from mlflow.entities import Param, RunTag

    c = client(tracking_uri)
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [Param(k, _param_value(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i:i + 100])
    c.log_batch(run.info.run_id, tags=[RunTag("mlflow.runName", run_name)])
    return run.info.run_id


def _param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text[:MAX_PARAM_CHARS]


def reopen_run(tracking_uri: str | None, run_id: str) -> None:
    """Mark an existing run RUNNING again (resume); FileNotFoundError if the store lacks it."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        c.get_run(run_id)
    except MlflowException as exc:
        raise FileNotFoundError(f"MLflow run {run_id} not found in {resolve_uri(tracking_uri)}: {exc}") from None
    c.update_run(run_id, status="RUNNING")


def end_run(tracking_uri: str | None, run_id: str, status: str = "FINISHED") -> None:
    client(tracking_uri).set_terminated(run_id, status=status)


def log_metrics(tracking_uri: str | None, run_id: str, rows: Iterable[tuple[str, float, int]]) -> None:
    """Log `(key, value, step)` rows in batches of 1000 (MLflow's limit)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(s)) for k, v, s in rows]
    c = client(tracking_uri)
    for i in range(0, len(metrics), 1000):
        c.log_batch(run_id, metrics=metrics[i:i + 1000])


def last_logged_step(tracking_uri: str | None, run_id: str, key: str) -> int:
    """Largest step logged for metric `key` in the run (-1 if none): a restarted worker skips
    steps up to here so the history has no duplicated steps."""
    history = client(tracking_uri).get_metric_history(run_id, key)
    return max((m.step for m in history), default=-1)


def metric_history(tracking_uri: str | None, run_id: str, key: str) -> list[tuple[int, float]]:
    """`[(step, value), ...]` of one metric, ordered by step."""
    history = client(tracking_uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def log_artifacts(tracking_uri: str | None, run_id: str, files: Iterable[Path], artifact_path: str | None = None) -> None:
    c = client(tracking_uri)
    for f in files:
        c.log_artifact(run_id, str(f), artifact_path)


@dataclass
class Registered:
    name: str
    version: str
    alias: str
    model_uri: str


def log_and_register_model(
    tracking_uri: str | None,
    run_id: str,
    model,
    example,
    output,
    extra_files: list[Path],
    registered_name: str | None,
    description: str,
    version_tags: dict[str, str],
) -> Registered | None:
    """Log `model` as the run's MLflow model `model` and, with a `registered_name`, register it.

    Pickle serialization (the model class must be importable at load time): `torch.export`'s
    pt2 format would freeze shapes of this recurrent model. `example` (numpy `[B, ...]` float32)
    is the input example; `output` the model's output on it, for the signature (batch dim free).
    `extra_files` (the weights-only checkpoint) travel inside the model directory. The new
    version gets alias `champion` when the name has none, else `challenger`.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    signature = infer_signature(example, output)
    with fluent(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            pytorch_model=model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="pickle",
            pip_requirements=[f"torch=={md.version('torch')}", f"numpy=={md.version('numpy')}"],
            extra_files=[str(f) for f in extra_files],
        )
        if not registered_name:
            return None
        version = mlflow.register_model(info.model_uri, registered_name, tags=version_tags).version
    c = client(tracking_uri)
    c.update_model_version(registered_name, version, description=description)
    aliases = c.get_registered_model(registered_name).aliases
    alias = CHALLENGER if CHAMPION in aliases else CHAMPION
    c.set_registered_model_alias(registered_name, alias, version)
    return Registered(registered_name, str(version), alias, f"models:/{registered_name}@{alias}")
