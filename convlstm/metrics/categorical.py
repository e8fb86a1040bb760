"""Categorical scores: a contingency table per threshold and lead time -> CSI, FAR, POD, HSS."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convlstm.checks import positive_int
from convlstm.metrics.accumulator import Accumulator, divide, validated_frames


def _skill_scores(hits: np.ndarray, misses: np.ndarray, false_alarms: np.ndarray,
                  correct_negatives: np.ndarray) -> dict[str, np.ndarray]:
    """CSI, FAR, POD and HSS from contingency counts of any (common) shape."""
    h, m, f, c = (np.asarray(a, dtype=np.float64) for a in (hits, misses, false_alarms, correct_negatives))
    return {
        "csi": divide(h, h + m + f),
        "far": divide(f, h + f),
        "pod": divide(h, h + m),
        "hss": divide(2.0 * (h * c - m * f), (h + m) * (m + c) + (h + f) * (f + c)),
    }


class CategoricalScores(Accumulator):
    """Contingency table per threshold and lead time -> CSI, FAR, POD, HSS.

    An event is `value >= threshold` with `event="ge"` (HKO-7's convention, the default) or
    `value > threshold` with `event="gt"` (pysteps'). Values are in whatever unit the caller passes
    (the radar evaluation passes mm/h). Scores are `[n_thresholds, T]`; `_overall` ones (`[n_thresholds]`)
    come from the counts summed over lead times. HSS = 2(H·CN − M·FA) / ((H+M)(M+CN) + (H+FA)(FA+CN)).
    """

    _COUNTS = ("hits", "misses", "false_alarms", "correct_negatives")

    def __init__(self, thresholds: Sequence[float], lead_times: int, event: str = "ge") -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if self.thresholds.size == 0 or not np.all(np.isfinite(self.thresholds)):
            raise ValueError(f"thresholds must be a non-empty sequence of finite numbers, got {thresholds!r}")
        if event not in ("ge", "gt"):
            raise ValueError(f"event must be 'ge' or 'gt', got {event!r}")
        self.lead_times = positive_int(lead_times, "lead_times")
        self.event = event
        super().__init__()

    def _config(self) -> tuple:
        return tuple(self.thresholds), self.lead_times, self.event

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {key: np.zeros((self.thresholds.size, self.lead_times), dtype=np.int64) for key in self._COUNTS}

    def update(self, pred: Any, target: Any, mask: Any = None) -> None:
        """Count one batch: pred, target (and mask) `[B, T, C, H, W]`."""
        pred, target, valid = validated_frames(pred, target, mask, self.lead_times)
        compare = np.greater_equal if self.event == "ge" else np.greater
        axes = (0, 2, 3, 4)
        for i, threshold in enumerate(self.thresholds):
            forecast_yes, observed_yes = compare(pred, threshold), compare(target, threshold)
            self._state["hits"][i] += np.sum(forecast_yes & observed_yes & valid, axis=axes)
            self._state["misses"][i] += np.sum(~forecast_yes & observed_yes & valid, axis=axes)
            self._state["false_alarms"][i] += np.sum(forecast_yes & ~observed_yes & valid, axis=axes)
            self._state["correct_negatives"][i] += np.sum(~forecast_yes & ~observed_yes & valid, axis=axes)

    def compute(self) -> dict[str, np.ndarray]:
        """Counts and scores per threshold and lead time, plus `<score>_overall` per threshold."""
        counts = self.state()
        per_lead = _skill_scores(*(counts[key] for key in self._COUNTS))
        overall = _skill_scores(*(counts[key].sum(axis=1) for key in self._COUNTS))
        return {"thresholds": self.thresholds.copy(), **counts, **per_lead,
                **{f"{name}_overall": value for name, value in overall.items()}}
