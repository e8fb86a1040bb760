"""MLflow for training jobs: experiments, runs, params/tags/metrics, datasets, the model and the Registry.

The default store is the embedded sqlite one from `jobs.paths` with artifacts beside it; a server
URI (`--tracking-uri`, MLFLOW_TRACKING_URI) works the same way. Metric logging goes through
`MlflowClient` with explicit run ids so that a Ray Train worker (rank 0 only) can log into the
run the driver created; model logging uses the fluent API inside `mlflow.start_run(run_id=...)`.

What a user browsing the MLflow UI finds (issue 12): experiments tagged as custom model development
(`mlflow.experimentKind`, so they open on the runs page, not the GenAI one); runs with the standard
source/user/git tags and a description (`mlflow.note.content`); every split a run read as an MLflow
dataset input (`shard_dataset`: source = the split's shard folder, digest = the manifest fingerprint's
first `DIGEST_CHARS` hex digits, schema and window counts from the manifest) with its
`mlflow.data.context` (train / validation / test); scores logged against the LoggedModel and the dataset
they were computed on (`log_metrics(model_id=..., dataset=...)`), so the model version page lists them;
registered model and version descriptions that summarise data, scores and baselines.
"""
from __future__ import annotations

import getpass
import json
import shutil
import sys
import warnings

import importlib.metadata as md
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from jobs import paths
from pipelines.manifest import Manifest

TAG_PREFIX = "convlstm."
CHAMPION, CHALLENGER = "champion", "challenger"
MAX_PARAM_CHARS = 6000
# MLflow 3's UI opens experiments without this tag on the GenAI pages.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"
CONTEXT_TAG = "mlflow.data.context"
# Manifest split -> the `mlflow.data.context` of its dataset input (other split names are used as they are).
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
DIGEST_CHARS = 12  # of the 64-hex manifest fingerprint; MLflow caps digests at 36 characters


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


COMMIT_ENV = "CONVLSTM_GIT_COMMIT"  # set by `convlstm submit`: the job's upload has no .git
SUBMISSION_ENV = "CONVLSTM_SUBMISSION_ID"  # set by `convlstm submit`: the Ray job that runs this process
SUBMISSION_TAG = f"{TAG_PREFIX}submission_id"


def git_commit() -> str | None:
    """The code version: COMMIT_ENV when set (a submitted job: the submitter's checkout, read before
    the upload), else HEAD of the checkout holding this package (`<sha>-dirty` with local changes), if any."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def run_tags(task: str, manifest: Manifest, manifest_path: str) -> dict[str, str]:
    """Lineage tags: task, code version, stack versions, and the exact shards (fingerprint, path)."""
    tags = {
        f"{TAG_PREFIX}task": task,
        f"{TAG_PREFIX}ray_version": md.version("ray"),
        f"{TAG_PREFIX}torch_version": md.version("torch"),
        f"{TAG_PREFIX}data_fingerprint": manifest.fingerprint,
        f"{TAG_PREFIX}manifest_path": manifest_path,
        f"{TAG_PREFIX}pipeline_version": manifest.pipeline_version,
    }
    commit = git_commit()
    if commit:
        tags[f"{TAG_PREFIX}git_commit"] = commit
    return {**source_tags(), **tags}


def source_tags() -> dict[str, str]:
    """MLflow's standard run-context tags, as `mlflow.start_run` sets them: `mlflow.user`,
    `mlflow.source.type` (LOCAL), `mlflow.source.name` (`convlstm <command>` when run by the CLI, else
    the program) and `mlflow.source.git.commit` of the checkout holding this package (`-dirty` with
    local changes; absent for an installed, non-git copy)."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: v for k, v in resolve_tags().items() if k.startswith("mlflow.")}
    entry = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if (Path(entry).name == "convlstm" or entry.endswith(("jobs/cli/__main__.py", "jobs/cli/__init__.py"))) \
            and len(sys.argv) > 1:
        tags["mlflow.source.name"] = f"convlstm {sys.argv[1]}"
    tags.setdefault("mlflow.source.name", entry or "convlstm")
    tags.setdefault("mlflow.source.type", "LOCAL")
    tags.setdefault("mlflow.user", _user())
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get(SUBMISSION_ENV):
        tags[SUBMISSION_TAG] = os.environ[SUBMISSION_ENV]
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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


