"""What `train()` checks before any cluster work, and how runs are named and found again.

Arguments (workers, GPU, storage, run name), the monitored metric and its direction, the model
against the data, the windows each dataset offers, a checkpoint to resume against the new config;
after training, that the last epoch read every window the manifests promise.
"""
from __future__ import annotations

import math
import os
import re
from datetime import datetime
from typing import Any, Sequence

import torch

from jobs import checkpoints, paths
from jobs.errors import CommandError
from jobs.registry.descriptions import digest
from jobs.registry.modelio import load_state
from jobs.tasks import Task
from jobs.training.config import Config
from jobs.training.datasets import TrainingData
from pipelines import storage
from pipelines.manifest import Manifest

DEFAULT_RUN_NAME = r"-\d{8}-\d{6}$"  # after the task's name: `new_run_name`
RUN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


def check_compute(workers: int, use_gpu: bool, cpus_per_worker: float | None) -> None:
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if use_gpu and workers == 0 and not torch.cuda.is_available():
        raise ValueError("--gpu with --workers 0 trains in this process, which sees no CUDA device")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")


def storage_location(storage_path: str | None, workers: int) -> str:
    """Where checkpoints go: `storage_path` (absolute when local, a writable folder), else the default
    (`<CONVLSTM_STORAGE>/train`, else `<home>/outputs/train`)."""
    if workers == 0 and storage_path and storage.is_remote(storage_path):
        raise ValueError(f"storage_path {storage_path}: object-store checkpoints need Ray workers (workers >= 1)")
    storage_path = storage_path or paths.output_location("train")
    if not storage.is_remote(storage_path):
        storage_path = os.path.abspath(storage_path)  # Ray Train wants absolute local paths
        if os.path.exists(storage_path) and not os.path.isdir(storage_path):
            raise NotADirectoryError(f"--storage {storage_path}: is a file, not a folder for checkpoints")
        storage.check_writable(storage_path)
    return storage_path


def check_run_name(run_name: str | None) -> None:
    if run_name is not None and not RUN_NAME.match(run_name):
        raise ValueError(f"--run-name {run_name!r}: use ASCII letters, digits, '.', '_' and '-' (it names "
                         "the checkpoint folder and Ray Train's run)")


def new_run_name(task: str) -> str:
    return f"{task}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def newest_run(storage_path: str, task: str) -> str | None:
    """The newest default-named run of `task` with a checkpoint under `storage_path`, if any."""
    names = {rel.split("/", 1)[0] for rel in storage.list_files(storage_path, checkpoints.CHECKPOINT_FILE)}
    ours = sorted(n for n in names if re.fullmatch(re.escape(task) + DEFAULT_RUN_NAME, n))
    return ours[-1] if ours else None


def check_resumable(previous: dict, cfg: Config, datasets: Sequence[TrainingData], run_name: str) -> None:
    """ValueError when the checkpoint `previous` cannot be resumed with `cfg` on `datasets`."""
    if previous["task"] != cfg.task:
        raise ValueError(f"run {run_name!r} trained task {previous['task']!r}, not {cfg.task!r}")
    # Checkpoints from before pooled datasets hold only the one `data_fingerprint`.
    before = sorted(d["fingerprint"] for d in previous.get("datasets", [])) or [previous["data_fingerprint"]]
    now = sorted(d.fingerprint for d in datasets)
    if before != now:
        these = "this dataset is" if len(now) == 1 else "these datasets are"
        raise ValueError(f"run {run_name!r} trained on data {digests(before)}, {these} {digests(now)}: "
                         f"start a new run")
    if previous["config"]["model"] != cfg.to_dict()["model"]:
        raise ValueError(f"model: run {run_name!r} was trained with {previous['config']['model']}, "
                         f"not {cfg.to_dict()['model']}")
    if previous["epoch"] >= cfg.train.epochs:
        raise ValueError(f"train.epochs: run {run_name!r} already completed {previous['epoch']} epochs; "
                         f"raise train.epochs to continue it")


def digests(fingerprints: Sequence[str]) -> str:
    return ", ".join(digest(f) for f in fingerprints)


