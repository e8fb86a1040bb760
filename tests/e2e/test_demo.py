"""`convlstm demo` end to end: one run of the whole demo through `jobs.cli.main` in a fresh
CONVLSTM_HOME; the KTH champion classifies the synthetic test videos and the radar champion beats
persistence on its test windows, and the motion-aware radar champion beats optical flow in rainfall MSE
and CSI at 0.5 mm/h. (That training repeats bit for bit is checked on the tiny KTH config
through the same DDP path: tests/jobs/test_train.py.)
"""
from __future__ import annotations

import json

import pytest

from jobs.cli import main
from jobs.ops.demo import RADAR_SCORES, beats

pytestmark = pytest.mark.slow


def test_demo_champions_learn(tmp_path, monkeypatch, ray_local, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("CONVLSTM_HOME", str(home))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    root = home / "outputs" / "demo"
    results = json.loads((root / "demo-summary.json").read_text())
    assert "| radar" in out and "persistence" in out

    # KTH: the champion tells the six synthetic actions apart on held-out persons.
    kth = json.loads((root / "reports" / "evaluate-kth" / "evaluation.json").read_text())
    assert kth["model"]["ref"] == "models:/convlstm-kth@champion"
    assert kth["methods"]["model"]["summary"]["accuracy"] >= 0.9, kth["methods"]["model"]["summary"]

    # Radar: better than persistence averaged over lead times and at the last lead time; better than the
    # optical flow it starts from in rainfall MSE and CSI at 0.5 mm/h (the table shows every verdict).
    radar = json.loads((root / "reports" / "evaluate-radar" / "evaluation.json").read_text())
    assert radar["model"]["ref"] == "models:/convlstm-radar@champion"
    verdict = beats(results["radar_evaluation"], "persistence")  # each score's direction from the radar task
    assert set(verdict) == {*RADAR_SCORES, *(f"{n}@last" for n in RADAR_SCORES)}
    assert all(verdict.values()), (verdict, radar["methods"]["model"]["summary"], radar["methods"]["persistence"]["summary"])
    versus_flow = beats(results["radar_evaluation"], "optical-flow")
    assert versus_flow["rainfall_mse"] and versus_flow["csi_ge_0.5"], (versus_flow, radar["methods"]["model"]["summary"])
    assert results["radar_train"]["alias"] == "champion" and results["kth_train"]["alias"] == "champion"
