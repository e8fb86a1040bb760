"""Motion fields and differentiable semi-Lagrangian advection, shared by the optical-flow baseline and the
motion-aware encoder-forecaster (`EncoderForecaster(motion="advection")`).

Conventions: a motion field is `[B, 2, H, W]` float, channel 0 = dx, channel 1 = dy, in pixels per frame
step, *backward* (the value at p one step later comes from p + field(p)). Pixel coordinates are
OpenCV's: (0, 0) is the centre of the top-left pixel, so `grid_sample` runs with `align_corners=True`.
The field is computed from the input window on the CPU with OpenCV (`motion_field_array`, the optical-flow
baseline's DIS flow; not differentiable, not trained); the advection is torch (`grid_sample`) on the field's device, and
differentiable in the advected frame and in the field.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from convlstm.units import rainrate_to_scaled_pixel_torch, scaled_pixel_to_rainrate_torch

FLOW_METHODS = ("dis", "dis-medium", "farneback")
# The optical-flow baseline's defaults (convlstm.baselines.optical_flow): DIS at full resolution, all
# frame pairs of the window, vectors smoothed over 3 % of the frame size.
FLOW_METHOD, FLOW_PAIRS, FLOW_SPAN, FLOW_SMOOTHING = "dis", None, None, 0.03


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)


def _backward_flow(later: np.ndarray, earlier: np.ndarray, method: str) -> np.ndarray:
    """`[H, W, 2]` displacement (dx, dy) such that later(p) ≈ earlier(p + flow(p)); frames are uint8.

    "dis": DIS at full resolution (OpenCV's MEDIUM preset with the finest scale 0 and 8 x 8 patches
    every 4 pixels, for the few-pixel storm cells of 100 x 100 radar frames); "dis-medium": OpenCV's
    MEDIUM preset as is (finest scale 1, 12 x 12 patches, the first version of this baseline).
    """
    if method in ("dis", "dis-medium"):
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        if method == "dis":
            dis.setFinestScale(0)
            dis.setPatchSize(8)
            dis.setPatchStride(4)
        return dis.calc(later, earlier, None)
    return cv2.calcOpticalFlowFarneback(later, earlier, None, pyr_scale=0.5, levels=3, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _frame_pairs(frames: int, pairs: int | None, span: int | None) -> list[tuple[int, int]]:
    """(later, gap) of the pairs used: each of the last `pairs` frames (all if None) against each frame
    up to `span` steps before it (all if None) that the window has."""
    later_frames = range(frames - 1, 0, -1) if pairs is None else range(frames - 1, max(0, frames - 1 - pairs), -1)
    return [(later, gap) for later in later_frames for gap in range(1, (later if span is None else min(span, later)) + 1)]


def motion_field_array(gray: np.ndarray, method: str = FLOW_METHOD, pairs: int | None = FLOW_PAIRS,
                       span: int | None = FLOW_SPAN, smoothing: float = FLOW_SMOOTHING) -> np.ndarray:
    """Backward displacement per frame step `[2, H, W]` float32 (dx, dy) from `[J, H, W]` frames in [0, 1].

    Every pair (later, later - gap) of `_frame_pairs` gives a flow, divided by its gap (steady motion
    assumed): pairs further apart see larger, better resolved displacements of slow echoes and
    average out the noise of single steps. Each pair's vectors are weighted by the later frame's
    intensity (echo carries the motion; the empty background does not), smoothed with a Gaussian of
    `smoothing`·max(H, W) pixels (normalised convolution), and blended into the weighted domain mean
    where no echo is near, so that tracing back from anywhere in the domain finds the motion of the
    nearest echo.
    """
    frames = [_to_uint8(frame) for frame in gray]
    weighted, weight = np.zeros(gray.shape[1:] + (2,), np.float32), np.zeros(gray.shape[1:], np.float32)
    for later, gap in _frame_pairs(len(frames), pairs, span):
        w = np.maximum(gray[later], 0.0).astype(np.float32)
        weighted += w[..., None] * (_backward_flow(frames[later], frames[later - gap], method) / gap)
        weight += w
    if weight.sum() <= 0:
        return np.zeros((2,) + gray.shape[1:], np.float32)
    sigma = smoothing * max(gray.shape[1:])
    domain_mean = weighted.sum(axis=(0, 1)) / weight.sum()
    local_weighted = cv2.GaussianBlur(weighted, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    local_weight = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    floor = 1e-3 * local_weight.max()  # below ~0.1 % of the peak echo density the domain mean takes over
    field = (local_weighted + floor * domain_mean) / (local_weight + floor)[..., None]
    return np.ascontiguousarray(field.transpose(2, 0, 1), dtype=np.float32)


def motion_field(x: torch.Tensor, method: str = FLOW_METHOD, pairs: int | None = FLOW_PAIRS,
                 span: int | None = FLOW_SPAN, smoothing: float = FLOW_SMOOTHING) -> torch.Tensor:
    """The optical-flow baseline's motion field of windows `x` `[B, J, C, H, W]` in [0, 1] (channel mean)
    -> `[B, 2, H, W]` (dx, dy backward, pixels per step), on x's device and dtype, without gradient."""
    frames = x.detach().float().mean(dim=2).cpu().numpy()
    fields = np.stack([motion_field_array(window, method, pairs, span, smoothing) for window in frames])
    return torch.from_numpy(fields).to(device=x.device, dtype=x.dtype)


