"""`convlstm evaluate`: score a model and the no-training baselines on the same windows of one split.

Every window is scored on its own, with the training task's scoring (`jobs.tasks`: input/target
split, `convlstm.metrics` accumulators, metric names and summaries), into mergeable states summed in (source, start) order on
the driver. Inference is bit-reproducible per window (see `predict`), so the Ray Data path
(`map_batches` over the split, used from `distributed_min_windows` windows on) and the
single-process path give identical numbers.

Summaries and their names come from the task (`Task.summarize`), so `rainfall_mse` here is
`val_rainfall_mse` in training and `test_rainfall_mse` in MLflow. Skill is relative to persistence:
1 - error/error_persistence for MSE/MAE, the difference for CSI.

MLflow: `log_to_run` logs the outputs into that run; `log=True` into the run that produced the model
(its ref must resolve to one); otherwise nothing is logged. Metric keys are `<split>_<name>` for the
model and `<split>_<method>_<name>` for a baseline (`metric_key`).
"""
from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jobs import paths
from jobs.evaluation import report
from jobs.evaluation.baselines import baselines_only, check_baselines, get_baseline
from jobs.evaluation.result import EvaluationResult, evaluation_result, write_evaluation
from jobs.registry import descriptions, mlflow_datasets, tracking
from jobs.registry.modelio import load_model
from jobs.tasks import get_task, task_class
from jobs.tasks.base import mean_over_leads
from jobs.training.config import from_dict
from pipelines import cluster, storage
from pipelines.manifest import Manifest, load_manifest, manifest_path
from pipelines.ray_session import init_ray
from pipelines.shards import read_dataset, read_windows
from pipelines.verify import check_dataset
import torch

DEFAULT_BASELINES = ("persistence", "optical-flow")
DEFAULT_BATCH_SIZE = 8
DISTRIBUTED_MIN_WINDOWS = 512


def primary_metric(task: str) -> tuple[str, bool]:
    """(metric name, higher is better) that ranks models of `task` (champion/challenger comparisons)."""
    cls = task_class(task)
    return cls.primary_metric, cls.higher_is_better


def higher_is_better(metric: str, task: str) -> bool:
    """Direction of a summary metric of `task`, e.g. `csi_ge_0.5` (higher) or `rainfall_mse` (lower)."""
    return task_class(task).metric_higher_is_better(metric)


def resolve_device(name: str = "auto") -> str:
    """`--device`: "auto" is a CUDA GPU when one is visible, else the CPU; ValueError for "cuda" without one."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to this process")
    return "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)


def predict(model, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu") -> np.ndarray:
    """Model outputs for float32 inputs `[N, ...]` in float32, on `device` ("cpu" or "cuda").

    Batches hold exactly `batch_size` rows (the last one padded with copies of its last row). On the
    CPU they run on one intra-op thread, as in a 1-CPU Ray task, so every row's output is
    bit-reproducible: CPU kernels pick their algorithm and reduction order by shape and thread count.
    On a GPU the outputs agree to float tolerance (cuDNN chooses its own algorithms).
    """
    outputs = []
    threads = torch.get_num_threads()
    model.eval().to(device)
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                chunk = x[start:start + batch_size]
                padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
                batch = torch.from_numpy(np.ascontiguousarray(padded)).to(device)
                outputs.append(model(batch).float().cpu().numpy()[:len(chunk)])
    finally:
        torch.set_num_threads(threads)
        model.to("cpu")
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)


@dataclass
class WindowScorer:
    """Scores batches of windows into per-window metric states with the training task's own scoring
    (`jobs.tasks`: input/target split, accumulators, mm/h conversion); picklable for Ray tasks."""

    task: Any  # jobs.tasks.Task
    model: Any
    baselines: tuple[str, ...] = ()
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"  # the model's; Ray Data tasks (no GPU asked for) always score on the CPU

    @property
    def methods(self) -> tuple[str, ...]:
        return (*(("model",) if self.model is not None else ()), *self.baselines)

    @property
    def columns(self) -> list[str]:
        return [*self.task.columns, "source", "start"]

    def accumulators(self) -> dict[str, dict[str, Any]]:
        """Fresh accumulators per method: {method: {name: accumulator}}."""
        return {method: self.task.evaluator().accumulators for method in self.methods}

    def __call__(self, batch: dict[str, np.ndarray]) -> list[dict[str, dict[str, dict]]]:
        """One state per window, in the batch's row order: [{method: {accumulator: state}}]."""
        frames = batch["frames"].astype(np.float32) / 255.0
        inputs, targets = self.task.inputs_targets(frames)
        outputs = {} if self.model is None else {"model": predict(self.model, inputs, self.batch_size, self.device)}
        if targets is not None:
            outputs.update({name: get_baseline(name, self.task.out_len)(inputs) for name in self.baselines})
            for name, output in outputs.items():
                if output.shape != targets.shape:
                    raise ValueError(f"--model: {name} forecasts {list(output.shape[1:])} per window, the data's "
                                     f"targets are {list(targets.shape[1:])}")
        tensors = {k: torch.from_numpy(np.array(batch[k])) for k in self.task.columns}
        states = []
        for i in range(len(frames)):
            window = {k: v[i:i + 1] for k, v in tensors.items()}
            state = {}
            for method, accumulators in self.accumulators().items():
                # The model's raw output (logits for `bce` models); baselines forecast [0, 1] frames.
                self.task.score(accumulators, torch.from_numpy(outputs[method][i:i + 1]), window,
                                raw=method == "model")
                state[method] = {name: acc.state() for name, acc in accumulators.items()}
            states.append(state)
        return states


