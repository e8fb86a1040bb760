"""What every radar input format provides: a file-name pattern with the UTC time, a cheap
header probe and a decoder to reflectivity in dBZ."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np


class FrameError(ValueError):
    """A frame file that cannot be used (unreadable, truncated, unexpected content); the reason is the message."""


@dataclass(frozen=True)
class RadarFormat:
    """One input format.

    `pattern` matches the whole file name and has a group `ts` that `time_format` parses (UTC).
    `probe(path) -> (height, width)` reads only the header; `decode(path, time_step_s)` returns
    dBZ float32 `[H, W]`, NaN = nodata, -inf = no echo (below any threshold). `time_step_s` is the
    frame interval, used by formats that store accumulations. `source_zr` ({a, b}) is the Z-R
    relation the decoder applies to rain amounts, None for formats that store reflectivity.
    `sniff(path) -> datetime | None`, for formats recognisable by content (self-describing HDF5),
    returns the frame's UTC time read from the file when the file is of this format, else None
    (never raises); it lets `--format auto` and listing accept files whose names do not parse, and
    its time takes precedence over the name's.
    """

    name: str
    pattern: re.Pattern
    time_format: str
    extensions: tuple[str, ...]
    probe: Callable[[Path], tuple[int, int]]
    decode: Callable[[Path, float], np.ndarray]
    conversion: str
    source_zr: dict | None = None
    sniff: Callable[[Path], datetime | None] | None = None

    def timestamp(self, filename: str) -> datetime | None:
        """UTC time from a file name, or None when the name is not of this format."""
        match = self.pattern.fullmatch(filename)
        if not match:
            return None
        try:
            return datetime.strptime(match["ts"], self.time_format).replace(tzinfo=timezone.utc)
        except ValueError:
            return None

    def claims(self, filename: str) -> bool:
        """True when the file has one of this format's extensions (its name may still not parse)."""
        return filename.lower().endswith(self.extensions)
