"""Video prediction scores on [0, 1] frames: per-frame MSE/MAE, PSNR, SSIM and binary cross-entropy."""
from __future__ import annotations

from typing import Any

import numpy as np

from convlstm.metrics.accumulator import PerLeadTime, divide, validated_frames

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_MSE_FLOOR = 1e-10
BCE_EPS = 1e-7


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


class VideoScores(PerLeadTime):
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
        pred, target, valid = validated_frames(pred, target, mask, self.lead_times)
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
            result[name] = divide(s[total], s[count])
            result[f"{name}_overall"] = float(divide(s[total].sum(), s[count].sum()))
        result["cross_entropy"] = divide(s["cross_entropy_sum"], s["frames"])
        result["cross_entropy_sequence"] = float(np.sum(result["cross_entropy"]))
        return result
