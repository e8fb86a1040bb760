"""Dataset versions: immutable copies of each published state of a growing dataset.

A dataset folder `<data>` is always its newest version (what `prepare --incremental` publishes).
`snapshot(data)` freezes the current state as `<data>.versions/<name>-<fp12>/` (name = the folder's
name, fp12 = the first 12 hex digits of the manifest fingerprint): local files are hard links to the
same shards (no data is copied, and no publish ever rewrites a shard file in place: an incremental
run writes new files and unlinks replaced ones), object stores get server-side copies. A snapshot is
written to `<version>.tmp-<id>` and renamed, and its manifest is the last file, so a version either
exists whole or not at all. Scheduled retraining trains and evaluates on these URIs, so a model
version's data URI and fingerprint keep meaning what they meant when the data grows. Versions are
removed only by `prune(data, keep)`, an explicit retention setting (retrain's `keep_versions`).
"""
from __future__ import annotations

import uuid

from pipelines import storage
from pipelines.manifest import MANIFEST_NAME, load_manifest, manifest_path

SUFFIX = ".versions"
DIGITS = 12


def versions_root(data: str) -> str:
    """`<data>.versions`, beside the dataset (outside the folder an atomic publish replaces)."""
    return storage.sibling(str(data).rstrip("/"), SUFFIX)


def version_uri(data: str, fingerprint: str) -> str:
    """Where the version of `data` with `fingerprint` lives (whether or not it exists yet)."""
    return storage.join(versions_root(data), f"{storage.name_of(str(data).rstrip('/'))}-{fingerprint[:DIGITS]}")


def snapshot(data: str) -> str:
    """Freeze the dataset as published now and return the version's URI (an existing one is reused)."""
    fingerprint = load_manifest(data).fingerprint
    target = version_uri(data, fingerprint)
    if storage.exists(manifest_path(target)):
        return target
    staged = storage.sibling(target, f".tmp-{uuid.uuid4().hex[:12]}")
    try:
        storage.link_tree(data, staged)
        storage.remove(manifest_path(staged))
        if load_manifest(data).fingerprint != fingerprint:  # republished meanwhile: retry from the top
            return snapshot(data)
        storage.remove(target)  # a half-written copy without its manifest
        storage.move(staged, target)
        storage.write_text(manifest_path(target), storage.read_text(manifest_path(data)))
    finally:
        storage.remove(staged)
    return target


def list_versions(data: str) -> list[dict]:
    """[{uri, fingerprint, created, windows: {split: count}}] of the published versions, oldest first
    (by the manifest's `created`, then by when the version was frozen)."""
    root = versions_root(data)
    found = []
    for name in storage.list_files(root, f"/{MANIFEST_NAME}"):
        folder = name.split("/")[0]
        if name != f"{folder}/{MANIFEST_NAME}" or ".tmp-" in folder:
            continue  # a shard folder's file, or a snapshot being written
        folder = storage.join(root, folder)
        manifest = load_manifest(folder)
        fs, path = storage.resolve(manifest_path(folder))
        found.append({"uri": folder, "fingerprint": manifest.fingerprint, "created": manifest.created or "",
                      "windows": {s: info.count for s, info in manifest.splits.items()},
                      "frozen": fs.get_file_info(path).mtime})  # the snapshot's time: `created` has seconds
    return [{k: v for k, v in version.items() if k != "frozen"}
            for version in sorted(found, key=lambda v: (v["created"], v["frozen"]))]


def prune(data: str, keep: int, protect: set[str] = frozenset()) -> list[str]:
    """Remove all but the newest `keep` versions, never one whose fingerprint is in `protect` (the
    data of the models in use); returns the removed URIs."""
    if keep < 1:
        raise ValueError(f"keep_versions must be >= 1, got {keep}")
    versions = list_versions(data)
    removed = []
    for version in versions[:max(0, len(versions) - keep)]:
        if version["fingerprint"] not in protect:
            storage.remove(manifest_path(version["uri"]))  # unpublish first: never a half-removed version
            storage.remove(version["uri"])
            removed.append(version["uri"])
    return removed
