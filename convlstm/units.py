"""Radar units: HKO-7 pixel encoding, reflectivity (dBZ) and rain rate (mm/h).

The project's canonical radar representation is reflectivity in dBZ stored as HKO-7 pixels:
uint8 p with dBZ = p * 70 / 255 - 10 (so p = 0 is <= -10 dBZ, p = 255 is 60 dBZ). Rain rate
follows the Z-R relation Z = a * R**b with Z in mm^6/m^3 (dBZ = 10 log10 Z) and R in mm/h;
HKO-7 uses a = 58.53, b = 1.56 (the defaults here).
"""
from __future__ import annotations

import math

import numpy as np

HKO_ZR_A = 58.53
HKO_ZR_B = 1.56
DBZ_MIN = -10.0
DBZ_RANGE = 70.0
# HKO-7's evaluation thresholds (mm/h; an event is value >= threshold) and its balancing rule: a pixel
# weighs BALANCING_WEIGHTS[i] where i counts the BALANCING_THRESHOLDS_MMH at or below its rain rate.
HKO7_THRESHOLDS_MMH = (0.5, 2.0, 5.0, 10.0, 30.0)
BALANCING_THRESHOLDS_MMH = (2.0, 5.0, 10.0, 30.0)
BALANCING_WEIGHTS = (1.0, 2.0, 5.0, 10.0, 30.0)


def pixel_to_dbz(pixel):
    """HKO-7 pixel (uint8 or float in [0, 255]) -> dBZ."""
    return np.asarray(pixel, dtype=np.float32) * (DBZ_RANGE / 255.0) + DBZ_MIN


def dbz_to_pixel(dbz) -> np.ndarray:
    """dBZ -> HKO-7 uint8 pixel, rounded and clipped to [0, 255]; NaN becomes 0."""
    p = (np.nan_to_num(np.asarray(dbz, dtype=np.float32), nan=DBZ_MIN) - DBZ_MIN) * (255.0 / DBZ_RANGE)
    return np.clip(np.rint(p), 0, 255).astype(np.uint8)


def dbz_to_rainrate(dbz, a: float = HKO_ZR_A, b: float = HKO_ZR_B):
    """dBZ -> rain rate in mm/h via Z = a R^b."""
    z = np.power(10.0, np.asarray(dbz, dtype=np.float64) / 10.0)
    return np.power(z / a, 1.0 / b).astype(np.float32)


def rainrate_to_dbz(rate, a: float = HKO_ZR_A, b: float = HKO_ZR_B):
    """Rain rate in mm/h -> dBZ via Z = a R^b; zero rain maps to -inf (clip before encoding)."""
    r = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # 10 log10(a R^b) without the power: 2.7x faster
        return (10.0 * b * np.log10(r) + 10.0 * np.log10(a)).astype(np.float32)


def pixel_to_rainrate(pixel, a: float = HKO_ZR_A, b: float = HKO_ZR_B):
    """HKO-7 pixel -> rain rate in mm/h."""
    return dbz_to_rainrate(pixel_to_dbz(pixel), a, b)


def scaled_pixel_to_rainrate(scaled, a: float = HKO_ZR_A, b: float = HKO_ZR_B):
    """HKO-7 pixel scaled to [0, 1] (p / 255, the models' range) -> rain rate in mm/h."""
    return pixel_to_rainrate(np.asarray(scaled, dtype=np.float32) * 255.0, a, b)


def rainrate_to_scaled_pixel(rate, a: float = HKO_ZR_A, b: float = HKO_ZR_B):
    """Rain rate in mm/h -> HKO-7 pixel scaled to [0, 1], unrounded; rain below -10 dBZ (0 included) maps to 0."""
    scaled = (rainrate_to_dbz(np.maximum(rate, 0.0), a, b) - DBZ_MIN) / DBZ_RANGE
    return np.maximum(scaled, 0.0, dtype=np.float32)


def scaled_pixel_to_rainrate_torch(scaled: "torch.Tensor", a: float = HKO_ZR_A, b: float = HKO_ZR_B) -> "torch.Tensor":
    """`scaled_pixel_to_rainrate` on a tensor, differentiable: p in [0, 1] -> mm/h (p = 0 gives the
    rain rate of -10 dBZ, about 0.017 mm/h)."""
    dbz = scaled * DBZ_RANGE + DBZ_MIN
    return (10.0 ** (dbz / 10.0) / a) ** (1.0 / b)


def rainrate_to_scaled_pixel_torch(rate: "torch.Tensor", a: float = HKO_ZR_A, b: float = HKO_ZR_B) -> "torch.Tensor":
    """`rainrate_to_scaled_pixel` on a tensor, differentiable above -10 dBZ: mm/h -> p in [0, 1]
    (rates at or below -10 dBZ, 0 included, give 0; no upper clip)."""
    floor = (10.0 ** (DBZ_MIN / 10.0) / a) ** (1.0 / b)
    dbz = 10.0 * b * rate.clamp(min=floor).log10() + 10.0 * math.log10(a)
    return (dbz - DBZ_MIN) / DBZ_RANGE
