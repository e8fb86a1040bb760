"""What a radar dataset has seen, by content: the frame times listed under `--src` and the frames of
each unit (day, block or time span), kept in the manifest's `seen` (not fingerprinted: frames that add
no window do not change the data).

`seen = {"frames": RUNS, "units": {unit id: RUNS}}` where RUNS = [[first frame time (ISO UTC), count],
...] are runs of frames `time_step_s` apart. New inputs are listed frames whose times are not in
`frames`; a unit must be decoded again when its frames differ from those it was built from (a day
seen in part and now complete, or, under the chronological `time` split, every span once new frames
move its boundaries). A manifest without `seen` (built before it existed) counts the frames of the
days it holds or rejected as seen (`days`, `paper-blocks`) and rebuilds every unit once.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from pipelines.manifest import Manifest
from pipelines.radar.days import Unit, day_of
from pipelines.radar.timeline import contiguous_runs, iso


def runs(times: Sequence[datetime], step: timedelta) -> list[list]:
    """Sorted times as [[first ISO time, count], ...] runs `step` apart."""
    return [[iso(times[first]), size] for first, size in contiguous_runs(times, step)]


def expand(encoded: Iterable[list], step: timedelta) -> list[datetime]:
    """`runs` read back."""
    return [_parse(first) + k * step for first, size in encoded for k in range(size)]


def record(listed: Sequence[datetime], units: Sequence[Unit], step: timedelta) -> dict:
    """The manifest's `seen`: every listed frame time and each unit's frames."""
    return {"frames": runs(sorted(listed), step), "units": {u.id: runs(u.times, step) for u in units}}


def new_frames(manifest: Manifest, listed: Sequence[datetime]) -> list[datetime]:
    """The listed times that the dataset has not seen, sorted."""
    return sorted(set(listed) - _seen_times(manifest, listed))


def changed_units(manifest: Manifest, units: Sequence[Unit]) -> set[str]:
    """Ids of the units the dataset holds whose frames differ from those it was built from."""
    step = timedelta(seconds=manifest.time_step_s)
    built = (manifest.seen or {}).get("units")
    held = {u.id for u in units if u.id in manifest.sources}
    if built is None:
        return held
    return {u for u in held if built.get(u) != runs(next(x.times for x in units if x.id == u), step)}


def _seen_times(manifest: Manifest, listed: Sequence[datetime]) -> set[datetime]:
    if manifest.seen is not None:
        return set(expand(manifest.seen["frames"], timedelta(seconds=manifest.time_step_s)))
    names = [*manifest.sources, *(r.source for r in manifest.rejected if r.source)]
    days = {name.split("/")[0] for name in names}
    return {t for t in listed if day_of(t) in days}


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
