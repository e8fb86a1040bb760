"""Train/val/test planning over frame times: whole UTC days, or the paper's 40-frame blocks.

`days`: each calendar day (UTC) goes to one split, drawn from (seed, day) alone, so adding days
never moves the others (fractions hold on average), or as listed in a days file.
`paper-blocks` (Shi et al. 2015): each day is cut into non-overlapping blocks of 40 frame slots
anchored at midnight; per day the blocks are shuffled (seeded by (seed, day)) and dealt as
4 train, 1 val, 1 test, repeating when a day has more than 6 blocks.
`time`: chronological, for one short archive (a case study, the demo): the first
1 - val - test of the frames train, then val, then test. Not stable under `--incremental`
(new frames move the boundaries), so growing archives should use `days`.
Windows never cross a unit (day, block or time span) boundary nor a gap.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Callable, Sequence

from pipelines.radar.timeline import window_starts
from pipelines.manifest import SPLITS

SPLIT_MODES = ("days", "paper-blocks", "time")
BLOCK_FRAMES = 40
BLOCK_DEAL = ("train",) * 4 + ("val", "test")


@dataclass(frozen=True)
class Unit:
    """A day or block of one split: its frame times and the indices where its windows start."""

    id: str
    split: str
    times: tuple[datetime, ...]
    starts: tuple[int, ...]


def day_of(time: datetime) -> str:
    """The UTC calendar day, `YYYY-MM-DD`."""
    return time.strftime("%Y-%m-%d")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """ValueError naming the argument unless both are in [0, 1) and leave room for train."""
    for flag, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{flag} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"--val-fraction + --test-fraction must be < 1, got {val_fraction + test_fraction}")


def draw_day_split(day: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """The split of one day under `days`: test, val or train from a uniform draw seeded by (seed, day)."""
    u = random.Random(f"{seed}:{day}").random()
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def load_days_file(path: Path) -> dict[str, str]:
    """{day: split} from JSON {"train": ["2016-07-11", ...], "val": [...], "test": [...]}."""
    try:
        listed = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--days-file {path}: {exc}") from exc
    if not isinstance(listed, dict) or not set(listed) <= set(SPLITS):
        raise ValueError(f"--days-file {path}: expected an object with keys among {', '.join(SPLITS)}")
    days: dict[str, str] = {}
    for split, members in listed.items():
        for day in members:
            try:
                date.fromisoformat(day)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"--days-file {path}: {day!r} is not a YYYY-MM-DD day") from exc
            if day in days:
                raise ValueError(f"--days-file {path}: {day} is listed in both {days[day]} and {split}")
            days[day] = split
    return days


def block_splits(day: str, n_blocks: int, seed: int) -> list[str]:
    """Split of each block index of one day under `paper-blocks` (4 train, 1 val, 1 test per 6)."""
    order = list(range(n_blocks))
    random.Random(f"{seed}:{day}").shuffle(order)
    splits = [""] * n_blocks
    for rank, block in enumerate(order):
        splits[block] = BLOCK_DEAL[rank % len(BLOCK_DEAL)]
    return splits


@dataclass(frozen=True)
class SplitPlan:
    """How frames are split (`--split`, SPLIT_MODES): by seeded day draw, by paper block, or by
    time, with `val_fraction` and `test_fraction`; `days` ({day: split}) replaces the draw for
    `split="days"` (days it does not list are left out)."""

    split: str = "days"
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    days: dict[str, str] | None = None


def plan_units(times: Sequence[datetime], step: timedelta, length: int, stride: int,
               plan: SplitPlan = SplitPlan()) -> list[Unit]:
    """Group sorted frame times into units (days or blocks), give each its split (`plan`) and window starts.

    Windows hold `length` consecutive frames, every `stride` frames within each gap-free run of a
    unit. Units without windows are kept (they still record day membership).
    """
    split, seed, val_fraction, test_fraction, days = (plan.split, plan.seed, plan.val_fraction,
                                                      plan.test_fraction, plan.days)
    if split not in SPLIT_MODES:
        raise ValueError(f"--split must be one of {', '.join(SPLIT_MODES)}, got {split!r}")
    if days is not None and split != "days":
        raise ValueError("--days-file only applies to --split days")
    check_fractions(val_fraction, test_fraction)
    if split == "days":
        unit_of, split_of = _days_plan(seed, val_fraction, test_fraction, days)
    elif split == "time":
        unit_of, split_of = _time_plan(times, val_fraction, test_fraction)
    else:
        unit_of, split_of = _blocks_plan(step, seed)
    units = []
    for unit_id, group in groupby(times, key=unit_of):
        unit_times = tuple(group)
        unit_split = split_of(unit_id)
        if unit_split:
            units.append(Unit(unit_id, unit_split, unit_times, tuple(window_starts(unit_times, step, length, stride))))
    return units


def _days_plan(seed: int, val_fraction: float, test_fraction: float,
               days: dict[str, str] | None) -> tuple[Callable[[datetime], str], Callable[[str], str | None]]:
    if days is not None:
        return day_of, days.get
    return day_of, lambda day: draw_day_split(day, seed, val_fraction, test_fraction)


def _blocks_plan(step: timedelta, seed: int) -> tuple[Callable[[datetime], str], Callable[[str], str]]:
    block = step * BLOCK_FRAMES
    n_blocks = math.ceil(timedelta(days=1) / block)

    def unit_of(time: datetime) -> str:
        since_midnight = time - time.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"{day_of(time)}/b{since_midnight // block:02d}"

    def split_of(unit_id: str) -> str:
        day, index = unit_id.split("/b")
        return block_splits(day, n_blocks, seed)[int(index)]

    return unit_of, split_of


def _time_plan(times: Sequence[datetime], val_fraction: float,
               test_fraction: float) -> tuple[Callable[[datetime], str], Callable[[str], str]]:
    n_train = round(len(times) * (1.0 - val_fraction - test_fraction))
    n_val = round(len(times) * val_fraction)
    rank = {time: i for i, time in enumerate(times)}

    def unit_of(time: datetime) -> str:
        i = rank[time]
        return "train" if i < n_train else "val" if i < n_train + n_val else "test"

    return unit_of, lambda unit_id: unit_id
