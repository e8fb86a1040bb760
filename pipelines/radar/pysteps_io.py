"""pySTEPS importers as radar input formats: `--format pysteps:<importer>[:<fn_pattern>]`.

Any importer `pysteps.io.get_method(<importer>, "importer")` knows (the built-in ones such as
`mrms_grib`, `odim_hdf5`, `fmi_pgm`, `dwd_radolan`, `saf_crri`, and the plugins pySTEPS discovers)
reads the frames, inside the decode tasks like every other format. The file name gives the frame's
UTC time: `fn_pattern` is a strftime pattern of the whole name (`%Y %y %m %d %j %H %M %S`; `?` and
`*` are wildcards as in `find_by_date`), by default the `fn_pattern` + `.` + `fn_ext` of the data
source in pySTEPS' configuration (`pysteps.rcparams.data_sources`) that uses this importer, whose
`importer_kwargs` are passed too (e.g. MeteoSwiss' product and unit).

Units follow the importer's metadata: `dBZ` as is; `mm/h`, `mm` (over `accutime` minutes) and their
dB / Box-Cox transforms become rain rates R [mm/h] (`pysteps.utils.to_rainrate`), then reflectivity by
Marshall-Palmer Z = 200 R^1.6 (pySTEPS' own default relation); R = 0 is no echo, NaN and R < 0 nodata
(MRMS marks missing data -3, -1 or -999; pySTEPS' importer masks only -3).

Caps: a file larger than MAX_FILE_BYTES is refused before the importer opens it; a GRIB2 file's
header (read with pygrib, no values) must claim at most MAX_SOURCE_PIXELS points, since the importer
holds the whole message in float64 before its own downsampling (`mrms_grib` averages 4 x 4 blocks by
default: 3500 x 7000 -> 875 x 1750); the decoded grid must pass `preprocess.check_grid`. The decode
task then area-resizes each frame as it is read (`latest.load_frames`), so it holds one full frame
at a time.

pySTEPS and pygrib are the optional extra `convlstm-pipeline[pysteps]`; without them any
`pysteps:` format fails with a one-line error naming the install command.
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from convlstm.units import rainrate_to_dbz
from pipelines.radar.frame_format import FrameError, RadarFormat
from pipelines.radar.preprocess import MAX_GRID_PIXELS, check_grid

PREFIX = "pysteps:"
INSTALL = "pip install 'convlstm-pipeline[pysteps]'"
ZR_A, ZR_B = 200.0, 1.6
MAX_FILE_BYTES = 1 << 30
MAX_SOURCE_PIXELS = 4 * MAX_GRID_PIXELS  # a GRIB message's points before the importer downsamples (8192^2)
_DIRECTIVES = {"Y": 4, "y": 2, "m": 2, "d": 2, "j": 3, "H": 2, "M": 2, "S": 2}
_GRIB_EXTENSIONS = (".grib", ".grib2", ".grb", ".grb2")
# What importers and pygrib raise for malformed files beyond formats' own list (eccodes: RuntimeError).
_READ_ERRORS = (RuntimeError, TypeError, IndexError, AttributeError, OSError, ValueError, KeyError, EOFError)
CONVERSION = ("pySTEPS importer {importer}: dBZ as is; mm/h, mm over accutime and their dB/Box-Cox transforms -> "
              f"R [mm/h] (pysteps.utils.to_rainrate), dBZ = 10 log10({ZR_A:g} R^{ZR_B:g}) (Marshall-Palmer); "
              "R = 0 -> no echo, NaN or R < 0 -> nodata")


class PystepsMissing(ValueError):
    """pySTEPS (or pygrib for GRIB2) is not installed; the message names the install command."""


def import_pysteps(what: str = "--format pysteps:...") -> Any:
    """The `pysteps` module (its configuration banner kept off stdout); PystepsMissing naming `what`
    and the extra when it is not installed."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import pysteps  # deferred: pysteps is an optional extra ([pysteps])
            # deferred: pysteps is an optional extra; importing pysteps.io registers its importers and plugins
            import pysteps.io  # noqa: F401
            import pysteps.utils  # noqa: F401  # deferred: pysteps is an optional extra ([pysteps])
    except ImportError as exc:
        raise PystepsMissing(f"{what} needs pySTEPS, which is not installed: {INSTALL}") from exc
    return pysteps


