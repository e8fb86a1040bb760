"""The evaluation result (`evaluation.json`): one typed model, built by `score_model` / `evaluate`,
written and read here (`write_evaluation`, `load_evaluation`), passed to the report, retraining and
the demo as the model.

`evaluation.json` is strict JSON: an undefined score (a CSI with no event, a skill without a
persistence error) is `null`, never NaN. Keys: `model` (ref, run_id, data_fingerprint,
manifest_path; absent from `score_model`'s result), `task`, `data` (path, manifest, fingerprint,
split, windows), `protocol` (the task's windowing and thresholds), `primary_metric` (name,
higher_is_better, value), `methods` ({method: {summary: {metric: value}, per_lead: {metric: [one
value per lead time]}}}; the model is `model`, baselines by name), `skill` (the same per method,
against persistence), `skipped` ([{method, reason}]), `distributed`, `per_window` (metric, windows
[[source, start]], methods {method: [one value per window]}; given `per_window=`), `out`, `created`.
"""
from __future__ import annotations

import json
from typing import Any, ClassVar

from jobs.jsonable import to_jsonable
from pipelines import storage
from pipelines.jsonmodel import JsonModel, Number

EVALUATION_NAME = "evaluation.json"
MODEL = "model"  # the method name of the scored model, next to the baselines'
Score = Number | None  # None: undefined


class MethodScores(JsonModel):
    """One method's scores: `summary` {metric: value, or a list for KTH's per-class scores} and
    `per_lead` {metric: one value per lead time} (forecasting tasks)."""

    summary: dict[str, Any]
    per_lead: dict[str, list[Score]] = {}


class EvaluatedData(JsonModel):
    """What was scored: the dataset `path`, its `manifest` path and `fingerprint`, the `split` and its `windows`."""

    path: str
    manifest: str
    fingerprint: str
    split: str
    windows: int


class PrimaryMetric(JsonModel):
    """The task's ranking metric, its direction, and the model's `value` (None for the baselines alone)."""

    name: str
    higher_is_better: bool
    value: Score = None


class ModelLineage(JsonModel):
    """The scored model: its `ref` (None: the baselines alone), its MLflow run, and its training data."""

    ref: str | None = None
    run_id: str | None = None
    data_fingerprint: str | None = None
    manifest_path: str | None = None


class Skipped(JsonModel):
    method: str
    reason: str


class PerWindow(JsonModel):
    """`metric` of every window on its own, in (source, start) order, per method (None: undefined)."""

    metric: str
    windows: list[list[str]]
    methods: dict[str, list[Score]]


class EvaluationResult(JsonModel):
    """An `evaluation.json` (see the module docstring)."""

    kind: ClassVar[str] = "evaluation result"

    model: ModelLineage | None = None
    task: str
    data: EvaluatedData
    protocol: dict[str, Any]
    primary_metric: PrimaryMetric
    methods: dict[str, MethodScores]
    skill: dict[str, MethodScores] = {}
    skipped: list[Skipped] = []
    distributed: bool = False
    per_window: PerWindow | None = None
    out: str | None = None
    created: str | None = None

    def summary(self, method: str = MODEL) -> dict[str, Any]:
        """`method`'s summary scores; KeyError when it was not scored."""
        return self.methods[method].summary

    def baselines(self) -> dict[str, MethodScores]:
        """The scored methods other than the model, by name."""
        return {name: scores for name, scores in self.methods.items() if name != MODEL}

    def dumps(self) -> str:
        """The JSON text of `evaluation.json`: strict (no NaN: `null`), one key per line."""
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"


def evaluation_result(parts: dict[str, Any]) -> EvaluationResult:
    """The result from its parts as scoring made them (numpy values, NaN for undefined scores): plain
    JSON types, None where undefined, validated."""
    return EvaluationResult.parse(to_jsonable(parts), "the evaluation being built")


def write_evaluation(result: EvaluationResult, folder) -> str:
    """Write `result` as `<folder>/evaluation.json` (a local folder or URI); returns the file's path."""
    path = storage.join(str(folder), EVALUATION_NAME)
    storage.write_text(path, result.dumps())
    return path


def load_evaluation(path: str) -> EvaluationResult:
    """Read and validate `evaluation.json` (the file, or the folder holding it); one-line ValueError
    naming the file and the first bad field."""
    return EvaluationResult.read(path, EVALUATION_NAME, "evaluation")
