"""`evaluation.json` is one typed model (`jobs.evaluation.result.EvaluationResult`): written and read back
unchanged, strict JSON (`null` for an undefined score), a result without the optional parts (no model,
skill or per-window scores) still loads, and a hand-broken field is a one-line error naming the file and
the field."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jobs.evaluation.result import evaluation_result, load_evaluation, write_evaluation

PARTS = {
    "model": {"ref": "models:/convlstm-radar@champion", "run_id": "abc", "data_fingerprint": "f" * 64,
              "manifest_path": "/data/mch/manifest.json"},
    "task": "radar",
    "data": {"path": "/data/mch", "manifest": "/data/mch/manifest.json", "fingerprint": "f" * 64, "split": "test",
             "windows": 3},
    "protocol": {"in_len": 5, "out_len": 2, "time_step_s": 300.0, "thresholds_mmh": [0.5]},
    "primary_metric": {"name": "rainfall_mse", "higher_is_better": False, "value": np.float32(1.5)},
    "methods": {"model": {"summary": {"rainfall_mse": np.float64(1.5), "csi_ge_0.5": float("nan")},
                          "per_lead": {"rainfall_mse": np.array([1.0, 2.0]), "csi_ge_0.5": np.array([np.nan, 0.5])}},
                "persistence": {"summary": {"rainfall_mse": 3.0, "csi_ge_0.5": 0.25},
                                "per_lead": {"rainfall_mse": [2.0, 4.0], "csi_ge_0.5": [0.0, 0.5]}}},
    "skill": {"model": {"summary": {"rainfall_mse_skill": 0.5}, "per_lead": {"rainfall_mse_skill": [0.5, 0.5]}}},
    "skipped": [],
    "distributed": False,
    "per_window": {"metric": "rainfall_mse", "windows": [["2016-07-11", "2016-07-11T00:00:00Z"]] * 3,
                   "methods": {"model": [1.0, None, 2.0], "persistence": [3.0, 3.0, 3.0]}},
    "out": "/outputs/evaluations/1",
    "created": "2026-12-03T12:00:00Z",
}


def test_an_evaluation_round_trips_as_strict_json_with_null_for_undefined_scores(tmp_path):
    result = evaluation_result(PARTS)
    assert result.summary()["csi_ge_0.5"] is None and result.methods["model"].per_lead["csi_ge_0.5"] == [None, 0.5]
    assert list(result.baselines()) == ["persistence"] and result.per_window.methods["model"][1] is None
    path = write_evaluation(result, tmp_path)
    text = (tmp_path / "evaluation.json").read_text()
    raw = json.loads(text, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert list(raw) == list(PARTS)  # the same keys, in the order evaluate has always written them
    assert raw["methods"]["model"]["summary"]["csi_ge_0.5"] is None
    loaded = load_evaluation(path)
    assert loaded == result and loaded.to_json() == raw and load_evaluation(tmp_path).dumps() == text


def test_a_result_without_optional_parts_loads_and_keeps_its_keys(tmp_path):
    """The baselines alone (no model) from an older release: no `model`, `skill`, `per_window`, `out`."""
    raw = {k: v for k, v in json.loads(evaluation_result(PARTS).dumps()).items()
           if k not in ("model", "skill", "per_window", "out", "created")}
    raw["primary_metric"] = {"name": "rainfall_mse", "higher_is_better": False}
    (tmp_path / "evaluation.json").write_text(json.dumps(raw))
    loaded = load_evaluation(tmp_path)
    assert loaded.model is None and loaded.skill == {} and loaded.primary_metric.value is None
    assert loaded.to_json() == raw


@pytest.mark.parametrize("edit, field", [
    (lambda r: r["methods"]["model"].pop("summary"), "'methods.model.summary' is missing"),
    (lambda r: r["methods"]["model"]["per_lead"].update(rainfall_mse="fast"), "'methods.model.per_lead.rainfall_mse'"),
    (lambda r: r["data"].update(windows="three"), "'data.windows'"),
    (lambda r: r["primary_metric"].pop("higher_is_better"), "'primary_metric.higher_is_better' is missing"),
    (lambda r: r.pop("task"), "'task' is missing"),
])
def test_a_hand_broken_field_is_one_line_naming_the_file_and_the_field(tmp_path, edit, field):
    raw = json.loads(evaluation_result(PARTS).dumps())
    edit(raw)
    (tmp_path / "evaluation.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError) as caught:
        load_evaluation(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'evaluation.json'}: ") and field in message


def test_scores_keep_their_values():
    result = evaluation_result(PARTS)
    assert result.primary_metric.value == 1.5 and math.isclose(result.summary("persistence")["rainfall_mse"], 3.0)
