"""An evaluation into MLflow: the run to log to checked first, then the scored split as a dataset input,
the summaries as metrics of the run and of the model's LoggedModel (`<split>_<name>` for the model,
`<split>_<method>_<name>` for a baseline: `metric_key`), the files as artifacts and a score line in the
descriptions of the run and the registered versions."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from jobs.evaluation.result import EvaluationResult
from jobs.registry import descriptions, mlflow_datasets, tracking
from jobs.tasks import task_class
from pipelines.manifest import load_manifest


def check_run(run_id: str, tracking_uri: str | None) -> None:
    """ValueError naming `--log-to-run` when the tracking store has no active run `run_id`."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    try:
        run = tracking.client(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(f"--log-to-run {run_id}: no such run in {tracking.resolve_uri(tracking_uri)}") from None
    if run.info.lifecycle_stage != "active":
        raise ValueError(f"--log-to-run {run_id}: the run is {run.info.lifecycle_stage}")


def metric_key(split: str, method: str, name: str) -> str:
    """MLflow metric name of a summary score: `test_csi_ge_0.5` (the model), `test_persistence_csi_ge_0.5`."""
    key = f"{split}_{name}" if method == "model" else f"{split}_{method}_{name}"
    return re.sub(r"[^\w.\-/ :]", "_", key)


def log_evaluation(result: EvaluationResult, files: list[Path], run_id: str, tracking_uri: str | None = None) -> None:
    """Log an evaluation into the run `run_id`.

    The scored split becomes a dataset input of the run (context `test` for the test split, see
    `mlflow_datasets.SPLIT_CONTEXTS`); the scalar summaries are metrics of the run and of the evaluated model's
    LoggedModel on that dataset (MLflow 3 `model_id` + dataset), baselines included, so the model
    version page lists the model's scores next to the baselines'; the files are artifacts under
    `evaluation/<split>/`. A score line (primary and table metrics vs the baselines) goes into the run's
    description, the registered version's description and `eval.<split>` tag, and the registered
    model's description. A run other than the model's own also gets the model as an input, so the
    evaluation run names both the model and the data."""
    from mlflow.entities import LoggedModelInput  # deferred: mlflow ~10 s to import; the module's other users skip it

    split, data = result.data.split, result.data.path
    dataset = mlflow_datasets.log_datasets(tracking_uri, run_id, data, load_manifest(data),
                                           {split: mlflow_datasets.split_context(split)})[split]
    model_run = result.model.run_id
    versions = tracking.versions_of(tracking_uri, result.model.ref, model_run)
    model_id = next((tracking.version_model_id(v) for v in versions if tracking.version_model_id(v)), None)
    if model_id is None and model_run:
        model_id = tracking.logged_model_id(tracking_uri, model_run)
    c = tracking.client(tracking_uri)
    if model_id and run_id != model_run:
        c.log_inputs(run_id, models=[LoggedModelInput(model_id)])
        tracking.ensure_experiment_kind(tracking_uri, c.get_run(run_id).info.experiment_id)
    scored = {**result.methods, **{f"{m}_vs_persistence": s for m, s in result.skill.items()}}
    rows = [(metric_key(split, method, name), value, 0)
            for method, scores in scored.items()
            for name, value in scores.summary.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
    tracking.log_metrics(tracking_uri, run_id, rows, model_id=model_id, dataset=dataset)
    tracking.log_artifacts(tracking_uri, run_id, files, f"evaluation/{split}")
    line = descriptions.score_line(split, result.data.windows, dataset.name, dataset.digest, _headline(result))
    tracking.add_description_line(tracking_uri, run_id, f"**{split}**", line)
    for version in versions:
        tracking.record_scores(tracking_uri, version, split, line)


def _headline(result: EvaluationResult) -> list[tuple[str, Any, dict]]:
    """(metric, model value, {baseline: value}) for the primary metric and up to two table metrics."""
    cls = task_class(result.task)
    model = result.summary()
    names = [n for n in dict.fromkeys([cls.primary_metric, *cls.table_metrics])
             if n in model and (model[n] is None or isinstance(model[n], (int, float)))][:3]
    baselines = {m: s.summary for m, s in result.baselines().items()}
    return [(n, model[n], {m: s.get(n) for m, s in baselines.items()}) for n in names]
