"""FMI reflectivity composites: `YYYYMMDDHHMM_fmi...pgm[.gz]`, binary 8-bit PGM (P5) with metadata
comments in the header, gzipped or not (detected from the content, not the name).

dBZ = 0.5 * PV - 32; PV 255 (the maxval) is nodata. The header's grid is checked against
preprocess.MAX_GRID_PIXELS before decoding, and at most _MAX_BYTES are ever read or inflated (a
gzip bomb is refused, not decompressed into memory).
"""
from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np

from pipelines.radar.frame_format import FrameError, RadarFormat
from pipelines.radar.preprocess import MAX_GRID_PIXELS, open_image

CONVERSION = "PGM value PV: dBZ = 0.5*PV - 32; PV 255 -> nodata"
NODATA_VALUE = 255
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 1 << 16
_MAX_BYTES = _HEADER_BYTES + MAX_GRID_PIXELS  # header + one 8-bit pixel per grid cell


def _read(path: Path, limit: int = _MAX_BYTES) -> bytes:
    """Up to `limit` bytes of the (decompressed) file; FrameError when a whole file holds more."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        data = f.read(limit + 1)
    if limit == _MAX_BYTES and len(data) > limit:
        raise FrameError(f"{'expands' if gzipped else 'is'} larger than {_MAX_BYTES} bytes, "
                         f"beyond any grid of {MAX_GRID_PIXELS} pixels")
    return data[:limit]


def _open_pgm(data: bytes, load: bool):
    with open_image(io.BytesIO(data)) as im:
        if im.format != "PPM" or im.mode != "L":
            raise FrameError(f"expected an 8-bit binary PGM, got {im.format} mode {im.mode}")
        return np.asarray(im) if load else (im.size[1], im.size[0])


def probe(path: Path) -> tuple[int, int]:
    return _open_pgm(_read(path, _HEADER_BYTES), load=False)


def decode(path: Path, time_step_s: float) -> np.ndarray:
    probe(path)  # the header's grid first: an oversized claim is refused before the pixels are inflated
    pv = _open_pgm(_read(path), load=True)
    dbz = 0.5 * pv.astype(np.float32) - 32.0
    dbz[pv == NODATA_VALUE] = np.nan
    return dbz


FORMAT = RadarFormat(
    name="fmi",
    pattern=re.compile(r"(?P<ts>\d{12})_fmi[^/]*\.pgm(\.gz)?"),
    time_format="%Y%m%d%H%M",
    extensions=(".pgm", ".pgm.gz"),
    probe=probe,
    decode=decode,
    conversion=CONVERSION,
)
