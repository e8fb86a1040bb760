"""Radar images of a nowcast: rain rates in mm/h on a log-spaced palette, PNG frames and a looping GIF;
and the side-by-side GIF of training previews (truth beside forecast).

Nodata is grey, < 0.1 mm/h white.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Lower edges (mm/h) of the rain-rate classes and their colours; below the first edge = no rain.
RAIN_LEVELS_MMH = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0)
RAIN_COLOURS = (
    (200, 230, 255), (150, 200, 255), (80, 150, 255), (20, 90, 230), (0, 180, 60), (120, 220, 0),
    (255, 240, 0), (255, 160, 0), (255, 60, 0), (200, 0, 0), (200, 0, 200),
)
NO_RAIN_COLOUR = (255, 255, 255)
NODATA_COLOUR = (160, 160, 160)


def colorize_rainrate(rate: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Rain rate `[H, W]` in mm/h -> RGB uint8 `[H, W, 3]`; NaN or `valid == 0` is nodata (grey)."""
    rate = np.asarray(rate, dtype=np.float32)
    if rate.ndim != 2:
        raise ValueError(f"rate must be [H, W], got shape {rate.shape}")
    palette = np.array((NO_RAIN_COLOUR, *RAIN_COLOURS, NODATA_COLOUR), dtype=np.uint8)
    index = np.digitize(np.nan_to_num(rate, nan=0.0), RAIN_LEVELS_MMH)  # 0 = below 0.1 mm/h
    nodata = np.isnan(rate) if valid is None else np.isnan(rate) | (np.asarray(valid) == 0)
    index[nodata] = len(palette) - 1
    return palette[index]


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 `[H, W, 3]` image."""
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path)
    return Path(path)


def write_gif(path: Path, frames: Sequence[np.ndarray], duration_ms: int = 500) -> Path:
    """Write RGB uint8 `[H, W, 3]` frames as an endlessly looping animated GIF."""
    if not frames:
        raise ValueError("frames must not be empty")
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return Path(path)


def side_by_side_gif(path: Path, left: Sequence[np.ndarray], right: Sequence[np.ndarray], labels: Sequence[str],
                     titles: tuple[str, str], min_size: int = 160) -> Path:
    """A looping GIF of RGB frames `[H, W, 3]`: `left[t]` beside `right[t]`, upscaled (nearest) to at least
    `min_size` pixels, a caption row with `titles` and `labels[t]` above."""
    height, width = left[0].shape[:2]
    scale = max(1, -(-min_size // max(1, min(height, width))))
    gap, caption = 6, 16
    frames = []
    for a, b, label in zip(left, right, labels):
        canvas = Image.new("RGB", (2 * width * scale + gap, height * scale + caption), (255, 255, 255))
        for i, image in enumerate((a, b)):
            tile = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
                (width * scale, height * scale), Image.NEAREST)
            canvas.paste(tile, (i * (width * scale + gap), caption))
        draw = ImageDraw.Draw(canvas)
        for i, title in enumerate(titles):
            draw.text((i * (width * scale + gap) + 3, 2), f"{title} {label}", fill=(0, 0, 0))
        frames.append(np.asarray(canvas))
    return write_gif(path, frames, duration_ms=600)
