"""The shard format and the generic prepare driver: real Ray Data writes, real Parquet, real files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ray import cloudpickle

from pipelines.driver import DatasetSpec, Publish, RejectedSourcesError, run_prepare
from pipelines.sources import Rejected, Source
from pipelines.manifest import Manifest, fingerprint, load_manifest, source_checksum
from pipelines.shards import read_dataset, read_windows

# Ray workers cannot import this test module by name: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

T, C, H, W = 3, 1, 4, 5
SCHEMA = {
    "frames": {"shape": [T, C, H, W], "dtype": "uint8", "unit": "pixel"},
    "label": {"shape": [], "dtype": "int64", "classes": ["a", "b"]},
    "source": {"shape": [], "dtype": "str"},
    "start": {"shape": [], "dtype": "int64"},
}
PARAMS = {"frame_len": T}


def frames_for(name: str, start: int, version: int = 1) -> np.ndarray:
    seed = sum(map(ord, name)) * 100 + start + 1000 * version
    return np.random.default_rng(seed).integers(0, 256, (T, C, H, W), dtype=np.uint8)


def toy_windows(source: Source):
    """meta: n windows, label, version (pixel content), fail (None | "rejected" | "oserror" | "columns")."""
    fail = source.meta.get("fail")
    if fail == "columns":
        yield {"frames": frames_for(source.name, 0)}
    for start in range(source.meta["n"]):
        if fail == "oserror" and start == 1:
            raise OSError("truncated input")
        yield {"frames": frames_for(source.name, start, source.meta.get("version", 1)),
               "label": source.meta["label"], "source": source.name, "start": start}
    if fail == "rejected":
        raise Rejected("too short")


def make_sources(root: Path, specs: dict[str, dict]) -> list[Source]:
    sources = []
    for name, spec in specs.items():
        path = root / "inputs" / f"{name}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 10)
        meta = {k: v for k, v in spec.items() if k != "split"}
        sources.append(Source(name=name, paths=[str(path)], split=spec["split"], meta=meta))
    return sources


BASE = {
    "v1": {"split": "train", "n": 3, "label": 0},
    "v2": {"split": "train", "n": 2, "label": 1},
    "v3": {"split": "val", "n": 2, "label": 1},
}


def prepare(sources, out, params=PARAMS, extra=None, rejected=None, **publish) -> Manifest:
    spec = DatasetSpec(task="toy", params=params, schema=SCHEMA, extra=extra)
    return run_prepare(spec, sources, toy_windows, str(out), rejected=rejected,
                       publish=Publish(progress=False, **publish))


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name + "."))


def test_round_trip_manifest_and_readers(ray_local, tmp_path):
    specs = {**BASE, "bad": {"split": "val", "n": 2, "label": 0, "fail": "oserror"},
             "short": {"split": "test", "n": 1, "label": 0, "fail": "rejected"}}
    sources = make_sources(tmp_path, specs)
    out = tmp_path / "ds"
    manifest = prepare(sources, out, rejected=[{"file": "x.avi", "reason": "name does not parse"}])

    assert manifest == load_manifest(out)
    assert manifest["splits"]["train"]["count"] == 5
    assert manifest["splits"]["train"]["per_class"] == {"a": 3, "b": 2}
    assert manifest["splits"]["val"]["count"] == 2
    assert manifest["splits"]["test"] == {"members": [], "count": 0, "per_class": {}}
    assert (out / "test").is_dir() and not any((out / "test").iterdir())
    assert manifest["sources"]["v1"]["windows"] == 3
    assert manifest["sources"]["v1"]["sha256"] == source_checksum(sources[0].paths[0])["sha256"]
    reasons = {r["file"].rsplit("/", 1)[-1]: r["reason"] for r in manifest["rejected"]}
    assert reasons == {"x.avi": "name does not parse", "bad.bin": "OSError: truncated input",
                       "short.bin": "too short"}
    assert not leftovers(out)

    # Without Ray: a fresh interpreter in which `import ray` fails.
    code = (
        "import sys, json; sys.modules['ray'] = None\n"
        "from pipelines.shards import read_windows\n"
        f"w = read_windows({str(out)!r}, 'train')\n"
        f"e = read_windows({str(out)!r}, 'test')\n"
        "print(json.dumps({'frames': w['frames'].tolist(), 'source': w['source'].tolist(),"
        " 'start': w['start'].tolist(), 'label': w['label'].tolist(), 'empty': list(e['frames'].shape)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    no_ray = json.loads(result.stdout)
    expected = [(name, s) for name in ("v1", "v2") for s in range(BASE[name]["n"])]
    assert list(zip(no_ray["source"], no_ray["start"])) == expected
    assert no_ray["label"] == [0, 0, 0, 1, 1]
    assert np.array_equal(np.array(no_ray["frames"], dtype=np.uint8),
                          np.stack([frames_for(n, s) for n, s in expected]))
    assert no_ray["empty"] == [0, T, C, H, W]

    # With Ray Data: the same rows (order unspecified), same shapes and dtypes.
    rows = sorted(read_dataset(str(out), "train").take_all(), key=lambda r: (r["source"], r["start"]))
    assert [(r["source"], r["start"]) for r in rows] == expected
    for row, (name, start) in zip(rows, expected):
        assert row["frames"].dtype == np.uint8 and np.array_equal(row["frames"], frames_for(name, start))
    assert read_dataset(str(out), "test").count() == 0
    only = read_windows(str(out), "val", columns=["frames"])
    assert list(only) == ["frames"] and only["frames"].shape == (2, T, C, H, W)
    with pytest.raises(ValueError, match="split 'nope'"):
        read_windows(str(out), "nope")


def test_failed_run_publishes_nothing_and_cleans_up(ray_local, tmp_path):
    sources = make_sources(tmp_path, {**BASE, "broken": {"split": "val", "n": 1, "label": 0, "fail": "columns"}})
    out = tmp_path / "ds"
    with pytest.raises(Exception, match="differ from the schema"):
        prepare(sources, out)
    assert not out.exists()
    assert not leftovers(out)


def test_existing_output_needs_overwrite_and_survives_a_failed_overwrite(ray_local, tmp_path):
    out = tmp_path / "ds"
    first = prepare(make_sources(tmp_path, BASE), out)
    with pytest.raises(FileExistsError, match=str(out)):
        prepare(make_sources(tmp_path, BASE), out)

    broken = make_sources(tmp_path, {**BASE, "broken": {"split": "val", "n": 1, "label": 0, "fail": "columns"}})
    with pytest.raises(Exception, match="differ from the schema"):
        prepare(broken, out, overwrite=True)
    assert load_manifest(out)["fingerprint"] == first["fingerprint"]
    assert read_windows(str(out), "train")["frames"].shape[0] == 5
    assert not leftovers(out)

    smaller = make_sources(tmp_path, {"v1": {**BASE["v1"], "version": 2}})
    second = prepare(smaller, out, overwrite=True)
    windows = read_windows(str(out), "train")
    assert second["splits"]["train"]["count"] == 3 and "val" not in second["splits"]
    assert np.array_equal(windows["frames"][0], frames_for("v1", 0, version=2))
    assert not leftovers(out)


def test_incremental_appends_only_new_sources(ray_local, tmp_path):
    out = tmp_path / "ds"
    first = prepare(make_sources(tmp_path, BASE), out, extra={"gaps": []})
    old_files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")}
    old_train = read_windows(str(out), "train")

    # version 2 would change the pixels of any source that got decoded again
    grown = {name: {**spec, "version": 2} for name, spec in BASE.items()}
    grown["v4"] = {"split": "train", "n": 2, "label": 0, "version": 2}
    second = prepare(make_sources(tmp_path, grown), out, incremental=True, extra={"gaps": ["v3-v4"]})

    assert set(second["sources"]) == {"v1", "v2", "v3", "v4"}
    assert second["splits"]["train"]["count"] == 7
    assert second["splits"]["train"]["per_class"] == {"a": 5, "b": 2}
    assert second["fingerprint"] != first["fingerprint"]
    assert second["gaps"] == ["v3-v4"]  # extra describes the whole new input: replaced, not compared
    for rel, data in old_files.items():
        assert (out / rel).read_bytes() == data
    train = read_windows(str(out), "train")
    old_rows = np.isin(train["source"], ["v1", "v2"])
    assert np.array_equal(train["frames"][old_rows], old_train["frames"])
    assert np.array_equal(train["frames"][~old_rows][0], frames_for("v4", 0, version=2))
    assert not leftovers(out)

    with pytest.raises(ValueError, match="params differ"):
        prepare(make_sources(tmp_path, BASE), out, incremental=True, params={"frame_len": 99})


def test_same_inputs_same_fingerprint(ray_local, tmp_path):
    a = prepare(make_sources(tmp_path, BASE), tmp_path / "a")
    b = prepare(make_sources(tmp_path, BASE), tmp_path / "b")
    assert a["fingerprint"] == b["fingerprint"] == fingerprint(load_manifest(tmp_path / "b"))
    assert fingerprint({**a.to_json(), "params": {"frame_len": 4}}) != a.fingerprint


def test_strict_rejection_publishes_nothing(ray_local, tmp_path):
    sources = make_sources(tmp_path, {**BASE, "short": {"split": "val", "n": 1, "label": 0, "fail": "rejected"}})
    out = tmp_path / "ds"
    with pytest.raises(RejectedSourcesError, match="short.bin: too short"):
        prepare(sources, out, strict=True)
    assert not out.exists() and not leftovers(out)
