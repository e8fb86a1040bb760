"""Scheduled retraining on real radar frames, three rounds: the shared MeteoSwiss evening re-timed into
new days arrives as part of a day, then the rest of it, then a new day (and a one-frame day that can
never yield a window); a fourth run finds nothing. Every round's windows must equal a fresh prepare
of the same files, publish a new dataset version that shares the unchanged shards, and leave the
older versions readable; the decisions and the history must say what happened."""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from jobs.ops.retrain import retrain
from jobs.ops.retrain_config import RetrainOptions, load_retrain_config
from jobs.ops.retrain_report import REPORT_NAME
from jobs.registry import tracking
from jobs.registry.history import history
from pipelines import versions
from pipelines.manifest import load_manifest
from pipelines.radar.days import draw_day_split
from pipelines.radar.prepare import RadarOptions, prepare_radar
from pipelines.driver import Publish
from pipelines.shards import read_windows

MODEL = "convlstm-radar-3rounds"
OPTIONS = RadarOptions(in_len=4, out_len=4, stride=1, size=(32, 32), split="days", seed=0,
                       val_fraction=0.2, test_fraction=0.2)
# Days whose seeded draw (seed 0, fractions 0.2 / 0.2) puts them in these splits:
VAL, PART, NEW, ONE, TEST = "2016-08-01", "2016-08-03", "2016-08-04", "2016-08-07", "2016-08-05"
UNTRAINED = ["optim.lr=1e-12", "train.epochs=1"]


def test_the_chosen_days_fall_in_the_intended_splits():
    assert [draw_day_split(d, 0, 0.2, 0.2) for d in (VAL, PART, NEW, ONE, TEST)] == \
        ["val", "train", "train", "train", "test"]


def _add(src: Path, frames: list[Path], day: str, indices: range) -> None:
    """Copy the sample's frames `indices` into `src`, re-timed to `day` 00:00 + 5 min x index."""
    midnight = datetime.fromisoformat(day)
    for i in indices:
        when = midnight + timedelta(minutes=5 * i)
        shutil.copy(frames[i], src / f"AQC{when:%y%j%H%M}V_00005.801.gif")


def _windows(data: str) -> dict[str, dict[str, np.ndarray]]:
    return {split: read_windows(data, split) for split in load_manifest(data)["splits"]}


def _same_as_fresh(src: Path, data: str, fresh: str) -> None:
    """The incrementally grown dataset holds exactly the windows (and fingerprint) of a fresh prepare."""
    manifest = prepare_radar(src, fresh, "mch", OPTIONS, publish=Publish(progress=False))
    grown, built = _windows(data), _windows(fresh)
    assert grown.keys() == built.keys()
    for split in grown:
        for column in ("source", "start", "frames", "mask"):
            assert np.array_equal(grown[split][column], built[split][column]), (split, column)
    assert load_manifest(data)["fingerprint"] == manifest["fingerprint"]
    shutil.rmtree(fresh)


def _files(data: str) -> dict[str, int]:
    """{split/file.parquet: inode} of a dataset's shards."""
    root = Path(data)
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.glob("*/*.parquet")}


def _config(tmp: Path, name: str, overrides: list[str], init: str) -> object:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"train_config": "radar-tiny", "workers": 0, "init": init, "min_windows": 10,
                                    "train_overrides": [f"registry.name={MODEL}", *overrides]}))
    return load_retrain_config(path)


