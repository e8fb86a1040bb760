"""MLflow calls for jobs: experiments, runs, params/tags/metrics/artifacts, LoggedModels and versions.

The default store is the embedded sqlite one from `jobs.paths` with artifacts beside it; a server
URI (`--tracking-uri`, MLFLOW_TRACKING_URI) works the same way. Metric logging goes through
`MlflowClient` with explicit run ids so that a Ray Train worker (rank 0 only) can log into the
run the driver created; model logging uses the fluent API inside `mlflow.start_run(run_id=...)`.

What a user browsing the MLflow UI finds (issue 12): experiments tagged as custom model development
(`mlflow.experimentKind`, so they open on the runs page, not the GenAI one); runs with the standard
source/user/git tags (`jobs.registry.lineage`) and a description (`mlflow.note.content`); every split a
run read as an MLflow dataset input (`jobs.registry.mlflow_datasets`); scores logged against the
LoggedModel and the dataset they were computed on (`log_metrics(model_id=..., dataset=...)`), so the
model version page lists them; registered model and version descriptions that summarise data, scores
and baselines (their text: `jobs.registry.descriptions`); the model itself: `jobs.registry.registration`.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from jobs import paths
from jobs.registry.descriptions import EVAL_TAG, registered_model_text, replace_line
from jobs.registry.lineage import SUBMISSION_TAG, TAG_PREFIX

CHAMPION, CHALLENGER = "champion", "challenger"
MAX_PARAM_CHARS = 6000
# MLflow 3's UI opens experiments without this tag on the GenAI pages.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"


def resolve_uri(tracking_uri: str | None) -> str:
    """`tracking_uri`, else MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    return tracking_uri or paths.default_tracking_uri()


def client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient  # deferred: mlflow ~10 s to import; the module's other users skip it

    uri = resolve_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def fluent(tracking_uri: str | None) -> Iterator[str]:
    """Aim MLflow's fluent API (`mlflow.start_run`, `log_model`, `register_model`; the registry
    follows the tracking URI) at `tracking_uri` for the block, then restore the process state:
    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which would otherwise redirect
    every later default-store call of this process."""
    # deferred: mlflow ~10 s to import; the module's other users skip it
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
    `jobs.paths.default_artifact_root()/<name>`; a server uses its own artifact root). The experiment
    carries `mlflow.experimentKind = custom_model_development` (set on an existing one that lacks it)."""
    uri = resolve_uri(tracking_uri)
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"experiment {name!r} is deleted in {uri}; restore it or pick another name")
        if EXPERIMENT_KIND_TAG not in exp.tags:
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = f"{paths.default_artifact_root()}/{name}" if _is_local_store(uri) else None
    return c.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


# MLflow 3.17's UI picks an experiment's page layout from its workflow type, read from the URL parameter
# `workflowType` (else the browser's last choice, default GenAI); `mlflow.experimentKind` is not read
# while the workflow selector is on (it is, in 3.17). Links into the UI carry the parameter.
UI_WORKFLOW_PARAM = "workflowType=machine_learning"


def experiment_urls(tracking_uri: str | None, ui: str) -> list[tuple[str, str]]:
    """(name, URL) of the project's experiments (those tagged EXPERIMENT_KIND) in the MLflow UI at `ui`,
    opening on their training runs."""
    c = client(tracking_uri)
    found = [e for e in c.search_experiments() if e.tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND]
    return [(e.name, f"{ui.rstrip('/')}/#/experiments/{e.experiment_id}?{UI_WORKFLOW_PARAM}")
            for e in sorted(found, key=lambda e: int(e.experiment_id) if e.experiment_id.isdigit() else 0)]


def ensure_experiment_kind(tracking_uri: str | None, experiment_id: str) -> None:
    """Tag an experiment the project logs into (e.g. the one of an evaluation run) as custom model
    development when it has no `mlflow.experimentKind` yet."""
    c = client(tracking_uri)
    if EXPERIMENT_KIND_TAG not in c.get_experiment(experiment_id).tags:
        c.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def create_run(tracking_uri: str | None, experiment_id: str, run_name: str, tags: dict[str, str],
               params: dict[str, Any]) -> str:
    """A new RUNNING run with `tags` and `params` (values stringified); returns its id."""
    from mlflow.entities import Param, RunTag  # deferred: mlflow ~10 s to import; the module's other users skip it

    c = client(tracking_uri)
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [Param(k, param_value(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i:i + 100])
    c.log_batch(run.info.run_id, tags=[RunTag("mlflow.runName", run_name)])
    return run.info.run_id


def set_description(tracking_uri: str | None, run_id: str, text: str) -> None:
    """The run's description (`mlflow.note.content`, markdown in the UI)."""
    client(tracking_uri).set_tag(run_id, NOTE_TAG, text)


