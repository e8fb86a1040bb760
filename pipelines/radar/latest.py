"""Decode and preprocess frames: one code path for `prepare radar` and for nowcasting inputs.

`load_frames` decodes a list of frames once each; `load_sequence` reads the latest `n` frame
slots up to a time from a folder or archive of any supported format, preprocessed exactly as
`prepare radar` did given the manifest's params (`crop`, `size`).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from pipelines.radar.archive import source_folder
from pipelines.radar.formats import (FrameFile, check_has_frames, list_frames, members_of, probe_frames, read_dbz,
                                     resolve_format)
from pipelines.radar.frame_format import FrameError, RadarFormat
from pipelines.radar.preprocess import preprocess
from pipelines.radar.timeline import infer_time_step, iso


def load_frames(fmt: RadarFormat, frames: list[FrameFile], time_step_s: float, grid: tuple[int, int],
                crop: tuple[int, int] | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Decode + preprocess each frame once.

    Returns (pixels uint8 `[N, H, W]`, valid bool `[N, H, W]`, {index: reason} for frames that
    could not be used, which hold 0 and invalid). Frames whose grid is not `grid` are unusable.
    """
    pixels = np.zeros((len(frames), *size), dtype=np.uint8)
    valid = np.zeros((len(frames), *size), dtype=bool)
    errors: dict[int, str] = {}
    for i, frame in enumerate(frames):
        try:
            dbz = read_dbz(fmt, frame.path, time_step_s)
            if dbz.shape != tuple(grid):
                raise FrameError(f"grid {dbz.shape[0]}x{dbz.shape[1]} differs from {grid[0]}x{grid[1]}")
            pixels[i], valid[i] = preprocess(dbz, crop, size)
        except FrameError as exc:
            errors[i] = str(exc)
    return pixels, valid, errors


def load_sequence(src: Path, fmt: str, end: datetime | None, n: int, params: dict,
                  time_step_s: float | None = None) -> tuple[np.ndarray, np.ndarray, list[datetime], list[dict]]:
    """The `n` frame slots ending at the latest frame at or before `end` (UTC; None: the latest).

    `params` is a radar manifest's params (`crop` [H, W] or None, `size` [H, W]); `time_step_s`
    defaults to the most common interval between the source's frames. Returns (pixels uint8
    `[n, 1, H, W]`, mask uint8 `[n, 1, H, W]` (1 = valid), slot times, gaps). A slot without a
    usable frame holds 0 with mask 0 and is listed in gaps as {time, reason}.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    crop = tuple(params["crop"]) if params.get("crop") else None
    size = tuple(params["size"])
    with source_folder(src, keep=members_of(fmt)) as root:
        check_has_frames(src, root, "nothing to forecast from", fmt)
        radar = resolve_format(fmt, root)
        frames, _ = list_frames(root, radar)
        frames = [f for f in frames if end is None or f.time <= end]
        if not frames:
            raise FileNotFoundError(f"no {radar.name} frame at or before {end or 'any time'} in {src}")
        step = timedelta(seconds=time_step_s) if time_step_s else infer_time_step([f.time for f in frames])
        slots = [frames[-1].time - step * k for k in range(n - 1, -1, -1)]
        by_time = {f.time: f for f in frames}
        usable, grid, rejected = probe_frames([by_time[t] for t in slots if t in by_time], radar)
        pixels, valid, errors = load_frames(radar, usable, step.total_seconds(), grid, crop, size)
    problems = {r["file"]: r["reason"] for r in rejected} | {usable[i].name: why for i, why in errors.items()}
    decoded = {f.time: (pixels[i], valid[i]) for i, f in enumerate(usable) if i not in errors}
    out_pixels = np.zeros((n, 1, *size), dtype=np.uint8)
    out_mask = np.zeros((n, 1, *size), dtype=np.uint8)
    gaps = []
    for slot, time in enumerate(slots):
        if time in decoded:
            out_pixels[slot, 0], out_mask[slot, 0] = decoded[time]
        else:
            gaps.append({"time": iso(time), "reason": problems[by_time[time].name] if time in by_time else "missing"})
    return out_pixels, out_mask, slots, gaps
