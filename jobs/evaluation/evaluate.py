"""`convlstm evaluate`: score a model and the no-training baselines on the same windows of one split.

Every window is scored on its own (`jobs.evaluation.window_scores`), on Ray Data from
`distributed_min_windows` windows on, else in this process, with identical numbers; the model runs
through `jobs.evaluation.inference`.

Summaries and their names come from the task (`Task.summarize`), so `rainfall_mse` here is
`val_rainfall_mse` in training and `test_rainfall_mse` in MLflow. Skill is relative to persistence.

MLflow: `log_to_run` logs the outputs into that run; `log=True` into the run that produced the model
(its ref must resolve to one); otherwise nothing is logged. Metric keys are `<split>_<name>` for the
model and `<split>_<method>_<name>` for a baseline (`jobs.evaluation.mlflow_log`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from jobs import paths
from jobs.evaluation import report
from jobs.evaluation.baselines import baselines_only, check_baselines
from jobs.evaluation.inference import DEFAULT_BATCH_SIZE, resolve_device
from jobs.evaluation.mlflow_log import check_run, log_evaluation
from jobs.evaluation.result import EvaluationResult, evaluation_result, write_evaluation
from jobs.evaluation.window_scores import (WindowScorer, merge_states, per_window_scores, skill_vs_persistence,
                                           window_states)
from jobs.registry.modelio import load_model
from jobs.tasks import get_task, task_class
from jobs.training.config import from_dict
from pipelines import cluster, storage
from pipelines.manifest import Manifest, load_manifest, manifest_path
from pipelines.verify import check_dataset

DEFAULT_BASELINES = ("persistence", "optical-flow")
DISTRIBUTED_MIN_WINDOWS = 512


def primary_metric(task: str) -> tuple[str, bool]:
    """(metric name, higher is better) that ranks models of `task` (champion/challenger comparisons)."""
    cls = task_class(task)
    return cls.primary_metric, cls.higher_is_better


def higher_is_better(metric: str, task: str) -> bool:
    """Direction of a summary metric of `task`, e.g. `csi_ge_0.5` (higher) or `rainfall_mse` (lower)."""
    return task_class(task).metric_higher_is_better(metric)


def _check_lengths(task, trained) -> None:
    lengths = (getattr(task, "in_len", None), getattr(task, "out_len", None))
    if lengths != (getattr(trained, "in_len", None), getattr(trained, "out_len", None)):
        raise ValueError(f"--data has {task.in_len} -> {task.out_len} frame windows, the model was trained on "
                         f"{trained.in_len} -> {trained.out_len}")


@dataclass(frozen=True)
class Scoring:
    """How windows are scored: `batch_size` windows per forward pass; with Ray Data (on the Ray at
    `address`) from `distributed_min_windows` windows on (0: always); on `device` (auto | cpu | cuda);
    `allow_mismatch` scores data unlike the model's training data; `per_window` (a summary metric
    name) adds that metric of every window on its own, per method (`per_window_scores`)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    distributed_min_windows: int = DISTRIBUTED_MIN_WINDOWS
    address: str | None = None
    device: str = "auto"
    allow_mismatch: bool = False
    per_window: str | None = None


@dataclass(frozen=True)
class LogTo:
    """Where `evaluate` logs: the run `run` (`--log-to-run`), or with `own_run` the model's own run
    (`--log`), in the tracking store `tracking_uri`; neither: nothing is logged."""

    tracking_uri: str | None = None
    run: str | None = None
    own_run: bool = False


def score_model(model, config: dict, data: str, split: str = "test", baselines: tuple[str, ...] = DEFAULT_BASELINES,
                *, trained_manifests: Sequence[Manifest] = (), scoring: Scoring = Scoring()) -> EvaluationResult:
    """Score a loaded `model` (trained with the config dict `config`) and `baselines` on `split` of `data`.

    Returns the result (`jobs.evaluation.result`) without `model`, `out` and `created`. Baselines are
    skipped for tasks without forecast targets (KTH classification). `trained_manifests` (the training
    datasets', one or several pooled) let window lengths be checked before any work, and refuse data
    unlike every one of them (`Task.data_mismatches`: grid, format, time step) unless
    `scoring.allow_mismatch`.
    """
    if scoring.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {scoring.batch_size}")
    if scoring.distributed_min_windows < 0:
        raise ValueError(f"--distributed-min-windows must be >= 0, got {scoring.distributed_min_windows}")
    check_baselines(baselines)
    cfg, manifest = from_dict(config), load_manifest(data)
    task = get_task(cfg, manifest)
    if trained_manifests:
        _check_lengths(task, get_task(cfg, trained_manifests[0]))  # pooled datasets share their lengths
        # Like one of the training datasets is enough; otherwise the closest one's differences are shown.
        mismatches = min((task.data_mismatches(trained, manifest) for trained in trained_manifests), key=len)
        if mismatches and not scoring.allow_mismatch:
            raise ValueError(f"--data {data} is not like the model's training data: {'; '.join(mismatches)} "
                             "(--allow-data-mismatch scores it anyway)")
    counts = {name: info.count for name, info in sorted(manifest.splits.items())}
    if split in counts:
        check_dataset(str(data), manifest, [split])  # the shards against the manifest, from their footers
    if not counts.get(split):
        listed = ", ".join(f"{name} ({count})" for name, count in counts.items())
        raise ValueError(f"--split {split!r} has no windows in {data} (splits: {listed})")
    skipped = []
    if not task.baselines and baselines:
        skipped = [{"method": b, "reason": f"forecast baselines do not apply to {task.name}"} for b in baselines]
        baselines = ()
    scorer = WindowScorer(task, model, tuple(baselines), scoring.batch_size, resolve_device(scoring.device))
    distributed = counts[split] >= scoring.distributed_min_windows
    keyed = window_states(scorer, str(data), split, distributed, scoring.address)
    methods = {name: task.summarize(acc) for name, acc in merge_states(scorer, keyed).items()}
    name, higher = task.primary_metric, task.higher_is_better
    per_window = scoring.per_window
    if per_window is not None and per_window not in methods["model"]["summary"]:
        scalars = [k for k, v in methods["model"]["summary"].items() if isinstance(v, (int, float))]
        raise ValueError(f"metric must be one of {', '.join(scalars)}, got {per_window!r}")
    return evaluation_result({
        "task": cfg.task,
        "data": {"path": str(data), "manifest": manifest_path(str(data)), "fingerprint": manifest.fingerprint,
                 "split": split, "windows": len(keyed)},
        "protocol": task.protocol(manifest, split, getattr(task, "in_len", None), getattr(task, "out_len", None)),
        "primary_metric": {"name": name, "higher_is_better": higher,
                           "value": methods["model"]["summary"][name] if model is not None else None},
        "methods": methods,
        "skill": skill_vs_persistence(methods),
        "skipped": skipped,
        "distributed": distributed,
        **({"per_window": per_window_scores(scorer, keyed, per_window)} if per_window else {}),
    })


