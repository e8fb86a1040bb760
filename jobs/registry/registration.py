"""The trained model in MLflow: logged as the run's model (a LoggedModel) and registered, with the
alias `champion` for a name's first version and `challenger` after that."""
from __future__ import annotations

import importlib.metadata as md
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.registry import tracking
from jobs.registry.lineage import source_tags
from jobs.registry.packaging import convlstm_package


@dataclass
class Registered:
    name: str | None
    version: str | None
    alias: str | None
    model_uri: str
    model_id: str | None = None


@dataclass(frozen=True)
class ModelFiles:
    """What is logged: the torch `model`, an input `example` (numpy `[B, ...]` float32) and the model's
    `output` on it (for the signature; batch dim free), and `extra_files` that travel inside the model
    directory (the weights-only checkpoint)."""

    model: Any
    example: Any
    output: Any
    extra_files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Registration:
    """How it is registered: under `name` (None: logged only), with the version's `description` (also
    the LoggedModel's) and `version_tags`; `params` become the LoggedModel's parameters."""

    name: str | None
    description: str
    version_tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None


def log_and_register_model(tracking_uri: str | None, run_id: str, files: ModelFiles,
                           registration: Registration) -> Registered:
    """Log `files.model` as the run's MLflow model `model` and, with a `registration.name`, register it.

    Pickle serialization: `torch.export`'s pt2 format (MLflow 3's default) would freeze shapes of
    this recurrent model. The pickle references `convlstm` classes, so the model directory carries the
    `convlstm/` package (`code_paths`; it imports neither Ray nor MLflow): `mlflow.pytorch.load_model`
    and `mlflow.pyfunc.load_model(...).predict(ndarray)` (the pytorch flavor's own pyfunc wrapper,
    torch + convlstm only) work in an environment without this project. The new version gets alias
    `champion` when the name has none, else `challenger`. Returns the registration (name/version/alias
    None without a name) and the LoggedModel id.
    """
    import mlflow  # deferred: mlflow ~10 s to import; the module's other users skip it
    import mlflow.pytorch  # deferred: mlflow ~10 s to import; the module's other users skip it
    from mlflow.models import infer_signature  # deferred: mlflow ~10 s to import; the module's other users skip it

    name = registration.name
    signature = infer_signature(files.example, files.output)
    with tempfile.TemporaryDirectory() as tmp, tracking.fluent(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            pytorch_model=files.model,
            name="model",
            signature=signature,
            input_example=files.example,
            serialization_format="pickle",
            code_paths=[convlstm_package(Path(tmp))],
            pip_requirements=[f"torch=={md.version('torch')}", f"numpy=={md.version('numpy')}"],
            extra_files=[str(f) for f in files.extra_files],
            params={k: tracking.param_value(v) for k, v in (registration.params or {}).items()} or None,
        )
        version = mlflow.register_model(info.model_uri, name, tags=registration.version_tags).version \
            if name else None
    c = tracking.client(tracking_uri)
    # The LoggedModel's page: the same source as the run (not the interpreter's entry script) and description.
    c.set_logged_model_tags(info.model_id, {"mlflow.source.name": source_tags()["mlflow.source.name"],
                                            tracking.NOTE_TAG: registration.description})
    if not name:
        return Registered(None, None, None, f"runs:/{run_id}/model", info.model_id)
    c.update_model_version(name, version, description=registration.description)
    aliases = c.get_registered_model(name).aliases
    alias = tracking.CHALLENGER if tracking.CHAMPION in aliases else tracking.CHAMPION
    c.set_registered_model_alias(name, alias, version)
    return Registered(name, str(version), alias, f"models:/{name}@{alias}", info.model_id)
