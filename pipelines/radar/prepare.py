"""`prepare radar`: a folder or archive of radar frames -> published window shards (task "radar").

The driver lists and probes the frames (bad names, unreadable headers and off-grid frames are
rejected up front and become gaps), infers the time step, plans days or paper blocks and their
windows from the timestamps alone, and hands one `Source` per unit with windows to the generic
driver. Each decode task decodes the frames of its unit once and cuts its windows; a frame that
passes the header probe but fails to decode there is a gap like a missing file: it is dropped
(listed in `rejected` and in `gaps`) and the unit keeps the windows of the gap-free runs around it,
cut every `stride` frames from the start of each run as `plan_units` does.

Storage: by default the runs layout (`pipelines.runs`): each unit's frames once, with its window
starts, and windows cut when read; `layout="windows"` stores every window whole as before (a frame
up to in_len + out_len times).

Object-store sources (`s3://bucket/radar/` folders, `.tar`/`.zip` objects): the driver streams the
archive through the capped unpacking (or downloads the folder's frames) into a local temporary folder
to list and probe them. The decode tasks, on any node, read the frames from shared storage: a
folder's original objects, or, for an archive with an object-store `out`, its unpacked frames uploaded
once to `<out>.src-<id>` (removed when the run ends). Each task downloads its unit's frames to a local
temporary folder, decodes them and deletes them.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from convlstm.units import HKO_ZR_A, HKO_ZR_B
from pipelines import cluster, storage
from pipelines.driver import DatasetSpec, Publish, run_prepare
from pipelines.sources import Dropped, Source, build_options
from pipelines.manifest import Manifest, load_manifest, manifest_path
from pipelines.radar.archive import check_limit, source_folder
from pipelines.radar import seen
from pipelines.radar.days import SplitPlan, Unit, day_of, load_days_file, plan_units
from pipelines.radar.formats import (FrameFile, check_has_frames, get_format, list_frames, members_of, probe_frames,
                                     resolve_format)
from pipelines.radar.frame_format import RadarFormat
from pipelines.radar.preprocess import check_crop
from pipelines.radar.latest import load_frames
from pipelines.radar.timeline import find_gaps, infer_time_step, iso, window_starts
from pipelines.runs import Run

TASK = "radar"
FRAMES_ENCODING = "hko7-pixel: dBZ = p*70/255 - 10"
MASK_ENCODING = "1 = valid, 0 = nodata; after resizing valid only where every covered source pixel is valid"


@dataclass(frozen=True)
class RadarOptions:
    """What `prepare radar` builds: window lengths, geometry (H, W) and the split protocol."""

    in_len: int = 5
    out_len: int = 15
    stride: int = 1
    size: tuple[int, int] = (100, 100)
    crop: tuple[int, int] | None = None
    split: str = "days"
    days_file: Path | None = None
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self):
        """ValueError naming the flag for window lengths or a stride below 1."""
        for flag, value in (("--in-len", self.in_len), ("--out-len", self.out_len), ("--stride", self.stride)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")

    def check(self) -> None:
        """Kept for callers that validate explicitly; construction already validates."""
        self.__post_init__()

    def to_params(self, fmt: str, days: dict[str, str] | None) -> dict:
        """Manifest params: these options, the input format and the day assignment of a days file."""
        return {
            "format": fmt, "in_len": self.in_len, "out_len": self.out_len, "stride": self.stride,
            "size": list(self.size), "crop": list(self.crop) if self.crop else None,
            "split": self.split, "seed": self.seed,
            "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
            "days": dict(sorted(days.items())) if days is not None else None,
        }

    @classmethod
    def from_params(cls, params: dict, **overrides) -> "RadarOptions":
        """`to_params` read back, `overrides` on top (a days file must come back as `days_file`)."""
        if params.get("days") and not overrides.get("days_file"):
            raise ValueError("prepare.days_file: the dataset's days come from a days file; give its path")
        values = {"in_len": params["in_len"], "out_len": params["out_len"], "stride": params["stride"],
                  "size": tuple(params["size"]), "crop": tuple(params["crop"]) if params["crop"] else None,
                  "split": params["split"], "seed": params["seed"], "val_fraction": params["val_fraction"],
                  "test_fraction": params["test_fraction"]}
        if overrides.get("days_file"):
            overrides = {**overrides, "days_file": Path(overrides["days_file"])}
        return build_options(cls, values, overrides)

    @property
    def length(self) -> int:
        return self.in_len + self.out_len


def schema(options: RadarOptions) -> dict:
    """Window columns: frames/mask uint8 `[T, 1, H, W]`, source (day or block id), start (UTC ISO)."""
    shape = [options.length, 1, *options.size]
    return {
        "frames": {"shape": shape, "dtype": "uint8", "unit": "dBZ as HKO-7 pixel", "encoding": FRAMES_ENCODING},
        "mask": {"shape": shape, "dtype": "uint8", "unit": "validity", "encoding": MASK_ENCODING},
        "source": {"shape": [], "dtype": "str", "unit": "day YYYY-MM-DD or block YYYY-MM-DD/bNN"},
        "start": {"shape": [], "dtype": "str", "unit": "UTC time of the first frame, ISO 8601"},
    }


def prepare_radar(src: Path, out: str, fmt: str = "auto", options: RadarOptions = RadarOptions(), *,
                  publish: Publish = Publish(), max_unpacked_mb: float | None = None,
                  require_splits: Sequence[str] = (), layout: str = "runs") -> Manifest:
    """Build radar window shards at `out` from the frames in `src` (folder or .tar/.zip); returns the manifest.

    An archive `src` unpacks (its radar frames only) beside `out`, to at most `max_unpacked_mb` MB
    (default archive.DEFAULT_MAX_UNPACKED_MB; see pipelines.radar.archive for the bomb checks).

    Raises ValueError / FileNotFoundError (naming the flag) before writing anything for bad
    arguments or a source without usable frames; `publish.strict` makes any rejected input fail the run
    (pipelines.driver.RejectedSourcesError) with nothing published. A split of `require_splits` that
    the plan leaves without windows is a ValueError naming `--allow-empty-split`, before any decoding.
    `layout`: "runs" (each frame stored once) or "windows" (each window whole, the layout before runs).
    """
    options.check()
    if fmt != "auto":
        get_format(fmt)  # fail on a bad --format before unpacking anything
    days = load_days_file(options.days_file) if options.days_file else None
    if max_unpacked_mb is not None:
        check_limit(max_unpacked_mb)
    src = storage.as_uri(src)
    remote_src = storage.is_remote(src)
    # Multi-node: the shards and a local folder --src (read by the decode tasks) must be shared;
    # an archive --src is only read here, by the driver.
    local_folder = None if remote_src or not Path(src).is_dir() else src
    cluster.check_paths({"--out": str(out), "--src": local_folder}, address=publish.address)
    with source_folder(src, _unpack_dir(out), keep=members_of(fmt), max_mb=max_unpacked_mb) as root:
        check_has_frames(src, root, "nothing to prepare", fmt)
        radar = resolve_format(fmt, root)
        frames, rejected = list_frames(root, radar)
        listed = [f.time for f in frames]
        frames, grid, bad = probe_frames(frames, radar)
        rejected += bad
        if len(frames) < 2:
            raise ValueError(f"--src {src}: {len(frames)} usable {radar.name} frame(s), need at least 2")
        check_crop(options.crop, grid)
        times = [f.time for f in frames]
        step = infer_time_step(times)
        units = plan_units(times, step, options.length, options.stride,
                           SplitPlan(options.split, options.seed, options.val_fraction, options.test_fraction, days))
        _check_splits(units, require_splits, src)
        frame_at = {f.time: f for f in frames}
        sources = [_source(unit, [frame_at[t] for t in unit.times], radar, step, grid, options)
                   for unit in units if unit.starts]
        if not sources:
            raise ValueError(f"--src {src}: no gap-free run of {options.length} frames (--in-len + --out-len) "
                             f"within one {'day' if options.split == 'days' else 'block'}")
        time_of = {f.name: f.time for f in frames}
        previous = _previous(out) if publish.incremental else None
        redo = seen.changed_units(previous, units) if previous else set()

        def extra(rejected: list[dict]) -> dict:
            """Frames dropped while decoding (this run or, incrementally, an earlier one) are gaps too."""
            dropped = {time_of[r["file"]] for r in rejected if r["file"] in time_of}
            return {**_extra(radar, step, grid, options, find_gaps([t for t in times if t not in dropped], step)),
                    "seen": seen.record(listed, units, step)}

        with _task_root(src, root, out) as task_root:
            sources = [replace(s, paths=[storage.join(task_root, name) for name in s.meta["names"]]) for s in sources]
            spec = DatasetSpec(task=TASK, params=options.to_params(radar.name, days), schema=schema(options),
                               layout=layout, extra=extra)
            return run_prepare(spec, sources, unit_runs if layout == "runs" else unit_windows, out,
                               rejected=rejected, protect=[str(src)], redo=redo, publish=publish)


def new_days(src: str, manifest: Manifest, fmt: str | None = None) -> list[str]:
    """UTC days (`YYYY-MM-DD`) of the frames under `src` (a folder or an archive) that the dataset at
    `manifest` has not seen (pipelines.radar.seen): what a scheduled retrain would add."""
    with source_folder(src) as root:
        frames, _ = list_frames(root, resolve_format(fmt or manifest.params["format"], root))
    return sorted({day_of(t) for t in seen.new_frames(manifest, [f.time for f in frames])})


def _check_splits(units: list[Unit], required: Sequence[str], src: str) -> None:
    """ValueError when a required split gets no window from the plan (e.g. every day drawn val/test)."""
    planned = {u.split for u in units if u.starts}
    empty = [split for split in required if split not in planned]
    if empty:
        raise ValueError(f"--src {src}: no window falls in the {', '.join(empty)} split ({len(units)} day(s)/block(s), "
                         f"windows in: {', '.join(sorted(planned)) or 'none'}); nothing published "
                         "(--allow-empty-split publishes it anyway)")


def _previous(out: str) -> Manifest | None:
    """The manifest of the dataset an incremental run extends, if one is published at `out`."""
    return load_manifest(out) if storage.exists(manifest_path(out)) else None


def unit_runs(source: Source) -> Iterator[Run | Dropped]:
    """Decode task (runs layout): decode each frame of a day/block once and yield them as one Run (the
    frames that decoded, with their times and window starts), and a `Dropped` for each frame that
    cannot be decoded (a gap: no window spans it)."""
    pixels, valid, kept, starts, dropped = _decoded_unit(source)
    yield from dropped
    times = source.meta["times"]
    yield Run({"frames": pixels[kept, None], "mask": valid[kept, None].astype(np.uint8),
               "source": np.full(len(kept), source.name, dtype=object),
               "start": np.array([times[i] for i in kept], dtype=object)},
              np.searchsorted(kept, starts).tolist())


def _decoded_unit(source: Source) -> tuple[np.ndarray, np.ndarray, list[int], list[int], list[Dropped]]:
    """(pixels uint8 `[n, H, W]`, valid bool `[n, H, W]`, indices of the frames that decoded, window
    starts (frame indices), a Dropped for each frame that did not) of one day/block."""
    meta = source.meta
    radar = get_format(meta["format"])
    with storage.local_copies(source.paths, prefix="convlstm-radar-") as local:  # object store: fetch the unit
        frames = [FrameFile(Path(path), name, datetime.fromisoformat(time))
                  for path, name, time in zip(local, meta["names"], meta["times"])]
        pixels, valid, errors = load_frames(radar, frames, meta["time_step_s"], tuple(meta["grid"]),
                                            tuple(meta["crop"]) if meta["crop"] else None, tuple(meta["size"]))
    kept = [i for i in range(len(frames)) if i not in errors]
    starts = meta["starts"]
    if errors:
        step = timedelta(seconds=meta["time_step_s"])
        starts = [kept[k] for k in window_starts([frames[i].time for i in kept], step, meta["length"], meta["stride"])]
    dropped = [Dropped(frames[i].name, why) for i, why in sorted(errors.items())]
    return pixels, valid, kept, starts, dropped


def unit_windows(source: Source) -> Iterator[dict | Dropped]:
    """Decode task (windows layout): decode each frame of a day/block once, yield its windows (see
    `schema`), and a `Dropped` for each frame that cannot be decoded (a gap: no window spans it)."""
    pixels, valid, _, starts, dropped = _decoded_unit(source)
    yield from dropped
    length = source.meta["length"]
    for start in starts:
        yield {"frames": pixels[start:start + length, None],
               "mask": valid[start:start + length, None].astype(np.uint8),
               "source": source.name,
               "start": source.meta["times"][start]}


def _unpack_dir(out: str) -> Path | None:
    """Archives unpack beside a local `out` (so cluster workers on shared storage see them), else in /tmp."""
    if storage.is_remote(out):
        return None
    parent = Path(out).expanduser().resolve().parent
    return parent if parent.is_dir() else None


@contextmanager
def _task_root(src: str, root: Path, out: str) -> Iterator[str]:
    """Where the decode tasks read the frames listed under the driver's local `root`: the object-store
    folder `src` itself; `root` when it is the local folder `src` or an archive unpacked beside a local
    `out`; for an archive and an object-store `out`, the unpacked frames uploaded to `<out>.src-<id>`
    (any node reads them there), removed on exit."""
    if storage.is_remote(src) and storage.is_dir(src):
        yield src
        return
    if not storage.is_remote(out) or (not storage.is_remote(src) and Path(src).is_dir()):
        yield str(root)
        return
    staged = storage.sibling(storage.as_uri(out), f".src-{uuid.uuid4().hex[:12]}")
    try:
        storage.upload(root, staged)
        yield staged
    finally:
        storage.remove(staged)


def _source(unit: Unit, frames: list[FrameFile], radar: RadarFormat, step: timedelta,
            grid: tuple[int, int], options: RadarOptions) -> Source:
    return Source(
        name=unit.id, paths=[str(f.path) for f in frames], split=unit.split,
        meta={"format": radar.name, "names": [f.name for f in frames],
              "times": [iso(t) for t in unit.times], "starts": list(unit.starts),
              "length": options.length, "stride": options.stride, "time_step_s": step.total_seconds(),
              "grid": list(grid),
              "crop": list(options.crop) if options.crop else None, "size": list(options.size)})


def _extra(radar: RadarFormat, step: timedelta, grid: tuple[int, int], options: RadarOptions,
           gaps: list[dict]) -> dict:
    return {
        "time_step_s": step.total_seconds(),
        "grid": {"height": options.size[0], "width": options.size[1], "source_height": grid[0],
                 "source_width": grid[1], "crop": list(options.crop) if options.crop else None},
        "encoding": {"frames": FRAMES_ENCODING, "mask": MASK_ENCODING, "zr": {"a": HKO_ZR_A, "b": HKO_ZR_B},
                     "source_format": radar.name, "source_conversion": radar.conversion,
                     "source_zr": radar.source_zr},
        "gaps": gaps,
    }
