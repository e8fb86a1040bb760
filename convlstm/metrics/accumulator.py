"""The mergeable accumulator every score here builds on, and the input checks they share.

Conventions shared by every accumulator of `convlstm.metrics` (modelled on pysteps' verification module):
- `update(pred, target, mask=None)` takes `[B, T, C, H, W]` arrays (T = lead times), torch tensors or
  numpy arrays; everything is converted to numpy float64 on the CPU before accumulating. `mask` has the
  same shape or broadcasts to it, 1 = valid; invalid pixels are ignored by every score, and a frame
  without any valid pixel is left out of per-frame averages.
- `compute()` returns a dict: a score under its name is an array over lead times (last axis), the same
  score pooled over all lead times is `<name>_overall`. Ratios with a zero denominator are NaN.
- `state()` holds only sums and counts, so DDP ranks can all-reduce every array with SUM and
  `load_state()` the result; `merge(other)` adds another accumulator's counts (never averages ratios).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from convlstm.checks import positive_int


def to_numpy(x: Any) -> np.ndarray:
    """Torch tensor (any device; floats become float64) or array-like -> numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)


def validated_frames(pred: Any, target: Any, mask: Any,
                     lead_times: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate `[B, T, C, H, W]` inputs; return float64 pred, target and a boolean valid mask of that shape."""
    pred, target = to_numpy(pred).astype(np.float64, copy=False), to_numpy(target).astype(np.float64, copy=False)
    if pred.ndim != 5:
        raise ValueError(f"pred must be [B, T, C, H, W], got shape {pred.shape}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {pred.shape}, got {target.shape}")
    if pred.shape[1] != lead_times:
        raise ValueError(f"pred has {pred.shape[1]} lead times (axis 1), the accumulator expects {lead_times}")
    if mask is None:
        return pred, target, np.ones(pred.shape, dtype=bool)
    mask = to_numpy(mask)
    try:
        valid = np.broadcast_to(mask != 0, pred.shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to pred's shape {pred.shape}") from None
    return pred, target, valid


class Accumulator:
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

    def load_state(self, state: Mapping[str, Any]) -> Accumulator:
        """Replace the accumulated sums with `state` (numpy arrays or tensors, e.g. after an all-reduce)."""
        empty = self._empty_state()
        if set(state) != set(empty):
            raise ValueError(f"state must have keys {sorted(empty)}, got {sorted(state)}")
        loaded = {}
        for key, zeros in empty.items():
            value = to_numpy(state[key])
            if value.shape != zeros.shape:
                raise ValueError(f"state[{key!r}] must have shape {zeros.shape}, got {value.shape}")
            loaded[key] = value.astype(zeros.dtype)
        self._state = loaded
        return self

    def merge(self, other: Accumulator) -> Accumulator:
        """Add `other`'s sums and counts to this accumulator (same class and configuration); returns self."""
        if type(other) is not type(self) or other._config() != self._config():
            raise ValueError(f"other must be a {type(self).__name__} configured as {self._config()}")
        for key, value in other._state.items():
            self._state[key] += value
        return self


class PerLeadTime(Accumulator):
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