def is_pysteps(name: str) -> bool:
    return name.startswith(PREFIX)


def format_name(importer: str, fn_pattern: str | None = None) -> str:
    """`pysteps:<importer>`, or `pysteps:<importer>:<fn_pattern>` for a pattern of one's own."""
    return f"{PREFIX}{importer}" + (f":{fn_pattern}" if fn_pattern else "")


@dataclass(frozen=True)
class PystepsFormat(RadarFormat):
    """A RadarFormat reading with a pySTEPS importer; the time comes from `fn_pattern` (see module)."""

    importer: str = ""
    fn_pattern: str = ""
    kwargs: dict = field(default_factory=dict, hash=False, compare=False)

    def timestamp(self, filename: str) -> datetime | None:
        match = self.pattern.fullmatch(filename)
        if not match:
            return None
        fields = {k: v for k, v in match.groupdict().items()}
        directives = [k.split("_")[0][1:] for k in fields]
        try:
            return datetime.strptime("|".join(fields.values()), "|".join(f"%{d}" for d in directives)
                                     ).replace(tzinfo=timezone.utc)
        except ValueError:
            return None


def name_regex(fn_pattern: str) -> re.Pattern:
    """A regex matching the whole file name `fn_pattern` describes, one named group per directive;
    ValueError naming --fn-pattern for a directive other than %Y %y %m %d %j %H %M %S (or none)."""
    parts, count = [], 0
    tokens = re.split(r"(%.|\?|\*)", fn_pattern)
    for token in tokens:
        if token.startswith("%") and len(token) == 2:
            if token[1] not in _DIRECTIVES:
                raise ValueError(f"--fn-pattern {fn_pattern!r}: {token} is not one of "
                                 f"{' '.join('%' + d for d in _DIRECTIVES)}")
            parts.append(f"(?P<d{token[1]}_{count}>\\d{{{_DIRECTIVES[token[1]]}}})")
            count += 1
        elif token == "?":
            parts.append(".")
        elif token == "*":
            parts.append(".*?")
        else:
            parts.append(re.escape(token))
    if not count:
        raise ValueError(f"--fn-pattern {fn_pattern!r} holds no time directive (%Y%m%d%H%M...)")
    return re.compile("".join(parts))


def _data_source(pysteps, importer: str) -> dict:
    """The data source of pySTEPS' configuration that reads with `importer`, or {}."""
    sources = (pysteps.rcparams.get("data_sources") or {}) if pysteps.rcparams else {}
    return next((dict(s) for s in sources.values() if s.get("importer") == importer), {})


@lru_cache(maxsize=None)
def radar_format(name: str) -> PystepsFormat:
    """The format `pysteps:<importer>[:<fn_pattern>]`; ValueError naming --format or --fn-pattern
    (PystepsMissing without pySTEPS)."""
    importer, _, fn_pattern = name[len(PREFIX):].partition(":")
    pysteps = import_pysteps(f"--format {name}")
    from pysteps.io import interface  # deferred: pysteps is an optional extra ([pysteps])

    if importer not in interface._importer_methods:
        raise ValueError(f"--format {name}: pySTEPS has no importer {importer!r} "
                         f"(importers: {', '.join(sorted(interface._importer_methods))})")
    source = _data_source(pysteps, importer)
    if not fn_pattern:
        if not source.get("fn_pattern"):
            raise ValueError(f"--format {name}: pySTEPS' configuration documents no file-name pattern for "
                             f"{importer}; give one with --fn-pattern")
        fn_pattern = source["fn_pattern"] + (f".{source['fn_ext']}" if source.get("fn_ext") else "")
    suffix = Path(fn_pattern.replace("%", "")).suffix.lower()
    grib = suffix in _GRIB_EXTENSIONS or importer == "mrms_grib"
    if grib:
        _import_pygrib()
    extensions = tuple(sorted({suffix, *(_GRIB_EXTENSIONS if grib else ())} - {""}))
    kwargs = dict(source.get("importer_kwargs") or {})
    return PystepsFormat(
        name=name, pattern=name_regex(fn_pattern), time_format="", extensions=extensions,
        probe=lambda path: _probe(importer, kwargs, path), decode=lambda path, step: _decode(importer, kwargs, path),
        conversion=CONVERSION.format(importer=importer), source_zr={"a": ZR_A, "b": ZR_B},
        importer=importer, fn_pattern=fn_pattern, kwargs=kwargs)


