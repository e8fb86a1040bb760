"""`convlstm train`: the driver that runs the per-worker loop (`jobs.training.loop`) on Ray Train.

`train()` validates everything before touching a cluster (`jobs.training.checks`), opens (or, on
resume, reopens) the MLflow run (`jobs.training.mlflow_run`), hands every worker one frozen
`WorkerSpec`, runs `train_loop` on Ray Train workers (`workers >= 1`, DDP: gloo on CPU, NCCL on GPU;
`jobs.training.ray_fit`) or in this process (`workers = 0`), then logs artifacts and the best
checkpoint as a registered MLflow model.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from jobs import checkpoints, signals
from jobs.errors import NonFiniteLossError
from jobs.tasks import get_task
from jobs.training import checks
from jobs.training.config import Config
from jobs.training.datasets import data_paths, load_datasets
from jobs.training.loop import STATUS_NON_FINITE, WorkerSpec, train_loop
from jobs.training.mlflow_run import TrainSummary, fail_run, finish_run, open_run
from jobs.training.placement import placement_strategy
from jobs.training.ray_fit import fit_ray
from pipelines import cluster

__all__ = ["Compute", "NonFiniteLossError", "RunOptions", "TrainSummary", "train"]


@dataclass(frozen=True)
class Compute:
    """Where a run trains: `workers` Ray Train workers (0: in this process, without Ray), a GPU each
    with `use_gpu`, `cpus_per_worker` CPUs each (default: `ray_fit.default_cpus_per_worker`), on the
    Ray cluster at `address` (default: a local one)."""

    workers: int = 1
    use_gpu: bool = False
    address: str | None = None
    cpus_per_worker: float | None = None


@dataclass(frozen=True)
class RunOptions:
    """Which run: `run_name` (default `<task>-<YYYYmmdd-HHMMSS>`; an existing one with a checkpoint is
    resumed, `resume` insists on one and without a name picks the task's newest default-named run),
    checkpoints under `storage_path`, MLflow `tracking_uri` and `experiment` (default
    `convlstm-<task>`), `init_from` (a model reference to warm-start from), `progress_dir` (per-epoch
    progress files for `convlstm submit`)."""

    run_name: str | None = None
    resume: bool = False
    storage_path: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    init_from: str | None = None
    progress_dir: str | None = None


def train(cfg: Config, data: str | Path | Sequence[str | Path] | None, *, compute: Compute = Compute(),
          run: RunOptions = RunOptions()) -> TrainSummary:
    """Train `cfg` on the shards at `data` and register the best checkpoint; returns the summary.

    `data`: a dataset folder or URI, several (comma-separated or a sequence) pooled into one run
    (`jobs.training.datasets`: same windows required; validation scored per dataset and pooled), or
    None for the config's `data.paths`. Checkpoints go to `<run.storage_path>/<run_name>` (default
    `<CONVLSTM_STORAGE>/train`, else `<home>/outputs/train`; `s3://` allowed; on a multi-node cluster
    a node-local path is refused before any work, see pipelines.cluster). An existing checkpoint of
    the run name is resumed in its MLflow run (same datasets required). `run.init_from` warm-starts a
    new run from that model's weights (same model spec required). Raises ValueError /
    FileNotFoundError before any cluster work for bad arguments, NonFiniteLossError or CommandError
    when training fails.
    """
    sources = data_paths(data, cfg.data.paths)
    checks.check_compute(compute.workers, compute.use_gpu, compute.cpus_per_worker)
    if compute.workers:
        placement_strategy()  # a bad CONVLSTM_TRAIN_PLACEMENT fails here, before any work
    storage_path = checks.storage_location(run.storage_path, compute.workers)
    checks.check_run_name(run.run_name)
    # Multi-node cluster: checkpoints and shards must be on storage every node reads, refused before any work.
    data_options = {"--data" if i == 0 else f"--data #{i + 1}": path for i, path in enumerate(sources)}
    cluster.check_paths({"--storage": storage_path, **data_options}, address=compute.address,
                        defaulted=() if run.storage_path else {"--storage"})
    datasets = load_datasets(sources, cfg)
    manifest = datasets[0].manifest  # pooled datasets agree in everything the task and the model use
    cfg = get_task(cfg, manifest).with_data_params()
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"paths": [d.uri for d in datasets]})})
    task = get_task(cfg, manifest)
    cfg = checks.with_monitor_mode(cfg, task)
    model_spec = checks.check_model(cfg, task)
    init_weights = checks.init_weights(run.init_from, model_spec, run.tracking_uri) if run.init_from else None
    steps_per_epoch, worker_batch = checks.steps_per_epoch(cfg, datasets, max(compute.workers, 1))
    run_name, resume_from = _checkpoint_to_resume(cfg, storage_path, run)
    previous = checkpoints.load(resume_from) if resume_from else None
    if previous is not None:
        checks.check_resumable(previous, cfg, datasets, run_name)

    mlflow_run = open_run(cfg, datasets, run_name, storage_path, previous, run.tracking_uri, run.experiment,
                          run.init_from)
    spec = WorkerSpec(
        config=cfg, datasets=datasets, columns=tuple(task.columns),
        run_id=mlflow_run.run_id, tracking_uri=mlflow_run.uri, steps_per_epoch=steps_per_epoch,
        worker_batch_size=worker_batch, storage_path=storage_path, run_name=run_name, resume_from=resume_from,
        use_gpu=compute.use_gpu, local=compute.workers == 0, progress_dir=run.progress_dir,
        init_weights=init_weights)
    try:
        outcome = train_loop(spec) if compute.workers == 0 else \
            fit_ray(spec, compute.workers, compute.address, compute.cpus_per_worker)
        if outcome["status"] == STATUS_NON_FINITE:
            last = checkpoints.latest(storage_path, run_name)
            raise NonFiniteLossError(f"{outcome['message']}; training stopped, last good checkpoint: "
                                     f"{last or 'none (no epoch completed)'}")
        checks.check_windows(outcome, cfg, datasets, compute.workers)
        signals.raise_if_stopped()  # a signal whose exception something swallowed: register nothing
        return finish_run(cfg, task, mlflow_run, outcome, datasets)
    except BaseException as exc:
        fail_run(mlflow_run, exc)
        raise


def _checkpoint_to_resume(cfg: Config, storage_path: str, run: RunOptions) -> tuple[str, str | None]:
    """(run name, its latest complete checkpoint or None); FileNotFoundError when `run.resume` finds none."""
    run_name = run.run_name
    if run.resume and run_name is None:
        run_name = checks.newest_run(storage_path, cfg.task)
        if run_name is None:
            raise FileNotFoundError(f"--resume: no {cfg.task} run with a checkpoint under {storage_path}")
    run_name = run_name or checks.new_run_name(cfg.task)
    resume_from = checkpoints.latest(storage_path, run_name)
    skipped = [f for f in checkpoints.incomplete(storage_path, run_name) if resume_from is None or f > resume_from]
    if run.resume and resume_from is None:
        note = f" (only incomplete ones, skipped: {', '.join(skipped)})" if skipped else ""
        raise FileNotFoundError(f"--resume: run {run_name!r} has no checkpoint under {storage_path}{note}")
    if skipped:
        print(f"convlstm train: skipped incomplete checkpoint{'s' if len(skipped) > 1 else ''} {', '.join(skipped)}; "
              f"resuming from {resume_from}", file=sys.stderr, flush=True)
    return run_name, resume_from