def with_monitor_mode(cfg: Config, task: Task) -> Config:
    """`cfg` with `train.mode` from the task's direction of `train.monitor`; a validation metric of the
    task is required, and a hand-set mode that disagrees is refused naming both keys."""
    names = task.metric_names()
    monitor = cfg.train.monitor
    if monitor not in names:
        raise ValueError(f"train.monitor: {monitor!r} is not a validation metric of {cfg.task} "
                         f"(choose from {', '.join(names)})")
    mode = task.monitor_mode(monitor)
    if cfg.train.mode not in (None, mode):
        better = "higher" if mode == "max" else "lower"
        raise ValueError(f"train.mode: {cfg.train.mode} contradicts train.monitor={monitor} ({better} is better "
                         f"for {cfg.task}); drop train.mode, it follows the monitor")
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"mode": mode})})


def check_model(cfg: Config, task: Task) -> dict[str, Any]:
    """Build the model on the driver and run it on one blank window, so `model.*` settings that
    cannot be built or do not fit the data fail before any cluster work; returns the model spec."""
    # deferred: convlstm.factory loads OpenCV ~4 s; the module's other users skip it
    from convlstm.factory import build_model, model_spec

    try:
        model = build_model(cfg.model.name, **cfg.model.params)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"model: cannot build {cfg.model.name!r} from model.params: {exc}") from None
    try:
        task.check_model(model)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"model.params: the model does not fit the {cfg.task} data: {exc}") from None
    return model_spec(model)


def init_weights(ref: str, spec: dict[str, Any], tracking_uri: str | None) -> dict[str, torch.Tensor]:
    """The weights of the model `ref` for a warm start; ValueError when it is another model than `spec`."""
    state = load_state(ref, tracking_uri)
    if state["model_spec"] != spec:
        raise ValueError(f"init_from: {ref} is a {state['model_spec']}, the config builds {spec}")
    return state["model"]


def steps_per_epoch(cfg: Config, datasets: Sequence[TrainingData], workers: int) -> tuple[int, int]:
    """Optimizer steps per epoch over the windows of all datasets, and the per-worker batch size;
    every worker gets the same number of rows (Ray Data's equal split drops the remainder)."""
    if cfg.data.batch_size % workers:
        raise ValueError(f"data.batch_size ({cfg.data.batch_size}) must be divisible by the number of "
                         f"workers ({workers}): it is the global batch")
    for data in datasets:
        for key in ("train_split", "val_split"):
            split = getattr(cfg.data, key)
            if not data.manifest.count(split):
                which = f"dataset {data.uri}" if len(datasets) > 1 else "dataset"
                raise ValueError(f"data.{key}: the {which} has no windows in split {split!r} "
                                 f"(splits: {', '.join(sorted(data.manifest.splits))})")
    rows = sum(split_rows(data.manifest, cfg.data.train_split, cfg.data.limit_train) for data in datasets)
    per_worker = cfg.data.batch_size // workers
    if rows < workers:
        raise ValueError(f"data.train_split: {rows} windows cannot feed {workers} workers")
    return math.ceil((rows // workers) / per_worker), per_worker


def check_windows(outcome: dict, cfg: Config, datasets: Sequence[TrainingData], workers: int) -> None:
    """CommandError (nothing registered) when the last epoch trained on or scored fewer windows than
    the manifests promise: shards lost or changed after the check at the start. Ray Train's equal
    split drops the remainder of the training windows over `workers`."""
    ranks = max(workers, 1)
    promised = {"train_windows": sum(split_rows(d.manifest, cfg.data.train_split, cfg.data.limit_train)
                                     for d in datasets),
                "val_windows": sum(split_rows(d.manifest, cfg.data.val_split, cfg.data.limit_val) for d in datasets)}
    promised["train_windows"] -= promised["train_windows"] % ranks
    for key, split in (("train_windows", cfg.data.train_split), ("val_windows", cfg.data.val_split)):
        seen = outcome.get(key)
        if seen is not None and seen < promised[key]:
            promise = "their manifests promise" if len(datasets) > 1 else "its manifest promises"
            raise CommandError(f"split {split}: the last epoch read {seen} of the {promised[key]} windows {promise} "
                               f"({', '.join(d.uri for d in datasets)}); shards changed during the run? "
                               "nothing registered")


def split_rows(manifest: Manifest, split: str, limit: int | None) -> int:
    """Windows read from one dataset's split: all of them, or `limit` (`data.limit_*`) at most."""
    return int(min(manifest.splits[split].count, limit or math.inf))
