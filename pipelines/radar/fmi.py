"""FMI reflectivity composites: `YYYYMMDDHHMM_fmi...pgm[.gz]`, binary 8-bit PGM (P5) with metadata
comments in the header, gzipped or not (detected from the content, not the name).

dBZ = 0.5 * PV - 32; PV 255 (the maxval) is nodata.
"""
from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.radar.frame_format import FrameError, RadarFormat

CONVERSION = "PGM value PV: dBZ = 0.5*PV - 32; PV 255 -> nodata"
NODATA_VALUE = 255
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 1 << 16


def _read(path: Path, limit: int | None = None) -> bytes:
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        return f.read(limit) if limit else f.read()


def _open_pgm(data: bytes, load: bool):
    with Image.open(io.BytesIO(data)) as im:
        if im.format != "PPM" or im.mode != "L":
            raise FrameError(f"expected an 8-bit binary PGM, got {im.format} mode {im.mode}")
        return np.asarray(im) if load else (im.size[1], im.size[0])


def probe(path: Path) -> tuple[int, int]:
    return _open_pgm(_read(path, _HEADER_BYTES), load=False)


def decode(path: Path, time_step_s: float) -> np.ndarray:
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
