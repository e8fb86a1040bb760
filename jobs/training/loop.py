"""The per-worker training loop: one plain function, `train_loop(spec)`, run by every rank.

The driver (`jobs.training.driver`) hands each worker one frozen `WorkerSpec`; `jobs.training.sessions`
adapts the loop to its host (Ray Train DDP, or one process without Ray). Only rank 0 writes
checkpoints and talks to MLflow. The step never waits on the device: the loss is summed on the
device and checked (all ranks together) every `train.log_every_steps` steps and at the epoch's end.
Validation runs in float32 (no autocast), each rank on its own windows, merged by a SUM all-reduce;
with several datasets, per dataset and pooled (`jobs.training.validation`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from jobs.tasks import get_task
from jobs.training.config import Config
from jobs.training.datasets import TrainingData
from jobs.training.metrics_log import MetricLogger, start_system_metrics, stop_system_metrics
from jobs.training.optim import build_optimizer, build_scheduler
from jobs.training.progress import epoch_line, write_progress
from jobs.training.sessions import LocalSession, RaySession
from jobs.training.validation import validate
from pipelines.manifest import Manifest

STATUS_COMPLETED, STATUS_EARLY_STOPPED, STATUS_NON_FINITE = "completed", "early_stopped", "non_finite"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, decided by the driver before any cluster work.

    `datasets`: the datasets trained on (URI, manifest, name; several are pooled and agree in what
    the task reads, so the first's `manifest` decides the task); `columns`: shard columns the task
    reads; `steps_per_epoch` / `worker_batch_size`: per rank; `storage_path` / `run_name`: where
    checkpoints go; `resume_from`: a checkpoint folder or None; `local`: run in this process without
    Ray; `progress_dir`: where each rank writes `rank<N>.json` (pid, epoch, step, validation windows)
    for watching a run; `init_weights`: a state dict to warm-start from.
    """

    config: Config
    datasets: tuple[TrainingData, ...]
    columns: tuple[str, ...]
    run_id: str
    tracking_uri: str
    steps_per_epoch: int
    worker_batch_size: int
    storage_path: str
    run_name: str
    resume_from: str | None = None
    use_gpu: bool = False
    local: bool = False
    progress_dir: str | None = None
    init_weights: dict | None = None

    @property
    def manifest(self) -> Manifest:
        return self.datasets[0].manifest

    @property
    def pooled_names(self) -> tuple[str, ...]:
        """The datasets' names when several are pooled (validation also scores each one), else ()."""
        return tuple(d.name for d in self.datasets) if len(self.datasets) > 1 else ()


def ray_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's `train_loop_per_worker`: Ray passes a dict, the spec rides in it."""
    return train_loop(config["spec"])


def train_loop(spec: WorkerSpec) -> dict[str, Any]:
    """Train on this worker. Returns a status dict (rank 0's is the run's): `status`, `epoch`, `step`,
    `train_windows` / `val_windows` (windows the last epoch trained on and scored, all ranks; the
    driver registers nothing when they fall short of the manifests), and `message` when the loss
    became non-finite."""
    # deferred: convlstm.factory loads OpenCV ~4 s; the module's other users skip it
    from convlstm.factory import build_model, model_spec

    cfg = spec.config
    task = get_task(cfg, spec.manifest)
    session = _session(cfg, spec)
    rank0 = session.world_rank == 0
    torch.manual_seed(cfg.train.seed + session.world_rank)

    model = build_model(cfg.model.name, **cfg.model.params)
    architecture = model_spec(model)
    net = session.wrap(model)  # DDP under Ray with several workers
    optimizer = build_optimizer(cfg.optim, model.parameters())
    scheduler = build_scheduler(cfg.schedule, optimizer, spec.steps_per_epoch * cfg.train.epochs)
    epoch, step, best_epoch, best_score = _restore(session, spec, model, optimizer, scheduler)
    logger = MetricLogger(spec.tracking_uri, spec.run_id, cfg.train.log_every_steps) if rank0 else None
    amp = session.device.type == "cuda" and cfg.train.bf16
    check_every = cfg.train.log_every_steps

    # CPU, memory, disk, network, GPU: system/*
    monitor = start_system_metrics(spec.tracking_uri, spec.run_id) if rank0 else None
    try:
        while epoch < cfg.train.epochs:
            net.train()
            started, samples, steps = time.perf_counter(), 0, 0
            epoch_loss = torch.zeros(2, dtype=torch.float64, device=session.device)  # [sum, steps] on the device
            window = torch.zeros(2, dtype=torch.float64, device=session.device)  # since the last check
            for batch in session.train_batches(epoch):
                with torch.autocast(session.device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = task.loss(net, batch, train=True)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                optimizer.step()
                scheduler.step()
                step, steps = step + 1, steps + 1
                window += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=loss.device)])
                samples += task.batch_rows(batch) * session.world_size
                if step % check_every == 0:
                    mean = _synced_mean(session, window, epoch_loss)
                    if not math.isfinite(mean):
                        return _non_finite(session, mean, epoch, step)
                    if logger:
                        logger.step(step, {"train_loss": mean, "lr": scheduler.get_last_lr()[0]})
                write_progress(spec.progress_dir, session.world_rank, epoch=epoch, step=step)
            mean = _synced_mean(session, window, epoch_loss)
            if not math.isfinite(mean):
                return _non_finite(session, mean, epoch, step)
            elapsed = time.perf_counter() - started
            scalars, evaluation, preview, val_rows = validate(task, model, session, spec.pooled_names)
            write_progress(spec.progress_dir, session.world_rank, epoch=epoch, step=step, val_windows=val_rows)
            windows = {"train_windows": samples, "val_windows": _synced_count(session, val_rows)}
            epoch += 1
            mean_loss = float(epoch_loss[0] / epoch_loss[1]) if epoch_loss[1] else math.nan
            metrics = {"epoch": epoch, "step": step, "train_loss_epoch": mean_loss,
                       "samples_per_s": samples / elapsed if elapsed > 0 else 0.0, **scalars}
            if _improved(metrics[cfg.train.monitor], best_score, cfg.train.mode):
                best_epoch, best_score = epoch, metrics[cfg.train.monitor]
            if logger:
                logger.epoch(step, metrics)
                logger.previews(epoch, task, evaluation, preview)
                epoch_line(epoch, cfg, metrics, elapsed)
            state = None
            if rank0:
                state = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, "model_spec": architecture,
                    "metrics": metrics, "best_epoch": best_epoch, "best_score": best_score,
                    "evaluation": evaluation, "preview": preview, **_lineage(spec),
                }
            session.report(metrics, state, epoch)
            if cfg.train.patience and epoch - best_epoch >= cfg.train.patience:
                return {"status": STATUS_EARLY_STOPPED, "epoch": epoch, "step": step, **windows}
        return {"status": STATUS_COMPLETED, "epoch": epoch, "step": step, **windows}
    finally:
        if monitor is not None:
            stop_system_metrics(monitor)


