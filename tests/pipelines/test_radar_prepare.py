"""`convlstm prepare radar` end to end on the real samples: real Ray, real shards, read back and
compared frame by frame with an independent decode + centre crop + area resize."""
from __future__ import annotations

import json
import shutil
import tarfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from pipelines.manifest import load_manifest
from pipelines.radar.latest import load_sequence
from pipelines.shards import read_dataset, read_windows
from radar_reference import fmi_reference, knmi_reference, mch_reference, reference_frame

FIVE_MIN = timedelta(minutes=5)
MCH_FIRST = datetime.fromisoformat("2016-07-11T20:45:00Z")


def convlstm(*argv) -> int:
    return main(["prepare", "radar", *map(str, argv)])


@pytest.fixture(scope="module")
def mch_files(sample_data) -> list[Path]:
    return sorted((sample_data / "radar-mch-sample").rglob("*.gif"))


@pytest.fixture()
def days_file(tmp_path) -> Path:
    path = tmp_path / "days.json"
    path.write_text(json.dumps({"train": ["2016-07-11"], "val": ["2016-07-12"]}))
    return path  # 2016-07-12 holds one frame: val gets no window, so these runs need --allow-empty-split


def starts(windows: dict) -> list[datetime]:
    return [datetime.fromisoformat(s) for s in windows["start"]]


def assert_windows_match(windows: dict, files_by_time: dict[datetime, Path], decode, crop, size) -> None:
    """Every frame and mask of every window equals the independent decode of the file at its time."""
    length = windows["frames"].shape[1]
    expected = {}
    for row, start in enumerate(starts(windows)):
        for t in range(length):
            time = start + FIVE_MIN * t
            if time not in expected:
                expected[time] = reference_frame(decode(files_by_time[time]), crop, size)
            pixel, valid = expected[time]
            np.testing.assert_array_equal(windows["frames"][row, t, 0], pixel)
            np.testing.assert_array_equal(windows["mask"][row, t, 0], valid.astype(np.uint8))


def test_prepare_mch_sample_end_to_end(ray_local, sample_data, mch_files, days_file, tmp_path, capsys):
    out = tmp_path / "mch"
    rc = convlstm("--src", sample_data / "radar-mch-sample", "--out", out, "--in-len", 3, "--out-len", 3,
                  "--size", "64x64", "--crop", "600x600", "--days-file", days_file, "--allow-empty-split")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train: 34 windows" in printed and "mch frames every 300 s -> 64x64; gaps: 0" in printed
    manifest = load_manifest(out)
    assert manifest["task"] == "radar" and manifest["time_step_s"] == 300
    assert {k: manifest["params"][k] for k in ("format", "in_len", "out_len", "size", "crop")} == {
        "format": "mch", "in_len": 3, "out_len": 3, "size": [64, 64], "crop": [600, 600]}
    assert manifest["grid"] == {"height": 64, "width": 64, "source_height": 640, "source_width": 710,
                                "crop": [600, 600]}
    assert manifest["encoding"]["frames"] == "hko7-pixel: dBZ = p*70/255 - 10"
    assert manifest["encoding"]["zr"] == {"a": 58.53, "b": 1.56}
    assert manifest["encoding"]["source_format"] == "mch"
    assert "0.5*i - 35.75" in manifest["encoding"]["source_conversion"]
    assert manifest["schema"]["frames"]["shape"] == [6, 1, 64, 64] and manifest["schema"]["mask"]["dtype"] == "uint8"
    assert manifest["gaps"] == [] and manifest["rejected"] == []
    # 2016-07-12 holds one frame (00:00): no window, so no source.
    assert manifest["splits"] == {"train": {"members": ["2016-07-11"], "count": 34, "per_class": {}}}

    windows = read_windows(str(out), "train")
    assert windows["frames"].shape == (34, 6, 1, 64, 64) and windows["frames"].dtype == np.uint8
    assert starts(windows) == [MCH_FIRST + FIVE_MIN * k for k in range(34)]
    assert set(windows["source"]) == {"2016-07-11"}
    assert windows["mask"].min() == 0 and windows["mask"].max() == 1
    files_by_time = {MCH_FIRST + FIVE_MIN * k: f for k, f in enumerate(mch_files)}
    assert_windows_match(windows, files_by_time, mch_reference, (600, 600), (64, 64))
    assert read_dataset(str(out), "train").count() == 34

    # Nowcasting input: the same preprocessing from the manifest's params.
    last = starts(windows)[-1] + FIVE_MIN * 5
    pixels, mask, times, gaps = load_sequence(sample_data / "radar-mch-sample", "auto", last, 6, manifest["params"])
    assert times[0] == starts(windows)[-1] and gaps == []
    np.testing.assert_array_equal(pixels, windows["frames"][-1])
    np.testing.assert_array_equal(mask, windows["mask"][-1])


