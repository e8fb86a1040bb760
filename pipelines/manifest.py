"""The dataset manifest (`<out>/manifest.json`): what was built, from what, with which parameters.

Keys: `pipeline_version`, `task`, `params`, `schema` ({column: {shape, dtype, unit?, encoding?}};
`shape` excludes the row axis, [] for scalars), `splits` ({split: {members, count, per_class}}),
`sources` ({name: {size, sha256, split, windows}}), `fingerprint`, `rejected` ([{file, source,
reason}]), `created` (UTC ISO time), plus task-specific keys (radar: `time_step_s`, `grid`,
`encoding`), and `files` ({split: {file name: windows}}, the shard files as published, for checking
them on read: `pipelines.verify`). The fingerprint covers everything that determines the data and
nothing about when or where it was written (nor how the windows were cut into files, which depends
on the cluster's CPUs), so the same inputs and parameters give the same fingerprint.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from pipelines import storage

# Bump when any pipeline's output for the same inputs and parameters changes.
PIPELINE_VERSION = "1"
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")  # the standard splits, in this order
# Keys that describe the run or the inputs looked at rather than the windows (`rejected` names input
# paths on this machine; radar `gaps` and `seen` list frames, which change without adding a window;
# `files` is how this machine's tasks cut the windows into files).
_NOT_FINGERPRINTED = ("fingerprint", "created", "rejected", "gaps", "seen", "files")
# What every manifest holds, with the type a reader relies on.
_REQUIRED = {"pipeline_version": str, "task": str, "params": dict, "schema": dict, "splits": dict,
             "sources": dict, "fingerprint": str}
_CHUNK = 1 << 20


def manifest_path(dataset: str) -> str:
    return storage.join(dataset, MANIFEST_NAME)


def load_manifest(path: str) -> dict:
    """Read the manifest of the dataset folder `path` (or the manifest.json file itself)."""
    path = str(path)
    file = path if path.rstrip("/").endswith(MANIFEST_NAME) else manifest_path(path)
    if not storage.exists(file):
        raise FileNotFoundError(f"no published dataset at {path} (missing {MANIFEST_NAME})")
    try:
        manifest = json.loads(storage.read_text(file))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not a readable manifest ({type(exc).__name__}: {exc})") from None
    problem = manifest_problem(manifest)
    if problem:
        raise ValueError(f"{file}: not a dataset manifest ({problem})")
    return manifest


def manifest_problem(manifest) -> str | None:
    """What makes `manifest` unusable as a dataset manifest (a wrong type, a missing key, a schema column
    without a list `shape` and a `dtype`, a split without an integer `count`), or None."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            return f"{key!r} is missing" if key not in manifest else f"{key!r} is not a {kind.__name__}"
    for name, spec in manifest["schema"].items():
        if not (isinstance(spec, dict) and isinstance(spec.get("shape"), list) and isinstance(spec.get("dtype"), str)
                and all(isinstance(n, int) and n > 0 for n in spec["shape"])):
            return f"schema column {name!r} needs a shape (positive integers) and a dtype"
    for name, info in manifest["splits"].items():
        if not (isinstance(info, dict) and isinstance(info.get("count"), int) and info["count"] >= 0):
            return f"split {name!r} needs a window count"
    return None


def write_manifest(dataset: str, manifest: dict) -> None:
    storage.write_text(manifest_path(dataset), manifest_text(manifest))


def manifest_text(manifest: dict) -> str:
    """manifest.json's text: indented JSON, keys sorted."""
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def fingerprint(manifest: dict) -> str:
    """sha256 (hex) of the manifest without the keys of _NOT_FINGERPRINTED, keys sorted: the same
    windows from the same inputs and parameters give the same fingerprint."""
    content = {k: v for k, v in manifest.items() if k not in _NOT_FINGERPRINTED}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def source_checksum(path: str) -> dict:
    """{"size": bytes, "sha256": hex} of one input file (local path or URI)."""
    fs, p = storage.resolve(path)
    digest = hashlib.sha256()
    size = 0
    with fs.open_input_stream(p) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def sources_checksum(paths: list[str]) -> dict:
    """Checksum of a source made of several files: total size, sha256 over the per-file digests in order."""
    if len(paths) == 1:
        return source_checksum(paths[0])
    digest = hashlib.sha256()
    size = 0
    for path in paths:
        one = source_checksum(path)
        digest.update(one["sha256"].encode("ascii"))
        size += one["size"]
    return {"size": size, "sha256": digest.hexdigest()}


def build_manifest(*, task: str, params: dict, schema: dict, splits: dict, sources: dict,
                   rejected: list[dict], extra: dict | None = None, files: dict | None = None) -> dict:
    """Assemble a manifest and stamp its fingerprint and creation time. `files`: {split: {name: windows}}."""
    manifest = {
        "pipeline_version": PIPELINE_VERSION,
        "task": task,
        "params": params,
        "schema": schema,
        "splits": splits,
        "sources": dict(sorted(sources.items())),
        "rejected": rejected,
        **(extra or {}),
        **({"files": files} if files is not None else {}),
    }
    # Round-trip through JSON so the fingerprint sees exactly what load_manifest will return.
    manifest = json.loads(json.dumps(manifest, default=str))
    manifest["fingerprint"] = fingerprint(manifest)
    manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return manifest
