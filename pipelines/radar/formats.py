"""The registry of radar input formats, format detection, and the listing/probing of frame files.

Listing walks a folder: files whose names parse as the chosen format become frames; files with a
radar extension (.png, .gif, .pgm[.gz], .h5, .hdf, .hdf5, .nc) whose names do not parse are rejected;
anything else (README, PROVENANCE.md, HKO-7 .mask files) is ignored. A second file with the same
timestamp is rejected as a duplicate. Formats with a content `sniff` (odim, bom: self-describing
HDF5) also take files of their extensions whose names do not parse, and take each frame's time from
its content when it is readable.
"""
from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np

from pipelines.radar import bom, fmi, hko, knmi, mch, odim
from pipelines.radar.archive import radar_member
from pipelines.radar.frame_format import FrameError, RadarFormat
from pipelines.radar.preprocess import LIBRARY_ERRORS
from pipelines.radar.pysteps_io import radar_format

PYSTEPS_PREFIX = "pysteps:"  # pySTEPS importers (pipelines.radar.pysteps_io), built on first use
FORMATS: dict[str, RadarFormat] = {f.name: f for f in (hko.FORMAT, mch.FORMAT, fmi.FORMAT, knmi.FORMAT,
                                                        odim.FORMAT, bom.FORMAT)}
_DECODE_ERRORS = (OSError, EOFError, ValueError, KeyError, zlib.error, *LIBRARY_ERRORS)


@dataclass(frozen=True)
class FrameFile:
    """One frame: `path` on disk, `name` relative to the source root (for reports), UTC `time`."""

    path: Path
    name: str
    time: datetime


def get_format(name: str) -> RadarFormat:
    """The format called `name` (hko, mch, fmi, knmi, odim, bom, or `pysteps:<importer>[:<fn_pattern>]`,
    see `pysteps_io`); ValueError naming --format otherwise."""
    if name.startswith(PYSTEPS_PREFIX):
        return radar_format(name)
    if name not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, {PYSTEPS_PREFIX}<importer> or auto, "
                         f"got {name!r}")
    return FORMATS[name]


def detect_format(files: Iterable[str | Path]) -> RadarFormat:
    """The one format whose pattern the file names match; when no name matches, the one whose `sniff`
    recognises the content of files (given as paths) with its extensions. ValueError when none or
    several formats are found."""
    files = list(files)
    found = {fmt.name for file in files for fmt in FORMATS.values() if fmt.timestamp(Path(file).name)}
    if not found:
        found = {fmt.name for file in files if isinstance(file, Path) for fmt in FORMATS.values()
                 if fmt.sniff and fmt.claims(file.name) and fmt.sniff(file)}
    if not found:
        by_content = " or ".join(f.name for f in FORMATS.values() if f.sniff)
        raise ValueError(f"--format auto: no file name matches any of {', '.join(FORMATS)} "
                         f"and no file's content is {by_content}")
    if len(found) > 1:
        raise ValueError(f"--format auto: mixed formats in the source ({', '.join(sorted(found))}); pass --format")
    return FORMATS[found.pop()]


def members_of(fmt: str) -> Callable[[str], bool]:
    """What a source of `fmt` needs from an archive or object-store folder: `archive.radar_member` (frames
    of the built-in formats, HKO-7 masks), and for a `pysteps:` format also files of its extensions."""
    if not fmt.startswith(PYSTEPS_PREFIX):
        return radar_member
    own = get_format(fmt)
    return lambda name: radar_member(name) or own.claims(PurePosixPath(name.replace("\\", "/")).name)


def check_has_frames(src: str | Path, root: Path, purpose: str, fmt: str = "auto") -> None:
    """ValueError naming --src when no file under `root` (`src`, or what it unpacked to) has a radar frame
    extension (of the built-in formats and `fmt`): an empty source, or one of other files only. `purpose`
    ends the message."""
    formats = [*FORMATS.values(), *([get_format(fmt)] if fmt.startswith(PYSTEPS_PREFIX) else [])]
    if not any(p.is_file() and any(f.claims(p.name) for f in formats) for p in root.rglob("*")):
        extensions = sorted({e for f in formats for e in f.extensions})
        raise ValueError(f"--src {src}: no radar frame ({', '.join(extensions)}) in it; {purpose}")


def resolve_format(name: str, root: Path) -> RadarFormat:
    """`get_format(name)`, or for "auto" the format detected from the files under `root` (names, then content)."""
    if name != "auto":
        return get_format(name)
    return detect_format(p for p in sorted(root.rglob("*")) if p.is_file())


def list_frames(root: Path, fmt: RadarFormat) -> tuple[list[FrameFile], list[dict]]:
    """Frames of `fmt` under `root`, sorted by time, and the rejected files as {file, reason}."""
    frames: dict[datetime, FrameFile] = {}
    rejected = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        time = fmt.timestamp(path.name)
        if fmt.sniff and (time is not None or fmt.claims(path.name)):
            # The content's time wins; an unreadable file keeps its name's time, so probing rejects it with a reason.
            time = fmt.sniff(path) or time
            if time is None:
                rejected.append({"file": name, "reason": f"name does not parse as {fmt.name} "
                                                          f"and the content is not {fmt.name}"})
                continue
        if time is None:
            if fmt.claims(path.name) or any(f.claims(path.name) for f in FORMATS.values()):
                rejected.append({"file": name, "reason": f"name does not parse as {fmt.name}"})
        elif time in frames:
            rejected.append({"file": name, "reason": f"duplicate timestamp of {frames[time].name}"})
        else:
            frames[time] = FrameFile(path, name, time)
    return sorted(frames.values(), key=lambda f: f.time), rejected


def probe_frames(frames: list[FrameFile],
                 fmt: RadarFormat) -> tuple[list[FrameFile], tuple[int, int] | None, list[dict]]:
    """Read each header: unreadable frames and frames off the majority grid are rejected.

    Returns (usable frames, the grid (height, width) or None when no frame is readable, rejected).
    """
    shapes, rejected = {}, []
    for frame in frames:
        try:
            shapes[frame] = fmt.probe(frame.path)
        except _DECODE_ERRORS as exc:
            rejected.append({"file": frame.name, "reason": f"unreadable {fmt.name} frame: {exc}"})
    if not shapes:
        return [], None, rejected
    grid = Counter(shapes.values()).most_common(1)[0][0]
    for frame, shape in shapes.items():
        if shape != grid:
            reason = f"grid {shape[0]}x{shape[1]} differs from {grid[0]}x{grid[1]}"
            rejected.append({"file": frame.name, "reason": reason})
    return [f for f in frames if shapes.get(f) == grid], grid, rejected


def read_dbz(fmt: RadarFormat, path: Path, time_step_s: float) -> np.ndarray:
    """Decode one frame to dBZ float32 `[H, W]` (NaN = nodata, -inf = no echo); FrameError if unusable."""
    try:
        return fmt.decode(path, time_step_s)
    except FrameError:
        raise
    except _DECODE_ERRORS as exc:
        raise FrameError(f"unreadable {fmt.name} frame: {exc}") from exc
