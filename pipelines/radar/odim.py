"""ODIM_H5 composites (the EUMETNET OPERA HDF5 model): `T_PAAH21_C_EUOC_YYYYMMDDhhmmss.hdf` (WMO file
names, as OPERA's), or any name ending in .h5/.hdf/.hdf5 recognised by content (`Conventions = ODIM_H5/...`).

Only composites (`what/object = COMP`) are read; polar volumes and other objects are refused. The
field is chosen by `quantity`, never by position (OPERA files carry a quality index, QIND, beside
it), preferring DBZH, TH (dBZ), then RATE (mm/h), then ACRR (mm over the product's accumulation
time: the field's start-end date/time, else the frame interval). value = gain * raw + offset; raw
`nodata` -> nodata, raw `undetect` -> no echo. `quantity`, `gain`, `offset`, `nodata`, `undetect`
and the start/end date/time are inherited: `datasetN/dataM/what`, else `datasetN/what`, else the
top-level `what`. Rain R [mm/h] becomes reflectivity by Marshall-Palmer Z = 200 R^1.6; R = 0 is no
echo, R < 0 nodata; non-finite values nodata (and implausible dBZ, see `preprocess.to_canonical`). The frame time is the top-level `what/date` + `what/time` (UTC, nominal time).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from convlstm.units import rainrate_to_dbz
from pipelines.radar.preprocess import check_grid
from pipelines.radar.frame_format import FrameError, RadarFormat, hdf5_scalar, sniff_hdf5

QUANTITIES = ("DBZH", "TH", "RATE", "ACRR")  # the usable fields, in order of preference
ZR_A, ZR_B = 200.0, 1.6
CONVERSION = ("ODIM_H5 composite, field chosen by quantity (DBZH, TH, RATE, ACRR): value = gain*raw + offset, "
              "raw nodata -> nodata, raw undetect -> no echo; DBZH/TH in dBZ as is; RATE R [mm/h]; "
              "ACRR mm -> R = mm * 3600 / accumulation s (start-end time, else time_step_s); "
              f"dBZ = 10 log10({ZR_A:g} R^{ZR_B:g}) (Marshall-Palmer); R = 0 -> no echo, R < 0 -> nodata")
_TIME_FORMAT = "%Y%m%d%H%M%S"


def _lookup(f: h5py.File, node: str, key: str):
    """`key` from the nearest `what` group from `node` (e.g. dataset1/data1) up to the root; None if absent."""
    parts = node.split("/") if node else []
    for depth in range(len(parts), -1, -1):
        what = "/".join([*parts[:depth], "what"])
        if what in f and key in f[what].attrs:
            return hdf5_scalar(f[what].attrs[key])
    return None


def _number(f: h5py.File, node: str, key: str, default: float | None) -> float | None:
    value = _lookup(f, node, key)
    return default if value is None else float(value)  # older writers store numbers as strings


def _numbered(group: h5py.Group, prefix: str) -> list[str]:
    return sorted((k for k in group if re.fullmatch(rf"{prefix}\d+", k)), key=lambda k: int(k[len(prefix):]))


def _fields(f: h5py.File) -> list[tuple[str, str]]:
    """(`datasetN/dataM`, quantity) of every data field in the file."""
    fields = []
    for dataset in _numbered(f, "dataset"):
        if isinstance(f[dataset], h5py.Group):
            for data in _numbered(f[dataset], "data"):
                node = f"{dataset}/{data}"
                fields.append((node, str(_lookup(f, node, "quantity") or "").upper()))
    return fields


def _field(f: h5py.File) -> tuple[str, str, h5py.Dataset]:
    """The composite's precipitation field: (node, quantity, its 2-D `data`); FrameError when there is none."""
    if "what" not in f or not isinstance(f["what"], h5py.Group):
        raise FrameError("not an ODIM_H5 file: no top-level what group")
    obj = str(_lookup(f, "", "object") or "")
    if obj != "COMP":
        raise FrameError(f"ODIM object {obj or '(none)'}: only composites (what/object = COMP) are supported")
    fields = _fields(f)
    usable = [(node, q) for node, q in fields if q in QUANTITIES]
    if not usable:
        found = ", ".join(sorted({q or "(none)" for _, q in fields})) or "no dataN fields"
        raise FrameError(f"no {'/'.join(QUANTITIES)} field in the composite (quantities: {found})")
    quantity = min((q for _, q in usable), key=QUANTITIES.index)
    nodes = [node for node, q in usable if q == quantity]
    if len(nodes) > 1:
        raise FrameError(f"{len(nodes)} {quantity} fields ({', '.join(nodes)}): cannot choose one")
    node = nodes[0]
    data = f.get(f"{node}/data")
    if not isinstance(data, h5py.Dataset) or data.ndim != 2 or data.dtype.kind not in "iuf":
        what = "missing" if data is None else f"{getattr(data, 'dtype', 'a group')} {getattr(data, 'shape', '')}"
        raise FrameError(f"{node}/data is {what}, expected a 2-D numeric array")
    check_grid(*data.shape)  # before any data is read
    return node, quantity, data


