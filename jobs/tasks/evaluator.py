"""The validation state of a task: a mean loss plus mergeable accumulators, merged across ranks."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from jobs.jsonable import to_jsonable
from jobs.tasks.base import Task


class Evaluator:
    """A mean validation loss plus mergeable accumulators (`convlstm.metrics`). `state()` holds only
    sums and counts (keys `<part>.<array>`), so ranks merge by a SUM all-reduce."""

    def __init__(self, task: Task, accumulators: dict[str, Any]):
        self.task = task
        self.accumulators = accumulators
        self.loss_sum, self.rows = 0.0, 0

    def update(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output, loss = self.task.forward(model, batch)
        rows = self.task.batch_rows(batch)
        self.loss_sum += float(loss) * rows
        self.rows += rows
        self.task.score(self.accumulators, output, batch)
        return output

    def state(self) -> dict[str, np.ndarray]:
        state = {"loss.sum": np.array([self.loss_sum]), "loss.rows": np.array([float(self.rows)])}
        for name, acc in self.accumulators.items():
            state.update({f"{name}.{k}": v for k, v in acc.state().items()})
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.loss_sum, self.rows = float(state["loss.sum"][0]), int(state["loss.rows"][0])
        for name, acc in self.accumulators.items():
            prefix = f"{name}."
            acc.load_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def merge(self, other: Evaluator) -> Evaluator:
        """Add `other`'s sums and counts to this one's (as if this one had read `other`'s windows too)."""
        theirs = other.state()
        self.load_state({key: value + theirs[key] for key, value in self.state().items()})
        return self

    def compute(self) -> tuple[dict[str, float], dict[str, Any]]:
        """(`val_*` scalars for metrics and checkpoint ranking, the full JSON-able evaluation)."""
        results = {name: acc.compute() for name, acc in self.accumulators.items()}
        loss = self.loss_sum / self.rows if self.rows else float("nan")
        summary = self.task.summarize(self.accumulators)["summary"]
        scalars = {"val_loss": loss, **{f"val_{k}": (math.nan if v is None else float(v)) for k, v in summary.items()
                                        if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}}
        return scalars, to_jsonable({"loss": loss, "windows": self.rows, **results})