def evaluate(model_ref: str | None, data: str, split: str = "test", baselines: tuple[str, ...] = DEFAULT_BASELINES,
             out: str | Path | None = None, *, scoring: Scoring = Scoring(), log: LogTo = LogTo()) -> EvaluationResult:
    """Load `model_ref` (models:/NAME@ALIAS, a run id or a path; None: the baselines alone), score it
    (see `score_model`) and write `evaluation.json`, `evaluation.md` and lead-time plots to `out` (a folder or an object-store
    URI; default `<CONVLSTM_STORAGE>/evaluations/<timestamp>`, else `<home>/outputs/evaluations/<timestamp>`); log them to MLflow per the module docstring.
    Returns the result written to `evaluation.json` (JSON types; undefined scores are None)."""
    if log.own_run and log.run:
        raise ValueError("give either --log (the model's own run) or --log-to-run RUN_ID, not both")
    if not model_ref and (log.own_run or log.run):
        raise ValueError("--log and --log-to-run record a model's scores; give --model")
    if "," in str(data):
        raise ValueError(f"--data {data}: evaluate scores one dataset at a time; give one of them (a model "
                         "trained on pooled datasets is scored on each separately)")
    resolve_device(scoring.device)  # a bad --device fails before any work
    defaulted = not out
    out = storage.as_uri(out) if out else paths.output_location("evaluations", datetime.now().strftime("%Y%m%d-%H%M%S"))
    # Multi-node cluster: the report and the shards must be on storage every node reads (before any work).
    cluster.check_paths({"--out": out, "--data": str(data)}, address=scoring.address,
                        defaulted={"--out"} if defaulted else ())
    storage.check_writable(out)  # a read-only --out fails before the scoring, not after it
    if log.run:
        check_run(log.run, log.tracking_uri)
    if model_ref:
        model, info = load_model(model_ref, tracking_uri=log.tracking_uri)
    else:
        model, info = baselines_only(str(data), baselines)
    run_id = log.run or (info.get("run_id") if log.own_run else None)
    if log.own_run and not run_id:
        raise ValueError(f"--log: the model {model_ref} does not come from an MLflow run; use --log-to-run")
    result = score_model(model, info["config"], data, split, baselines, trained_manifests=info["manifests"],
                         scoring=scoring)
    if not storage.is_remote(out):
        out = str(Path(out))
    result = evaluation_result({
        "model": {"ref": model_ref, "run_id": info.get("run_id"), "data_fingerprint": info.get("data_fingerprint"),
                  "manifest_path": info.get("manifest_path")},
        **result.to_json(), "out": out, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    with storage.staged_output(out, prefix="convlstm-evaluation-") as folder:  # a URI: written here, uploaded
        files = [Path(write_evaluation(result, folder)), folder / "evaluation.md"]
        files[1].write_text(report.evaluation_markdown(result))
        files += report.plot_lead_times(result, folder)
        if run_id:
            log_evaluation(result, files, run_id, log.tracking_uri)
    return result


def model_score(model_ref: str, data: str, split: str = "test", metric: str | None = None, *,
                tracking_uri: str | None = None, address: str | None = None) -> float:
    """One summary score of `model_ref` on `split` (default: the task's primary metric), no baselines,
    nothing written; NaN when undefined. For champion/challenger comparisons."""
    model, info = load_model(model_ref, tracking_uri=tracking_uri)
    result = score_model(model, info["config"], data, split, (), trained_manifests=info["manifests"],
                         scoring=Scoring(address=address, device="cpu"))
    summary = result.summary()
    metric = metric or result.primary_metric.name
    if metric not in summary or not isinstance(summary[metric], (int, float, type(None))):
        scalars = [k for k, v in summary.items() if isinstance(v, (int, float))]
        raise ValueError(f"metric must be one of {', '.join(scalars)}, got {metric!r}")
    return float("nan") if summary[metric] is None else float(summary[metric])
