"""BoM Rainfields precipitation accumulations, NetCDF-4 read through h5py: `<radar>_YYYYMMDD_HHMMSS.prcp-c10.nc`
(the time is the end of the accumulation), or any .nc name recognised by content (a CF/NetCDF-4 file
with a 2-D `precipitation` variable and a `valid_time`).

`precipitation` PV (int16, units kg m-2 = mm): mm = scale_factor * PV + add_offset; PV = _FillValue
(-1) or a negative amount (PV -2 occurs beside fill pixels) -> nodata. The accumulation period is
`valid_time - start_time` (seconds since 1970-01-01 UTC), else the frame interval, so 5-, 6- and
10-minute products all work: R [mm/h] = mm * 3600 / period, then Marshall-Palmer Z = 200 R^1.6;
R = 0 is no echo; non-finite amounts are nodata (and implausible dBZ, see `preprocess.to_canonical`). The frame time is `valid_time`.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import h5py
import numpy as np

from convlstm.units import rainrate_to_dbz
from pipelines.radar.preprocess import check_grid
from pipelines.radar.frame_format import FrameError, RadarFormat, hdf5_scalar, sniff_hdf5

VARIABLE = "precipitation"
AMOUNT_UNITS = ("kg m-2", "mm")
ZR_A, ZR_B = 200.0, 1.6
CONVERSION = ("precipitation PV: mm = scale_factor*PV + add_offset, PV = _FillValue or mm < 0 -> nodata; "
              "R [mm/h] = mm * 3600 / (valid_time - start_time) s (else time_step_s); "
              f"dBZ = 10 log10({ZR_A:g} R^{ZR_B:g}) (Marshall-Palmer); R = 0 -> no echo")
_EPOCH_UNITS = re.compile(r"seconds since (\d{4}-\d{1,2}-\d{1,2})(?:[ T](\d{1,2}:\d{2}(?::\d{2})?))?"
                          r"\s*(?:UTC|Z|\+00:?00)?")


def _variable(f: h5py.File) -> h5py.Dataset:
    data = f.get(VARIABLE)
    if not isinstance(data, h5py.Dataset) or data.ndim != 2 or data.dtype.kind not in "iuf":
        what = "missing" if data is None else f"{getattr(data, 'dtype', 'a group')} {getattr(data, 'shape', '')}"
        raise FrameError(f"{VARIABLE} is {what}, expected a 2-D numeric variable")
    check_grid(*data.shape)  # before any data is read
    units = hdf5_scalar(data.attrs.get("units", b"mm"))
    if units not in AMOUNT_UNITS:
        raise FrameError(f"{VARIABLE} units {units!r}, expected an accumulation in {' or '.join(AMOUNT_UNITS)}")
    return data


def _time(f: h5py.File, name: str) -> datetime | None:
    """A time variable (seconds since an epoch, UTC) as an aware datetime; None when absent."""
    if name not in f:
        return None
    units = hdf5_scalar(f[name].attrs.get("units", b"seconds since 1970-01-01 00:00:00 UTC"))
    match = _EPOCH_UNITS.fullmatch(str(units))
    if not match:
        raise FrameError(f"{name} units {units!r}, expected seconds since a UTC epoch")
    try:
        epoch = datetime.fromisoformat(f"{match[1]}T{match[2] or '00:00'}").replace(tzinfo=timezone.utc)
        return epoch + timedelta(seconds=float(hdf5_scalar(f[name][()])))
    except (OverflowError, ValueError) as exc:
        raise FrameError(f"{name}: {exc}") from None


def probe(path: Path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        return tuple(_variable(f).shape)


def decode(path: Path, time_step_s: float) -> np.ndarray:
    with h5py.File(path, "r") as f:
        data = _variable(f)
        pv = data[...]
        scale = float(hdf5_scalar(data.attrs.get("scale_factor", 1.0)))
        offset = float(hdf5_scalar(data.attrs.get("add_offset", 0.0)))
        fill = hdf5_scalar(data.attrs["_FillValue"]) if "_FillValue" in data.attrs else None
        start, end = _time(f, "start_time"), _time(f, "valid_time")
    seconds = (end - start).total_seconds() if start and end else time_step_s
    if seconds <= 0:
        raise FrameError(f"accumulation period {seconds:g} s (valid_time - start_time) is not positive")
    with np.errstate(over="ignore", invalid="ignore"):  # an absurd scale overflows to inf: nodata below
        mm = scale * pv.astype(np.float64) + offset
    nodata = (mm < 0) | ~np.isfinite(mm) | (pv == fill if fill is not None else False)
    rate = np.where(nodata, np.nan, mm * (3600.0 / seconds))
    return rainrate_to_dbz(rate, ZR_A, ZR_B)


def sniff(path: Path) -> datetime | None:
    """`valid_time` (UTC) of a Rainfields-like NetCDF-4 file, else None."""
    return sniff_hdf5(path, _sniffed_time)


def _sniffed_time(f: h5py.File, conventions: str) -> datetime | None:
    netcdf = conventions.startswith("CF") or "_NCProperties" in f.attrs
    variable = f.get(VARIABLE)
    if not (netcdf and isinstance(variable, h5py.Dataset) and variable.ndim == 2):
        return None
    return _time(f, "valid_time")


FORMAT = RadarFormat(
    name="bom",
    pattern=re.compile(r"\d+_(?P<ts>\d{8}_\d{6})\.prcp-c\d+\.nc"),
    time_format="%Y%m%d_%H%M%S",
    extensions=(".nc",),
    probe=probe,
    decode=decode,
    conversion=CONVERSION,
    source_zr={"a": ZR_A, "b": ZR_B},
    sniff=sniff,
)
