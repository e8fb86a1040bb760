"""The generic prepare driver: sources -> Ray Data decode tasks -> Parquet shards -> manifest, published atomically.

Each `Source` is one unit of decoding work. `windows_fn(source)` runs inside a Ray Data task and
yields one dict per window with the schema's columns. A source's windows are collected before they
are written, so a source that fails halfway (truncated video) contributes nothing: any exception
rejects just that source (listed in the manifest's `rejected` with its reason) and the job goes on.
A source made of many files (a radar day) can instead drop one bad file and keep the windows that
do not need it: `windows_fn` then yields a `Dropped(file, reason)` among its windows, and the file
is listed in `rejected` (with the source's name) while the source stays.

In the runs layout (`layout="runs"`, forecast windows that overlap: radar) `windows_fn` yields
`pipelines.runs.Run`s instead: each source's frames once, in time order, with the offsets where its
windows start; the shard stores frame rows and the window index, and readers cut the windows.

Decoding and writing run in Ray Data tasks (`pipelines.decode`); an incremental run merges with the
dataset it extends (`pipelines.incremental`). `Source`, `Rejected`, `Dropped` (`pipelines.sources`)
are importable from here too.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

from pipelines import cluster, storage
from pipelines import manifest as mf
from pipelines.decode import decode_sources
from pipelines.incremental import check_compatible, merge_rejections, split_counts, unshare_sources
from pipelines.publish import staging
from pipelines.runs import LAYOUTS
from pipelines.shards import SPLIT_COLUMN, split_dir
from pipelines.sources import Dropped, Rejected, Source, WindowsFn, build_options
from pipelines.verify import footer_rows

__all__ = ["DatasetSpec", "Dropped", "Publish", "Rejected", "RejectedSourcesError", "Source", "WindowsFn",
           "build_options", "run_prepare"]


class RejectedSourcesError(RuntimeError):
    """strict=True and at least one source was rejected; nothing was published."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a prepare run builds: a `task` dataset cut with `params`, its window `schema` ({column:
    {shape, dtype, ...}}: shape without the row axis, dtype a numpy name or "str"; a `label` column may
    list `classes` names, used as `per_class` keys), in `layout` "windows" (the windows function yields
    window dicts) or "runs" (it yields `Run`s; see above). `members`: the split definition recorded in
    the manifest's `splits[split].members` (e.g. person ids; default: the names of each split's
    sources). `extra`: task-specific top-level manifest keys (radar: time_step_s, grid, encoding,
    gaps), or a function of the final rejections returning them (radar: files dropped while decoding
    are gaps)."""

    task: str
    params: dict
    schema: dict
    layout: str = "windows"
    members: dict[str, list] | None = None
    extra: dict | Callable[[list[dict]], dict] | None = None


@dataclass(frozen=True)
class Publish:
    """How a prepare run publishes `--out`: replace an existing dataset (`overwrite`) or extend it
    (`incremental`: decode only sources not yet in its manifest and append their windows); `strict`:
    any rejected input raises RejectedSourcesError and nothing is published; on the Ray at `address`
    (default: a local one), with a progress bar (`progress`)."""

    overwrite: bool = False
    incremental: bool = False
    strict: bool = False
    address: str | None = None
    progress: bool = True


def run_prepare(spec: DatasetSpec, sources: list[Source], windows_fn: WindowsFn, out: str, *,
                rejected: list[dict] | None = None, protect: Sequence[str] = (), redo: Collection[str] = (),
                publish: Publish = Publish()) -> mf.Manifest:
    """Decode `sources` into window shards at `out` and publish them; returns the manifest.

    `rejected`: inputs already rejected by the caller ([{file, reason}]). `protect`: the user's input
    paths; `out` may not overlap them (pipelines.publish.check_target). `redo` (incremental): sources
    of the existing dataset whose inputs changed (a radar day seen in part, now complete): their shard
    files are unlinked from the staged copy (never rewritten in place: older dataset versions may share
    them) and decoded again, with the other sources of those files.
    """
    task, params, schema, layout, members, extra = (spec.task, spec.params, spec.schema, spec.layout,
                                                    spec.members, spec.extra)
    overwrite, incremental, strict, address, progress = (publish.overwrite, publish.incremental, publish.strict,
                                                         publish.address, publish.progress)
    _check_args(task, sources, schema, layout)
    cluster.check_paths({"--out": str(out)}, address=address)  # multi-node: shards must reach shared storage
    if not sources and not incremental:
        raise ValueError(f"{task}: no sources to decode; refusing to publish an empty dataset")
    rejected = [dict(r) for r in rejected or []]
    if strict and rejected:
        raise _strict_error(rejected)
    with staging(out, overwrite=overwrite, incremental=incremental, protect=protect) as stage:
        # The existing dataset's manifest as JSON parts, merged below with this run's into the new one.
        previous = stage.previous.to_json() if stage.previous is not None else None
        if previous is not None:
            check_compatible(previous, task=task, params=params, schema=schema, members=members, layout=layout)
        redo = unshare_sources(stage.path, previous, set(redo)) if previous is not None and redo else set()
        todo = [s for s in sources if previous is None or s.name not in previous["sources"] or s.name in redo]
        done, failed = decode_sources(todo, windows_fn, schema, layout, stage.path, address, progress) if todo else ({}, {})
        rejected += [failed[name] for name in sorted(failed)]
        rejected += [{"file": d["file"], "source": name, "reason": d["reason"]}
                     for name in sorted(done) for d in done[name].pop("dropped", [])]
        if strict and rejected:
            raise _strict_error(rejected)
        splits = split_counts(sources, done, members, previous, schema, redo)
        if not any(info["count"] for info in splits.values()):
            first = f" (first: {rejected[0]['file']}: {rejected[0]['reason']})" if rejected else ""
            raise ValueError(f"{task}: no windows from {len(sources)} source(s), {len(rejected)} input(s) "
                             f"rejected{first}; refusing to publish an empty dataset")
        for split in splits:
            storage.make_dirs(split_dir(stage.path, split))
        rejected = merge_rejections(previous, rejected, retried={s.name for s in todo})
        files = {split: {name: rows for name, (rows, _) in footer_rows(stage.path, split).items()}
                 for split in splits}
        manifest = mf.build_manifest(
            task=task, params=params, schema=schema, splits=splits,
            sources={**{k: v for k, v in (previous or {}).get("sources", {}).items() if k not in redo}, **done},
            rejected=rejected,
            extra={**((extra(rejected) if callable(extra) else extra) or {}), "layout": layout}, files=files)
        stage.commit(manifest)
    return manifest


def _check_args(task: str, sources: list[Source], schema: dict, layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not task:
        raise ValueError("task must be a non-empty name (kth, radar, mnist)")
    if not schema or SPLIT_COLUMN in schema:
        raise ValueError(f"schema must list the window columns and must not use {SPLIT_COLUMN!r}")
    names = Counter(s.name for s in sources)
    duplicates = [n for n, k in names.items() if k > 1]
    if duplicates:
        raise ValueError(f"sources: duplicate names {duplicates[:5]}")
    if any(not s.split for s in sources):
        raise ValueError("sources: every source needs a split")


def _strict_error(rejected: list[dict]) -> RejectedSourcesError:
    first = rejected[0]
    return RejectedSourcesError(f"{len(rejected)} input(s) rejected and --strict is set, nothing published; "
                                f"first: {first['file']}: {first['reason']}")
