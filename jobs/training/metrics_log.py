"""Rank 0's MLflow logging while training: metrics buffered and flushed every few steps and at epoch
ends (a restarted worker logs only steps beyond what the run has), the task's epoch previews, and
MLflow's system metrics monitor."""
from __future__ import annotations

import tempfile
from pathlib import Path

from jobs.registry import tracking


class MetricLogger:
    """Rank 0's MLflow metrics, buffered and flushed every `every` steps and at epoch ends.

    A restarted worker logs only steps beyond what each metric already has in the run (MLflow
    cannot delete points), so the history stays strictly increasing in step after a restore.
    """

    def __init__(self, tracking_uri: str, run_id: str, every: int):
        self._uri, self._run_id, self._every = tracking_uri, run_id, every
        self._floor: dict[str, int] = {}
        self._rows: list[tuple[str, float, int]] = []
        run = tracking.client(tracking_uri).get_run(run_id)
        for key in run.data.metrics:
            self._floor[key] = tracking.last_logged_step(tracking_uri, run_id, key)

    def step(self, step: int, values: dict[str, float]) -> None:
        self._add(step, values)
        if step % self._every == 0:
            self.flush()

    def epoch(self, step: int, values: dict[str, float]) -> None:
        self._add(step, {k: v for k, v in values.items() if k != "step" and isinstance(v, (int, float))})
        self.flush()

    def _add(self, step: int, values: dict[str, float]) -> None:
        self._rows += [(k, float(v), step) for k, v in values.items() if step > self._floor.get(k, -1)]

    def flush(self) -> None:
        if self._rows:
            tracking.log_metrics(self._uri, self._run_id, self._rows)
            self._rows = []

    def previews(self, epoch: int, task, evaluation: dict, preview: dict) -> None:
        """The task's previews of this epoch's validation (one window; radar: forecast GIF beside the
        truth, KTH: confusion matrix) as artifacts under `previews/epoch_NNNN/`. A failure is reported
        and training goes on."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                files = task.epoch_previews(evaluation, preview, Path(tmp)) if preview or evaluation else []
                if files:
                    tracking.log_artifacts(self._uri, self._run_id, files, f"previews/epoch_{epoch:04d}")
        except Exception as exc:
            print(f"warning: epoch {epoch} previews not logged: {exc}", flush=True)


def start_system_metrics(tracking_uri: str, run_id: str):
    """Start MLflow's system metrics monitor on rank 0 (`system/cpu_utilization_percentage`,
    `system/system_memory_usage_megabytes`, `system/gpu_*` where an NVIDIA GPU and pynvml are present, ...),
    sampled every `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` seconds (MLflow's default 10), continuing the
    run's steps after a restart. None (training goes on) when psutil is missing or the monitor cannot start."""
    try:
        # deferred: mlflow ~10 s to import; the module's other users skip it
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=tracking_uri)
        # From step 1: `log_model` copies the run's metrics at step 0 (its default step) into the
        # LoggedModel, which should hold only the model's scores.
        monitor._logging_step = max(monitor._logging_step, 1)
    except Exception as exc:  # ImportError without psutil; a store error must not stop training
        print(f"warning: no system metrics for run {run_id}: {exc}", flush=True)
        return None
    monitor.start()
    return monitor


def stop_system_metrics(monitor) -> None:
    """Stop the monitor and log a last sample covering the time since its last one (psutil's CPU share
    is measured between samples), so even a run shorter than one sampling interval has system metrics."""
    try:
        monitor.finish()
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as exc:
        print(f"warning: system metrics: {exc}", flush=True)
