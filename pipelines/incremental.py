"""What a prepare run adds to the dataset it extends (`--incremental`), and the counts of the dataset
it publishes: the compatibility check, the shard files whose sources are decoded again, the split
counts and the rejections kept. `previous` is the existing manifest as JSON (None: a fresh dataset)."""
from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq

from pipelines import storage
from pipelines.shards import split_dir
from pipelines.sources import Source


def check_compatible(previous: dict, *, task: str, params: dict, schema: dict, members: dict | None,
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


def unshare_sources(path: str, previous: dict, redo: set[str]) -> set[str]:
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


def split_counts(sources: list[Source], done: dict, members: dict | None, previous: dict | None,
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


def merge_rejections(previous: dict | None, rejected: list[dict], retried: set[str]) -> list[dict]:
    """This run's rejections plus the previous run's for inputs not tried again."""
    files = {r["file"] for r in rejected}
    kept = [r for r in (previous or {}).get("rejected", [])
            if r.get("source") not in retried and r["file"] not in files]
    return kept + rejected
