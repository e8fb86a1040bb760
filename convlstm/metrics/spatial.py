"""Spatial verification: the fractions skill score over pixel neighbourhoods (Roberts & Lean 2008)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convlstm.checks import positive_int
from convlstm.metrics.accumulator import Accumulator, divide, validated_frames

FSS_SCALES = (1, 5, 15)
FSS_THRESHOLDS_MMH = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # HKO-7's and 1 mm/h, where FSS is usually quoted


def _box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean of `x` `[..., H, W]` over the size x size neighbourhood centred on each pixel (size odd),
    zero outside the domain (the neighbourhood always counts size² pixels); integral images, exact sums."""
    r = size // 2
    height, width = x.shape[-2:]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r + 1, r), (r + 1, r)])
    c = padded.cumsum(axis=-2).cumsum(axis=-1)
    total = (c[..., size:, size:] - c[..., :height, size:] - c[..., size:, :width] + c[..., :height, :width])
    return total / size**2


class FractionsSkillScore(Accumulator):
    """Fractions skill score (Roberts & Lean 2008) per threshold, neighbourhood size and lead time.

    Events are `value >= threshold` on valid pixels (invalid pixels are no event); fractions are event
    counts over size x size pixel neighbourhoods (`scales`, odd, in pixels; zero outside the frame),
    compared on valid pixels. FSS = 1 - Σ (Pf - Po)² / Σ (Pf² + Po²), the sums over every frame
    accumulated; `fss` is `[n_thresholds, n_scales, T]`, `fss_overall` sums over lead times too.
    """

    _SUMS = ("squared_difference_sum", "reference_sum")

    def __init__(self, thresholds: Sequence[float], scales: Sequence[int], lead_times: int) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if self.thresholds.size == 0 or not np.all(np.isfinite(self.thresholds)):
            raise ValueError(f"thresholds must be a non-empty sequence of finite numbers, got {thresholds!r}")
        self.scales = tuple(positive_int(s, "scales") for s in scales)
        if not self.scales or any(s % 2 == 0 for s in self.scales):
            raise ValueError(f"scales must be a non-empty sequence of odd pixel sizes, got {scales!r}")
        self.lead_times = positive_int(lead_times, "lead_times")
        super().__init__()

    def _config(self) -> tuple:
        return tuple(self.thresholds), self.scales, self.lead_times

    def _empty_state(self) -> dict[str, np.ndarray]:
        shape = (self.thresholds.size, len(self.scales), self.lead_times)
        return {key: np.zeros(shape) for key in self._SUMS}

    def update(self, pred: Any, target: Any, mask: Any = None) -> None:
        """Accumulate one batch: pred, target (and mask) `[B, T, C, H, W]`, same unit as the thresholds."""
        pred, target, valid = validated_frames(pred, target, mask, self.lead_times)
        axes = (0, 2, 3, 4)
        for i, threshold in enumerate(self.thresholds):
            forecast, observed = ((x >= threshold) & valid for x in (pred, target))
            for j, size in enumerate(self.scales):
                pf, po = _box_mean(forecast.astype(np.float64), size), _box_mean(observed.astype(np.float64), size)
                self._state["squared_difference_sum"][i, j] += np.sum(np.where(valid, (pf - po) ** 2, 0.0), axis=axes)
                self._state["reference_sum"][i, j] += np.sum(np.where(valid, pf**2 + po**2, 0.0), axis=axes)

    def compute(self) -> dict[str, np.ndarray]:
        """`fss` `[n_thresholds, n_scales, T]` (NaN where neither forecast nor observation has events),
        `fss_overall` `[n_thresholds, n_scales]`, and the thresholds and scales."""
        s = self._state
        return {"thresholds": self.thresholds.copy(), "scales": np.asarray(self.scales),
                "fss": 1.0 - divide(s["squared_difference_sum"], s["reference_sum"]),
                "fss_overall": 1.0 - divide(s["squared_difference_sum"].sum(-1), s["reference_sum"].sum(-1))}
