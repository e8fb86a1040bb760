"""Decoding on Ray Data: sources -> windows -> Parquet shards, in one task per few sources.

A task decodes a few sources and writes their windows itself, one Parquet file per split named
after its sources (a retried task rewrites the same files), and returns one small row per source:
its manifest entry or its rejection. Decoding, windowing and writing thus happen in one task with
nothing materialised in between, and the driver holds source descriptions and per-source outcomes,
never windows. A source's windows are collected before they are written, so a source that fails
halfway contributes nothing; any exception rejects just that source, `Dropped` files inside a source
are listed with it (the entry's `dropped`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
from typing import Iterator

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from pipelines import manifest as mf
from pipelines.ray_session import init_ray
from pipelines.runs import frame_schema
from pipelines.shard_writer import SchemaError, stack_runs, stack_windows, to_table, with_starts, write_shard
from pipelines.shards import split_dir
from pipelines.sources import Dropped, Rejected, Source, WindowsFn

log = logging.getLogger(__name__)
_TASKS_PER_CPU = 4
_FAULT = "fault"  # a task's outcome row when writing its shards failed (OSError: no space, read-only)
_MAX_SOURCES_PER_TASK = 8


def decode_sources(sources: list[Source], windows_fn: WindowsFn, schema: dict, layout: str, path: str,
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
