"""KTH: name parsing, 00sequences.txt, person splits, and the Ray Data pipeline on generated videos
checked frame by frame against a direct OpenCV decode."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pipelines.kth import CATEGORIES, KthOptions, parse_name, plan, prepare_kth
from pipelines.driver import Publish
from pipelines.kth_sequences import load_sequences, parse_sequences
from pipelines.shards import read_windows
from pipelines.kth_splits import KTH_PERSONS, PRESETS, check_covered, is_known, load_split
from pipelines.synthetic import video_name, write_bad_inputs, write_kth_videos


def reference_frames(path, size, color=False) -> np.ndarray:
    """Direct decode: cv2 read, BGR->GRAY (or RGB), INTER_AREA resize -> [N, C, H, W]."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB if color else cv2.COLOR_BGR2GRAY)
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(frame.transpose(2, 0, 1) if color else frame[None])
    capture.release()
    return np.stack(frames)


def test_sequences_file_real_copy(sample_data):
    entries = load_sequences(sample_data / "kth-sample" / "00sequences.txt")
    assert len(entries) == 600
    assert entries["person01_boxing_d1"] == [(0, 95), (95, 185), (185, 245), (245, 360)]
    assert entries["person13_handclapping_d3"] == []
    assert sum(1 for r in entries.values() if len(r) == 3) == 5
    assert entries["person07_jogging_d4"] == [(0, 64), (193, 264), (269, 332), (489, 570)]
    assert entries["person07_handclapping_d2"]  # spaces before the tab


def test_sequences_parser_formats():
    text = ("Header line\r\n\r\nTraining: person11, 12\r\n"
            "person02_walking_d3  \t frames\t5-10,1-4\r\n"
            "person03_running_d1\t*missing*\r\n")
    assert parse_sequences(text) == {"person02_walking_d3": [(0, 4), (4, 10)], "person03_running_d1": []}
    with pytest.raises(ValueError, match="line 2"):
        parse_sequences("x\nperson02_walking_d3 frames 9-3\n")


def test_name_parsing():
    assert parse_name("person07_handwaving_d2_uncomp.avi") == (7, "handwaving", "d2")
    assert parse_name("person31_walking_d1_uncomp.avi") == (31, "walking", "d1")
    for bad in ("person1_boxing.avi", "person07_dancing_d1_uncomp.avi", "person07_boxing_d5_uncomp.avi"):
        with pytest.raises(ValueError, match="does not parse"):
            parse_name(bad)


def test_split_presets_and_files(tmp_path):
    for name, split in PRESETS.items():
        persons = [p for ids in split.values() for p in ids]
        assert sorted(persons) == sorted(KTH_PERSONS), name
    assert load_split("official")["val"] == [1, 4, 19, 20, 21, 23, 24, 25]
    assert load_split("tutorial")["test"] == [13, 14, 16]

    custom = tmp_path / "split.json"
    custom.write_text(json.dumps({"train": [1, 2], "test": [3, 31]}))
    split = load_split(str(custom))
    assert split == {"train": [1, 2], "test": [3, 31]}
    assert is_known(31, split) and not is_known(32, split) and is_known(25, split)
    with pytest.raises(ValueError, match=r"person 7 has videos but is in no split of --split .*split\.json"):
        check_covered({1, 7, 32}, split, str(custom))
    custom.write_text(json.dumps({"train": [1, 2], "test": [2]}))
    with pytest.raises(ValueError, match="person 2 is in both"):
        load_split(str(custom))
    with pytest.raises(ValueError, match="--split"):
        load_split("nonsense")


