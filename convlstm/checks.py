"""Argument checks shared by the library: bad arguments raise ValueError naming the argument."""
from __future__ import annotations

import numpy as np


def positive_int(value: int, name: str) -> int:
    """`value` as an int if it is an integer >= 1 (bools refused), else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
