"""Dataset versions (pipelines.versions): frozen copies that share the shard files, listed oldest
first, removed only by an explicit retention."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import versions
from pipelines.manifest import build_manifest, load_manifest, write_manifest


def _publish(data: Path, windows: int, shards: list[str]) -> dict:
    """A dataset folder as a publish leaves it: shard files, then manifest.json."""
    (data / "train").mkdir(parents=True, exist_ok=True)
    for name in shards:
        shard = data / "train" / name
        if not shard.exists():
            shard.write_bytes(name.encode() * 10)
    manifest = build_manifest(task="radar", params={}, schema={}, rejected=[],
                              splits={"train": {"members": [], "count": windows, "per_class": {}}},
                              sources={name: {"size": 10, "sha256": "", "split": "train", "windows": 1} for name in shards})
    write_manifest(str(data), manifest)
    return manifest


def test_versions_share_shards_stay_readable_and_are_pruned_only_by_retention(tmp_path):
    data = tmp_path / "mch"
    first = _publish(data, 1, ["a.parquet"])
    v1 = versions.snapshot(str(data))
    assert v1 == str(tmp_path / "mch.versions" / f"mch-{first['fingerprint'][:12]}")
    assert versions.snapshot(str(data)) == v1  # the same state: the same version
    assert (Path(v1) / "train" / "a.parquet").stat().st_ino == (data / "train" / "a.parquet").stat().st_ino
    second = _publish(data, 2, ["a.parquet", "b.parquet"])
    v2 = versions.snapshot(str(data))
    third = _publish(data, 3, ["a.parquet", "b.parquet", "c.parquet"])
    v3 = versions.snapshot(str(data))
    listed = versions.list_versions(str(data))
    assert [v["uri"] for v in listed] == [v1, v2, v3]
    assert [v["fingerprint"] for v in listed] == [first["fingerprint"], second["fingerprint"], third["fingerprint"]]
    assert load_manifest(v1)["splits"]["train"]["count"] == 1  # older versions keep their manifest
    assert sorted(p.name for p in (Path(v1) / "train").iterdir()) == ["a.parquet"]
    (tmp_path / "mch.versions" / "mch-half.tmp-0123").mkdir()  # a snapshot being written is no version
    assert len(versions.list_versions(str(data))) == 3

    assert versions.prune(str(data), keep=1, protect={first["fingerprint"]}) == [v2]
    assert [v["uri"] for v in versions.list_versions(str(data))] == [v1, v3]
    assert (data / "train" / "b.parquet").read_bytes() == b"b.parquet" * 10  # shared files survive
    with pytest.raises(ValueError, match="keep_versions"):
        versions.prune(str(data), keep=0)
    assert json.loads((data / "manifest.json").read_text())["fingerprint"] == third["fingerprint"]
