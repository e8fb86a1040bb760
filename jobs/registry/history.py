"""The alias history of registered models: one MLflow run per decision, in one experiment.

Every change of `@champion` (and every retrain decision that kept it) is a FINISHED run in the
experiment HISTORY_EXPERIMENT, named `<model> <action> v<version>`, with tags `convlstm.history.*`
(model, action, champion_before, champion_after, challenger, reason, metric, split, data fingerprint,
p-value, n, who) and the scores on the shared windows as metrics (`champion_<metric>`,
`challenger_<metric>`, `<baseline>_<metric>`). `convlstm models history` reads them back, newest last.
Actions: `first-champion`, `promoted`, `kept-champion` (retrain), `promote`, `rollback` (by hand).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jobs.registry import tracking
from jobs.registry.lineage import source_tags

HISTORY_EXPERIMENT = "convlstm-model-history"
TAG = f"{tracking.TAG_PREFIX}history."
FIELDS = ("model", "action", "champion_before", "champion_after", "challenger", "reason", "metric", "split",
          "data_fingerprint", "p_value", "n", "user")


@dataclass(frozen=True)
class AliasDecision:
    """One decision about `model`'s `@champion` (`action`, see the module docstring): the champion
    version before and after, why, and for a retrain the challenger, the `metric` and `split` it was
    scored on, the data, the paired test's `p_value` over `n` windows and the `scores` ({role or
    baseline: value of `metric`})."""

    model: str
    action: str
    champion_before: str | None
    champion_after: str | None
    reason: str
    challenger: str | None = None
    metric: str | None = None
    split: str | None = None
    data_fingerprint: str | None = None
    p_value: float | None = None
    n: int | None = None
    scores: dict[str, float | None] | None = None


def record(tracking_uri: str | None, decision: AliasDecision) -> str:
    """Log one decision as a finished run; its `scores` become metrics `<role>_<metric>`. Returns the run id."""
    from mlflow.entities import Metric  # deferred: mlflow ~10 s to import; the module's other users skip it

    d = decision
    values = {"model": d.model, "action": d.action, "champion_before": d.champion_before,
              "champion_after": d.champion_after, "challenger": d.challenger, "reason": d.reason,
              "metric": d.metric, "split": d.split, "data_fingerprint": d.data_fingerprint,
              "p_value": None if d.p_value is None else f"{d.p_value:.4g}",
              "n": None if d.n is None else str(d.n), "user": source_tags().get("mlflow.user")}
    tags = {f"{TAG}{k}": str(v) for k, v in values.items() if v is not None}
    experiment = tracking.ensure_experiment(tracking_uri, HISTORY_EXPERIMENT)
    version = d.champion_after if d.action != "kept-champion" else d.challenger
    run_id = tracking.create_run(tracking_uri, experiment, f"{d.model} {d.action} v{version or '-'}",
                                 {**source_tags(), **tags, tracking.NOTE_TAG: d.reason}, {})
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    metrics = [Metric(f"{role}_{d.metric}", float(value), now, 0)
               for role, value in (d.scores or {}).items() if value is not None and d.metric]
    c = tracking.client(tracking_uri)
    if metrics:
        c.log_batch(run_id, metrics=metrics)
    tracking.end_run(tracking_uri, run_id)
    return run_id


def history(tracking_uri: str | None, model: str) -> list[dict[str, Any]]:
    """The decisions about `model`, oldest first: {time, run_id, <FIELDS>, scores: {role: value}}."""
    c = tracking.client(tracking_uri)
    experiment = c.get_experiment_by_name(HISTORY_EXPERIMENT)
    if experiment is None:
        return []
    runs = c.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG}model` = '{model}'",
                         order_by=["attributes.start_time ASC"], max_results=10000)
    rows = []
    for run in runs:
        tags = run.data.tags
        metric = tags.get(f"{TAG}metric")
        suffix = f"_{metric}" if metric else None
        scores = {k[:-len(suffix)]: v for k, v in run.data.metrics.items() if suffix and k.endswith(suffix)}
        rows.append({"time": datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc)
                    .isoformat(timespec="seconds"), "run_id": run.info.run_id,
                     **{k: tags.get(f"{TAG}{k}") for k in FIELDS}, "scores": scores})
    return sorted(rows, key=lambda r: r["time"])  # search order is by ms; a stable sort keeps ties in order