def set_description(tracking_uri: str | None, run_id: str, text: str) -> None:
    """The run's description (`mlflow.note.content`, markdown in the UI)."""
    client(tracking_uri).set_tag(run_id, NOTE_TAG, text)


def add_description_line(tracking_uri: str | None, run_id: str, marker: str, line: str) -> None:
    """Put `line` into the run's description, replacing the line that starts with `marker`."""
    c = client(tracking_uri)
    current = c.get_run(run_id).data.tags.get(NOTE_TAG, "")
    c.set_tag(run_id, NOTE_TAG, replace_line(current, marker, line))


def replace_line(text: str, marker: str, line: str) -> str:
    """`text` with its paragraph starting with `marker` replaced by `line` (appended when none does);
    paragraphs are separated by blank lines, so markdown renders each on its own."""
    kept = [p for p in text.split("\n\n") if p.strip() and not p.startswith(marker)]
    return "\n\n".join([*kept, line])


def _param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text[:MAX_PARAM_CHARS]


def reopen_run(tracking_uri: str | None, run_id: str) -> None:
    """Mark an existing run RUNNING again (resume); FileNotFoundError if the store lacks it or it was deleted."""
    from mlflow.exceptions import MlflowException

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
    from mlflow.entities import Metric

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
    from mlflow.entities import Metric

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


def log_artifacts(tracking_uri: str | None, run_id: str, files: Iterable[Path], artifact_path: str | None = None) -> None:
    c = client(tracking_uri)
    for f in files:
        c.log_artifact(run_id, str(f), artifact_path)


# ----------------------------------------------------------------------------- datasets


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
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.entities import Dataset as DatasetEntity

    from pipelines import storage
    from pipelines.manifest import manifest_path

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
                         digest=manifest.fingerprint[:DIGEST_CHARS],
                         source_type=source._get_source_type(), source=source.to_json(),
                         schema=json.dumps({"mlflow_colspec": columns}), profile=json.dumps(profile))


def log_datasets(tracking_uri: str | None, run_id: str, data: str, manifest: Manifest,
                 splits: dict[str, str], label: str | None = None) -> dict[str, Any]:
    """Attach the `splits` ({split: context}) of the shard set at `data` as dataset inputs of the run,
    each with its `mlflow.data.context` (named `<label or folder name>/<split>`); returns {split:
    dataset entity}. Logging a dataset the run already has is a no-op."""
    from mlflow.entities import DatasetInput, InputTag

    datasets = {split: shard_dataset(data, manifest, split, label) for split in splits}
    inputs = [DatasetInput(datasets[split], [InputTag(CONTEXT_TAG, context), InputTag(f"{TAG_PREFIX}split", split)])
              for split, context in splits.items()]
    client(tracking_uri).log_inputs(run_id, datasets=inputs)
    return datasets


def split_context(split: str) -> str:
    return SPLIT_CONTEXTS.get(split, split)


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
    from mlflow.store.artifact.utils.models import _parse_model_id_if_present

    return getattr(version, "model_id", None) or _parse_model_id_if_present(version.source or "")


def versions_of(tracking_uri: str | None, ref: str, run_id: str | None) -> list:
    """Registered versions behind a model reference: the one `models:/NAME@ALIAS` or
    `models:/NAME/VERSION` names, else every version registered from `run_id`."""
    from mlflow.exceptions import MlflowException

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