def add_description_line(tracking_uri: str | None, run_id: str, marker: str, line: str) -> None:
    """Put `line` into the run's description, replacing the line that starts with `marker`."""
    c = client(tracking_uri)
    current = c.get_run(run_id).data.tags.get(NOTE_TAG, "")
    c.set_tag(run_id, NOTE_TAG, replace_line(current, marker, line))


def param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text[:MAX_PARAM_CHARS]


def reopen_run(tracking_uri: str | None, run_id: str) -> None:
    """Mark an existing run RUNNING again (resume); FileNotFoundError if the store lacks it or it was deleted."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    c = client(tracking_uri)
    try:
        run = c.get_run(run_id)
    except MlflowException as exc:
        raise FileNotFoundError(f"MLflow run {run_id} not found in {resolve_uri(tracking_uri)}: {exc}") from None
    if run.info.lifecycle_stage != "active":
        raise FileNotFoundError(f"MLflow run {run_id} in {resolve_uri(tracking_uri)} is {run.info.lifecycle_stage}: "
                                "restore it (`mlflow runs restore`) or start a new run")
    c.update_run(run_id, status="RUNNING")


def end_run(tracking_uri: str | None, run_id: str, status: str = "FINISHED") -> None:
    client(tracking_uri).set_terminated(run_id, status=status)


def kill_job_runs(tracking_uri: str | None, submission_id: str, reason: str) -> list[str]:
    """End the RUNNING runs of the Ray job `submission_id` (tag SUBMISSION_TAG) as KILLED, with
    `reason` in the tag `convlstm.end_reason` and the description; returns their ids."""
    c = client(tracking_uri)
    ids = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(ids, filter_string=f"tags.`{SUBMISSION_TAG}` = '{submission_id}' and "
                                            "attributes.status = 'RUNNING'", max_results=1000) if ids else []
    for run in runs:
        c.set_tag(run.info.run_id, f"{TAG_PREFIX}end_reason", reason)
        add_description_line(tracking_uri, run.info.run_id, "**Ended**", f"**Ended** KILLED: {reason}")
        c.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in runs]


def log_metrics(tracking_uri: str | None, run_id: str, rows: Iterable[tuple[str, float, int]],
                model_id: str | None = None, dataset=None) -> None:
    """Log `(key, value, step)` rows in batches of 1000 (MLflow's limit). With `model_id` (a LoggedModel)
    and `dataset` (an `mlflow.entities.Dataset`, see `shard_dataset`) the values are also the model's
    metrics on that dataset, as MLflow 3's `log_metrics(model_id=..., dataset=...)` records them."""
    from mlflow.entities import Metric  # deferred: mlflow ~10 s to import; the module's other users skip it

    now = int(time.time() * 1000)
    linked = {"model_id": model_id, "dataset_name": dataset.name if dataset is not None else None,
              "dataset_digest": dataset.digest if dataset is not None else None}
    metrics = [Metric(k, float(v), now, int(s), **linked) for k, v, s in rows]
    c = client(tracking_uri)
    for i in range(0, len(metrics), 1000):
        c.log_batch(run_id, metrics=metrics[i:i + 1000])


def link_metrics(tracking_uri: str | None, run_id: str, prefix: str, step: int, model_id: str | None,
                 dataset, exclude: tuple[str, ...] = ()) -> int:
    """Make the run's metrics `prefix*` (but not `exclude*`) at `step` also the LoggedModel `model_id`'s,
    on `dataset` (None: on no dataset): the points are logged again with their own timestamps, which the
    run's history already holds (MLflow deduplicates them there), so only the model's metrics gain rows.
    Returns the number of metrics."""
    from mlflow.entities import Metric  # deferred: mlflow ~10 s to import; the module's other users skip it

    c = client(tracking_uri)
    linked = {"model_id": model_id, "dataset_name": dataset.name if dataset is not None else None,
              "dataset_digest": dataset.digest if dataset is not None else None}
    points = [Metric(m.key, m.value, m.timestamp, m.step, **linked)
              for key in c.get_run(run_id).data.metrics if key.startswith(prefix) and not key.startswith(exclude)
              for m in c.get_metric_history(run_id, key) if m.step == step]
    for i in range(0, len(points), 1000):
        c.log_batch(run_id, metrics=points[i:i + 1000])
    return len(points)


def last_logged_step(tracking_uri: str | None, run_id: str, key: str) -> int:
    """Largest step logged for metric `key` in the run (-1 if none): a restarted worker skips
    steps up to here so the history has no duplicated steps."""
    history = client(tracking_uri).get_metric_history(run_id, key)
    return max((m.step for m in history), default=-1)


def metric_history(tracking_uri: str | None, run_id: str, key: str) -> list[tuple[int, float]]:
    """`[(step, value), ...]` of one metric, ordered by step."""
    history = client(tracking_uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def log_artifacts(tracking_uri: str | None, run_id: str, files: Iterable[Path],
                  artifact_path: str | None = None) -> None:
    c = client(tracking_uri)
    for f in files:
        c.log_artifact(run_id, str(f), artifact_path)


# ----------------------------------------------------------------------------- models


def logged_model_id(tracking_uri: str | None, run_id: str) -> str | None:
    """The LoggedModel the run produced (its `model` output; the newest if several), else None."""
    c = client(tracking_uri)
    run = c.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    if outputs:
        return outputs[-1].model_id
    models = c.search_logged_models(experiment_ids=[run.info.experiment_id],
                                    filter_string=f"source_run_id = '{run_id}'")
    return models[0].model_id if models else None


def version_model_id(version) -> str | None:
    """The LoggedModel behind a registered version: `model_id` where the registry stores it, else the
    `models:/<model_id>` source that MLflow 3 registers from (the OSS stores keep only the source)."""
    # deferred: mlflow ~10 s to import; the module's other users skip it
    from mlflow.store.artifact.utils.models import _parse_model_id_if_present

    return getattr(version, "model_id", None) or _parse_model_id_if_present(version.source or "")


def versions_of(tracking_uri: str | None, ref: str, run_id: str | None) -> list:
    """Registered versions behind a model reference: the one `models:/NAME@ALIAS` or
    `models:/NAME/VERSION` names, else every version registered from `run_id`."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    c = client(tracking_uri)
    if ref.startswith("models:/"):
        name, _, rest = ref.removeprefix("models:/").partition("@")
        try:
            if rest:
                return [c.get_model_version_by_alias(name, rest)]
            name, _, version = name.rstrip("/").rpartition("/")
            return [c.get_model_version(name, version)] if name else []
        except MlflowException:
            return []
    if not run_id:
        return []
    return list(c.search_model_versions(f"run_id = '{run_id}'"))


# ----------------------------------------------------------------------------- descriptions


def record_scores(tracking_uri: str | None, version, split: str, line: str) -> None:
    """Put a split's score line into the version's description (replacing an earlier one of that
    split) and its `eval.<split>` tag, then refresh the registered model's description."""
    c = client(tracking_uri)
    c.set_model_version_tag(version.name, version.version, f"{EVAL_TAG}{split}", line.replace("**", ""))
    current = c.get_model_version(version.name, version.version).description or ""
    description = replace_line(current, f"**{split}**", line)
    c.update_model_version(version.name, version.version, description=description)
    model_id = version_model_id(version)
    if model_id:
        c.set_logged_model_tags(model_id, {NOTE_TAG: description})
    describe_registered_model(tracking_uri, version.name)


def describe_registered_model(tracking_uri: str | None, name: str, newest: int = 5) -> None:
    """The registered model's description: what it is, how versions are ranked, then one paragraph per
    version (the `newest` ones): aliases, data, validation score, and its score lines vs the baselines."""
    c = client(tracking_uri)
    versions = sorted(c.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version), reverse=True)
    if not versions:
        return
    aliases: dict[str, list[str]] = {}
    for alias, version in c.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    c.update_registered_model(name, description=registered_model_text(versions, aliases, newest))
