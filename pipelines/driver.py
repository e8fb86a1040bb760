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

A task decodes a few sources and writes their windows itself, one Parquet file per split named
after its sources (a retried task rewrites the same files), and returns one small row per source:
its manifest entry or its rejection. Decoding, windowing and writing thus happen in one task with
nothing materialised in between, and the driver holds source descriptions and per-source outcomes,
never windows.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import pickle
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipelines import cluster, storage
from pipelines import manifest as mf
from pipelines.publish import staging
from pipelines.ray_session import init_ray
from pipelines.runs import LAYOUTS, frame_schema
from pipelines.shards import (SPLIT_COLUMN, SchemaError, split_dir, stack_runs, stack_windows, to_table,
                              with_starts, write_shard)
from pipelines.verify import footer_rows

WindowsFn = Callable[["Source"], Iterator[dict]]
log = logging.getLogger(__name__)
_TASKS_PER_CPU = 4
_FAULT = "fault"  # a task's outcome row when writing its shards failed (OSError: no space, read-only)
_MAX_SOURCES_PER_TASK = 8


@dataclass
class Source:
    """One unit of decoding work: a video file, a radar day or block, an MNIST chunk."""

    name: str  # stable id, the key in manifest["sources"]
    paths: list[str]  # input files, checksummed into the manifest
    split: str
    meta: dict = field(default_factory=dict)  # whatever windows_fn needs: person, label, timestamps...


def build_options(cls, values: dict, overrides: dict):
    """`cls(**values)` (a dataset's options dataclass, validated on construction) with `overrides` on
    top (a retrain config's `prepare`); ValueError naming `prepare.<key>` for an unknown option."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"prepare.{unknown[0]}: unknown option (known: {', '.join(sorted(names))})")
    return cls(**{**values, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}})


class Rejected(Exception):
    """Raised by a windows function: the source is skipped and listed in `rejected` with str(exc)."""


@dataclass(frozen=True)
class Dropped:
    """Yielded by a windows function among its windows: `file`, one input of the source, could not be
    used (listed in `rejected` with `reason`); the source's other windows are kept."""

    file: str
    reason: str


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
            _check_compatible(previous, task=task, params=params, schema=schema, members=members, layout=layout)
        redo = _unshare(stage.path, previous, set(redo)) if previous is not None and redo else set()
        todo = [s for s in sources if previous is None or s.name not in previous["sources"] or s.name in redo]
        done, failed = _decode(todo, windows_fn, schema, layout, stage.path, address, progress) if todo else ({}, {})
        rejected += [failed[name] for name in sorted(failed)]
        rejected += [{"file": d["file"], "source": name, "reason": d["reason"]}
                     for name in sorted(done) for d in done[name].pop("dropped", [])]
        if strict and rejected:
            raise _strict_error(rejected)
        splits = _splits(sources, done, members, previous, schema, redo)
        if not any(info["count"] for info in splits.values()):
            first = f" (first: {rejected[0]['file']}: {rejected[0]['reason']})" if rejected else ""
            raise ValueError(f"{task}: no windows from {len(sources)} source(s), {len(rejected)} input(s) "
                             f"rejected{first}; refusing to publish an empty dataset")
        for split in splits:
            storage.make_dirs(split_dir(stage.path, split))
        rejected = _merge_rejections(previous, rejected, retried={s.name for s in todo})
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


def _check_compatible(previous: dict, *, task: str, params: dict, schema: dict, members: dict | None,
                      layout: str) -> None:
    """An incremental run must build the same kind of dataset, in the same layout, as the one it extends.

    `extra` keys are not compared: they describe the run's whole input (radar gaps) and are replaced.
    """
    checks = {"task": (previous["task"], task), "params": (previous["params"], params),
              "schema": (previous["schema"], schema), "layout": (previous.get("layout", "windows"), layout)}
    if members is not None:
        checks["members"] = ({split: info["members"] for split, info in previous["splits"].items()}, members)
    for key, (old, new) in checks.items():
        if json.loads(json.dumps(new, default=str)) != old:
            raise ValueError(f"--incremental: {key} differ from the existing dataset's "
                             f"({old!r} vs {new!r}); use --overwrite to rebuild")


