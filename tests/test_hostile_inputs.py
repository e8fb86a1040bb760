"""Hostile inputs and bad arguments, one case per defect found: the one-line message, the exit code,
nothing published, and nothing outside the output and temporary folders changed.

Grows with every defect: add the case here first (it must fail), then fix it.
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobs.cli import main
from pipelines.manifest import load_manifest
from pipelines.shards import read_windows
from pipelines.synthetic import write_kth_videos, write_oversized_avi

KTH_ARGS = ["--frame-len", "5", "--stride", "5", "--size", "24x32"]
# 3 + 3 frames per window, all days in train: the mch sample's 2016-07-11 (39 frames) gives 34 windows.
RADAR_ARGS = ["--in-len", "3", "--out-len", "3", "--size", "16x16", "--val-fraction", "0", "--test-fraction", "0"]
FIVE_MIN = timedelta(minutes=5)
MCH_FIRST = datetime.fromisoformat("2016-07-11T20:45:00Z")
HOSTILE = "AQC161932225V_00005.801.gif"  # 22:25, frame 20 of 2016-07-11


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (to prove nothing changed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def run(argv: list, capsys) -> tuple[int, str, str]:
    """`convlstm ARGV` -> (exit code, stdout, stderr); an exception escaping main fails the test."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def oversized_gif(width: int = 30000, height: int = 30000) -> bytes:
    """A 40-byte palette GIF whose header claims width x height pixels."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x08\x02\x4c\x01\x00;"
    return b"GIF89a" + screen + image


def oversized_pgm(width: int = 30000, height: int = 30000) -> bytes:
    return f"P5\n{width} {height}\n255\n".encode() + bytes(1000)


@pytest.fixture
def mch_src(shared_data, tmp_path) -> Path:
    """A writable copy of the real MeteoSwiss sample (40 frames, 2016-07-11 20:45 to 07-12 00:00)."""
    src = tmp_path / "mch"
    shutil.copytree(shared_data / "radar-mch-sample", src)
    return src


@pytest.fixture
def kth_src(tmp_path) -> Path:
    src = tmp_path / "kth"
    write_kth_videos(src, persons=[11], actions=("boxing",), scenarios=("d1",), frames=10)
    return src


# --- 1. --overwrite never destroys what is not a published dataset ----------------------------------

@pytest.mark.parametrize("flag", ["--overwrite", "--incremental"])
def test_overwrite_of_the_source_folder_is_refused(kth_src, capsys, flag):
    before = snapshot(kth_src)
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(kth_src), flag, *KTH_ARGS]) == 2
    one_line_error(capsys.readouterr().err, "--out", "overlaps the input")
    assert snapshot(kth_src) == before


def test_out_inside_or_around_the_source_is_refused(kth_src, tmp_path, capsys):
    before = snapshot(tmp_path)
    for out in (kth_src / "shards", tmp_path):
        assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(out), "--overwrite", *KTH_ARGS]) == 2
        one_line_error(capsys.readouterr().err, "overlaps the input")
    assert snapshot(tmp_path) == before


def test_overwrite_of_a_plain_file_or_foreign_folder_is_refused(kth_src, tmp_path, capsys):
    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work")
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(precious), "--overwrite", *KTH_ARGS]) == 2
    one_line_error(capsys.readouterr().err, str(precious), "is a file")
    assert precious.read_text() == "years of work"

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"not": "ours"}')
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8meow")
    before = snapshot(foreign)
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(foreign), "--overwrite", *KTH_ARGS]) == 2
    one_line_error(capsys.readouterr().err, "not a published dataset")
    assert snapshot(foreign) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kth", "photos", "thesis.tex"]


def test_overwrite_still_replaces_a_published_dataset(ray_local, kth_src, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(out), *KTH_ARGS]) == 0
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(out), "--overwrite", *KTH_ARGS]) == 0
    assert (out / "manifest.json").is_file()


# --- 2./3. a hostile or broken frame among good ones is a rejected input and a gap, never a traceback --

HOSTILE_FRAMES = {
    "zero-byte": lambda good: b"",
    "wrong-magic": lambda good: b"\x89PNG\r\n\x1a\n" + good[8:],
    "oversized-header": lambda good: oversized_gif(),
    "truncated": lambda good: good[:4000],  # the header probes fine; the pixels do not decode
}


@pytest.mark.parametrize("kind", list(HOSTILE_FRAMES))
def test_hostile_frame_among_good_ones_is_a_rejected_gap(ray_local, mch_src, tmp_path, capsys, kind):
    frame = next(mch_src.rglob(HOSTILE))
    frame.write_bytes(HOSTILE_FRAMES[kind](frame.read_bytes()))
    before = snapshot(mch_src)
    out = tmp_path / "ds"
    rc, printed, _ = run(["prepare", "radar", "--src", mch_src, "--out", out, *RADAR_ARGS], capsys)
    assert rc == 0
    assert "gaps: 1" in printed
    manifest = load_manifest(out)
    [rejection] = manifest["rejected"]
    assert rejection["file"] == f"20160711/{HOSTILE}" and rejection["reason"]
    if kind == "oversized-header":
        assert "header claims" in rejection["reason"]
    assert manifest["gaps"] == [{"after": "2016-07-11T22:20:00Z", "before": "2016-07-11T22:30:00Z", "missing": 1}]
    # 20:45-22:20 (20 frames) and 22:30-23:55 (18 frames): 15 + 13 windows, none spans 22:25.
    starts = [datetime.fromisoformat(s) for s in read_windows(str(out), "train")["start"]]
    assert starts == [MCH_FIRST + FIVE_MIN * k for k in [*range(15), *range(21, 34)]]
    assert manifest["splits"]["train"]["count"] == 28
    assert snapshot(mch_src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "mch"]


def test_oversized_pgm_header_is_a_rejected_fmi_frame(ray_local, shared_data, tmp_path, capsys):
    src = tmp_path / "fmi"
    src.mkdir()
    files = sorted((shared_data / "radar-fmi-sample").rglob("*.pgm.gz"))[:8]
    for path in files:
        shutil.copy(path, src / path.name)
    (src / files[-1].name).write_bytes(gzip.compress(oversized_pgm()))
    rc, printed, _ = run(["prepare", "radar", "--src", src, "--out", tmp_path / "ds", *RADAR_ARGS], capsys)
    assert rc == 0
    manifest = load_manifest(tmp_path / "ds")
    [rejection] = manifest["rejected"]
    assert rejection["file"] == files[-1].name and "header claims" in rejection["reason"]
    assert manifest["splits"]["train"]["count"] == 2  # 7 good frames, 6 per window


def test_nowcast_input_with_an_oversized_frame_is_refused_in_one_line(mch_src):
    """nowcast reads its input through the same probe + decode: an oversized latest frame is an
    unusable input (ValueError naming it, exit 2 in the CLI), not a DecompressionBombError."""
    from jobs.nowcast import read_input
    from pipelines.radar import mch

    manifest = {"encoding": {"source_format": "mch", "source_conversion": mch.CONVERSION, "source_zr": None},
                "grid": {"source_height": 640, "source_width": 710, "crop": None, "height": 16, "width": 16},
                "time_step_s": 300.0, "params": {"crop": None, "size": [16, 16]}}
    latest = next(mch_src.rglob("AQC161940000V_00005.801.gif"))  # 2016-07-12 00:00
    latest.write_bytes(oversized_gif())
    with pytest.raises(ValueError, match="2016-07-12T00:00:00Z.*header claims") as caught:
        read_input(mch_src, "auto", None, manifest, in_len=3)
    assert "\n" not in str(caught.value)


def test_avi_whose_header_claims_a_huge_frame_is_rejected_before_decoding(ray_local, kth_src, tmp_path, capsys):
    huge = write_oversized_avi(kth_src / "boxing" / "person12_boxing_d1_uncomp.avi", 4000, 3000)
    absurd = write_oversized_avi(kth_src / "boxing" / "person13_boxing_d1_uncomp.avi", 30000, 30000)
    out = tmp_path / "out"
    rc, printed, _ = run(["prepare", "kth", "--src", kth_src, "--out", out, *KTH_ARGS], capsys)
    assert rc == 0 and "rejected inputs: 2" in printed
    reasons = {r["file"]: r["reason"] for r in load_manifest(out)["rejected"]}
    assert reasons[str(huge)] == "frames are 4000x3000, KTH videos are 160x120"
    assert reasons[str(absurd)]  # OpenCV cannot decode it at all: rejected, never allocated
