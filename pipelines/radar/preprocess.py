"""Decoded dBZ to canonical HKO-7 pixels + validity mask, then the paper's centre crop and resize.

Resizing uses cv2.INTER_AREA on the uint8 pixels. The mask is resized by area too: an output
pixel is valid only if every source pixel it covers (with non-zero weight) is valid, and pixels
that end up invalid hold 0.

Frame size limits, shared by the format decoders: a frame header claiming more than
MAX_GRID_PIXELS pixels is refused (FrameError) before any pixel is decoded, so a few hostile bytes
cannot make a decoder allocate gigabytes. LIBRARY_ERRORS are the exceptions PIL raises for
malformed files beyond OSError/ValueError; `formats` turns them into FrameError.
"""
from __future__ import annotations

import struct
import warnings
from contextlib import contextmanager
from typing import IO, Iterator

import cv2
import numpy as np
from PIL import Image

from convlstm.units import DBZ_MIN, dbz_to_pixel
from pipelines.radar.frame_format import FrameError

# Largest source grid (height * width) accepted: 4096 x 4096, about 18x the largest supported
# composite (FMI 1226x760; HKO-7 480x480, MeteoSwiss 640x710, KNMI 765x700, OPERA ~2200x1900).
MAX_GRID_PIXELS = 4096 * 4096
LIBRARY_ERRORS = (IndexError, SyntaxError, struct.error, Image.DecompressionBombError)


def check_grid(height: int, width: int) -> tuple[int, int]:
    """(height, width) from a frame header; FrameError unless both are >= 1 and the grid holds at
    most MAX_GRID_PIXELS pixels."""
    height, width = int(height), int(width)
    if height < 1 or width < 1 or height * width > MAX_GRID_PIXELS:
        raise FrameError(f"header claims a {width}x{height} grid; frames may hold 1 to "
                         f"{MAX_GRID_PIXELS} pixels (MAX_GRID_PIXELS)")
    return height, width


@contextmanager
def open_image(source: str | IO[bytes]) -> Iterator[Image.Image]:
    """A PIL image with only its header read, its size checked by `check_grid` (PIL's own
    decompression-bomb check, at a higher limit, also becomes a FrameError)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise FrameError(f"header claims an oversized grid: {exc}") from exc
    with image:
        check_grid(image.size[1], image.size[0])
        yield image


def parse_hw(text: str, flag: str) -> tuple[int, int]:
    """`"HxW"` -> (H, W), both positive; ValueError naming `flag` otherwise."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{flag} must look like HxW (e.g. 100x100), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{flag} must be positive, got {text!r}")
    return h, w


def check_crop(crop: tuple[int, int] | None, grid: tuple[int, int]) -> None:
    """ValueError naming --crop when the crop is larger than the source grid (H, W)."""
    if crop and (crop[0] > grid[0] or crop[1] > grid[1]):
        raise ValueError(f"--crop {crop[0]}x{crop[1]} is larger than the frames ({grid[0]}x{grid[1]})")


# Above this no radar measures rain (hail cores reach about 75 dBZ): a decoding artefact, such as a rain
# rate of 1e308 mm/h or +inf, is no data rather than the encoding's top value (60 dBZ).
MAX_PLAUSIBLE_DBZ = 100.0


def to_canonical(dbz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dBZ `[H, W]` (NaN = nodata) -> (HKO-7 pixel uint8, valid bool); nodata pixels hold 0, and so do
    values above MAX_PLAUSIBLE_DBZ (+inf included), which are nodata too."""
    valid = ~np.isnan(dbz) & ~(dbz > MAX_PLAUSIBLE_DBZ)
    return np.where(valid, dbz_to_pixel(np.maximum(dbz, DBZ_MIN)), 0).astype(np.uint8), valid


def center_crop(image: np.ndarray, crop: tuple[int, int] | None) -> np.ndarray:
    """The central `crop` (H, W) of a `[H, W]` array (offsets rounded down); the whole array if None."""
    if not crop:
        return image
    top, left = (image.shape[0] - crop[0]) // 2, (image.shape[1] - crop[1]) // 2
    return image[top:top + crop[0], left:left + crop[1]]


def resize(pixel: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Area-resize pixels (uint8) and mask to `size` (H, W); see the module docstring for the mask."""
    if pixel.shape == tuple(size):
        return pixel, valid
    dsize = (size[1], size[0])
    pixel = cv2.resize(pixel, dsize, interpolation=cv2.INTER_AREA)
    invalid = cv2.resize((~valid).astype(np.float32), dsize, interpolation=cv2.INTER_AREA)
    valid = invalid == 0
    return np.where(valid, pixel, 0).astype(np.uint8), valid


def preprocess(dbz: np.ndarray, crop: tuple[int, int] | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decoded dBZ `[H, W]` -> (pixel uint8 `size`, valid bool `size`): canonical encoding, crop, resize."""
    pixel, valid = to_canonical(dbz)
    return resize(center_crop(pixel, crop), center_crop(valid, crop), size)
