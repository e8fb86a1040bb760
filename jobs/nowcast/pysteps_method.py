"""A registered radar model as a pySTEPS nowcast method, for pySTEPS users' verification loops.

    from jobs.nowcast.pysteps_method import forecast
    precip, _, metadata = pysteps.io.import_mrms_grib(...)      # for each of the last t frames
    nowcast = forecast(precip_t_m_n, None, 6, model="models:/convlstm-radar@champion")

The calling convention is that of `pysteps.nowcasts.get_method("extrapolation")`: `precip` is a
`(t, m, n)` array of rain rates in mm/h, oldest first, NaN outside the radar domain, on the grid the
model's training data came from (the training manifest's source grid: pySTEPS' importer output for a
`pysteps:` dataset); `velocity` is accepted and ignored (the model finds the motion itself); the
result is `(timesteps, m, n)` in mm/h with NaN outside the domain.

Preprocessing follows the training manifest: rain rates become dBZ with the Z-R relation of the
source format (`encoding.source_zr`; Marshall-Palmer 200/1.6 for reflectivity formats, whose
rates a pySTEPS importer derives with it), then the canonical HKO-7 pixels, centre crop and area
resize of `pipelines.radar.preprocess`, exactly as `prepare radar` did. The forecast goes back the
same way: dBZ -> mm/h with that Z-R relation, bilinear resize to the crop, placed at the crop's
offset (the -10 dBZ floor is 0 mm/h); pixels outside the crop, or nodata in the last input frame, are NaN.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import cv2
import numpy as np

from convlstm.units import DBZ_MIN, dbz_to_rainrate, pixel_to_dbz
from jobs.nowcast.forecast import load_radar_model
from pipelines.radar.pysteps_io import rain_to_dbz
from pipelines.radar.preprocess import preprocess
from pipelines.manifest import Manifest

DEFAULT_MODEL = "models:/convlstm-radar@champion"
MARSHALL_PALMER = {"a": 200.0, "b": 1.6}


@lru_cache(maxsize=4)
def _load(model: str, tracking_uri: str | None):
    """(model, task, manifest) of a radar model reference, loaded once per process."""
    loaded, task, info = load_radar_model(model, tracking_uri)
    return loaded, task, info["manifest"]


def _leads(timesteps: int | Sequence[int], out_len: int) -> list[int]:
    """1-based lead indices: `timesteps` frames (1..timesteps) or the listed ones, all within 1..out_len."""
    values = [timesteps] if np.isscalar(timesteps) else list(timesteps)
    leads = list(range(1, int(timesteps) + 1)) if np.isscalar(timesteps) else [int(t) for t in values]
    if not leads or any(float(v) != int(v) for v in values) or not all(1 <= t <= out_len for t in leads):
        raise ValueError(f"timesteps: the model forecasts lead times 1..{out_len} (whole time steps), "
                         f"got {timesteps!r}")
    return leads


def _crop_box(grid: tuple[int, int], crop: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the manifest's centre crop on the source grid (as `center_crop`)."""
    if not crop:
        return 0, 0, grid[0], grid[1]
    return (grid[0] - crop[0]) // 2, (grid[1] - crop[1]) // 2, crop[0], crop[1]


def _zr(manifest: Manifest) -> dict:
    return manifest.encoding.get("source_zr") or MARSHALL_PALMER


def model_input(precip: np.ndarray, manifest: Manifest) -> np.ndarray:
    """`(t, m, n)` rain rates [mm/h] on the source grid -> HKO-7 pixels uint8 `(t, H, W)` preprocessed as
    the radar `manifest` says (the source Z-R relation, crop, area resize); what the shards hold."""
    zr, grid = _zr(manifest), manifest.grid
    crop, size = (tuple(grid.crop) if grid.crop else None), (grid.height, grid.width)
    frames = []
    for rates in np.asarray(precip, dtype=np.float64):
        frames.append(preprocess(rain_to_dbz(rates, zr["a"], zr["b"]), crop, size)[0])
    return np.stack(frames)


def forecast(precip: np.ndarray, velocity: Any = None, timesteps: int | Sequence[int] = 1,
             model: str = DEFAULT_MODEL, *, tracking_uri: str | None = None, device: str = "cpu",
             **_: Any) -> np.ndarray:
    """`(t, m, n)` rain rates [mm/h] (NaN = outside the domain) -> `(timesteps, m, n)` mm/h nowcast.

    `timesteps`: a number of time steps of the training data (forecast 1..timesteps) or a list of
    them (at most the model's out_len); `velocity` is ignored. Extra keyword arguments (pySTEPS
    methods' options) are accepted and ignored. ValueError when `precip` does not fit the model:
    fewer than its in_len frames, or another grid than its training data's source grid.
    """
    # deferred: jobs.evaluation.inference loads torch ~5 s; the module's other users skip it
    from jobs.evaluation.inference import predict

    loaded, task, manifest = _load(model, tracking_uri)
    precip = np.asarray(precip, dtype=np.float64)
    grid = manifest.grid
    source = (grid.source_height, grid.source_width)
    if precip.ndim != 3 or precip.shape[0] < task.in_len or precip.shape[1:] != source:
        raise ValueError(f"precip: model {model} takes (t >= {task.in_len}, {source[0]}, {source[1]}) rain rates "
                         f"(its training data's grid, {manifest.encoding['source_format']}), got {precip.shape}")
    leads = _leads(timesteps, task.out_len)
    zr = _zr(manifest)
    crop = tuple(grid.crop) if grid.crop else None
    scaled = model_input(precip[-task.in_len:], manifest)[None, :, None].astype(np.float32) / 255.0
    import torch  # deferred: torch ~5 s to import; the module's other users skip it

    output = task.probabilities(torch.from_numpy(predict(loaded, scaled, device=device))).clamp(0, 1).numpy()
    top, left, height, width = _crop_box(source, crop)
    out = np.full((len(leads), *source), np.nan, dtype=np.float32)
    outside = np.isnan(precip[-1]) | (precip[-1] < 0)
    for i, lead in enumerate(leads):
        dbz = pixel_to_dbz(output[0, lead - 1, 0] * 255.0)
        dbz = cv2.resize(dbz, (width, height), interpolation=cv2.INTER_LINEAR)
        rates = np.where(dbz > DBZ_MIN, dbz_to_rainrate(dbz, zr["a"], zr["b"]), 0.0)
        out[i, top:top + height, left:left + width] = rates
    out[:, outside] = np.nan
    return out