def _normalised(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates `[B, H, W, 2]` (x, y) -> grid_sample's [-1, 1] (align_corners=True)."""
    scale = points.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    return points * scale - 1.0


def advect(last: torch.Tensor, field: torch.Tensor, steps: int) -> torch.Tensor:
    """Semi-Lagrangian backward advection of `last` `[B, C, H, W]` along `field` `[B, 2, H, W]`
    -> `[B, steps, C, H, W]`.

    For lead t every target pixel is traced back t steps along the field (the field sampled bilinearly
    where the trace is, edge values beyond the domain), then `last` is sampled bilinearly there once;
    positions outside the domain read 0. Differentiable in `last` and `field`.
    """
    if last.dim() != 4 or field.dim() != 4 or field.shape[1] != 2 or field.shape[-2:] != last.shape[-2:] \
            or field.shape[0] != last.shape[0]:
        raise ValueError(f"last must be [B, C, H, W] and field [B, 2, H, W] of the same B, H, W, got "
                         f"{tuple(last.shape)} and {tuple(field.shape)}")
    height, width = last.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, device=last.device, dtype=last.dtype),
                            torch.arange(width, device=last.device, dtype=last.dtype), indexing="ij")
    points = torch.stack([xs, ys], dim=-1).expand(last.shape[0], height, width, 2)
    frames = []
    for _ in range(steps):
        step = F.grid_sample(field, _normalised(points, height, width), mode="bilinear", padding_mode="border",
                             align_corners=True)
        points = points + step.permute(0, 2, 3, 1)
        frames.append(F.grid_sample(last, _normalised(points, height, width), mode="bilinear",
                                    padding_mode="zeros", align_corners=True))
    return torch.stack(frames, dim=1)


# The smoothing weights are stored divided by this gain, so that an optimizer tuned for the network's
# weights (Adam moves each parameter by about lr a step) moves them SMOOTHING_GAIN times faster: 36
# weights shared by every pixel learn from a few hundred steps at lr 1e-5.
SMOOTHING_GAIN = 1000.0


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets**2 / (2.0 * sigma**2))
    return kernel / kernel.sum()


class LeadSmoothing(nn.Module):
    """Learned lead-dependent smoothing of the heavy part of an advection forecast, in rain rate.

    The expected rain of an uncertain future is smoother than any one advected field, and more so the
    further ahead (S-PROG's reasoning); the rainfall-MSE-optimal forecast spreads the peaks. Per lead t
    the rain above `threshold_mmh`, e = max(R - threshold, 0) in mm/h, is replaced by
    e + sum_k a[t, k] (G_k * e - e) with Gaussian blurs G_k of `scales` pixels (standard deviations):
    rain at or above the threshold stays above it when 0 <= a, sum_k a <= 1, so the hits at the lower
    thresholds are kept while the squared error of misplaced peaks falls. The weights a start at 0 (the
    forecast is unchanged, exactly). `forward` returns the change in [0, 1] pixels to add.
    """

    def __init__(self, leads: int, scales: Sequence[float], threshold_mmh: float = 2.0):
        super().__init__()
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"smoothing scales must be > 0 pixels, got {list(scales)}")
        if threshold_mmh < 0:
            raise ValueError(f"smoothing threshold must be >= 0 mm/h, got {threshold_mmh}")
        self.threshold_mmh = float(threshold_mmh)
        self.weights = nn.Parameter(torch.zeros(leads, len(scales)))  # a / SMOOTHING_GAIN
        self.kernels = [_gaussian_kernel(float(s)) for s in scales]

    def _blur(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of `[N, 1, H, W]`, edges replicated."""
        radius = kernel.numel() // 2
        kernel = kernel.to(device=x.device, dtype=x.dtype)
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))

    def forward(self, advected: torch.Tensor) -> torch.Tensor:
        """`advected` `[B, K, C, H, W]` [0, 1] pixels -> the smoothing's change to them, same shape."""
        rain = scaled_pixel_to_rainrate_torch(advected)
        excess = (rain - self.threshold_mmh).clamp(min=0.0)
        flat = excess.flatten(0, 2)[:, None]
        weights = self.weights * SMOOTHING_GAIN
        change = torch.zeros_like(rain)
        for k, kernel in enumerate(self.kernels):
            blurred = self._blur(flat, kernel).view_as(excess)
            change = change + weights[:, k].view(1, -1, 1, 1, 1) * (blurred - excess)
        smoothed = (rain + change).clamp(min=0.0)
        return rainrate_to_scaled_pixel_torch(smoothed) - rainrate_to_scaled_pixel_torch(rain)