def _import_pygrib():
    try:
        import pygrib  # deferred: pygrib is an optional extra ([pysteps])
    except ImportError as exc:
        raise PystepsMissing(f"GRIB2 frames need pygrib, which is not installed: {INSTALL}") from exc
    return pygrib


def _check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FrameError(f"{size} bytes, more than MAX_FILE_BYTES ({MAX_FILE_BYTES}) a pySTEPS frame may hold")


def _grib_points(path: Path) -> tuple[int, int] | None:
    """(Nj, Ni) of a GRIB file's first message, from its header only; None if it is not GRIB."""
    if not path.name.lower().endswith(_GRIB_EXTENSIONS):
        return None
    pygrib = _import_pygrib()
    try:
        with pygrib.open(str(path)) as grib:
            message = grib.message(1)
            points = int(message["Nj"]), int(message["Ni"])
    except _READ_ERRORS as exc:
        raise FrameError(f"unreadable GRIB header: {exc}") from exc
    if points[0] * points[1] > MAX_SOURCE_PIXELS:
        raise FrameError(f"header claims a {points[1]}x{points[0]} grid; pySTEPS frames may hold at most "
                         f"{MAX_SOURCE_PIXELS} points (MAX_SOURCE_PIXELS)")
    return points


def _probe(importer: str, kwargs: dict, path: Path) -> tuple[int, int]:
    """The decoded grid: from the GRIB header for `mrms_grib` (its window_size, default 4, without an
    extent), else by decoding the frame."""
    _check_size(path)
    points = _grib_points(path)
    window = kwargs.get("window_size", 4)
    if points and importer == "mrms_grib" and isinstance(window, int) and kwargs.get("extent") is None:
        return check_grid(points[0] // window, points[1] // window)
    return _decode(importer, kwargs, path).shape


def _read(importer: str, kwargs: dict, path: Path) -> tuple[np.ndarray, dict]:
    from pysteps.io import get_method  # deferred: pysteps is an optional extra ([pysteps])

    _check_size(path)
    _grib_points(path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            precip, _, metadata = get_method(importer, "importer")(str(path), **kwargs)
    except FrameError:
        raise
    except _READ_ERRORS as exc:
        raise FrameError(f"{importer} cannot read it: {type(exc).__name__}: {exc}") from exc
    precip = np.asarray(precip)
    if precip.ndim != 2:
        raise FrameError(f"{importer} returned an array of shape {precip.shape}, expected one 2-D field")
    check_grid(*precip.shape)
    return precip, metadata


def to_dbz(precip: np.ndarray, metadata: dict) -> np.ndarray:
    """An importer's field and metadata -> dBZ float32 `[H, W]` (NaN = nodata, -inf = no echo)."""
    from pysteps.utils import to_rainrate  # deferred: pysteps is an optional extra ([pysteps])

    unit, transform = metadata.get("unit"), metadata.get("transform")
    precip = np.asarray(precip, dtype=np.float64)
    if unit == "dBZ" and transform is None:
        return precip.astype(np.float32)
    if unit not in ("mm/h", "mm", "dBZ"):
        raise FrameError(f"unit {unit!r} in the importer's metadata; expected mm/h, mm or dBZ")
    if unit == "mm" and not metadata.get("accutime"):
        raise FrameError("unit mm without an accumulation time (metadata accutime)")
    rate, _ = to_rainrate(precip, {**metadata, "zr_a": ZR_A, "zr_b": ZR_B})
    return rain_to_dbz(rate)


def rain_to_dbz(rate: np.ndarray, a: float = ZR_A, b: float = ZR_B) -> np.ndarray:
    """Rain rates [mm/h] -> dBZ float32 by Z = a R^b: 0 -> -inf (no echo), NaN and R < 0 -> NaN (nodata)."""
    return rainrate_to_dbz(np.where(rate < 0, np.nan, rate), a, b)


def _decode(importer: str, kwargs: dict, path: Path) -> np.ndarray:
    precip, metadata = _read(importer, kwargs, path)
    return to_dbz(precip, metadata)
