"""The baselines `convlstm evaluate --baselines` knows: `convlstm.baselines` (persistence, optical-flow,
pysteps) and pySTEPS' own nowcasts, run as its examples run them.

`pysteps-extrapolation`: `nowcasts.get_method("extrapolation")`, the last input frame advected along
the Lucas-Kanade motion (`motion.get_method("LK")`) of the last three; `pysteps-sprog`:
`nowcasts.get_method("sprog")` (S-PROG, Seed 2003: a 6-level cascade with AR(2) per level, fed the
last three frames), with the same motion field. Both see what the model sees: the window's input
frames as rain rates R [mm/h] (HKO-7 pixels, Z = 58.53 R^1.56), dB-transformed with a 0.1 mm/h
threshold and -15 dB for no rain (pySTEPS' examples), and return `[B, K, C, H, W]` scaled HKO-7
pixels like every baseline; pixels advected in from outside the grid (NaN) are no rain. A window
without rain in its last frame is forecast dry (S-PROG's AR fit needs rain). Needs pySTEPS.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from convlstm.baselines import BASELINES as CORE_BASELINES
from convlstm.baselines import RENAMED
from convlstm.baselines import get_baseline as core_baseline
from convlstm.checks import positive_int
from convlstm.units import rainrate_to_scaled_pixel, scaled_pixel_to_rainrate
from jobs.tasks import task_class
from jobs.training.config import load_config
from pipelines.manifest import load_manifest
from pipelines.radar.pysteps_io import import_pysteps

RAIN_THRESHOLD_MMH = 0.1
ZERO_DB = -15.0
MOTION_FRAMES = 3


class PystepsNowcast:
    """A pySTEPS nowcast method as a baseline: `[B, J, C, H, W]` scaled pixels -> `[B, K, C, H, W]`."""

    def __init__(self, name: str, method: str, out_frames: int, **kwargs: Any) -> None:
        pysteps = import_pysteps(f"--baselines {name}")
        self.name, self.method, self.kwargs = name, method, kwargs
        self.out_frames = positive_int(out_frames, "out_frames")
        self._nowcast = pysteps.nowcasts.get_method(method)
        self._motion = pysteps.motion.get_method("LK")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 5 or x.shape[1] < MOTION_FRAMES:
            raise ValueError(f"{self.name} needs [B, J >= {MOTION_FRAMES}, C, H, W] inputs, got {list(x.shape)}")
        out = np.zeros((x.shape[0], self.out_frames, *x.shape[2:]), dtype=np.float32)
        for b in range(x.shape[0]):
            for c in range(x.shape[2]):
                rates = self.forecast_mmh(scaled_pixel_to_rainrate(x[b, -MOTION_FRAMES:, c]))
                out[b, :, c] = rainrate_to_scaled_pixel(rates)
        return out

    def forecast_mmh(self, rates: np.ndarray) -> np.ndarray:
        """(t, m, n) rain rates [mm/h], oldest first -> (out_frames, m, n) mm/h, finite."""
        if not (rates[-1] >= RAIN_THRESHOLD_MMH).any():
            return np.zeros((self.out_frames, *rates.shape[1:]), dtype=np.float32)
        db = to_db(rates)
        with contextlib.redirect_stdout(io.StringIO()):
            velocity = self._motion(db)
            if self.method == "extrapolation":
                forecast = self._nowcast(db[-1], velocity, self.out_frames, **self.kwargs)
            else:
                forecast = self._nowcast(db, velocity, self.out_frames, precip_thr=to_db(RAIN_THRESHOLD_MMH),
                                         **{"n_cascade_levels": 6, "probmatching_method": "mean", **self.kwargs})
        return np.nan_to_num(from_db(forecast), nan=0.0).astype(np.float32)


def to_db(rates):
    """mm/h -> dB (10 log10 R), R below RAIN_THRESHOLD_MMH -> ZERO_DB (pySTEPS' dB_transform)."""
    rates = np.asarray(rates, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rates >= RAIN_THRESHOLD_MMH, 10.0 * np.log10(rates), ZERO_DB)


def from_db(db: np.ndarray) -> np.ndarray:
    """dB -> mm/h; at or below the no-rain level (and below the threshold) -> 0; NaN stays NaN."""
    rates = np.power(10.0, np.asarray(db, dtype=np.float64) / 10.0)
    return np.where(rates >= RAIN_THRESHOLD_MMH, rates, np.where(np.isnan(rates), np.nan, 0.0))


PYSTEPS_BASELINES = {"pysteps-extrapolation": "extrapolation", "pysteps-sprog": "sprog"}
BASELINES = (*CORE_BASELINES, *PYSTEPS_BASELINES)


def get_baseline(name: str, out_frames: int, **options: Any):
    """Any baseline of BASELINES by name; the pySTEPS ones raise PystepsMissing (a ValueError naming
    `pip install 'convlstm-pipeline[pysteps]'`) without pySTEPS."""
    if name in PYSTEPS_BASELINES:
        return PystepsNowcast(name, PYSTEPS_BASELINES[name], out_frames, **options)
    return core_baseline(name, out_frames, **options)


def check_baselines(names: tuple[str, ...]) -> None:
    """ValueError naming --baselines for an unknown name; PystepsMissing (one line naming the extra) for
    a pySTEPS baseline without pySTEPS. Before any work."""
    renamed = [f"{b!r} is now {RENAMED[b]!r}" for b in names if b in RENAMED]
    if renamed:
        raise ValueError(f"--baselines: {', '.join(renamed)}")
    unknown = [b for b in names if b not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines must be among {', '.join(BASELINES)}, got {', '.join(unknown)}")
    for name in names:
        if name in PYSTEPS_BASELINES:
            import_pysteps(f"--baselines {name}")


def baselines_only(data: str, baselines: tuple[str, ...]) -> tuple[None, dict]:
    """What `evaluate` scores without --model: no model, and the dataset's task with its packaged
    config (`<task>.yaml`: only the task's window handling matters). ValueError naming --baselines when
    there is nothing to score (none given, or a task without forecast baselines)."""
    check_baselines(baselines)
    task = load_manifest(data).task
    if not baselines or not task_class(task).baselines:
        raise ValueError(f"--baselines: without --model evaluate scores baselines only; give some for a "
                         f"forecast dataset (--data {data} is {task!r}, baselines: {', '.join(baselines) or 'none'})")
    # in_len null: the dataset's own input length (manifest params), not the packaged config's
    return None, {"config": load_config(None, task, ["data.in_len=null"]).to_dict(), "manifests": []}
