"""HKO-7 PNG frames: `radarPNG/YYYY/MM/DD/RADyymmddHHMM00.png`, 8-bit grayscale already in the
canonical encoding (dBZ = p * 70 / 255 - 10).

HKO-7 ships validity masks as `radarPNG_mask/.../RADyymmddHHMM00.mask` (zlib-compressed bool
array, True = valid, same shape as the PNG); one beside the PNG is accepted too. Without a mask
every pixel is valid. The PNG header's grid is checked against preprocess.MAX_GRID_PIXELS before
decoding, and a mask never inflates beyond the frame's pixel count.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np

from convlstm.units import pixel_to_dbz
from pipelines.radar.frame_format import FrameError, RadarFormat
from pipelines.radar.preprocess import open_image

CONVERSION = ("HKO-7 pixel p (8-bit grayscale PNG): dBZ = p*70/255 - 10; "
              "nodata from the optional .mask (zlib bool, True = valid)")


def mask_path(path: Path) -> Path | None:
    """The HKO-7 mask of a PNG frame: in the parallel `radarPNG_mask` tree or beside it; None if absent."""
    name = path.with_suffix(".mask").name
    parts = list(path.parent.parts)
    candidates = [path.parent / name]
    if "radarPNG" in parts:
        at = len(parts) - 1 - parts[::-1].index("radarPNG")
        candidates.insert(0, Path(*parts[:at], "radarPNG_mask", *parts[at + 1:], name))
    return next((c for c in candidates if c.is_file()), None)


def probe(path: Path) -> tuple[int, int]:
    with open_image(path) as im:
        if im.mode != "L":
            raise FrameError(f"expected 8-bit grayscale PNG, got mode {im.mode}")
        return im.size[1], im.size[0]


def decode(path: Path, time_step_s: float) -> np.ndarray:
    with open_image(path) as im:
        if im.mode != "L":
            raise FrameError(f"expected 8-bit grayscale PNG, got mode {im.mode}")
        pixel = np.asarray(im)
    dbz = pixel_to_dbz(pixel)
    mpath = mask_path(path)
    if mpath is not None:
        valid = np.frombuffer(_inflate_mask(mpath, pixel.size), dtype=bool)
        if valid.size != pixel.size:
            raise FrameError(f"mask {mpath.name} holds {valid.size} pixels, frame {pixel.size}")
        dbz[~valid.reshape(pixel.shape)] = np.nan
    return dbz


def _inflate_mask(path: Path, pixels: int) -> bytes:
    """The mask's bytes, inflating at most one byte more than `pixels` (a zlib bomb stops there)."""
    inflater = zlib.decompressobj()
    raw = inflater.decompress(path.read_bytes(), pixels + 1)
    if len(raw) > pixels:
        raise FrameError(f"mask {path.name} expands beyond the frame's {pixels} pixels")
    if not inflater.eof:
        raise FrameError(f"mask {path.name} is truncated (incomplete zlib stream)")
    return raw


FORMAT = RadarFormat(
    name="hko",
    pattern=re.compile(r"RAD(?P<ts>\d{10})00\.png"),
    time_format="%y%m%d%H%M",
    extensions=(".png",),
    probe=probe,
    decode=decode,
    conversion=CONVERSION,
)