def _synced_count(session, rows: int) -> int:
    """`rows` summed over ranks (every rank's validation windows: the epoch's total)."""
    return int(session.all_reduce_sum(torch.tensor([float(rows)], dtype=torch.float64, device=session.device)).item())


def _synced_mean(session, window: torch.Tensor, epoch_loss: torch.Tensor) -> float:
    """Mean training loss over ranks of the steps since the last check: the step's only host-device
    sync, the same value on every rank (so a non-finite loss stops all of them together). Moves
    `window` into `epoch_loss` and clears it; 0.0 when no step ran since."""
    total = session.all_reduce_sum(window.clone())
    if not total[1]:
        return 0.0
    epoch_loss += total / session.world_size
    window.zero_()
    return float(total[0] / total[1])


def _non_finite(session, value: float, epoch: int, step: int) -> dict[str, Any]:
    session.report({"epoch": epoch, "step": step}, None, epoch)
    return {"status": STATUS_NON_FINITE, "epoch": epoch, "step": step,
            "message": f"non-finite training loss ({value}) by step {step} (epoch {epoch + 1})"}


def _restore(session, spec: WorkerSpec, model: torch.nn.Module, optimizer, scheduler) -> tuple:
    """Load the session's checkpoint (or the warm-start weights); returns (epoch, step, best_epoch,
    best_score) to continue from."""
    restored = session.restore()
    if restored is None:
        if spec.init_weights is not None:
            model.load_state_dict(spec.init_weights)
        return 0, 0, 0, math.nan
    model.load_state_dict(restored["model"])
    optimizer.load_state_dict(restored["optimizer"])
    scheduler.load_state_dict(restored["scheduler"])
    return restored["epoch"], restored["step"], restored["best_epoch"], restored["best_score"]


def _lineage(spec: WorkerSpec) -> dict[str, Any]:
    """What a checkpoint records about where it comes from (see `jobs.checkpoints`)."""
    first = spec.datasets[0]
    return {"run_id": spec.run_id, "task": spec.config.task, "config": spec.config.to_dict(),
            "data_fingerprint": first.fingerprint, "manifest_path": first.manifest_path,
            "datasets": [data.lineage() for data in spec.datasets]}


def _session(cfg: Config, spec: WorkerSpec) -> LocalSession | RaySession:
    if spec.local:
        return LocalSession(spec)
    return RaySession(batch_size=spec.worker_batch_size, val_batch_size=cfg.data.val_batch_size or cfg.data.batch_size,
                      shuffle_buffer=cfg.data.shuffle_buffer, resume_from=spec.resume_from)


def _improved(score: float, best: float, mode: str) -> bool:
    if score is None or math.isnan(score):
        return False
    return math.isnan(best) or (score < best if mode == "min" else score > best)
