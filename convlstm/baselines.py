"""Forecast baselines that need no training: persistence and optical-flow extrapolation.

All take the models' input windows `[B, J, C, H, W]` (float, [0, 1], torch tensor or numpy array) and
return `[B, K, C, H, W]` forecasts of the same type, dtype and device (K = `out_frames`). The optical-flow
baseline works on the CPU in float32 (OpenCV), in the spirit of the ConvLSTM paper's ROVER baseline.
pySTEPS' nowcasts (`pysteps-extrapolation`, `pysteps-sprog`) are in `jobs.evaluation.baselines`.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Protocol

import numpy as np
import torch

from convlstm.checks import positive_int
from convlstm.motion import FLOW_METHODS, advect, motion_field_array


class Baseline(Protocol):
    """A forecaster of fixed lead time: `[B, J, C, H, W]` -> `[B, out_frames, C, H, W]`, same type as x."""

    name: str

    def __call__(self, x: Any) -> Any: ...


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def _check_window(x: Any) -> None:
    if not isinstance(x, (torch.Tensor, np.ndarray)) or x.ndim != 5:
        raise ValueError(f"x must be a [B, J, C, H, W] torch tensor or numpy array, got {_describe(x)}")
    floating = x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)
    if not floating:
        raise ValueError(f"x must hold floats in [0, 1], got dtype {x.dtype}")


def persistence(x: Any, out_frames: int) -> Any:
    """Repeat the last input frame: `[B, J, C, H, W]` -> `[B, out_frames, C, H, W]`, same type as x."""
    _check_window(x)
    out_frames = positive_int(out_frames, "out_frames")
    if isinstance(x, torch.Tensor):
        return x[:, -1:].repeat(1, out_frames, 1, 1, 1)
    return np.repeat(x[:, -1:], out_frames, axis=1)


def _check_flow_options(method: str, pairs: int | None, smoothing: float, span: int | None) -> None:
    if method not in FLOW_METHODS:
        raise ValueError(f"method must be one of {FLOW_METHODS}, got {method!r}")
    if pairs is not None:
        positive_int(pairs, "pairs")
    if span is not None:
        positive_int(span, "span")
    if not smoothing > 0:
        raise ValueError(f"smoothing must be > 0, got {smoothing!r}")


def optical_flow(x: Any, out_frames: int, method: str = "dis", pairs: int | None = None, smoothing: float = 0.03,
                 span: int | None = None) -> Any:
    """Optical-flow extrapolation: `[B, J, C, H, W]` in [0, 1] -> `[B, out_frames, C, H, W]`, same type as x.

    Dense flow (`method`: OpenCV DIS tuned for small frames, DIS' MEDIUM preset, or Farnebäck) over the
    channel mean of the window's frame pairs: each of the last `pairs` frames (None: all) against
    every earlier frame up to `span` steps back (None: all), each flow divided by its gap. The
    vectors are smoothed over `smoothing`·max(H, W) pixels (see `convlstm.motion.motion_field_array`) and assumed steady;
    the last frame is then advected backward along them (semi-Lagrangian, `convlstm.motion.advect`),
    each channel alike. The flow is in pixels per input frame step, so output frames are assumed to be spaced like
    input frames. The defaults beat pySTEPS' Lucas-Kanade extrapolation on the shared radar samples
    (benchmarks/README.md); `method="dis-medium", pairs=3, span=1, smoothing=0.125` is the first
    version of this baseline.
    """
    _check_window(x)
    out_frames = positive_int(out_frames, "out_frames")
    _check_flow_options(method, pairs, smoothing, span)
    if x.shape[1] < 2:
        raise ValueError(f"x needs at least 2 input frames (axis 1) for optical flow, got {x.shape[1]}")
    frames = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else x.astype(np.float32)
    fields = np.stack([motion_field_array(window.mean(axis=1), method, pairs, span, smoothing) for window in frames])
    with torch.no_grad():
        forecast = advect(torch.from_numpy(frames[:, -1]), torch.from_numpy(fields), out_frames).numpy()
    if isinstance(x, torch.Tensor):
        return torch.from_numpy(forecast).to(device=x.device, dtype=x.dtype)
    return forecast.astype(x.dtype, copy=False)


def pysteps_available() -> bool:
    """Whether pysteps can be imported (without importing it): `jobs.evaluation.baselines` then offers
    pySTEPS' nowcasts (`pysteps-extrapolation`, `pysteps-sprog`)."""
    return importlib.util.find_spec("pysteps") is not None


class Persistence:
    """`persistence` as a callable baseline with a fixed `out_frames`."""

    name = "persistence"

    def __init__(self, out_frames: int) -> None:
        self.out_frames = positive_int(out_frames, "out_frames")

    def __call__(self, x: Any) -> Any:
        return persistence(x, self.out_frames)


class OpticalFlow:
    """`optical_flow` as a callable baseline with fixed `out_frames` and options."""

    name = "optical-flow"

    def __init__(self, out_frames: int, method: str = "dis", pairs: int | None = None, smoothing: float = 0.03,
                 span: int | None = None) -> None:
        _check_flow_options(method, pairs, smoothing, span)
        self.out_frames = positive_int(out_frames, "out_frames")
        self.method, self.pairs, self.smoothing, self.span = method, pairs, smoothing, span

    def __call__(self, x: Any) -> Any:
        return optical_flow(x, self.out_frames, self.method, self.pairs, self.smoothing, self.span)


BASELINES = {Persistence.name: Persistence, OpticalFlow.name: OpticalFlow}
# pySTEPS' extrapolation has one implementation, `jobs.evaluation.baselines` (pySTEPS' nowcast API).
RENAMED = {"pysteps": "pysteps-extrapolation"}


def get_baseline(name: str, out_frames: int, **options: Any) -> Baseline:
    """Baseline by name ("persistence" or "optical-flow"); `options` go to its constructor,
    e.g. `get_baseline("optical-flow", 15, method="farneback")`."""
    if name in RENAMED:
        raise ValueError(f"baseline {name!r} is now {RENAMED[name]!r} (jobs.evaluation.baselines; "
                         f"convlstm evaluate --baselines {RENAMED[name]})")
    if name not in BASELINES:
        raise ValueError(f"name must be one of {sorted(BASELINES)}, got {name!r}")
    return BASELINES[name](out_frames, **options)
