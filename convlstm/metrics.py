"""Streaming, mergeable verification metrics for forecasts and classifiers.

Conventions shared by every accumulator here (modelled on pysteps' verification module):
- `update(pred, target, mask=None)` takes `[B, T, C, H, W]` arrays (T = lead times), torch tensors or
  numpy arrays; everything is converted to numpy float64 on the CPU before accumulating. `mask` has the
  same shape or broadcasts to it, 1 = valid; invalid pixels are ignored by every score, and a frame
  without any valid pixel is left out of per-frame averages.
- `compute()` returns a dict: a score under its name is an array over lead times (last axis), the same
  score pooled over all lead times is `<name>_overall`. Ratios with a zero denominator are NaN.
- `state()` holds only sums and counts, so DDP ranks can all-reduce every array with SUM and
  `load_state()` the result; `merge(other)` adds another accumulator's counts (never averages ratios).
`ClassificationScores` shares the state handling but scores class indices, not frames.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from convlstm.checks import positive_int
from convlstm.units import (BALANCING_THRESHOLDS_MMH, BALANCING_WEIGHTS, HKO7_THRESHOLDS_MMH,  # noqa: F401
                            rainrate_to_scaled_pixel)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_MSE_FLOOR = 1e-10
BCE_EPS = 1e-7
CORRELATION_EPS = 1e-9


def _to_numpy(x: Any) -> np.ndarray:
    """Torch tensor (any device; floats become float64) or array-like -> numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)


def _frames(pred: Any, target: Any, mask: Any, lead_times: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate `[B, T, C, H, W]` inputs; return float64 pred, target and a boolean valid mask of that shape."""
    pred, target = _to_numpy(pred).astype(np.float64, copy=False), _to_numpy(target).astype(np.float64, copy=False)
    if pred.ndim != 5:
        raise ValueError(f"pred must be [B, T, C, H, W], got shape {pred.shape}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {pred.shape}, got {target.shape}")
    if pred.shape[1] != lead_times:
        raise ValueError(f"pred has {pred.shape[1]} lead times (axis 1), the accumulator expects {lead_times}")
    if mask is None:
        return pred, target, np.ones(pred.shape, dtype=bool)
    mask = _to_numpy(mask)
    try:
        valid = np.broadcast_to(mask != 0, pred.shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to pred's shape {pred.shape}") from None
    return pred, target, valid


class _Accumulator:
    """Shared state handling; subclasses define `_empty_state()` and `_config()`."""

    def __init__(self) -> None:
        self.reset()

    def _empty_state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _config(self) -> tuple:
        raise NotImplementedError

    def reset(self) -> None:
        """Drop everything accumulated so far."""
        self._state = self._empty_state()

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the raw sums and counts; every array may be summed across ranks."""
        return {key: value.copy() for key, value in self._state.items()}

    def load_state(self, state: Mapping[str, Any]) -> _Accumulator:
        """Replace the accumulated sums with `state` (numpy arrays or tensors, e.g. after an all-reduce)."""
        empty = self._empty_state()
        if set(state) != set(empty):
            raise ValueError(f"state must have keys {sorted(empty)}, got {sorted(state)}")
        loaded = {}
        for key, zeros in empty.items():
            value = _to_numpy(state[key])
            if value.shape != zeros.shape:
                raise ValueError(f"state[{key!r}] must have shape {zeros.shape}, got {value.shape}")
            loaded[key] = value.astype(zeros.dtype)
        self._state = loaded
        return self

    def merge(self, other: _Accumulator) -> _Accumulator:
        """Add `other`'s sums and counts to this accumulator (same class and configuration); returns self."""
        if type(other) is not type(self) or other._config() != self._config():
            raise ValueError(f"other must be a {type(self).__name__} configured as {self._config()}")
        for key, value in other._state.items():
            self._state[key] += value
        return self


def _skill_scores(hits: np.ndarray, misses: np.ndarray, false_alarms: np.ndarray,
                  correct_negatives: np.ndarray) -> dict[str, np.ndarray]:
    """CSI, FAR, POD and HSS from contingency counts of any (common) shape."""
    h, m, f, c = (np.asarray(a, dtype=np.float64) for a in (hits, misses, false_alarms, correct_negatives))
    return {
        "csi": _divide(h, h + m + f),
        "far": _divide(f, h + f),
        "pod": _divide(h, h + m),
        "hss": _divide(2.0 * (h * c - m * f), (h + m) * (m + c) + (h + f) * (f + c)),
    }


class _PerLeadTime(_Accumulator):
    """An accumulator of float sums (`_SUMS`) and integer counts (`_COUNTS`), one of each per lead time."""

    _SUMS: tuple[str, ...] = ()
    _COUNTS: tuple[str, ...] = ()

    def __init__(self, lead_times: int) -> None:
        self.lead_times = positive_int(lead_times, "lead_times")
        super().__init__()

    def _config(self) -> tuple:
        return (self.lead_times,)

    def _empty_state(self) -> dict[str, np.ndarray]:
        state = {key: np.zeros(self.lead_times) for key in self._SUMS}
        state.update({key: np.zeros(self.lead_times, dtype=np.int64) for key in self._COUNTS})
        return state


class CategoricalScores(_Accumulator):
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
        pred, target, valid = _frames(pred, target, mask, self.lead_times)
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


class CorrelationScore(_PerLeadTime):
    """The ConvLSTM paper's correlation Σ P·T / sqrt(Σ P² · Σ T² + 1e-9) per frame, averaged over frames.

    A frame is one (sample, lead time) pair; the sums run over its valid pixels of all channels.
    Returns `correlation` `[T]` and `correlation_overall` (mean over every frame).
    """

    _SUMS = ("correlation_sum",)
    _COUNTS = ("frames",)

    def update(self, pred: Any, target: Any, mask: Any = None) -> None:
        """Accumulate one batch: pred, target (and mask) `[B, T, C, H, W]`."""
        pred, target, valid = _frames(pred, target, mask, self.lead_times)
        pred, target = np.where(valid, pred, 0.0), np.where(valid, target, 0.0)
        axes = (2, 3, 4)
        corr = np.sum(pred * target, axis=axes) / np.sqrt(
            np.sum(pred**2, axis=axes) * np.sum(target**2, axis=axes) + CORRELATION_EPS)
        has_pixels = valid.any(axis=axes)
        self._state["correlation_sum"] += np.sum(np.where(has_pixels, corr, 0.0), axis=0)
        self._state["frames"] += has_pixels.sum(axis=0)

    def compute(self) -> dict[str, np.ndarray | float]:
        s = self._state
        return {"correlation": _divide(s["correlation_sum"], s["frames"]),
                "correlation_overall": float(_divide(s["correlation_sum"].sum(), s["frames"].sum()))}


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


class FractionsSkillScore(_Accumulator):
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
        pred, target, valid = _frames(pred, target, mask, self.lead_times)
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
                "fss": 1.0 - _divide(s["squared_difference_sum"], s["reference_sum"]),
                "fss_overall": 1.0 - _divide(s["squared_difference_sum"].sum(-1), s["reference_sum"].sum(-1))}