def test_archive_with_a_gap_and_bad_files_rejects_them_and_strict_publishes_nothing(
        ray_local, mch_files, days_file, tmp_path, capsys):
    folder = tmp_path / "frames" / "20160711"
    folder.mkdir(parents=True)
    for path in mch_files[:14]:
        shutil.copy(path, folder / path.name)
    (folder / mch_files[7].name).unlink()  # 21:20
    shutil.copy(mch_files[0], folder / "latest.gif")
    (folder / "AQC161932155V_00005.801.gif").write_bytes(b"")  # 21:55
    archive = tmp_path / "frames.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "frames", arcname="frames")
    out = tmp_path / "ds"
    args = ["--src", archive, "--format", "mch", "--in-len", 3, "--out-len", 3, "--size", "32x32",
            "--days-file", days_file, "--allow-empty-split"]

    assert convlstm(*args, "--out", out) == 0
    manifest = load_manifest(out)
    assert manifest["gaps"] == [{"after": "2016-07-11T21:15:00Z", "before": "2016-07-11T21:25:00Z", "missing": 1}]
    reasons = {r["file"]: r["reason"] for r in manifest["rejected"]}
    assert reasons["frames/20160711/latest.gif"] == "name does not parse as mch"
    assert reasons["frames/20160711/AQC161932155V_00005.801.gif"].startswith("unreadable mch frame")
    windows = read_windows(str(out), "train")
    # Runs 20:45-21:15 (7 frames) and 21:25-21:50 (6 frames): no window spans 21:20.
    assert starts(windows) == [MCH_FIRST, MCH_FIRST + FIVE_MIN, MCH_FIRST + FIVE_MIN * 8]
    assert_windows_match(windows, {MCH_FIRST + FIVE_MIN * k: f for k, f in enumerate(mch_files)},
                         mch_reference, None, (32, 32))
    assert not list(tmp_path.glob(".radar-src-*"))

    capsys.readouterr()
    assert convlstm(*args, "--out", tmp_path / "strict", "--strict") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--strict" in err[0] and "latest.gif" in err[0]
    assert not (tmp_path / "strict").exists()


def test_frame_truncated_past_its_header_is_a_gap_in_its_day(ray_local, mch_files, tmp_path):
    src = tmp_path / "frames"
    src.mkdir()
    for path in mch_files[:6]:
        shutil.copy(path, src / path.name)
    truncated = src / mch_files[1].name
    truncated.write_bytes(truncated.read_bytes()[:4000])
    out = tmp_path / "ds"
    assert convlstm("--src", src, "--out", out, "--in-len", 2, "--out-len", 2, "--size", "16x16",
                    "--val-fraction", 0, "--test-fraction", 0) == 0
    manifest = load_manifest(out)
    [rejection] = manifest["rejected"]
    assert rejection["file"] == mch_files[1].name and rejection["source"] == "2016-07-11"
    assert rejection["reason"].startswith("unreadable mch frame")
    assert manifest["gaps"] == [{"after": "2016-07-11T20:45:00Z", "before": "2016-07-11T20:55:00Z", "missing": 1}]
    # The day keeps the window of its 4 frames after the gap (20:55-21:10).
    assert manifest["splits"]["train"]["count"] == 1 and manifest["sources"]["2016-07-11"]["windows"] == 1
    windows = read_windows(str(out), "train")
    assert starts(windows) == [MCH_FIRST + FIVE_MIN * 2]
    assert_windows_match(windows, {MCH_FIRST + FIVE_MIN * k: f for k, f in enumerate(mch_files)},
                         mch_reference, None, (16, 16))