def _score_batch(batch: dict[str, np.ndarray], scorer: WindowScorer) -> dict[str, np.ndarray]:
    """Ray Data UDF: a batch of windows -> rows (source, start, pickled per-window state)."""
    states = scorer({k: np.asarray(v) for k, v in batch.items()})
    return {"source": np.asarray(batch["source"]), "start": np.asarray(batch["start"]),
            "state": np.array([pickle.dumps(s) for s in states], dtype=object)}


def window_states(scorer: WindowScorer, data: str, split: str = "test", distributed: bool = False,
                  address: str | None = None) -> list[tuple[tuple, dict]]:
    """[((source, start), state)] of every window of the split, sorted by (source, start): each window's
    accumulator states per method, to sum over any set of windows or datasets with `merge_states`
    (benchmarks/skill.py pools archives so). `distributed`: score on Ray Data at `address`."""
    if distributed:
        init_ray(address)
        rows = read_dataset(data, split, scorer.columns).map_batches(
            _score_batch, fn_kwargs={"scorer": replace(scorer, device="cpu")}, batch_size=scorer.batch_size, batch_format="numpy").take_all()
        keyed = [((row["source"], row["start"]), pickle.loads(row["state"])) for row in rows]
    else:
        windows = read_windows(data, split, scorer.columns)
        keyed = []
        for start in range(0, len(windows["source"]), scorer.batch_size):
            batch = {k: v[start:start + scorer.batch_size] for k, v in windows.items()}
            keyed += zip(zip(batch["source"], batch["start"]), scorer(batch))
    return sorted(keyed, key=lambda item: item[0])


def merge_states(scorer: WindowScorer, keyed_states: list[tuple[tuple, dict]]) -> dict[str, dict[str, Any]]:
    """Sum the per-window states (`window_states`) in the given order into one accumulator per method and
    metric: {method: {name: accumulator}}, for `task.summarize`."""
    totals: dict[str, dict[str, dict]] = {}
    for _, state in keyed_states:
        for method, parts in state.items():
            for name, arrays in parts.items():
                total = totals.setdefault(method, {}).setdefault(name, {})
                for key, value in arrays.items():
                    total[key] = total[key] + value if key in total else value.copy()
    accumulators = scorer.accumulators()
    for method, parts in totals.items():
        for name, state in parts.items():
            accumulators[method][name].load_state(state)
    return accumulators


def _per_window(scorer: WindowScorer, keyed_states: list[tuple[tuple, dict]], metric: str) -> dict[str, Any]:
    """{metric, windows: [[source, start]], methods: {method: [score of each window]}}: `metric` (a summary
    name) of every window on its own, in (source, start) order, for paired tests; None where undefined."""
    scores: dict[str, list] = {method: [] for method in scorer.methods}
    for _, state in keyed_states:
        merged = merge_states(scorer, [(None, state)])
        for method in scores:
            value = scorer.task.summarize(merged[method])["summary"].get(metric) if method in state else None
            scores[method].append(None if value is None or not math.isfinite(value) else float(value))
    return {"metric": metric, "windows": [[str(source), str(start)] for (source, start), _ in keyed_states],
            "methods": scores}