def balancing_weights(rain_mmh: np.ndarray) -> np.ndarray:
    """HKO-7 balancing weight of each pixel from its rain rate (mm/h): 1 below 2, 2 in [2, 5), 5 in [5, 10),
    10 in [10, 30), 30 at >= 30."""
    bins = np.digitize(np.asarray(rain_mmh, dtype=np.float64), BALANCING_THRESHOLDS_MMH, right=False)
    return np.asarray(BALANCING_WEIGHTS)[bins]


class RainfallErrors(_PerLeadTime):
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
        pred, target, valid = _frames(pred, target, mask, self.lead_times)
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
            result[name] = _divide(s[total], s[count])
            result[f"{name}_overall"] = float(_divide(s[total].sum(), s[count].sum()))
        return result


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
    window = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return window / window.sum()


def _filter_valid(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of `[..., H, W]` with a 1-D window -> `[..., H - k + 1, W - k + 1]`."""
    k = window.size
    rows = np.lib.stride_tricks.sliding_window_view(images, k, axis=-1) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=-2) @ window


def ssim_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """SSIM map of `[..., H, W]` images in [0, 1] (Wang et al. 2004: 11×11 Gaussian window, sigma 1.5,
    K1 0.01, K2 0.03, data range 1), one value per window position: `[..., H - 10, W - 10]`."""
    window = _gaussian_window()
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_p, mu_t = _filter_valid(pred, window), _filter_valid(target, window)
    var_p = _filter_valid(pred * pred, window) - mu_p**2
    var_t = _filter_valid(target * target, window) - mu_t**2
    cov = _filter_valid(pred * target, window) - mu_p * mu_t
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))


class VideoScores(_PerLeadTime):
    """Video prediction scores on [0, 1] data, per frame and averaged over frames (OpenSTL's reporting).

    `mse`/`mae`: squared/absolute error summed over a frame's valid pixels (all channels).
    `psnr`: 10·log10(1 / pixel-mean MSE), data range 1, MSE floored at 1e-10 (identical frames: 100 dB).
    `ssim`: mean of `ssim_map` over channels and the window positions whose 11×11 window holds only
    valid pixels; NaN when frames are smaller than 11×11. `cross_entropy`: per-pixel binary cross-entropy
    (pred clipped to [1e-7, 1 − 1e-7]) summed over a frame; `cross_entropy_sequence` sums the per-lead
    means over lead times, i.e. the ConvLSTM paper's per-sequence figure, averaged over sequences.
    """

    _SUMS = ("squared_error_sum", "absolute_error_sum", "psnr_sum", "ssim_sum", "cross_entropy_sum")
    _COUNTS = ("frames", "ssim_frames")

    def update(self, pred: Any, target: Any, mask: Any = None) -> None:
        """Accumulate one batch: pred, target (and mask) `[B, T, C, H, W]` in [0, 1]."""
        pred, target, valid = _frames(pred, target, mask, self.lead_times)
        axes = (2, 3, 4)
        pixels = valid.sum(axis=axes)
        has_pixels = pixels > 0
        error = np.where(valid, pred - target, 0.0)
        squared = np.sum(error**2, axis=axes)
        mean_squared = squared / np.maximum(pixels, 1)
        psnr = 10.0 * np.log10(1.0 / np.maximum(mean_squared, PSNR_MSE_FLOOR))
        p = np.clip(pred, BCE_EPS, 1.0 - BCE_EPS)
        bce = -(target * np.log(p) + (1.0 - target) * np.log1p(-p))
        ssim_sum, ssim_frames = self._ssim(pred, target, valid)

        s = self._state
        s["squared_error_sum"] += squared.sum(axis=0)
        s["absolute_error_sum"] += np.sum(np.abs(error), axis=axes).sum(axis=0)
        s["psnr_sum"] += np.where(has_pixels, psnr, 0.0).sum(axis=0)
        s["cross_entropy_sum"] += np.sum(np.where(valid, bce, 0.0), axis=axes).sum(axis=0)
        s["frames"] += has_pixels.sum(axis=0)
        s["ssim_sum"] += ssim_sum
        s["ssim_frames"] += ssim_frames

    @staticmethod
    def _ssim(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per lead time: sum of per-frame SSIM and the number of frames that have a fully valid window."""
        lead_times = pred.shape[1]
        if min(pred.shape[-2:]) < SSIM_WINDOW:
            return np.zeros(lead_times), np.zeros(lead_times, dtype=np.int64)
        ones = np.ones(SSIM_WINDOW)
        window_valid = _filter_valid(valid.astype(np.float64), ones) > SSIM_WINDOW**2 - 0.5
        ssim = ssim_map(pred, target)
        positions = window_valid.sum(axis=(2, 3, 4))
        frame_ssim = np.where(window_valid, ssim, 0.0).sum(axis=(2, 3, 4)) / np.maximum(positions, 1)
        return np.where(positions > 0, frame_ssim, 0.0).sum(axis=0), (positions > 0).sum(axis=0)

    def compute(self) -> dict[str, np.ndarray | float]:
        s, result = self._state, {}
        for name, total, count in (("mse", "squared_error_sum", "frames"), ("mae", "absolute_error_sum", "frames"),
                                   ("psnr", "psnr_sum", "frames"), ("ssim", "ssim_sum", "ssim_frames")):
            result[name] = _divide(s[total], s[count])
            result[f"{name}_overall"] = float(_divide(s[total].sum(), s[count].sum()))
        result["cross_entropy"] = _divide(s["cross_entropy_sum"], s["frames"])
        result["cross_entropy_sequence"] = float(np.sum(result["cross_entropy"]))
        return result


class ClassificationScores(_Accumulator):
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
        scores, target = _to_numpy(logits_or_pred), _to_numpy(target).reshape(-1)
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
        f1 = _divide(2 * tp, predicted + actual)
        defined = f1[~np.isnan(f1)]
        return {
            "accuracy": float(_divide(tp.sum(), confusion.sum())),
            "precision": _divide(tp, predicted),
            "recall": _divide(tp, actual),
            "f1": f1,
            "macro_f1": float(defined.mean()) if defined.size else float("nan"),
            "support": actual,
            "confusion_matrix": confusion,
            "class_names": list(self.class_names),
        }
