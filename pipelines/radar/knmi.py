"""KNMI 5-minute precipitation accumulations: `RAD_NL25_RAP_5min_YYYYMMDDHHMM.h5` (KNMI HDF5 layout).

`image1/image_data` uint16 PV: accumulation in mm = 0.01 * PV, PV 65535 = nodata. The
accumulation becomes a rain rate R in mm/h by the frame interval (x12 for 5 minutes), then
reflectivity by Marshall-Palmer Z = 200 R^1.6 (the KNMI/pysteps convention); R = 0 is no echo.
"""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from convlstm.units import rainrate_to_dbz
from pipelines.radar.frame_format import FrameError, RadarFormat

DATASET = "image1/image_data"
NODATA_VALUE = 65535
ZR_A, ZR_B = 200.0, 1.6
CONVERSION = (f"PV (uint16): mm per frame interval = 0.01*PV, PV {NODATA_VALUE} -> nodata; "
              f"R [mm/h] = mm * 3600 / time_step_s; dBZ = 10 log10({ZR_A:g} R^{ZR_B:g}) (Marshall-Palmer); "
              "R = 0 -> no echo")


def _dataset(f: h5py.File) -> h5py.Dataset:
    if DATASET not in f:
        raise FrameError(f"no {DATASET} in the file")
    data = f[DATASET]
    if data.ndim != 2 or data.dtype != np.uint16:
        raise FrameError(f"{DATASET} is {data.dtype} {data.shape}, expected 2-D uint16")
    return data


def probe(path: Path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        return tuple(_dataset(f).shape)


def decode(path: Path, time_step_s: float) -> np.ndarray:
    with h5py.File(path, "r") as f:
        pv = _dataset(f)[...]
    rate = np.where(pv == NODATA_VALUE, np.nan, 0.01 * pv.astype(np.float64) * (3600.0 / time_step_s))
    return rainrate_to_dbz(rate, ZR_A, ZR_B)


FORMAT = RadarFormat(
    name="knmi",
    pattern=re.compile(r"RAD_NL25_RAP_5min_(?P<ts>\d{12})\.h5"),
    time_format="%Y%m%d%H%M",
    extensions=(".h5",),
    probe=probe,
    decode=decode,
    conversion=CONVERSION,
    source_zr={"a": ZR_A, "b": ZR_B},
)
