"""MeteoSwiss AQC GIF frames: `AQC%y%j%H%M?_00005.801.gif` (`?` a flag letter), palette mode P.

Palette index i: 0, 1 and 251-254 are "no precipitation" (no echo), 2..250 are
dBZ = 0.5 * i - 35.75, 255 is nodata (outside radar coverage), as pysteps decodes product AQC.
The header's grid is checked against preprocess.MAX_GRID_PIXELS before any pixel is decoded.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipelines.radar.frame_format import FrameError, RadarFormat
from pipelines.radar.preprocess import open_image

CONVERSION = "palette index i: 0, 1, 251-254 -> no echo; 2..250 -> dBZ = 0.5*i - 35.75; 255 -> nodata"
NODATA_INDEX = 255


def _open_indices(path: Path, load: bool):
    with open_image(path) as im:
        if im.format != "GIF" or im.mode != "P":
            raise FrameError(f"expected a palette GIF, got {im.format} mode {im.mode}")
        return np.asarray(im) if load else (im.size[1], im.size[0])


def probe(path: Path) -> tuple[int, int]:
    return _open_indices(path, load=False)


def decode(path: Path, time_step_s: float) -> np.ndarray:
    index = _open_indices(path, load=True)
    dbz = 0.5 * index.astype(np.float32) - 35.75
    dbz[(index < 2) | (index > 250)] = -np.inf
    dbz[index == NODATA_INDEX] = np.nan
    return dbz


FORMAT = RadarFormat(
    name="mch",
    pattern=re.compile(r"AQC(?P<ts>\d{9})[A-Za-z]_\d{5}\.\d{3}\.gif"),
    time_format="%y%j%H%M",
    extensions=(".gif",),
    probe=probe,
    decode=decode,
    conversion=CONVERSION,
)
