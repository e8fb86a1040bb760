"""The MLflow run of a training: opened (or reopened on resume) with its tags, config, description
and dataset inputs; ended FINISHED, FAILED or KILLED; on success the best checkpoint logged as the
run's model (its LoggedModel holding the best epoch's validation scores) and registered."""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from jobs import checkpoints, signals
from jobs.registry import tracking
from jobs.registry.lineage import TAG_PREFIX, run_tags
from jobs.registry.mlflow_datasets import log_datasets
from jobs.registry.modelio import build_from_spec
from jobs.registry.registration import ModelFiles, Registration, log_and_register_model
from jobs.tasks import Task
from jobs.training import report
from jobs.training.config import Config, flatten
from jobs.training.datasets import TrainingData


@dataclass
class TrainSummary:
    run_id: str
    run_name: str
    experiment_id: str
    status: str  # completed | early_stopped
    epochs: int  # epochs completed in total (resumes included)
    steps: int
    monitor: str
    best_score: float
    best_epoch: int
    best_checkpoint: str
    registered_name: str | None
    model_version: str | None
    alias: str | None
    model_uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingRun:
    """A training's MLflow run (`uri`, `run_id`, `experiment_id`), its name and checkpoint folder,
    and each dataset's logged MLflow datasets (`inputs`: {split: dataset}, in dataset order)."""

    uri: str
    run_id: str
    experiment_id: str
    run_name: str
    storage_path: str
    inputs: tuple[dict, ...] = ()


def open_run(cfg: Config, datasets: Sequence[TrainingData], run_name: str, storage_path: str,
             previous: dict | None, tracking_uri: str | None, experiment: str | None,
             init_from: str | None) -> TrainingRun:
    """A new RUNNING run in `experiment` (default `convlstm-<task>`), or the run of the checkpoint
    `previous` reopened; the datasets' splits logged as its inputs."""
    uri = tracking.resolve_uri(tracking_uri)
    experiment_id = tracking.ensure_experiment(uri, experiment or f"convlstm-{cfg.task}")
    if previous is not None:
        run_id = previous["run_id"]
        tracking.reopen_run(uri, run_id)
    else:
        tags = {**run_tags(cfg.task, datasets[0].manifest, datasets[0].manifest_path), **_pooled_tags(datasets)}
        if init_from:
            tags[f"{TAG_PREFIX}init_from"] = init_from
        run_id = tracking.create_run(uri, experiment_id, run_name, tags, flatten(cfg.to_dict()))
        _log_config(uri, run_id, cfg)
        tracking.set_description(uri, run_id, report.run_description(cfg, datasets, run_name, init_from))
    contexts = {cfg.data.train_split: "train", cfg.data.val_split: "validation"}
    inputs = tuple(log_datasets(uri, run_id, d.uri, d.manifest, contexts, d.name) for d in datasets)
    return TrainingRun(uri, run_id, experiment_id, run_name, storage_path, inputs)


def fail_run(run: TrainingRun, exc: BaseException) -> None:
    """End the run KILLED (Ctrl-C, SIGTERM) or FAILED, the error in its `convlstm.error` tag."""
    tracking.client(run.uri).set_tag(run.run_id, f"{TAG_PREFIX}error", str(exc)[:5000])
    tracking.end_run(run.uri, run.run_id, "KILLED" if signals.stopped(exc) else "FAILED")


