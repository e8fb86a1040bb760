"""What a training run writes for people: the MLflow run's and the model version's descriptions
(markdown), the best epoch's `evaluation.json`, and the learning curve plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from jobs import plots
from jobs.registry.descriptions import digest
from jobs.registry.registration import Registered
from jobs.training.config import Config
from jobs.training.datasets import TrainingData

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def run_description(cfg: Config, datasets: Sequence[TrainingData], run_name: str, init_from: str | None) -> str:
    """The training run's description (markdown; the driver adds `**Result**` at the end)."""
    if len(datasets) == 1:
        data = f"`{datasets[0].name}`: {_windows(cfg, datasets[0])} (the run's dataset inputs)"
    else:
        data = (f"{len(datasets)} pooled datasets: " + ", ".join(f"`{d.name}` ({_windows(cfg, d)})" for d in datasets)
                + " (the run's dataset inputs; validation is scored on each as `val_<name>_<metric>` and pooled "
                  "as `val_<metric>`)")
    text = (f"Training a **{cfg.task}** ConvLSTM (`{cfg.model.name}`, {cfg.loss.name} loss) for {cfg.train.epochs} "
            f"epochs on {data}. Checkpoints are ranked by {cfg.train.monitor} ({cfg.train.mode}); run `{run_name}`.")
    if init_from:
        text += f" Warm-started from `{init_from}`."
    return text


def _windows(cfg: Config, data: TrainingData) -> str:
    """`7 train / 3 val windows, fingerprint `1a2b3c4d5e6f``: a dataset's training and validation windows."""
    train, val = (data.manifest.count(s) for s in (cfg.data.train_split, cfg.data.val_split))
    return (f"{train} {cfg.data.train_split} / {val} {cfg.data.val_split} windows, fingerprint "
            f"`{digest(data.fingerprint)}`")


def version_description(cfg: Config, datasets: Sequence[TrainingData], run: dict[str, str], best: dict,
                        score: float, epochs: int) -> str:
    """A model version's description (markdown): where it comes from (`run`: run_id, run_name,
    experiment_id), its data and validation score; `convlstm evaluate --log` adds a line per scored
    split (`tracking.record_scores`)."""
    train, val = cfg.data.train_split, cfg.data.val_split
    names = [d.name for d in datasets]
    data = "; ".join(
        f"`{d.uri}`: " + " / ".join(f"{info.count} {split}" for split, info in sorted(
            d.manifest.splits.items(), key=lambda item: (SPLIT_ORDER.get(item[0], 3), item[0])))
        + f" windows, fingerprint `{digest(d.fingerprint)}`" for d in datasets)
    if len(datasets) == 1:
        scored, inputs = f"{names[0]}/{val}", f"{names[0]}/{train} (train) and {names[0]}/{val} (validation)"
    else:
        scored, data = f"the pooled {val} windows of {', '.join(names)}", f"(pooled) {data}"
        inputs = f"<name>/{train} (train) and <name>/{val} (validation) of each"
    return (f"**{cfg.task}** ConvLSTM (`{cfg.model.name}`) from run [`{run['run_name']}`](#/experiments/"
            f"{run['experiment_id']}/runs/{run['run_id']}), best epoch {best['epoch']} of {epochs}: "
            f"{cfg.train.monitor} = {score:.6g} on {scored}.\n\n"
            f"Data {data}; the run's dataset inputs {inputs} point at these shards.")


def result_line(best: dict, epochs: int, monitor: str, score: float, registered: Registered) -> str:
    """The run description's `**Result**` line: the best epoch, its score and the registration."""
    line = f"**Result**: best epoch {best['epoch']} of {epochs}: {monitor} = {score:.6g}"
    if registered.name:
        line += f"; registered as `{registered.name}` v{registered.version} @{registered.alias}"
    return line + "."


def best_epoch_json(best: dict, monitor: str, path: Path) -> Path:
    """The run's `evaluation.json`: the best epoch's checkpoint scores and lineage."""
    payload = {"epoch": best["epoch"], "step": best["step"], "monitor": monitor, "score": best["metrics"][monitor],
               "data_fingerprint": best["data_fingerprint"], "manifest_path": best["manifest_path"],
               "datasets": best.get("datasets"), "metrics": best["metrics"], "evaluation": best["evaluation"]}
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return path


def learning_curve(series: dict[str, list[tuple[int, float]]], run_id: str, folder: Path) -> Path:
    """`learning_curve.png` of the metric histories `series` ({key: [(step, value)]})."""
    return plots.learning_curve(series, folder / "learning_curve.png", title=f"run {run_id[:8]}")