def test_three_rounds_of_new_radar_frames(ray_local, project_home, sample_data, tmp_path):
    frames = sorted((sample_data / "radar-mch-sample" / "20160711").glob("*.gif"))
    assert len(frames) == 40
    src, data = tmp_path / "archive", str(tmp_path / "mch")
    src.mkdir()
    _add(src, frames, VAL, range(20))
    _add(src, frames, TEST, range(40))
    _add(src, frames, PART, range(20))  # the first half of a day
    prepare_radar(src, data, "mch", OPTIONS, publish=Publish(progress=False))
    run = lambda name, overrides, init="from-scratch": retrain(  # noqa: E731
        "radar", str(src), data, _config(tmp_path, name, overrides, init), RetrainOptions(out=str(tmp_path / name)))

    # Round 0: no model yet -> the first challenger becomes champion (untrained: lr ~ 0).
    first = run("round0", UNTRAINED)
    assert first["status"] == "first-champion" and first["new_sources"] == []
    v0 = first["data"]["version"]
    assert load_manifest(v0)["splits"]["train"]["count"] == 13  # 20 frames, windows of 8

    # Round 1: the rest of the partly seen day; the challenger is the champion warm-started at lr ~ 0.
    _add(src, frames, PART, range(20, 40))
    second = run("round1", UNTRAINED, init="warm-start")
    assert second["new_sources"] == [PART]
    _same_as_fresh(src, data, str(tmp_path / "fresh1"))
    v1 = second["data"]["version"]
    assert load_manifest(v1)["splits"]["train"]["count"] == 33 and load_manifest(v1)["sources"][PART]["windows"] == 33
    assert second["status"] == "kept-champion"
    assert second["decision"]["reason"] == "not promoted: no significant difference (p = 1, n = 33)"

    # Round 2: a new day, and a one-frame day that can never yield a window; a trained challenger.
    _add(src, frames, NEW, range(40))
    _add(src, frames, ONE, range(1))
    third = run("round2", ["train.epochs=1"])
    assert third["new_sources"] == [NEW, ONE]
    _same_as_fresh(src, data, str(tmp_path / "fresh2"))
    v2 = third["data"]["version"]
    assert ONE not in load_manifest(v2)["sources"] and ONE in load_manifest(v2)["seen"]["units"]
    assert third["status"] == "promoted", third["decision"]
    assert third["decision"]["p_value"] < 0.05 and third["decision"]["n"] == 33
    assert third["challenger"]["score"] < third["champion"]["score"]  # rainfall MSE: lower is better

    # Round 3: nothing new (the one-frame day is not reported again): no training, no report.
    runs_before = len(history(None, MODEL))
    fourth = run("round3", UNTRAINED)
    assert fourth["status"] == "nothing-to-do" and fourth["new_sources"] == []
    assert not (tmp_path / "round3").exists() and len(history(None, MODEL)) == runs_before

    # Versions: one per round that added windows, each readable and unchanged; unchanged shards shared.
    listed = versions.list_versions(data)
    assert [v["uri"] for v in listed] == [v0, v1, v2]
    assert [v["windows"]["train"] for v in listed] == [13, 33, 66]
    assert len(read_windows(v0, "train")["start"]) == 13
    old, mid, new = _files(v0), _files(v1), _files(v2)
    val_test = [f for f in old if not f.startswith("train/")]
    assert val_test and all(old[f] == new[f] for f in val_test)  # hard links to the same shards
    assert all(mid[f] == new[f] for f in mid if f in new)
    assert not set(old.values()) & {mid[f] for f in mid if f.startswith("train/")}  # the day's shard was redone
    client = tracking.client()
    for report in (first, second, third):
        version = client.get_model_version(MODEL, report["challenger"]["version"])
        assert version.tags["data_uri"] == report["data"]["version"]
        assert version.tags["data_fingerprint"] == load_manifest(report["data"]["version"])["fingerprint"]

    # The history: who was champion when, with the scores on the shared windows and the reason.
    entries = history(None, MODEL)
    assert [e["action"] for e in entries] == ["first-champion", "kept-champion", "promoted"]
    assert [e["champion_after"] for e in entries] == ["1", "1", "3"]
    assert entries[2]["scores"]["challenger"] == pytest.approx(third["challenger"]["score"])
    assert set(entries[2]["scores"]) == {"champion", "challenger", "persistence", "optical-flow"}
    aliases = {alias: str(v) for alias, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"champion": "3"}  # @challenger moved to v3 at registration, removed at promotion
    page = client.get_model_version(MODEL, "3")
    assert "optical-flow" in page.tags["eval.test"]
    assert (tmp_path / "round2" / REPORT_NAME).is_file()
    assert os.environ.get("CONVLSTM_HOME") == str(project_home)


def test_new_frames_roll_a_chronological_split_forward_like_a_fresh_prepare(ray_local, sample_data, tmp_path):
    """`--split time`: the newest frames become the test span; the grown dataset equals a fresh prepare."""
    from pipelines.radar.prepare import new_days

    frames = sorted((sample_data / "radar-mch-sample" / "20160711").glob("*.gif"))
    src, data = tmp_path / "archive", str(tmp_path / "mch")
    src.mkdir()
    options = RadarOptions(in_len=2, out_len=2, stride=1, size=(16, 16), split="time", val_fraction=0.25,
                           test_fraction=0.25)
    for path in frames[:24]:
        shutil.copy(path, src / path.name)
    first = prepare_radar(src, data, "mch", options, publish=Publish(progress=False))
    for path in frames[24:]:
        shutil.copy(path, src / path.name)
    assert new_days(str(src), first) == ["2016-07-11", "2016-07-12"]  # the evening runs past midnight
    grown = prepare_radar(src, data, "mch", options, publish=Publish(incremental=True, progress=False))
    assert new_days(str(src), grown) == []
    fresh = prepare_radar(src, str(tmp_path / "fresh"), "mch", options, publish=Publish(progress=False))
    assert grown["fingerprint"] == fresh["fingerprint"] != first["fingerprint"]
    for split in ("train", "val", "test"):
        ours, theirs = read_windows(data, split), read_windows(str(tmp_path / "fresh"), split)
        assert np.array_equal(ours["start"], theirs["start"]) and np.array_equal(ours["frames"], theirs["frames"])
    newest = max(read_windows(data, "test")["start"])
    assert newest > max(read_windows(data, "train")["start"]) and newest > max(read_windows(data, "val")["start"])
