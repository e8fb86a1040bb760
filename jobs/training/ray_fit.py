"""Ray Train wiring: the Ray Datasets a run reads (training windows pooled, validation split per
rank), the worker group's resources and placement, and a TorchTrainer that Ctrl-C / SIGTERM stop."""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from jobs import signals
from jobs.errors import CommandError
from jobs.training.checks import split_rows
from jobs.training.datasets import TrainingData
from jobs.training.loop import WorkerSpec, ray_worker
from jobs.training.placement import placement_strategy
from jobs.training.sessions import val_dataset_key
from pipelines.manifest import Manifest
from pipelines.ray_session import init_ray
from pipelines.shards import read_dataset

# Ray Train's controller collects each epoch's report on a poll, every 2 s by default, so no epoch takes
# less than 2 s and short epochs mostly wait (the demo's radar stage: 500 s at 2 s, 135 s at 0.25 s).
# Ray Train passes this variable from the driver to its controller; a value the user set wins.
CONTROLLER_POLL = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


def fit_ray(spec: WorkerSpec, workers: int, address: str | None, cpus_per_worker: float | None) -> dict[str, Any]:
    """Run `ray_worker(spec)` on `workers` Ray Train workers; returns rank 0's outcome."""
    import ray.train  # deferred: Ray Train ~8 s to import; `--workers 0` never needs it

    cfg = spec.config
    ray = init_ray(address)
    trainer_class = stoppable_trainer()
    datasets = {"train": training_windows(spec)}
    # Validation: per dataset, disjoint parts, one per rank, none dropped (Ray Train's own split is
    # equal-sized and drops the remainder), so each window is scored once and the merged scores are exact.
    for index, data in enumerate(spec.datasets):
        val, rows = read_split(spec, data, cfg.data.val_split, cfg.data.limit_val)
        val = materialized(spec, val, rows)
        parts = val.split_at_indices([rows * rank // workers for rank in range(1, workers)]) if workers > 1 else [val]
        datasets.update({val_dataset_key(index, rank): part for rank, part in enumerate(parts)})
    resources = {"CPU": cpus_per_worker or default_cpus_per_worker(ray, workers, spec.use_gpu)}
    if spec.use_gpu:
        resources["GPU"] = 1
    trainer = trainer_class(
        ray_worker,
        train_loop_config={"spec": spec},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=spec.use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=placement_strategy()),
        run_config=ray.train.RunConfig(
            name=spec.run_name, storage_path=spec.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints, checkpoint_score_attribute=cfg.train.monitor,
                checkpoint_score_order=cfg.train.mode),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures)),
        datasets=datasets,
        # Deterministic shards: the streaming split hands the same blocks to the same rank in every run.
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options=ordered_ingest()),
    )
    try:
        with signals.kept(), environ_defaults(CONTROLLER_POLL):  # Ray Train's handler must not outlive fit()
            result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise CommandError(f"training failed: {exc}") from exc
    return result.return_value


@contextmanager
def environ_defaults(defaults: dict[str, str]) -> Iterator[None]:
    """Set the environment variables in `defaults` that are not set, and unset them afterwards."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def stoppable_trainer():
    """TorchTrainer whose Ctrl-C (and SIGTERM) aborts the Ray Train controller and then raises
    KeyboardInterrupt (Terminated) in the driver, so the run ends KILLED and nothing is registered.
    Ray Train's own SIGINT handler aborts and returns normally, or calls sys.exit (exit 1, silent)."""
    import ray  # deferred: Ray ~2-10 s to import; the module's other users skip it
    from ray.train.torch import TorchTrainer  # deferred: Ray ~2-10 s to import; the module's other users skip it

    class StoppableTrainer(TorchTrainer):
        def _register_sigint_handler(self, controller) -> None:  # Ray Train v2's hook, main thread only
            signals.install(abort=lambda: _abort(ray, controller))

    return StoppableTrainer


def _abort(ray, controller) -> None:
    """Abort the Ray Train controller, bounded; skipped when Ray's own processes are gone (SIGTERM to
    the whole process group stops them too, and a call to them would wait for their GCS)."""
    if signals.ray_node_alive():
        ray.get(controller.abort.remote(), timeout=signals.ABORT_TIMEOUT_S)


def training_windows(spec: WorkerSpec):
    """The union of the datasets' training windows, read once when small. Pooled datasets with a
    shuffle (`data.shuffle_buffer`) get their blocks in a seeded random order first, so that the local
    shuffle buffer mixes the datasets instead of reading one after the other."""
    cfg = spec.config
    parts, rows = zip(*(read_split(spec, data, cfg.data.train_split, cfg.data.limit_train) for data in spec.datasets))
    if len(parts) == 1:
        return materialized(spec, parts[0], rows[0])
    union = parts[0].union(*parts[1:])
    if cfg.data.shuffle_buffer:
        union = union.randomize_block_order(seed=cfg.train.seed)
    return materialized(spec, union, sum(rows))


def read_split(spec: WorkerSpec, data: TrainingData, split: str, limit: int | None) -> tuple[Any, int]:
    """(Ray Dataset of one dataset's split, in a fixed order and cut to `limit` windows, its row count)."""
    ds = read_dataset(data.uri, split, columns=list(spec.columns))
    ds.context.execution_options.preserve_order = True  # same windows, same order, every run
    return (ds.limit(limit) if limit else ds), split_rows(data.manifest, split, limit)


def materialized(spec: WorkerSpec, ds, rows: int):
    """`ds` read once into Ray's object store when its windows fit `data.materialize_mb`, else as is."""
    small = rows * window_bytes(spec.manifest, list(spec.columns)) <= spec.config.data.materialize_mb * 2**20
    return ds.materialize() if small else ds


def ordered_ingest():
    """Ray Train's default ingest options with `preserve_order`, which also turns off the output
    splitter's locality-driven (timing-dependent) block assignment."""
    import ray.train  # deferred: Ray ~2-10 s to import; the module's other users skip it

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def window_bytes(manifest: Manifest, columns: list[str]) -> int:
    """Bytes of one window's `columns` as stored (tensor columns by shape and dtype)."""
    schema = manifest.columns
    return sum(math.prod(schema[c].shape) * np.dtype(schema[c].dtype).itemsize for c in columns)


def default_cpus_per_worker(ray, workers: int, use_gpu: bool) -> float:
    """One CPU per worker when there is room, else a share that leaves one CPU for Ray Data's
    read tasks (2 CPU workers on a 2-CPU Ray get 0.5 each)."""
    total = ray.cluster_resources().get("CPU", 1.0)
    if use_gpu or total - 1 >= workers:
        return 1.0
    return max(0.1, round((total - 1) / workers, 2)) if total > 1 else round(total / (workers + 1), 2)
