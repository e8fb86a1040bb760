"""Classifier scores: a confusion matrix -> accuracy, per-class precision, recall, F1."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convlstm.checks import positive_int
from convlstm.metrics.accumulator import Accumulator, divide, to_numpy


class ClassificationScores(Accumulator):
    """Confusion matrix (rows = true class, columns = predicted) -> accuracy, per-class precision, recall, F1.

    `update` takes logits/probabilities `[B, num_classes]` (argmax is the prediction) or predicted class
    indices `[B]`, and true class indices `[B]`. F1 = 2·TP / (2·TP + FP + FN); undefined ratios are NaN,
    and `macro_f1` averages the defined per-class F1 values.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = positive_int(num_classes, "num_classes")
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"class_names must have {self.num_classes} entries, got {len(class_names)}")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        super().__init__()

    def _config(self) -> tuple:
        return self.num_classes, tuple(self.class_names)

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"confusion_matrix": np.zeros((self.num_classes, self.num_classes), dtype=np.int64)}

    def update(self, logits_or_pred: Any, target: Any) -> None:
        """Count one batch: logits `[B, num_classes]` or class indices `[B]`, and true indices `[B]`."""
        scores, target = to_numpy(logits_or_pred), to_numpy(target).reshape(-1)
        if scores.ndim == 2 and scores.shape[1] == self.num_classes:
            pred = scores.argmax(axis=1)
        elif scores.ndim == 1:
            pred = scores
        else:
            raise ValueError(f"logits_or_pred must be [B, {self.num_classes}] or [B], got shape {scores.shape}")
        if pred.shape != target.shape:
            raise ValueError(f"target must hold {pred.shape[0]} class indices, got shape {target.shape}")
        for name, labels in (("logits_or_pred", pred), ("target", target)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes
                                or not np.all(labels == np.round(labels))):
                raise ValueError(f"{name} must hold class indices in [0, {self.num_classes})")
        flat = target.astype(np.int64) * self.num_classes + pred.astype(np.int64)
        self._state["confusion_matrix"] += np.bincount(flat, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Any]:
        confusion = self._state["confusion_matrix"].copy()
        tp = np.diag(confusion)
        predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
        f1 = divide(2 * tp, predicted + actual)
        defined = f1[~np.isnan(f1)]
        return {
            "accuracy": float(divide(tp.sum(), confusion.sum())),
            "precision": divide(tp, predicted),
            "recall": divide(tp, actual),
            "f1": f1,
            "macro_f1": float(defined.mean()) if defined.size else float("nan"),
            "support": actual,
            "confusion_matrix": confusion,
            "class_names": list(self.class_names),
        }