def finish_run(cfg: Config, task: Task, run: TrainingRun, outcome: dict,
               datasets: Sequence[TrainingData]) -> TrainSummary:
    """Artifacts (evaluation JSON, plots), the best checkpoint as a registered model whose LoggedModel
    holds the best epoch's validation scores (linked to the validation datasets), and descriptions of
    the run, the version and the registered model."""
    last = checkpoints.load(checkpoints.latest(run.storage_path, run.run_name))
    best_dir = checkpoints.best(run.storage_path, run.run_name, cfg.train.monitor, cfg.train.mode)
    best = checkpoints.load(best_dir)
    model = build_from_spec(best["model_spec"])
    model.load_state_dict(best["model"])
    model.eval()
    monitor, score = cfg.train.monitor, float(best["metrics"][cfg.train.monitor])
    names = {"run_id": run.run_id, "run_name": run.run_name, "experiment_id": run.experiment_id}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = {k: tracking.metric_history(run.uri, run.run_id, k)
                  for k in dict.fromkeys(["train_loss", "train_loss_epoch", "val_loss", monitor, "lr"])}
        files = [report.best_epoch_json(best, monitor, tmp / "evaluation.json"),
                 report.learning_curve(series, run.run_id, tmp)]
        files += task.figures(best["evaluation"], best["preview"], tmp)
        tracking.log_artifacts(run.uri, run.run_id, files)
        weights = tmp / checkpoints.CHECKPOINT_FILE
        torch.save({k: v for k, v in best.items() if k not in ("optimizer", "scheduler")}, weights)
        example = task.example_input(best["preview"])
        with torch.no_grad():
            output = model(torch.from_numpy(example)).float().numpy()
        registered = log_and_register_model(
            run.uri, run.run_id, ModelFiles(model, example, output, [weights]),
            Registration(name=cfg.registered_model_name if cfg.registry.register_model else None,
                         description=report.version_description(cfg, datasets, names, best, score, last["epoch"]),
                         version_tags={"run_id": run.run_id, "task": cfg.task, **_joined(datasets),
                                       "monitor": monitor, "score": f"{score:.6g}", "epoch": str(best["epoch"])},
                         params=flatten(cfg.to_dict())))
    _link_validation(run, best["step"], registered.model_id, cfg, datasets)
    if registered.name:
        tracking.describe_registered_model(run.uri, registered.name)
    tracking.add_description_line(run.uri, run.run_id, "**Result**",
                                  report.result_line(best, last["epoch"], monitor, score, registered))
    tracking.end_run(run.uri, run.run_id, "FINISHED")
    return TrainSummary(
        run_id=run.run_id, run_name=run.run_name, experiment_id=run.experiment_id, status=outcome["status"],
        epochs=last["epoch"], steps=last["step"], monitor=monitor, best_score=score, best_epoch=best["epoch"],
        best_checkpoint=best_dir, registered_name=registered.name, model_version=registered.version,
        alias=registered.alias, model_uri=registered.model_uri)


def _link_validation(run: TrainingRun, step: int, model_id: str | None, cfg: Config,
                     datasets: Sequence[TrainingData]) -> None:
    """The best epoch's validation scores become the LoggedModel's: with one dataset all `val_*` on its
    validation dataset; pooled ones on no single dataset, `val_<name>_*` on that dataset's."""
    split = cfg.data.val_split
    if len(datasets) == 1:
        tracking.link_metrics(run.uri, run.run_id, "val_", step, model_id, run.inputs[0].get(split))
        return
    prefixes = tuple(f"val_{data.name}_" for data in datasets)
    tracking.link_metrics(run.uri, run.run_id, "val_", step, model_id, None, exclude=prefixes)
    for prefix, logged in zip(prefixes, run.inputs):
        tracking.link_metrics(run.uri, run.run_id, prefix, step, model_id, logged.get(split))


def _joined(datasets: Sequence[TrainingData]) -> dict[str, str]:
    """Version tags naming the data: `dataset` (names), `data_uri`, `data_fingerprint`, `manifest_path`,
    each comma-separated when the run pooled several datasets."""
    return {"dataset": ",".join(d.name for d in datasets), "data_uri": ",".join(d.uri for d in datasets),
            "data_fingerprint": ",".join(d.fingerprint for d in datasets),
            "manifest_path": ",".join(d.manifest_path for d in datasets)}


def _pooled_tags(datasets: Sequence[TrainingData]) -> dict[str, str]:
    """Run tags of a pooled run (none for one dataset): `convlstm.data_fingerprint` and
    `convlstm.manifest_path` comma-separated, and `convlstm.data.<i>` (URI), `.name`, `.fingerprint`."""
    if len(datasets) == 1:
        return {}
    joined = _joined(datasets)
    tags = {f"{TAG_PREFIX}{key}": joined[key] for key in ("data_fingerprint", "manifest_path")}
    for i, data in enumerate(datasets):
        prefix = f"{TAG_PREFIX}data.{i}"
        tags.update({prefix: data.uri, f"{prefix}.name": data.name, f"{prefix}.fingerprint": data.fingerprint})
    return tags


def _log_config(uri: str, run_id: str, cfg: Config) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(cfg.to_yaml())
        tracking.log_artifacts(uri, run_id, [path])
