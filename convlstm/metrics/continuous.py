"""Continuous scores of forecasts: the ConvLSTM paper's correlation, and rainfall MSE/MAE with HKO-7's
balanced B-MSE/B-MAE (mm/h)."""
from __future__ import annotations

from typing import Any

import numpy as np

from convlstm.metrics.accumulator import PerLeadTime, divide, validated_frames
from convlstm.units import BALANCING_THRESHOLDS_MMH, BALANCING_WEIGHTS, rainrate_to_scaled_pixel

CORRELATION_EPS = 1e-9


class CorrelationScore(PerLeadTime):
    """The ConvLSTM paper's correlation Σ P·T / sqrt(Σ P² · Σ T² + 1e-9) per frame, averaged over frames.

    A frame is one (sample, lead time) pair; the sums run over its valid pixels of all channels.
    Returns `correlation` `[T]` and `correlation_overall` (mean over every frame).
    """

    _SUMS = ("correlation_sum",)
    _COUNTS = ("frames",)

    def update(self, pred: Any, target: Any, mask: Any = None) -> None:
        """Accumulate one batch: pred, target (and mask) `[B, T, C, H, W]`."""
        pred, target, valid = validated_frames(pred, target, mask, self.lead_times)
        pred, target = np.where(valid, pred, 0.0), np.where(valid, target, 0.0)
        axes = (2, 3, 4)
        corr = np.sum(pred * target, axis=axes) / np.sqrt(
            np.sum(pred**2, axis=axes) * np.sum(target**2, axis=axes) + CORRELATION_EPS)
        has_pixels = valid.any(axis=axes)
        self._state["correlation_sum"] += np.sum(np.where(has_pixels, corr, 0.0), axis=0)
        self._state["frames"] += has_pixels.sum(axis=0)

    def compute(self) -> dict[str, np.ndarray | float]:
        s = self._state
        return {"correlation": divide(s["correlation_sum"], s["frames"]),
                "correlation_overall": float(divide(s["correlation_sum"].sum(), s["frames"].sum()))}


def balancing_weights(rain_mmh: np.ndarray) -> np.ndarray:
    """HKO-7 balancing weight of each pixel from its rain rate (mm/h): 1 below 2, 2 in [2, 5), 5 in [5, 10),
    10 in [10, 30), 30 at >= 30."""
    bins = np.digitize(np.asarray(rain_mmh, dtype=np.float64), BALANCING_THRESHOLDS_MMH, right=False)
    return np.asarray(BALANCING_WEIGHTS)[bins]


class RainfallErrors(PerLeadTime):
    """Rainfall MSE/MAE (mm/h) and HKO-7's balanced B-MSE/B-MAE per lead time.

    Inputs are rain rates in mm/h (HKO-7 model outputs convert with
    `convlstm.units.scaled_pixel_to_rainrate`: dBZ = 70·p − 10 for p in [0, 1], Z = 58.53·R^1.56).
    `mse`/`mae` average over valid pixels, in (mm/h)² and mm/h. `b_mse`/`b_mae` follow the HKO-7
    benchmark: errors of the [0, 1]-scaled HKO-7 pixels (recovered from the rain rates, rain below
    −10 dBZ counting as 0) weighted by `balancing_weights(target)`, summed over the pixels of a frame and
    averaged over frames, so they compare with the benchmark's tables at the same frame size.
    """

    _SUMS = ("squared_error_sum", "absolute_error_sum", "balanced_squared_sum", "balanced_absolute_sum")
    _COUNTS = ("pixels", "frames")

    def update(self, pred: Any, target: Any, mask: Any = None) -> None:
        """Accumulate one batch of rain rates (mm/h): pred, target (and mask) `[B, T, C, H, W]`."""
        pred, target, valid = validated_frames(pred, target, mask, self.lead_times)
        error = np.where(valid, pred - target, 0.0)
        pixel_error = np.where(valid, rainrate_to_scaled_pixel(pred) - rainrate_to_scaled_pixel(target), 0.0)
        weights = balancing_weights(target)
        s, axes = self._state, (0, 2, 3, 4)
        s["squared_error_sum"] += np.sum(error**2, axis=axes)
        s["absolute_error_sum"] += np.sum(np.abs(error), axis=axes)
        s["balanced_squared_sum"] += np.sum(weights * pixel_error**2, axis=axes)
        s["balanced_absolute_sum"] += np.sum(weights * np.abs(pixel_error), axis=axes)
        s["pixels"] += np.sum(valid, axis=axes)
        s["frames"] += np.sum(valid.any(axis=(2, 3, 4)), axis=0)

    def compute(self) -> dict[str, np.ndarray | float]:
        s, result = self._state, {}
        for name, total, count in (("mse", "squared_error_sum", "pixels"), ("mae", "absolute_error_sum", "pixels"),
                                   ("b_mse", "balanced_squared_sum", "frames"),
                                   ("b_mae", "balanced_absolute_sum", "frames")):
            result[name] = divide(s[total], s[count])
            result[f"{name}_overall"] = float(divide(s[total].sum(), s[count].sum()))
        return result
