"""`convlstm train`: the driver that runs the per-worker loop (`jobs.training.loop`) on Ray Train.

`train()` validates everything before touching a cluster, opens (or, on resume, reopens) the MLflow
run, hands every worker one frozen `WorkerSpec`, runs `train_loop` on Ray Train workers (`workers >= 1`,
DDP: gloo on CPU, NCCL on GPU) or in this process (`workers = 0`), then logs artifacts and the best
checkpoint as a registered MLflow model.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from jobs import paths, plots, signals
from jobs.errors import CommandError, NonFiniteLossError
from jobs.registry import tracking
from jobs.tasks import Task, get_task
from jobs import checkpoints
from jobs.training.config import Config, flatten
from jobs.training.datasets import TrainingData, data_paths, load_datasets
from jobs.training.loop import STATUS_NON_FINITE, WorkerSpec, ray_worker, train_loop
from jobs.training.sessions import val_dataset_key
from pipelines import cluster, storage

DEFAULT_RUN_NAME = r"-\d{8}-\d{6}$"  # after the task's name: `_new_run_name`
RUN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


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


# ----------------------------------------------------------------------------- driver


def train(
    cfg: Config,
    data: str | Path | Sequence[str | Path] | None,
    *,
    workers: int = 1,
    use_gpu: bool = False,
    address: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    resume: bool = False,
    storage_path: str | None = None,
    cpus_per_worker: float | None = None,
    progress_dir: str | None = None,
    init_from: str | None = None,
) -> TrainSummary:
    """Train `cfg` on the shards at `data` and register the best checkpoint; returns the summary.

    `data`: a dataset folder or URI, several (comma-separated or a sequence) pooled into one run
    (`jobs.training.datasets`: same windows required; validation scored per dataset and pooled), or
    None for the config's `data.paths`. `workers=0` runs in this process without Ray. Checkpoints go
    to `<storage_path>/<run_name>` (default `<CONVLSTM_STORAGE>/train`, else `<home>/outputs/train`;
    `s3://` allowed; on a multi-node cluster a node-local path is refused before any work, see
    pipelines.cluster). An existing checkpoint of `run_name` is resumed in its MLflow run (same
    datasets required); `resume=True` insists on one (and without a `run_name` picks the newest
    default-named run of the task). `init_from` (a `jobs.registry.modelio` reference) warm-starts a
    new run from that model's weights (same model spec required). Raises ValueError /
    FileNotFoundError before any cluster work for bad arguments, NonFiniteLossError or
    CommandError when training fails.
    """
    sources = data_paths(data, cfg.data.paths)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if use_gpu and workers == 0 and not torch.cuda.is_available():
        raise ValueError("--gpu with --workers 0 trains in this process, which sees no CUDA device")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    if workers == 0 and storage_path and storage.is_remote(storage_path):
        raise ValueError(f"storage_path {storage_path}: object-store checkpoints need Ray workers (workers >= 1)")
    if workers:
        placement_strategy()  # a bad CONVLSTM_TRAIN_PLACEMENT fails here, before any work
    defaulted = not storage_path
    storage_path = storage_path or paths.output_location("train")
    if not storage.is_remote(storage_path):
        storage_path = os.path.abspath(storage_path)  # Ray Train wants absolute local paths
        if os.path.exists(storage_path) and not os.path.isdir(storage_path):
            raise NotADirectoryError(f"--storage {storage_path}: is a file, not a folder for checkpoints")
        storage.check_writable(storage_path)
    if run_name is not None and not RUN_NAME.match(run_name):
        raise ValueError(f"--run-name {run_name!r}: use ASCII letters, digits, '.', '_' and '-' (it names "
                         "the checkpoint folder and Ray Train's run)")
    # Multi-node cluster: checkpoints and shards must be on storage every node reads, refused before any work.
    data_options = {"--data" if i == 0 else f"--data #{i + 1}": path for i, path in enumerate(sources)}
    cluster.check_paths({"--storage": storage_path, **data_options}, address=address,
                        defaulted={"--storage"} if defaulted else ())
    datasets = load_datasets(sources, cfg)
    manifest = datasets[0].manifest  # pooled datasets agree in everything the task and the model use
    cfg = get_task(cfg, manifest).with_data_params()
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"paths": [d.uri for d in datasets]})})
    task = get_task(cfg, manifest)
    cfg = _with_monitor_mode(cfg, task)
    model_spec = _check_model(cfg, task)
    init_weights = _init_weights(init_from, model_spec, tracking_uri) if init_from else None
    steps_per_epoch, worker_batch = _steps_per_epoch(cfg, datasets, max(workers, 1))
    if resume and run_name is None:
        run_name = _newest_run(storage_path, cfg.task)
        if run_name is None:
            raise FileNotFoundError(f"--resume: no {cfg.task} run with a checkpoint under {storage_path}")
    run_name = run_name or _new_run_name(cfg.task)
    resume_from = checkpoints.latest(storage_path, run_name)
    skipped = [f for f in checkpoints.incomplete(storage_path, run_name) if resume_from is None or f > resume_from]
    if resume and resume_from is None:
        note = f" (only incomplete ones, skipped: {', '.join(skipped)})" if skipped else ""
        raise FileNotFoundError(f"--resume: run {run_name!r} has no checkpoint under {storage_path}{note}")
    if skipped:
        print(f"convlstm train: skipped incomplete checkpoint{'s' if len(skipped) > 1 else ''} {', '.join(skipped)}; "
              f"resuming from {resume_from}", file=sys.stderr, flush=True)
    previous = checkpoints.load(resume_from) if resume_from else None
    if previous is not None:
        _check_resumable(previous, cfg, datasets, run_name)

    uri = tracking.resolve_uri(tracking_uri)
    experiment_id = tracking.ensure_experiment(uri, experiment or f"convlstm-{cfg.task}")
    if previous is not None:
        run_id = previous["run_id"]
        tracking.reopen_run(uri, run_id)
    else:
        tags = {**tracking.run_tags(cfg.task, manifest, datasets[0].manifest_path), **_pooled_tags(datasets)}
        if init_from:
            tags[f"{tracking.TAG_PREFIX}init_from"] = init_from
        run_id = tracking.create_run(uri, experiment_id, run_name, tags, flatten(cfg.to_dict()))
        _log_config(uri, run_id, cfg)
        tracking.set_description(uri, run_id, _run_description(cfg, datasets, run_name, init_from))
    inputs = [tracking.log_datasets(uri, run_id, d.uri, d.manifest, {cfg.data.train_split: "train",
                                                                     cfg.data.val_split: "validation"}, d.name)
              for d in datasets]
    spec = WorkerSpec(
        config=cfg, datasets=datasets, columns=tuple(task.columns),
        run_id=run_id, tracking_uri=uri, steps_per_epoch=steps_per_epoch, worker_batch_size=worker_batch,
        storage_path=storage_path, run_name=run_name, resume_from=resume_from, use_gpu=use_gpu,
        local=workers == 0, progress_dir=progress_dir, init_weights=init_weights)
    try:
        outcome = train_loop(spec) if workers == 0 else _fit_ray(spec, workers, address, cpus_per_worker)
        if outcome["status"] == STATUS_NON_FINITE:
            last = checkpoints.latest(storage_path, run_name)
            raise NonFiniteLossError(f"{outcome['message']}; training stopped, last good checkpoint: "
                                     f"{last or 'none (no epoch completed)'}")
        _check_windows(outcome, cfg, datasets, workers)
        signals.raise_if_stopped()  # a signal whose exception something swallowed: register nothing
        summary = _finish(cfg, task, uri, run_id, experiment_id, run_name, storage_path, outcome, datasets, inputs)
    except BaseException as exc:
        tracking.client(uri).set_tag(run_id, f"{tracking.TAG_PREFIX}error", str(exc)[:5000])
        tracking.end_run(uri, run_id, "KILLED" if signals.stopped(exc) else "FAILED")
        raise
    tracking.end_run(uri, run_id, "FINISHED")
    return summary


def _with_monitor_mode(cfg: Config, task: Task) -> Config:
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


def _check_model(cfg: Config, task: Task) -> dict[str, Any]:
    """Build the model on the driver and run it on one blank window, so `model.*` settings that
    cannot be built or do not fit the data fail before any cluster work; returns the model spec."""
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


def _init_weights(ref: str, spec: dict[str, Any], tracking_uri: str | None) -> dict[str, torch.Tensor]:
    from jobs.registry.modelio import load_state

    state = load_state(ref, tracking_uri)
    if state["model_spec"] != spec:
        raise ValueError(f"init_from: {ref} is a {state['model_spec']}, the config builds {spec}")
    return state["model"]


def _steps_per_epoch(cfg: Config, datasets: Sequence[TrainingData], workers: int) -> tuple[int, int]:
    """Optimizer steps per epoch over the windows of all datasets, and the per-worker batch size;
    every worker gets the same number of rows (Ray Data's equal split drops the remainder)."""
    if cfg.data.batch_size % workers:
        raise ValueError(f"data.batch_size ({cfg.data.batch_size}) must be divisible by the number of "
                         f"workers ({workers}): it is the global batch")
    for data in datasets:
        splits = data.manifest["splits"]
        for key in ("train_split", "val_split"):
            split = getattr(cfg.data, key)
            if split not in splits or not splits[split]["count"]:
                which = f"dataset {data.uri}" if len(datasets) > 1 else "dataset"
                raise ValueError(f"data.{key}: the {which} has no windows in split {split!r} "
                                 f"(splits: {', '.join(sorted(splits))})")
    rows = sum(_rows(data.manifest, cfg.data.train_split, cfg.data.limit_train) for data in datasets)
    per_worker = cfg.data.batch_size // workers
    if rows < workers:
        raise ValueError(f"data.train_split: {rows} windows cannot feed {workers} workers")
    return math.ceil((rows // workers) / per_worker), per_worker


def _check_windows(outcome: dict, cfg: Config, datasets: Sequence[TrainingData], workers: int) -> None:
    """CommandError (nothing registered) when the last epoch trained on or scored fewer windows than
    the manifests promise: shards lost or changed after the check at the start. Ray Train's equal
    split drops the remainder of the training windows over `workers`."""
    ranks = max(workers, 1)
    promised = {"train_windows": sum(_rows(d.manifest, cfg.data.train_split, cfg.data.limit_train) for d in datasets),
                "val_windows": sum(_rows(d.manifest, cfg.data.val_split, cfg.data.limit_val) for d in datasets)}
    promised["train_windows"] -= promised["train_windows"] % ranks
    for key, split in (("train_windows", cfg.data.train_split), ("val_windows", cfg.data.val_split)):
        seen = outcome.get(key)
        if seen is not None and seen < promised[key]:
            promise = "their manifests promise" if len(datasets) > 1 else "its manifest promises"
            raise CommandError(f"split {split}: the last epoch read {seen} of the {promised[key]} windows {promise} "
                               f"({', '.join(d.uri for d in datasets)}); shards changed during the run? "
                               "nothing registered")


def _rows(manifest: dict, split: str, limit: int | None) -> int:
    """Windows read from one dataset's split: all of them, or `limit` (`data.limit_*`) at most."""
    return int(min(manifest["splits"][split]["count"], limit or math.inf))


def _new_run_name(task: str) -> str:
    return f"{task}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _newest_run(storage_path: str, task: str) -> str | None:
    names = {rel.split("/", 1)[0] for rel in storage.list_files(storage_path, checkpoints.CHECKPOINT_FILE)}
    ours = sorted(n for n in names if re.fullmatch(re.escape(task) + DEFAULT_RUN_NAME, n))
    return ours[-1] if ours else None


def _check_resumable(previous: dict, cfg: Config, datasets: Sequence[TrainingData], run_name: str) -> None:
    if previous["task"] != cfg.task:
        raise ValueError(f"run {run_name!r} trained task {previous['task']!r}, not {cfg.task!r}")
    # Checkpoints from before pooled datasets hold only the one `data_fingerprint`.
    before = sorted(d["fingerprint"] for d in previous.get("datasets", [])) or [previous["data_fingerprint"]]
    now = sorted(d.fingerprint for d in datasets)
    if before != now:
        these = "this dataset is" if len(now) == 1 else "these datasets are"
        raise ValueError(f"run {run_name!r} trained on data {_digests(before)}, {these} {_digests(now)}: "
                         f"start a new run")
    if previous["config"]["model"] != cfg.to_dict()["model"]:
        raise ValueError(f"model: run {run_name!r} was trained with {previous['config']['model']}, "
                         f"not {cfg.to_dict()['model']}")
    if previous["epoch"] >= cfg.train.epochs:
        raise ValueError(f"train.epochs: run {run_name!r} already completed {previous['epoch']} epochs; "
                         f"raise train.epochs to continue it")


def _log_config(uri: str, run_id: str, cfg: Config) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(cfg.to_yaml())
        tracking.log_artifacts(uri, run_id, [path])


def _fit_ray(spec: WorkerSpec, workers: int, address: str | None, cpus_per_worker: float | None) -> dict[str, Any]:
    import ray.train

    from pipelines.ray_session import init_ray

    cfg = spec.config
    ray = init_ray(address)
    trainer_class = _stoppable_trainer()
    datasets = {"train": _training_windows(spec)}
    # Validation: per dataset, disjoint parts, one per rank, none dropped (Ray Train's own split is
    # equal-sized and drops the remainder), so each window is scored once and the merged scores are exact.
    for index, data in enumerate(spec.datasets):
        val, rows = _read_split(spec, data, cfg.data.val_split, cfg.data.limit_val)
        val = _materialized(spec, val, rows)
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
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options=_ordered_ingest()),
    )
    try:
        with signals.kept():  # Ray Train's handler must not outlive fit()
            result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise CommandError(f"training failed: {exc}") from exc
    return result.return_value


def _stoppable_trainer():
    """TorchTrainer whose Ctrl-C (and SIGTERM) aborts the Ray Train controller and then raises
    KeyboardInterrupt (Terminated) in the driver, so the run ends KILLED and nothing is registered.
    Ray Train's own SIGINT handler aborts and returns normally, or calls sys.exit (exit 1, silent)."""
    import ray
    from ray.train.torch import TorchTrainer

    class StoppableTrainer(TorchTrainer):
        def _register_sigint_handler(self, controller) -> None:  # Ray Train v2's hook, main thread only
            signals.install(abort=lambda: _abort(ray, controller))

    return StoppableTrainer


def _abort(ray, controller) -> None:
    """Abort the Ray Train controller, bounded; skipped when Ray's own processes are gone (SIGTERM to
    the whole process group stops them too, and a call to them would wait for their GCS)."""
    if signals.ray_node_alive():
        ray.get(controller.abort.remote(), timeout=signals.ABORT_TIMEOUT_S)


def _training_windows(spec: WorkerSpec):
    """The union of the datasets' training windows, read once when small. Pooled datasets with a
    shuffle (`data.shuffle_buffer`) get their blocks in a seeded random order first, so that the local
    shuffle buffer mixes the datasets instead of reading one after the other."""
    cfg = spec.config
    parts, rows = zip(*(_read_split(spec, data, cfg.data.train_split, cfg.data.limit_train) for data in spec.datasets))
    if len(parts) == 1:
        return _materialized(spec, parts[0], rows[0])
    union = parts[0].union(*parts[1:])
    if cfg.data.shuffle_buffer:
        union = union.randomize_block_order(seed=cfg.train.seed)
    return _materialized(spec, union, sum(rows))


def _read_split(spec: WorkerSpec, data: TrainingData, split: str, limit: int | None) -> tuple[Any, int]:
    """(Ray Dataset of one dataset's split, in a fixed order and cut to `limit` windows, its row count)."""
    from pipelines.shards import read_dataset

    ds = read_dataset(data.uri, split, columns=list(spec.columns))
    ds.context.execution_options.preserve_order = True  # same windows, same order, every run
    return (ds.limit(limit) if limit else ds), _rows(data.manifest, split, limit)


def _materialized(spec: WorkerSpec, ds, rows: int):
    """`ds` read once into Ray's object store when its windows fit `data.materialize_mb`, else as is."""
    small = rows * _window_bytes(spec.manifest, list(spec.columns)) <= spec.config.data.materialize_mb * 2**20
    return ds.materialize() if small else ds


PLACEMENT_ENV = "CONVLSTM_TRAIN_PLACEMENT"


def placement_strategy() -> str:
    """Ray Train's placement strategy for the worker group: PACK (default: as few nodes as possible),
    or SPREAD from CONVLSTM_TRAIN_PLACEMENT (one worker per node where possible; after a node is lost
    the restarted group may pack onto the survivors, if their CPUs fit it)."""
    strategy = os.environ.get(PLACEMENT_ENV, "PACK").upper()
    if strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        raise ValueError(f"{PLACEMENT_ENV} must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {strategy!r}")
    return strategy


def _ordered_ingest():
    """Ray Train's default ingest options with `preserve_order`, which also turns off the output
    splitter's locality-driven (timing-dependent) block assignment."""
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def _window_bytes(manifest: dict, columns: list[str]) -> int:
    """Bytes of one window's `columns` as stored (tensor columns by shape and dtype)."""
    schema = manifest["schema"]
    return sum(math.prod(schema[c]["shape"]) * np.dtype(schema[c]["dtype"]).itemsize for c in columns)


def default_cpus_per_worker(ray, workers: int, use_gpu: bool) -> float:
    """One CPU per worker when there is room, else a share that leaves one CPU for Ray Data's
    read tasks (2 CPU workers on a 2-CPU Ray get 0.5 each)."""
    total = ray.cluster_resources().get("CPU", 1.0)
    if use_gpu or total - 1 >= workers:
        return 1.0
    return max(0.1, round((total - 1) / workers, 2)) if total > 1 else round(total / (workers + 1), 2)


def _finish(cfg: Config, task: Task, uri: str, run_id: str, experiment_id: str, run_name: str,
            storage_path: str, outcome: dict, datasets: Sequence[TrainingData], inputs: list[dict]) -> TrainSummary:
    """Artifacts (evaluation JSON, plots), the best checkpoint as a registered model whose LoggedModel
    holds the best epoch's validation scores (linked to the validation datasets), and descriptions of
    the run, the version and the registered model. `inputs`: each dataset's logged MLflow datasets."""
    from jobs.registry.modelio import build_from_spec

    last = checkpoints.load(checkpoints.latest(storage_path, run_name))
    best_dir = checkpoints.best(storage_path, run_name, cfg.train.monitor, cfg.train.mode)
    best = checkpoints.load(best_dir)
    model = build_from_spec(best["model_spec"])
    model.load_state_dict(best["model"])
    model.eval()
    monitor, score = cfg.train.monitor, float(best["metrics"][cfg.train.monitor])
    registered_name = cfg.registered_model_name if cfg.registry.register_model else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = [_evaluation_json(best, monitor, tmp / "evaluation.json"), _learning_curve(uri, run_id, monitor, tmp)]
        files += task.figures(best["evaluation"], best["preview"], tmp)
        tracking.log_artifacts(uri, run_id, files)
        weights = tmp / checkpoints.CHECKPOINT_FILE
        torch.save({k: v for k, v in best.items() if k not in ("optimizer", "scheduler")}, weights)
        example = task.example_input(best["preview"])
        with torch.no_grad():
            output = model(torch.from_numpy(example)).float().numpy()
        registered = tracking.log_and_register_model(
            uri, run_id, model, example, output, [weights], registered_name,
            description=_version_description(cfg, datasets, run_id, run_name, experiment_id, best, score,
                                              last["epoch"]),
            version_tags={"run_id": run_id, "task": cfg.task, **_joined(datasets), "monitor": monitor,
                          "score": f"{score:.6g}", "epoch": str(best["epoch"])},
            params=flatten(cfg.to_dict()),
        )
    _link_validation(uri, run_id, best["step"], registered.model_id, cfg, datasets, inputs)
    result = f"**Result**: best epoch {best['epoch']} of {last['epoch']}: {monitor} = {score:.6g}"
    if registered.name:
        result += f"; registered as `{registered.name}` v{registered.version} @{registered.alias}"
        tracking.describe_registered_model(uri, registered.name)
    tracking.add_description_line(uri, run_id, "**Result**", result + ".")
    return TrainSummary(
        run_id=run_id, run_name=run_name, experiment_id=experiment_id, status=outcome["status"],
        epochs=last["epoch"], steps=last["step"], monitor=monitor, best_score=score, best_epoch=best["epoch"],
        best_checkpoint=best_dir, registered_name=registered.name, model_version=registered.version,
        alias=registered.alias, model_uri=registered.model_uri)


def _link_validation(uri: str, run_id: str, step: int, model_id: str | None, cfg: Config,
                     datasets: Sequence[TrainingData], inputs: list[dict]) -> None:
    """The best epoch's validation scores become the LoggedModel's: with one dataset all `val_*` on its
    validation dataset; pooled ones on no single dataset, `val_<name>_*` on that dataset's."""
    split = cfg.data.val_split
    if len(datasets) == 1:
        tracking.link_metrics(uri, run_id, "val_", step, model_id, inputs[0].get(split))
        return
    prefixes = tuple(f"val_{data.name}_" for data in datasets)
    tracking.link_metrics(uri, run_id, "val_", step, model_id, None, exclude=prefixes)
    for prefix, logged in zip(prefixes, inputs):
        tracking.link_metrics(uri, run_id, prefix, step, model_id, logged.get(split))


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
    tags = {f"{tracking.TAG_PREFIX}{key}": joined[key] for key in ("data_fingerprint", "manifest_path")}
    for i, data in enumerate(datasets):
        prefix = f"{tracking.TAG_PREFIX}data.{i}"
        tags.update({prefix: data.uri, f"{prefix}.name": data.name, f"{prefix}.fingerprint": data.fingerprint})
    return tags


def _digests(fingerprints: Sequence[str]) -> str:
    return ", ".join(f[:tracking.DIGEST_CHARS] for f in fingerprints)


def _run_description(cfg: Config, datasets: Sequence[TrainingData], run_name: str, init_from: str | None) -> str:
    """The training run's description (markdown; `**Result**` is added by `_finish`)."""
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
    splits = data.manifest["splits"]
    train, val = (splits.get(s, {}).get("count", 0) for s in (cfg.data.train_split, cfg.data.val_split))
    return (f"{train} {cfg.data.train_split} / {val} {cfg.data.val_split} windows, fingerprint "
            f"`{data.fingerprint[:tracking.DIGEST_CHARS]}`")


def _version_description(cfg: Config, datasets: Sequence[TrainingData], run_id: str, run_name: str,
                         experiment_id: str, best: dict, score: float, epochs: int) -> str:
    """A model version's description (markdown): where it comes from, its data and validation score;
    `convlstm evaluate --log` adds a line per scored split (`tracking.record_scores`)."""
    train, val = cfg.data.train_split, cfg.data.val_split
    names = [d.name for d in datasets]
    order = {"train": 0, "val": 1, "test": 2}
    data = "; ".join(
        f"`{d.uri}`: " + " / ".join(f"{info['count']} {split}" for split, info in sorted(
            d.manifest["splits"].items(), key=lambda item: (order.get(item[0], 3), item[0])))
        + f" windows, fingerprint `{d.fingerprint[:tracking.DIGEST_CHARS]}`" for d in datasets)
    if len(datasets) == 1:
        scored, inputs = f"{names[0]}/{val}", f"{names[0]}/{train} (train) and {names[0]}/{val} (validation)"
    else:
        scored, data = f"the pooled {val} windows of {', '.join(names)}", f"(pooled) {data}"
        inputs = f"<name>/{train} (train) and <name>/{val} (validation) of each"
    return (f"**{cfg.task}** ConvLSTM (`{cfg.model.name}`) from run [`{run_name}`](#/experiments/{experiment_id}/runs/"
            f"{run_id}), best epoch {best['epoch']} of {epochs}: {cfg.train.monitor} = {score:.6g} on {scored}.\n\n"
            f"Data {data}; the run's dataset inputs {inputs} point at these shards.")


def _evaluation_json(best: dict, monitor: str, path: Path) -> Path:
    payload = {"epoch": best["epoch"], "step": best["step"], "monitor": monitor, "score": best["metrics"][monitor],
               "data_fingerprint": best["data_fingerprint"], "manifest_path": best["manifest_path"],
               "datasets": best.get("datasets"), "metrics": best["metrics"], "evaluation": best["evaluation"]}
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return path


def _learning_curve(uri: str, run_id: str, monitor: str, folder: Path) -> Path:
    keys = ["train_loss", "train_loss_epoch", "val_loss", monitor, "lr"]
    series = {k: tracking.metric_history(uri, run_id, k) for k in dict.fromkeys(keys)}
    return plots.learning_curve(series, folder / "learning_curve.png", title=f"run {run_id[:8]}")