@dataclass
class Registered:
    name: str | None
    version: str | None
    alias: str | None
    model_uri: str
    model_id: str | None = None


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
    params: dict[str, Any] | None = None,
) -> Registered:
    """Log `model` as the run's MLflow model `model` and, with a `registered_name`, register it.

    Pickle serialization: `torch.export`'s pt2 format (MLflow 3's default) would freeze shapes of
    this recurrent model. The pickle references `convlstm` classes, so the model directory carries the
    `convlstm/` package (`code_paths`; it imports neither Ray nor MLflow): `mlflow.pytorch.load_model`
    and `mlflow.pyfunc.load_model(...).predict(ndarray)` (the pytorch flavor's own pyfunc wrapper,
    torch + convlstm only) work in an environment without this project. `example` (numpy `[B, ...]`
    float32) is the input example; `output` the model's output on it, for the signature (batch dim
    free). `extra_files` (the weights-only checkpoint) travel inside the model directory; `params`
    become the LoggedModel's parameters. The new version gets alias `champion` when the name has
    none, else `challenger`. Returns the registration (name/version/alias None without a
    `registered_name`) and the LoggedModel id.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    signature = infer_signature(example, output)
    with tempfile.TemporaryDirectory() as tmp, fluent(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            pytorch_model=model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="pickle",
            code_paths=[_convlstm_package(Path(tmp))],
            pip_requirements=[f"torch=={md.version('torch')}", f"numpy=={md.version('numpy')}"],
            extra_files=[str(f) for f in extra_files],
            params={k: _param_value(v) for k, v in (params or {}).items()} or None,
        )
        version = mlflow.register_model(info.model_uri, registered_name, tags=version_tags).version \
            if registered_name else None
    c = client(tracking_uri)
    # The LoggedModel's page: the same source as the run (not the interpreter's entry script) and description.
    c.set_logged_model_tags(info.model_id, {"mlflow.source.name": source_tags()["mlflow.source.name"],
                                            NOTE_TAG: description})
    if not registered_name:
        return Registered(None, None, None, f"runs:/{run_id}/model", info.model_id)
    c.update_model_version(registered_name, version, description=description)
    aliases = c.get_registered_model(registered_name).aliases
    alias = CHALLENGER if CHAMPION in aliases else CHAMPION
    c.set_registered_model_alias(registered_name, alias, version)
    return Registered(registered_name, str(version), alias, f"models:/{registered_name}@{alias}", info.model_id)


def _convlstm_package(folder: Path) -> str:
    """A clean copy of the `convlstm` package (no bytecode caches) under `folder`, for `code_paths`."""
    import convlstm

    source = Path(convlstm.__file__).resolve().parent
    target = folder / "convlstm"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


# ----------------------------------------------------------------------------- descriptions

EVAL_TAG = "eval."  # version tag `eval.<split>`: that split's score line (see `score_line`)


def score_line(split: str, windows: int, dataset: str, digest: str, scores: list[tuple[str, Any, dict]]) -> str:
    """`**test** (15 windows of mch32/test, 1a2b3c4d5e6f): rainfall_mse 1.23 (persistence 1.5,
    optical-flow 1.4); ...`: `scores` holds (metric, model value, {baseline: value})."""
    parts = []
    for name, value, baselines in scores:
        text = f"{name} {_fmt(value)}"
        if baselines:
            text += " (" + ", ".join(f"{method} {_fmt(v)}" for method, v in baselines.items()) + ")"
        parts.append(text)
    return f"**{split}** ({windows} windows of {dataset}, {digest}): " + "; ".join(parts)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


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
    task = versions[0].tags.get("task", "?")
    lines = [f"ConvLSTM models for the **{task}** task, trained by `convlstm train` on Ray Train from Ray Data "
             f"shards. Each version comes from one run: its dataset inputs are the exact shards (digest = "
             f"the first {DIGEST_CHARS} hex digits of the manifest fingerprint), its LoggedModel holds the "
             f"validation and test scores; the newest {min(newest, len(versions))} of {len(versions)}:"]
    for v in versions[:newest]:
        tags = v.tags
        head = f"- **v{v.version}**" + "".join(f" @{a}" for a in sorted(aliases.get(str(v.version), [])))
        digests = ",".join(f[:DIGEST_CHARS] for f in tags.get("data_fingerprint", "").split(","))
        head += (f": data {tags.get('dataset', '?')} ({digests}), "
                 f"{tags.get('monitor', 'score')} {tags.get('score', '?')} at epoch {tags.get('epoch', '?')}")
        evals = [tags[k] for k in sorted(tags) if k.startswith(EVAL_TAG)]
        lines.append(head + ("; " + "; ".join(evals) if evals else "; not evaluated yet (`convlstm evaluate --log`)"))
    c.update_registered_model(name, description="\n".join(lines))