def _skill(methods: dict[str, dict]) -> dict[str, dict]:
    """Each non-persistence method against persistence: MSE/MAE skill 1 - m/p, CSI difference m - p."""
    if "persistence" not in methods:
        return {}
    reference = methods["persistence"]
    skill = {}
    for name, method in methods.items():
        if name == "persistence":
            continue
        per_lead = {}
        for key, values in method["per_lead"].items():
            base = np.asarray(reference["per_lead"][key], dtype=np.float64)
            values = np.asarray(values, dtype=np.float64)
            metric = key.split("_ge_")[0]
            if metric in ("rainfall_mse", "rainfall_mae", "mse", "mae"):
                with np.errstate(divide="ignore", invalid="ignore"):
                    per_lead[f"{key}_skill"] = np.where(base > 0, 1.0 - values / base, np.nan)
            elif metric == "csi":
                per_lead[f"{key}_gain"] = values - base
        skill[name] = {"summary": {k: mean_over_leads(v) for k, v in per_lead.items()}, "per_lead": per_lead}
    return skill


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
    name) adds that metric of every window on its own, per method (`_per_window`)."""

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
        "skill": _skill(methods),
        "skipped": skipped,
        "distributed": distributed,
        **({"per_window": _per_window(scorer, keyed, per_window)} if per_window else {}),
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
        _check_run(log.run, log.tracking_uri)
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


def _check_run(run_id: str, tracking_uri: str | None) -> None:
    """ValueError naming `--log-to-run` when the tracking store has no active run `run_id`."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    try:
        run = tracking.client(tracking_uri).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(f"--log-to-run {run_id}: no such run in {tracking.resolve_uri(tracking_uri)}") from None
    if run.info.lifecycle_stage != "active":
        raise ValueError(f"--log-to-run {run_id}: the run is {run.info.lifecycle_stage}")


def metric_key(split: str, method: str, name: str) -> str:
    """MLflow metric name of a summary score: `test_csi_ge_0.5` (the model), `test_persistence_csi_ge_0.5`."""
    key = f"{split}_{name}" if method == "model" else f"{split}_{method}_{name}"
    return re.sub(r"[^\w.\-/ :]", "_", key)


def log_evaluation(result: EvaluationResult, files: list[Path], run_id: str, tracking_uri: str | None = None) -> None:
    """Log an evaluation into the run `run_id`.

    The scored split becomes a dataset input of the run (context `test` for the test split, see
    `mlflow_datasets.SPLIT_CONTEXTS`); the scalar summaries are metrics of the run and of the evaluated model's
    LoggedModel on that dataset (MLflow 3 `model_id` + dataset), baselines included, so the model
    version page lists the model's scores next to the baselines'; the files are artifacts under
    `evaluation/<split>/`. A score line (primary and table metrics vs the baselines) goes into the run's
    description, the registered version's description and `eval.<split>` tag, and the registered
    model's description. A run other than the model's own also gets the model as an input, so the
    evaluation run names both the model and the data."""
    from mlflow.entities import LoggedModelInput  # deferred: mlflow ~10 s to import; the module's other users skip it

    split, data = result.data.split, result.data.path
    dataset = mlflow_datasets.log_datasets(tracking_uri, run_id, data, load_manifest(data),
                                           {split: mlflow_datasets.split_context(split)})[split]
    model_run = result.model.run_id
    versions = tracking.versions_of(tracking_uri, result.model.ref, model_run)
    model_id = next((tracking.version_model_id(v) for v in versions if tracking.version_model_id(v)), None)
    if model_id is None and model_run:
        model_id = tracking.logged_model_id(tracking_uri, model_run)
    c = tracking.client(tracking_uri)
    if model_id and run_id != model_run:
        c.log_inputs(run_id, models=[LoggedModelInput(model_id)])
        tracking.ensure_experiment_kind(tracking_uri, c.get_run(run_id).info.experiment_id)
    scored = {**result.methods, **{f"{m}_vs_persistence": s for m, s in result.skill.items()}}
    rows = [(metric_key(split, method, name), value, 0)
            for method, scores in scored.items()
            for name, value in scores.summary.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
    tracking.log_metrics(tracking_uri, run_id, rows, model_id=model_id, dataset=dataset)
    tracking.log_artifacts(tracking_uri, run_id, files, f"evaluation/{split}")
    line = descriptions.score_line(split, result.data.windows, dataset.name, dataset.digest, _headline(result))
    tracking.add_description_line(tracking_uri, run_id, f"**{split}**", line)
    for version in versions:
        tracking.record_scores(tracking_uri, version, split, line)


def _headline(result: EvaluationResult) -> list[tuple[str, Any, dict]]:
    """(metric, model value, {baseline: value}) for the primary metric and up to two table metrics."""
    cls = task_class(result.task)
    model = result.summary()
    names = [n for n in dict.fromkeys([cls.primary_metric, *cls.table_metrics])
             if n in model and (model[n] is None or isinstance(model[n], (int, float)))][:3]
    baselines = {m: s.summary for m, s in result.baselines().items()}
    return [(n, model[n], {m: s.get(n) for m, s in baselines.items()}) for n in names]


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
