"""Helpers for the evaluate/nowcast tests: the tiny MeteoSwiss dataset and few-step trained models."""
from __future__ import annotations

from pathlib import Path

IN_LEN = OUT_LEN = 3


def prepare_mch_tiny(sample_data: Path, out: Path) -> Path:
    """MCH sample -> 32x32 windows of 3 + 3 frames (600x600 centre crop), chronological split:
    7 train, 3 val and 15 test windows (the test part is 2016-07-11 22:25 .. 2016-07-12 00:00)."""
    from pipelines.radar.prepare import RadarOptions, prepare_radar
    from pipelines.driver import Publish

    options = RadarOptions(in_len=IN_LEN, out_len=OUT_LEN, size=(32, 32), crop=(600, 600), split="time",
                           val_fraction=0.2, test_fraction=0.5)
    prepare_radar(sample_data / "radar-mch-sample", str(out), "mch", options, publish=Publish(progress=False))
    return out


def train_tiny(task: str, data: Path, name: str, *overrides: str) -> str:
    """Train the task's tiny config for one short epoch in this process, registered as `name`;
    returns the model URI (`models:/<name>@champion` for a new name)."""
    from jobs.training.config import load_config
    from jobs.training.driver import Compute, RunOptions, train

    cfg = load_config(f"{task}-tiny", task, [f"registry.name={name}", "train.epochs=1", *overrides])
    return train(cfg, str(data), compute=Compute(workers=0), run=RunOptions(run_name=f"{name}-run")).model_uri
