"""Scoring window by window: every window of a split is scored on its own, with the training task's
scoring (`jobs.tasks`: input/target split, `convlstm.metrics` accumulators, metric names and
summaries), into mergeable states summed in (source, start) order. Inference is bit-reproducible per
window (`jobs.evaluation.inference.predict`), so the Ray Data path and the single-process path give
identical numbers. Skill is relative to persistence: 1 - error/error_persistence for MSE/MAE, the
difference for CSI."""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from jobs.evaluation.baselines import get_baseline
from jobs.evaluation.inference import DEFAULT_BATCH_SIZE, predict
from jobs.tasks.base import mean_over_leads
from pipelines.ray_session import init_ray
from pipelines.shards import read_dataset, read_windows


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


def per_window_scores(scorer: WindowScorer, keyed_states: list[tuple[tuple, dict]], metric: str) -> dict[str, Any]:
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


def skill_vs_persistence(methods: dict[str, dict]) -> dict[str, dict]:
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