@pytest.mark.parametrize("fmt, folder, decode", [("fmi", "radar-fmi-sample", fmi_reference),
                                                 ("knmi", "radar-knmi-sample", knmi_reference)])
def test_prepare_fmi_and_knmi_paper_blocks(ray_local, sample_data, tmp_path, fmt, folder, decode):
    files = sorted(p for p in (sample_data / folder).rglob("*") if p.is_file() and p.name != "PROVENANCE.md")[:8]
    src = tmp_path / "frames"
    src.mkdir()
    for path in files:
        shutil.copy(path, src / path.name)
    out = tmp_path / "ds"
    assert convlstm("--src", src, "--out", out, "--in-len", 2, "--out-len", 2, "--size", "40x36",
                    "--crop", "600x500", "--split", "paper-blocks", "--seed", 3, "--allow-empty-split") == 0  # one block
    manifest = load_manifest(out)
    assert manifest["params"]["format"] == fmt and manifest["params"]["split"] == "paper-blocks"
    [(split, entry)] = [(s, e) for s, e in manifest["splits"].items() if e["count"]]
    block = "2016-09-28/b04" if fmt == "fmi" else "2010-08-26/b00"  # 200-minute blocks from midnight
    assert entry["members"] == [block] and entry["count"] == 5
    windows = read_windows(str(out), split)
    assert set(windows["source"]) == {block}
    first = datetime.fromisoformat(windows["start"][0])
    assert starts(windows) == [first + FIVE_MIN * k for k in range(5)]
    assert_windows_match(windows, {first + FIVE_MIN * k: f for k, f in enumerate(files)}, decode, (600, 500), (40, 36))
    assert 0 < windows["mask"].mean() < 1


@pytest.mark.parametrize("argv, message", [
    ([], "--src is required"),
    (["--src", "{mch}", "--format", "grib"], "--format must be one of"),
    (["--src", "{mch}", "--crop", "700x700"], "--crop 700x700 is larger than the frames (640x710)"),
    (["--src", "{mch}", "--size", "64"], "--size must look like HxW"),
    (["--src", "{mch}", "--in-len", "0"], "--in-len must be >= 1"),
    (["--src", "{tmp}/absent"], "--src"),
    (["--src", "{mch}", "--split", "paper-blocks", "--days-file", "{tmp}/days.json"], "--days-file only applies"),
    (["--src", "{mch}", "--split", "weekly"], "--split must be one of"),
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(sample_data, tmp_path, capsys, argv, message):
    (tmp_path / "days.json").write_text("{}")
    argv = [a.format(mch=sample_data / "radar-mch-sample", tmp=tmp_path) for a in argv]
    before = sorted(tmp_path.iterdir())
    assert convlstm(*argv, "--out", tmp_path / "ds") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(tmp_path.iterdir()) == before


def test_dataset_options_round_trip_through_the_manifest_params():
    """One validated options class per dataset: params are written and read back by the same code."""
    from manifests import manifest_of
    from pipelines.kth import KthOptions
    from pipelines.mnist import MnistOptions
    from pipelines.radar.prepare import RadarOptions

    radar = RadarOptions(in_len=3, out_len=4, stride=2, size=(32, 48), crop=(400, 400), split="time", seed=3)
    assert RadarOptions.from_params(radar.to_params("mch", None)) == radar
    assert RadarOptions.from_params(radar.to_params("mch", None), stride=5).stride == 5
    with pytest.raises(ValueError, match="^prepare.nope: unknown option"):
        RadarOptions.from_params(radar.to_params("mch", None), nope=1)
    with pytest.raises(ValueError, match="^--in-len must be >= 1"):
        RadarOptions.from_params({**radar.to_params("mch", None), "in_len": 0})
    mnist = MnistOptions(counts=(5, 2, 3), digits=3, size=48, frames=12, subset=40, seed=9)
    assert MnistOptions.from_params(mnist.to_params()) == mnist
    kth = KthOptions(frame_len=7, stride=3, size=(30, 40), color=True, split="tutorial")
    manifest = manifest_of("kth", params=kth.to_params())
    assert KthOptions.from_manifest(manifest, Path("/nonexistent")) == kth
