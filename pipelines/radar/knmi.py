"""KNMI 5-minute precipitation accumulations: `RAD_NL25_RAP_5min_YYYYMMDDHHMM.h5` (KNMI HDF5 layout).

`image1/image_data` uint16 PV: accumulation in mm = 0.01 * PV, PV 65535 = nodata. The
accumulation becomes a rain rate R in mm/h by the frame interval (x12 for 5 minutes), then
reflectivity by Marshall-Palmer Z = 200 R^1.6 (the KNMI/pysteps convention); R = 0 is no echo.
The dataset's shape is checked against preprocess.MAX_GRID_PIXELS before it is read, and every
error h5py raises for a malformed file becomes a FrameError.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from convlstm.units import rainrate_to_dbz
from pipelines.radar.frame_format import FrameError, RadarFormat
from pipelines.radar.preprocess import check_grid

DATASET = "image1/image_data"
NODATA_VALUE = 65535
ZR_A, ZR_B = 200.0, 1.6
CONVERSION = (f"PV (uint16): mm per frame interval = 0.01*PV, PV {NODATA_VALUE} -> nodata; "
              f"R [mm/h] = mm * 3600 / time_step_s; dBZ = 10 log10({ZR_A:g} R^{ZR_B:g}) (Marshall-Palmer); "
              "R = 0 -> no echo")


@contextmanager
def _image_data(path: Path) -> Iterator[h5py.Dataset]:
    """The open `image1/image_data` dataset, 2-D uint16 within MAX_GRID_PIXELS; FrameError otherwise,
    also for h5py's own errors on a corrupt file (OSError, RuntimeError, KeyError, TypeError...)."""
    try:
        with h5py.File(path, "r") as f:
            if DATASET not in f or not isinstance(f[DATASET], h5py.Dataset):
                raise FrameError(f"no {DATASET} dataset in the file")
            data = f[DATASET]
            if data.ndim != 2 or data.dtype != np.uint16:
                raise FrameError(f"{DATASET} is {data.dtype} {data.shape}, expected 2-D uint16")
            check_grid(*data.shape)
            yield data
    except FrameError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise FrameError(f"corrupt HDF5: {type(exc).__name__}: {exc}") from exc


def probe(path: Path) -> tuple[int, int]:
    with _image_data(path) as data:
        return tuple(data.shape)


def decode(path: Path, time_step_s: float) -> np.ndarray:
    with _image_data(path) as data:
        pv = data[...]
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
