"""Independent decoders for the radar tests, written from the samples' PROVENANCE.md formulas.

They share no code with pipelines.radar: PIL palette indices + a lookup table (MeteoSwiss), gzip
+ a hand-parsed PGM header (FMI), h5py + Marshall-Palmer (KNMI), numpy HKO-7 encoding and cv2
area resizing for the expected preprocessed frames.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import h5py
import numpy as np
from PIL import Image


def hko7_pixel(dbz: np.ndarray) -> np.ndarray:
    """Independent HKO-7 encoding: p = round((dBZ + 10) * 255 / 70) clipped; nodata (NaN) and no echo (-inf) -> 0."""
    finite = np.where(np.isfinite(dbz), dbz, -10.0)
    return np.clip(np.rint((finite + 10.0) * 255.0 / 70.0), 0, 255).astype(np.uint8)


def mch_reference(path: Path) -> np.ndarray:
    index = np.array(Image.open(path))
    lut = np.full(256, -np.inf, dtype=np.float32)
    lut[2:251] = 0.5 * np.arange(2, 251) - 35.75
    lut[255] = np.nan
    return lut[index]


def fmi_reference(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    tokens, pos = [], 0
    while len(tokens) < 4:  # magic, width, height, maxval; comments run to the end of the line
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    assert tokens[0] == b"P5" and tokens[3] == b"255"
    width, height = int(tokens[1]), int(tokens[2])
    pv = np.frombuffer(data[pos + 1:pos + 1 + width * height], dtype=np.uint8).reshape(height, width)
    return np.where(pv == 255, np.nan, 0.5 * pv.astype(np.float64) - 32.0)


def knmi_reference(path: Path, step_s: float = 300.0) -> np.ndarray:
    with h5py.File(path, "r") as f:
        pv = f["image1/image_data"][...]
    rate = 0.01 * pv.astype(np.float64) * 3600.0 / step_s
    with np.errstate(divide="ignore"):
        dbz = 10.0 * np.log10(200.0 * rate ** 1.6)
    return np.where(pv == 65535, np.nan, dbz)


def reference_frame(dbz: np.ndarray, crop: tuple[int, int] | None,
                    size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Expected (pixel uint8, valid bool) after centre crop and INTER_AREA resize; invalid pixels hold 0."""
    if crop:
        top, left = (dbz.shape[0] - crop[0]) // 2, (dbz.shape[1] - crop[1]) // 2
        dbz = dbz[top:top + crop[0], left:left + crop[1]]
    dsize = (size[1], size[0])
    pixel = cv2.resize(hko7_pixel(dbz), dsize, interpolation=cv2.INTER_AREA)
    valid = cv2.resize(np.isnan(dbz).astype(np.float32), dsize, interpolation=cv2.INTER_AREA) == 0
    return np.where(valid, pixel, 0), valid
