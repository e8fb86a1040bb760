"""Small valid dataset manifests for tests that need only a few of its fields."""
from __future__ import annotations

from pipelines.manifest import Manifest


def manifest_of(task: str = "test", params: dict | None = None, schema: dict | None = None,
                sources: list[str] = (), rejected: list[dict] = ()) -> Manifest:
    """A valid manifest with the given fields, otherwise empty (sources with one window each)."""
    entry = {"size": 0, "sha256": "", "split": "train", "windows": 1}
    return Manifest.parse({"pipeline_version": "1", "task": task, "params": params or {}, "schema": schema or {},
                           "splits": {}, "sources": dict.fromkeys(sources, entry), "fingerprint": "",
                           "rejected": list(rejected)}, "test manifest")
