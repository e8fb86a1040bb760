"""What every radar input format provides: a file-name pattern with the UTC time, a cheap
header probe and a decoder to reflectivity in dBZ."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import h5py


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


def hdf5_scalar(value):
    """An HDF5 attribute or scalar variable as a Python scalar: 1-element arrays unwrapped, bytes decoded
    (latin-1), NUL padding and blanks stripped; FrameError for anything with more than one value."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise FrameError(f"expected a single value, got shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("latin-1")
    if isinstance(value, str):
        return value.strip("\x00").strip()
    return value.item() if isinstance(value, np.generic) else value


def sniff_hdf5(path: Path, read_time: Callable[[h5py.File, str], datetime | None]) -> datetime | None:
    """Content sniffing shared by the HDF5-based formats: `read_time(file, conventions)` of an HDF5 file
    (its root `Conventions` attribute as text, "" if absent), None for anything unreadable or not HDF5."""
    import h5py  # deferred: h5py ~1.4 s to import; the module's other users skip it

    try:
        if not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as f:
            return read_time(f, str(hdf5_scalar(f.attrs.get("Conventions", b""))))
    except (OSError, ValueError, KeyError, TypeError):  # FrameError is a ValueError
        return None