def test_prepare_matches_direct_decode_and_rejects_bad_inputs(ray_local, tmp_path):
    src = tmp_path / "kth"
    videos = write_kth_videos(src, persons=[11, 1, 2], actions=("boxing", "handwaving", "walking"),
                              scenarios=("d1", "d3"), frames=(20, 26), seed=3)
    bad = write_bad_inputs(src / "misc", person=5)
    (src / "README.txt").write_text("not a video and not .avi: ignored")
    options = KthOptions(frame_len=6, stride=4, size=(30, 40))
    manifest = prepare_kth(src, str(tmp_path / "out"), options, publish=Publish(progress=False))

    rejected = {r["file"]: r["reason"] for r in manifest["rejected"]}
    assert set(rejected) == {str(p) for p in bad.values()}
    assert rejected[str(bad["unknown_person"])].startswith("unknown person id 31")
    assert rejected[str(bad["bad_name"])].startswith("file name does not parse")
    assert rejected[str(bad["truncated"])].startswith("truncated")
    assert rejected[str(bad["short"])].startswith("shorter than one window")
    assert rejected[str(bad["wrong_size"])].startswith("frames are 320x240")
    for kind in ("empty", "not_video"):
        assert rejected[str(bad[kind])].startswith("unreadable")

    split_of = {11: "train", 1: "val", 2: "test"}
    for split in ("train", "val", "test"):
        shards = read_windows(str(tmp_path / "out"), split)
        expected = {k: [] for k in ("frames", "label", "person", "scenario", "source", "start")}
        for path in sorted(videos, key=lambda p: p.stem):
            person, action, scenario = parse_name(path.name)
            if split_of[person] != split:
                continue
            frames = reference_frames(path, options.size)
            for start in range(0, len(frames) - options.frame_len + 1, options.stride):
                for key, value in (("frames", frames[start:start + options.frame_len]),
                                   ("label", CATEGORIES.index(action)), ("person", person),
                                   ("scenario", scenario), ("source", path.stem), ("start", start)):
                    expected[key].append(value)
        assert shards["frames"].shape[1:] == (6, 1, 30, 40) and shards["frames"].dtype == np.uint8
        for key, values in expected.items():
            assert np.array_equal(shards[key], np.array(values, dtype=shards[key].dtype)), (split, key)
        assert manifest["splits"][split]["count"] == len(expected["start"])
        assert sum(manifest["splits"][split]["per_class"].values()) == len(expected["start"])
    assert manifest["splits"]["train"]["members"] == list(range(11, 19))
    assert manifest["params"]["split"] == "official"
    assert len(manifest["sources"]) == len(videos)


def test_color_flat_layout_and_sequences(ray_local, tmp_path):
    src = tmp_path / "flat"
    videos = write_kth_videos(src, persons=[12], actions=("jogging", "running", "boxing"),
                              scenarios=("d2",), frames=30, layout="flat")
    assert all(p.parent == src for p in videos)
    sequences = tmp_path / "00sequences.txt"
    sequences.write_bytes(b"header\r\n\r\nperson12_jogging_d2\t\tframes\t3-12, 20-30\r\n"
                          b"person12_running_d2\t*missing*\r\n")
    options = KthOptions(frame_len=4, stride=4, size=(12, 16), color=True, sequences=str(sequences))
    manifest = prepare_kth(src, str(tmp_path / "out"), options, publish=Publish(progress=False))

    reasons = sorted(r["reason"] for r in manifest["rejected"])
    assert reasons == ["no entry person12_boxing_d2 in the sequences file",
                       "person12_running_d2 is marked *missing* in the sequences file"]
    shards = read_windows(str(tmp_path / "out"), "train")
    # ranges 3-12 and 20-30 are [2, 12) and [19, 30) 0-indexed: starts 2, 6 and 19, 23
    assert shards["start"].tolist() == [2, 6, 19, 23]
    frames = reference_frames(src / video_name(12, "jogging", "d2"), (12, 16), color=True)
    assert shards["frames"].shape[1:] == (4, 3, 12, 16)
    for window, start in zip(shards["frames"], shards["start"]):
        assert np.array_equal(window, frames[start:start + 4])
    assert manifest["schema"]["frames"]["encoding"] == "RGB"
    assert manifest["params"]["sequences_sha256"]


def test_person_in_no_split_fails_before_any_work(tmp_path):
    src = tmp_path / "kth"
    write_kth_videos(src, persons=[1, 7], actions=("boxing",), scenarios=("d1",), frames=8)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [1], "test": [2]}))
    with pytest.raises(ValueError, match="person 7 .* no split"):
        plan(src, KthOptions(split=str(split)))
