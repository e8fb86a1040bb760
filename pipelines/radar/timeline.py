"""Frame times: the time step, contiguous runs, gaps, and window starts within runs.

All times are timezone-aware UTC datetimes, sorted and unique.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Sequence


def iso(time: datetime) -> str:
    """UTC time as `YYYY-MM-DDTHH:MM:SSZ`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ")


def infer_time_step(times: Sequence[datetime]) -> timedelta:
    """The most common difference between consecutive times (the smallest on a tie)."""
    if len(times) < 2:
        raise ValueError(f"need at least 2 frames to infer the time step, got {len(times)}")
    diffs = Counter(b - a for a, b in zip(times, times[1:]))
    top = max(diffs.values())
    return min(d for d, n in diffs.items() if n == top)


def contiguous_runs(times: Sequence[datetime], step: timedelta) -> list[tuple[int, int]]:
    """Maximal runs of frames `step` apart, as (first index, length)."""
    runs, first = [], 0
    for i in range(1, len(times) + 1):
        if i == len(times) or times[i] - times[i - 1] != step:
            runs.append((first, i - first))
            first = i
    return runs


def find_gaps(times: Sequence[datetime], step: timedelta) -> list[dict]:
    """Breaks in the sequence: {after, before, missing} where `missing` counts absent frames
    (0 when the interval is not a multiple of the step)."""
    gaps = []
    for a, b in zip(times, times[1:]):
        if b - a != step:
            whole = (b - a) % step == timedelta(0)
            gaps.append({"after": iso(a), "before": iso(b), "missing": (b - a) // step - 1 if whole else 0})
    return gaps


def window_starts(times: Sequence[datetime], step: timedelta, length: int, stride: int) -> list[int]:
    """Indices where windows of `length` consecutive frames start, every `stride` frames from the
    start of each contiguous run; no window spans a gap."""
    return [first + k
            for first, size in contiguous_runs(times, step)
            for k in range(0, size - length + 1, stride)]