def _decode(sources: list[Source], windows_fn: WindowsFn, schema: dict, layout: str, path: str,
            address: str | None, progress: bool) -> tuple[dict, dict]:
    """Decode and write `sources` in Ray Data tasks; returns ({name: manifest entry}, {name: rejection})."""
    ray = init_ray(address)
    items = [{"source": pickle.dumps(s)} for s in sources]
    per_task = _sources_per_task(len(items), ray.cluster_resources().get("CPU", 1))
    ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_task)).map_batches(
        _decode_batch, batch_size=per_task, batch_format="numpy",
        fn_kwargs={"windows_fn": windows_fn, "schema": schema, "layout": layout, "path": path})
    # One real stage (decode + write): Ray Data's per-operator reservation would hold half the CPUs
    # for the trivial input operator and start the decode tasks one at a time, leaving a CPU idle
    # between tasks (measured: 2 CPUs ran 1.3 tasks on average; benchmarks/README.md, Pipeline).
    ds.context.op_resource_reservation_enabled = False
    outcomes: dict[str, dict] = {"done": {}, "rejected": {}, _FAULT: {}}
    with _ProgressBar(len(sources), enabled=progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for name, outcome, record in zip(batch["name"], batch["outcome"], batch["record"]):
                outcomes[outcome][name] = json.loads(record)  # keyed by name: a retried task overwrites
            if outcomes[_FAULT]:
                fault = outcomes[_FAULT][""]
                raise OSError(fault["errno"], fault["strerror"], fault["filename"])
            bar.update(len(batch["name"]))
    if log.isEnabledFor(logging.DEBUG):  # per-operator task wall/CPU times (benchmarks/pipeline.py --stages)
        log.debug("Ray Data stats of the decode and write:\n%s", ds.stats())
    done, failed = outcomes["done"], outcomes["rejected"]
    missing = {s.name for s in sources} - done.keys() - failed.keys()
    if missing:
        raise RuntimeError(f"decode tasks reported nothing for {len(missing)} sources, e.g. {sorted(missing)[:3]}")
    return done, failed


def _sources_per_task(sources: int, cpus: float) -> int:
    """Several small sources per Ray task (fewer, larger tasks and files) while keeping
    _TASKS_PER_CPU tasks per CPU for load balance."""
    return int(min(_MAX_SOURCES_PER_TASK, max(1, sources // (_TASKS_PER_CPU * max(cpus, 1)))))


def _decode_batch(batch: dict[str, np.ndarray], *, windows_fn: WindowsFn, schema: dict, layout: str,
                  path: str) -> dict[str, np.ndarray]:
    """Ray Data UDF: pickled Sources, one per row -> their windows written under `path` (one shard
    per split), and one row per source: {name, outcome ("done" | "rejected"), record (JSON)}."""
    rows: dict[str, list[str]] = {"name": [], "outcome": [], "record": []}
    tables: dict[str, list] = {}
    sources = [pickle.loads(blob) for blob in batch["source"]]
    for source in sources:
        dropped: list[Dropped] = []
        try:
            checksum = mf.sources_checksum(source.paths)
            columns, starts = _stacked(_windows_only(windows_fn(source), dropped), schema, layout)
        except SchemaError:
            raise
        except Exception as exc:  # unreadable, truncated, wrong size...: reject this source only
            reason = str(exc) if isinstance(exc, Rejected) else f"{type(exc).__name__}: {exc}"
            _add_row(rows, source.name, "rejected", _rejection(source, reason))
            continue
        count = len(starts) if layout == "runs" else len(next(iter(columns.values())))
        # per-window labels: a runs-layout window's scalars are those of its first frame
        labels = columns if layout == "windows" else {c: columns[c][starts] for c in columns if c == "label"}
        entry = {**checksum, "split": source.split, "windows": count, "per_class": _per_class(labels, schema)}
        if dropped:  # taken out of the entry by run_prepare, into `rejected`
            entry["dropped"] = [{"file": d.file, "reason": d.reason} for d in dropped]
        if count:
            tables.setdefault(source.split, []).append((to_table(columns, _table_schema(schema, layout)), starts))
        _add_row(rows, source.name, "done", entry)
    try:
        for split, parts in tables.items():
            table = pa.concat_tables([table for table, _ in parts])
            if layout == "runs":  # one window index for the file: each source's starts after the rows before it
                offsets = np.cumsum([0] + [t.num_rows for t, _ in parts])
                table = with_starts(table, [int(o) + s for o, (_, starts) in zip(offsets, parts) for s in starts])
            write_shard(path, split, table, schema, _shard_name([s.name for s in sources]))
    except OSError as exc:  # no space, read-only: reported to the driver as one row, not a Ray task error
        rows = {"name": [], "outcome": [], "record": []}
        _add_row(rows, "", _FAULT, {"errno": exc.errno, "strerror": exc.strerror or str(exc),
                                    "filename": exc.filename or split_dir(path, split)})
    return {key: np.array(values, dtype=object) for key, values in rows.items()}


def _stacked(items: Iterator, schema: dict, layout: str) -> tuple[dict[str, np.ndarray], list[int]]:
    """A source's column batch: windows (and no starts) or, in the runs layout, frame rows and window starts."""
    if layout == "runs":
        return stack_runs(items, schema)
    return stack_windows(items, schema), []


def _table_schema(schema: dict, layout: str) -> dict:
    return frame_schema(schema) if layout == "runs" else schema


def _add_row(rows: dict[str, list[str]], name: str, outcome: str, record: dict) -> None:
    rows["name"].append(name)
    rows["outcome"].append(outcome)
    rows["record"].append(json.dumps(record))


def _shard_name(names: list[str]) -> str:
    """A task's shard name: the same for the same sources (retries overwrite), distinct otherwise."""
    return hashlib.sha256("\0".join(names).encode()).hexdigest()[:24]


def _windows_only(items: Iterator, dropped: list[Dropped]) -> Iterator[dict]:
    """The windows among `items`; `Dropped` notes go to `dropped`."""
    for item in items:
        if isinstance(item, Dropped):
            dropped.append(item)
        else:
            yield item


def _rejection(source: Source, reason: str) -> dict:
    file = source.paths[0] if len(source.paths) == 1 else source.name
    return {"file": file, "source": source.name, "reason": reason}


def _per_class(columns: dict[str, np.ndarray], schema: dict) -> dict[str, int]:
    if "label" not in columns:
        return {}
    classes = schema["label"].get("classes")
    labels, counts = np.unique(columns["label"], return_counts=True)
    return {(classes[int(k)] if classes else str(int(k))): int(n) for k, n in zip(labels, counts)}


def _unshare(path: str, previous: dict, redo: set[str]) -> set[str]:
    """Unlink the staged shard files holding windows of `redo` sources (read from their `source`
    column); returns the sources those files held, all to be decoded again."""
    held = set(redo)
    for split in previous["splits"]:
        folder = split_dir(path, split)
        for name in storage.list_files(folder, ".parquet"):
            fs, file = storage.resolve(storage.join(folder, name))
            names = set(pq.read_table(file, columns=["source"], filesystem=fs).column("source").to_pylist())
            if names & redo:
                storage.remove(storage.join(folder, name))
                held |= names
    return held & set(previous["sources"])


def _splits(sources: list[Source], done: dict, members: dict | None, previous: dict | None,
            schema: dict, redo: set[str] = frozenset()) -> dict:
    """{split: {members, count, per_class}}: the previous counts without the `redo` sources', plus
    this run's windows."""
    old = (previous or {}).get("splits", {})
    gone = {name: entry for name, entry in (previous or {}).get("sources", {}).items() if name in redo}
    names = sorted({*old, *(s.split for s in sources), *(members or {})})
    splits = {}
    for split in names:
        count = old.get(split, {}).get("count", 0)
        per_class = Counter(old.get(split, {}).get("per_class", {}))
        for entry in gone.values():
            if entry["split"] == split:
                count -= entry["windows"]
                per_class.subtract(entry.get("per_class", {}))
        per_class = +per_class
        for entry in done.values():
            if entry["split"] == split:
                count += entry["windows"]
                per_class.update(entry["per_class"])
        if members is not None:
            split_members = list(members.get(split, []))
        else:
            split_members = sorted({*(m for m in old.get(split, {}).get("members", []) if m not in gone),
                                    *(n for n, e in done.items() if e["split"] == split)})
        splits[split] = {"members": split_members, "count": count, "per_class": _ordered(per_class, schema)}
    return splits


def _ordered(per_class: Counter, schema: dict) -> dict[str, int]:
    classes = schema.get("label", {}).get("classes") or sorted(per_class)
    return {c: per_class[c] for c in classes if c in per_class}


def _merge_rejections(previous: dict | None, rejected: list[dict], retried: set[str]) -> list[dict]:
    """This run's rejections plus the previous run's for inputs not tried again."""
    files = {r["file"] for r in rejected}
    kept = [r for r in (previous or {}).get("rejected", [])
            if r.get("source") not in retried and r["file"] not in files]
    return kept + rejected


def _strict_error(rejected: list[dict]) -> RejectedSourcesError:
    first = rejected[0]
    return RejectedSourcesError(f"{len(rejected)} input(s) rejected and --strict is set, nothing published; "
                                f"first: {first['file']}: {first['reason']}")


class _ProgressBar:
    """Context manager: a tqdm bar of sources done (`update(n)`), or nothing when not `enabled`.

    Ray Data's own per-operator bars are switched off meanwhile (two sets of bars garble the terminal).
    """

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None

    def __enter__(self) -> "_ProgressBar":
        if self.enabled:
            import ray.data  # deferred: Ray ~2-10 s to import; the module's other users skip it

            self.context = ray.data.DataContext.get_current()
            self.ray_bars, self.context.enable_progress_bars = self.context.enable_progress_bars, False
            self.bar = tqdm(total=self.total, desc="sources", unit="src")
        return self

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
            self.context.enable_progress_bars = self.ray_bars
