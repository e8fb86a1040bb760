"""`convlstm demo` end to end (issue 10 item 1): champions that learn, and runs that repeat exactly.

One run of the whole demo through `jobs.cli.main` in a fresh CONVLSTM_HOME, then its two training
stages once more on the same shards: the KTH champion classifies the synthetic test videos, the
radar champion beats persistence on its test windows, and the retrained models are bit-for-bit the
same as the first ones (seeded initialisation, seeded shuffles, order-preserving Ray Data shards,
DDP over gloo on CPU).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobs.cli import main

pytestmark = pytest.mark.slow

RADAR_METRICS = {"rainfall_mse": "lower", "correlation": "higher", "csi_ge_0.5": "higher"}


def _beats(model: float, baseline: float, better: str) -> bool:
    return model < baseline if better == "lower" else model > baseline


def _scores(checkpoint: dict) -> str:
    """A checkpoint's validation scores as comparable text (NaN == NaN), without the timing."""
    metrics = {k: v for k, v in checkpoint["metrics"].items() if k != "samples_per_s"}
    return json.dumps([metrics, checkpoint["evaluation"]], sort_keys=True, default=float)


def test_demo_champions_learn_and_training_repeats_exactly(tmp_path, monkeypatch, ray_local, capsys):
    from jobs.ops import demo
    from jobs.training import checkpoints

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

    # Radar: better than persistence averaged over lead times and at the last lead time.
    radar = json.loads((root / "reports" / "evaluate-radar" / "evaluation.json").read_text())
    assert radar["model"]["ref"] == "models:/convlstm-radar@champion"
    model, persistence = radar["methods"]["model"], radar["methods"]["persistence"]
    for name, better in RADAR_METRICS.items():
        assert _beats(model["summary"][name], persistence["summary"][name], better), \
            (name, "mean over leads", model["summary"][name], persistence["summary"][name])
        assert _beats(model["per_lead"][name][-1], persistence["per_lead"][name][-1], better), \
            (name, "last lead", model["per_lead"][name], persistence["per_lead"][name])

    # The training stages again, on the same shards: the same weights and the same scores.
    plan = demo.DemoPlan(root=root, radar_src=demo.bundled_radar_sample(), tracking_uri=results["tracking_uri"])
    for task in ("kth", "radar"):
        first = results[f"{task}_train"]
        demo.train_task(plan, task)
        again = plan.results[f"{task}_train"]
        assert again["model_version"] != first["model_version"] and again["alias"] == "challenger"
        assert (again["best_epoch"], again["steps"], again["best_score"]) == \
               (first["best_epoch"], first["steps"], first["best_score"]), task
        a, b = checkpoints.load(first["best_checkpoint"]), checkpoints.load(again["best_checkpoint"])
        assert _scores(a) == _scores(b), task
        assert a["model"].keys() == b["model"].keys()
        different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
        assert not different, f"{task}: weights differ between two identical runs: {different}"