def _time(f: h5py.File, node: str, date_key: str, time_key: str) -> datetime | None:
    date, time = _lookup(f, node, date_key), _lookup(f, node, time_key)
    if date is None or time is None:
        return None
    try:
        return datetime.strptime(f"{date}{time}", _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise FrameError(f"{date_key}/{time_key} {date!r} {time!r} is not YYYYMMDD HHMMSS") from None


def _accumulation_s(f: h5py.File, node: str) -> float | None:
    """Seconds between the field's start and end date/time; None when they are not given."""
    start, end = _time(f, node, "startdate", "starttime"), _time(f, node, "enddate", "endtime")
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    if seconds <= 0:
        raise FrameError(f"{node}: accumulation ends {end:%Y-%m-%d %H:%M:%S}, not after its start")
    return seconds


def probe(path: Path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        return tuple(_field(f)[2].shape)


def decode(path: Path, time_step_s: float) -> np.ndarray:
    with h5py.File(path, "r") as f:
        node, quantity, data = _field(f)
        raw = data[...]
        gain, offset = _number(f, node, "gain", 1.0), _number(f, node, "offset", 0.0)
        nodata, undetect = _number(f, node, "nodata", None), _number(f, node, "undetect", None)
        seconds = (_accumulation_s(f, node) or time_step_s) if quantity == "ACRR" else None
    value = gain * raw.astype(np.float64) + offset
    if quantity in ("DBZH", "TH"):
        dbz = value.astype(np.float32)
    else:
        rate = value if quantity == "RATE" else value * (3600.0 / seconds)
        dbz = rainrate_to_dbz(np.where(rate < 0, np.nan, rate), ZR_A, ZR_B)
    dbz[~np.isfinite(value)] = np.nan  # a stored inf or NaN is no data (never no echo, never 60 dBZ)
    if undetect is not None:
        dbz[raw == undetect] = -np.inf
    if nodata is not None:
        dbz[raw == nodata] = np.nan
    return dbz


def sniff(path: Path) -> datetime | None:
    """The nominal UTC time of an ODIM_H5 file (any object; `decode` refuses non-composites), else None."""
    return sniff_hdf5(path, _sniffed_time)


def _sniffed_time(f: h5py.File, conventions: str) -> datetime | None:
    version = str(_lookup(f, "", "version") or "") if "what" in f else ""
    if not (conventions.startswith("ODIM_H5") or version.startswith("H5rad")):
        return None
    return _time(f, "", "date", "time")


FORMAT = RadarFormat(
    name="odim",
    pattern=re.compile(r"T_[A-Z]{4}\d{2}_C_[A-Z]{4}_(?P<ts>\d{14})(_[^/]*)?\.(hdf|h5|hdf5)"),
    time_format=_TIME_FORMAT,
    extensions=(".h5", ".hdf", ".hdf5"),
    probe=probe,
    decode=decode,
    conversion=CONVERSION,
    source_zr={"a": ZR_A, "b": ZR_B},
    sniff=sniff,
)
