"""Training losses on frame sequences `[B, T, C, H, W]`, optionally masked (1 = valid, 0 = ignored).

Reduction, unless stated otherwise: sum over the pixels of a frame (C, H, W), mean over frames
and sequences (B, T), the convention of the HKO-7 benchmark and OpenSTL's MSE/MAE. Masked pixels
contribute zero to the sums (sums are not renormalised by the valid count).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convlstm import units


def _checked_mask(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    if pred.dim() != 5:
        raise ValueError(f"pred must be [B, T, C, H, W], got {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")
    if mask is None:
        return None
    try:
        torch.broadcast_shapes(mask.shape, pred.shape)
    except RuntimeError:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not broadcast to {tuple(pred.shape)}") from None
    return mask.to(pred.dtype)


def _per_frame_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        values = values * mask
    return values.sum(dim=(2, 3, 4)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel binary cross-entropy summed over pixels and frames, averaged over sequences.

    Takes LOGITS (pre-sigmoid; use a model with `output_activation=None`), which keeps it
    numerically stable; `target` holds probabilities in [0, 1]. This is the paper's Moving MNIST
    measure (Table 1 reports it on the 10 predicted frames).
    """
    mask = _checked_mask(logits, target, mask)
    values = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if mask is not None:
        values = values * mask
    return values.sum(dim=(1, 2, 3, 4)).mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error summed over each frame's pixels, mean over frames and sequences."""
    mask = _checked_mask(pred, target, mask)
    return _per_frame_mean((pred - target).square(), mask)


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Absolute error summed over each frame's pixels, mean over frames and sequences."""
    mask = _checked_mask(pred, target, mask)
    return _per_frame_mean((pred - target).abs(), mask)


def hko_thresholds_scaled() -> torch.Tensor:
    """HKO-7's balancing thresholds (2, 5, 10, 30 mm/h) as scaled pixels p/255 in [0, 1] (unrounded)."""
    return torch.from_numpy(units.rainrate_to_scaled_pixel(np.asarray(units.BALANCING_THRESHOLDS_MMH)))


def hko_balance_weights(target: torch.Tensor) -> torch.Tensor:
    """HKO-7 balancing weights (`convlstm.units.BALANCING_WEIGHTS`) for scaled pixels `target` (p/255):
    1 below 2 mm/h, 2 in [2, 5), ..., 30 at >= 30 mm/h, as `convlstm.metrics.continuous.balancing_weights` in mm/h."""
    thresholds = hko_thresholds_scaled().to(device=target.device, dtype=target.dtype)
    weights = torch.tensor(units.BALANCING_WEIGHTS, device=target.device, dtype=target.dtype)
    return weights[torch.bucketize(target.contiguous(), thresholds, right=True)]


def balanced_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                 weighted_by: torch.Tensor | None = None) -> torch.Tensor:
    """HKO-7 B-MSE on scaled pixels: weighted squared error summed per frame, mean over frames and sequences.
    `weighted_by`: the scaled pixels that set the weights when `pred`/`target` are in another space."""
    mask = _checked_mask(pred, target, mask)
    weights = hko_balance_weights(target if weighted_by is None else weighted_by)
    return _per_frame_mean(weights * (pred - target).square(), mask)


def rainfall_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error of rain rates in (mm/h)^2 (HKO-7 scaled pixels -> mm/h, `convlstm.units`), summed per
    frame, mean over frames and sequences: the radar task's primary metric (rainfall MSE) as a loss."""
    mask = _checked_mask(pred, target, mask)
    error = units.scaled_pixel_to_rainrate_torch(pred) - units.scaled_pixel_to_rainrate_torch(target)
    return _per_frame_mean(error.square(), mask)


def balanced_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """HKO-7 B-MAE on scaled pixels: weighted absolute error summed per frame, mean over frames and sequences."""
    mask = _checked_mask(pred, target, mask)
    return _per_frame_mean(hko_balance_weights(target) * (pred - target).abs(), mask)
