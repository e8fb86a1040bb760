"""Radar decoding, archives, timelines and split planning on the real samples and synthetic files.

Decoded values are checked pixel by pixel against an independent decode written here from the
PROVENANCE.md formulas (PIL palette indices, gzip + a hand-parsed PGM header, h5py).
"""
from __future__ import annotations

import gzip
import io
import shutil
import stat
import tarfile
import zipfile
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.radar.archive import safe_extract, source_folder
from pipelines.radar.days import BLOCK_FRAMES, SplitPlan, load_days_file, plan_units
from pipelines.radar.formats import detect_format, get_format, list_frames, probe_frames, read_dbz, resolve_format
from pipelines.radar.frame_format import FrameError
from pipelines.radar.preprocess import check_crop, center_crop, parse_hw, preprocess, resize, to_canonical
from pipelines.radar.latest import load_sequence
from pipelines.radar.timeline import contiguous_runs, find_gaps, infer_time_step, window_starts
from radar_reference import fmi_reference, hko7_pixel, knmi_reference, mch_reference, reference_frame

UTC = timezone.utc
FIVE_MIN = timedelta(minutes=5)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def mch_dir(sample_data) -> Path:
    return sample_data / "radar-mch-sample"


# --- decoders on the real samples ----------------------------------------------------------------

def test_mch_decodes_every_palette_index_as_documented(mch_dir):
    fmt = get_format("mch")
    frames, rejected = list_frames(mch_dir, fmt)
    assert rejected == [] and len(frames) == 40
    assert frames[0].time == utc(2016, 7, 11, 20, 45) and frames[-1].time == utc(2016, 7, 12, 0, 0)
    for frame in frames[::13]:
        dbz = read_dbz(fmt, frame.path, 300.0)
        assert dbz.shape == (640, 710) and dbz.dtype == np.float32
        np.testing.assert_array_equal(dbz, mch_reference(frame.path))
        assert 134_000 < np.isnan(dbz).sum() < 135_500
        pixel, valid = to_canonical(dbz)
        np.testing.assert_array_equal(pixel, hko7_pixel(mch_reference(frame.path)))
        assert not pixel[~valid].any()


def test_fmi_decodes_gzipped_and_plain_pgm(sample_data, tmp_path):
    fmt = get_format("fmi")
    frames, _ = list_frames(sample_data / "radar-fmi-sample", fmt)
    assert len(frames) == 8  # the repository's trimmed copy: the first 8 of 40 frames
    assert frames[0].time == utc(2016, 9, 28, 14, 45) and frames[-1].time == utc(2016, 9, 28, 15, 20)
    assert probe_frames(frames[:2], fmt)[1] == (1226, 760)
    for frame in (frames[0], frames[-1]):
        dbz = read_dbz(fmt, frame.path, 300.0)
        np.testing.assert_array_equal(dbz, fmi_reference(frame.path).astype(np.float32))
        assert np.isnan(dbz).sum() == 226_844
    plain = tmp_path / frames[0].path.name.removesuffix(".gz")
    plain.write_bytes(gzip.decompress(frames[0].path.read_bytes()))
    assert fmt.timestamp(plain.name) == frames[0].time
    np.testing.assert_array_equal(read_dbz(fmt, plain, 300.0), read_dbz(fmt, frames[0].path, 300.0))


def test_knmi_converts_accumulation_to_marshall_palmer_dbz(sample_data):
    fmt = get_format("knmi")
    frames, _ = list_frames(sample_data / "radar-knmi-sample", fmt)
    assert len(frames) == 24  # the repository's trimmed copy: the first 24 of 92 frames
    assert frames[0].time == utc(2010, 8, 26, 0, 0) and frames[-1].time == utc(2010, 8, 26, 1, 55)
    assert infer_time_step([f.time for f in frames]) == FIVE_MIN
    for frame in (frames[0], frames[20]):
        dbz = read_dbz(fmt, frame.path, 300.0)
        expected = knmi_reference(frame.path)
        assert np.isnan(dbz).sum() == np.isnan(expected).sum() == 398_271
        np.testing.assert_array_equal(np.isneginf(dbz), np.isneginf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(dbz[finite], expected[finite], rtol=1e-5)
        assert finite.any()
    # A 10-minute step halves the rate: 16 log10(2) dB lower.
    ten = read_dbz(fmt, frames[0].path, 600.0)
    finite = np.isfinite(ten)
    np.testing.assert_allclose(ten[finite], read_dbz(fmt, frames[0].path, 300.0)[finite] - 16 * np.log10(2), atol=1e-4)


def write_hko(root: Path, time: datetime, pixel: np.ndarray, valid: np.ndarray | None = None) -> Path:
    stem = f"RAD{time:%y%m%d%H%M}00"
    day = f"{time:%Y}/{time:%m}/{time:%d}"
    png = root / "radarPNG" / day / f"{stem}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixel).save(png)
    if valid is not None:
        mask = root / "radarPNG_mask" / day / f"{stem}.mask"
        mask.parent.mkdir(parents=True, exist_ok=True)
        mask.write_bytes(zlib.compress(valid.astype(bool).tobytes()))
    return png


def test_hko_png_is_already_canonical_and_mask_is_optional(tmp_path):
    fmt = get_format("hko")
    pixel = np.arange(256, dtype=np.uint8).reshape(16, 16)
    valid = np.ones((16, 16), dtype=bool)
    valid[3, 5] = valid[15, 15] = False
    masked = write_hko(tmp_path, utc(2016, 7, 11, 0, 6), pixel, valid)
    unmasked = write_hko(tmp_path, utc(2016, 7, 11, 0, 12), pixel)
    frames, rejected = list_frames(tmp_path, fmt)
    assert [f.time for f in frames] == [utc(2016, 7, 11, 0, 6), utc(2016, 7, 11, 0, 12)] and rejected == []
    out, out_valid = to_canonical(read_dbz(fmt, unmasked, 360.0))
    np.testing.assert_array_equal(out, pixel)
    assert out_valid.all()
    out, out_valid = to_canonical(read_dbz(fmt, masked, 360.0))
    np.testing.assert_array_equal(out_valid, valid)
    np.testing.assert_array_equal(out, np.where(valid, pixel, 0))


# --- canonical encoding and preprocessing --------------------------------------------------------

def test_canonical_encoding_keeps_nodata_apart_from_no_echo():
    dbz = np.array([[np.nan, -np.inf, -32.0, -10.0], [0.0, 20.0, 60.0, 89.0]], dtype=np.float32)
    pixel, valid = to_canonical(dbz)
    np.testing.assert_array_equal(pixel, [[0, 0, 0, 0], [36, 109, 255, 255]])
    np.testing.assert_array_equal(valid, [[False, True, True, True], [True] * 4])


def test_crop_and_resize_mask_is_valid_only_where_all_sources_are():
    pixel = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    valid = np.ones((6, 6), dtype=bool)
    valid[1, 4] = False
    cropped = center_crop(pixel, (4, 4))
    np.testing.assert_array_equal(cropped, pixel[1:5, 1:5])
    small, small_valid = resize(center_crop(pixel, (4, 4)), center_crop(valid, (4, 4)), (2, 2))
    np.testing.assert_array_equal(small_valid, [[True, False], [True, True]])
    assert small[0, 1] == 0
    assert small[1, 1] == cv2.resize(cropped, (2, 2), interpolation=cv2.INTER_AREA)[1, 1]
    # Factor 1.5: source pixel (1, 4) straddles output rows 0-1 and columns 2-3: all four become invalid.
    _, v = resize(pixel, valid, (4, 4))
    assert list(zip(*np.nonzero(~v))) == [(0, 2), (0, 3), (1, 2), (1, 3)]


def test_preprocess_flags():
    assert parse_hw("100x64", "--size") == (100, 64)
    for bad in ("100", "0x5", "axb"):
        with pytest.raises(ValueError, match="--size"):
            parse_hw(bad, "--size")
    with pytest.raises(ValueError, match="--crop"):
        check_crop((700, 100), (640, 710))
    check_crop((640, 640), (640, 710))
    dbz = np.full((10, 12), 20.0, dtype=np.float32)
    dbz[0, 0] = np.nan
    pixel, valid = preprocess(dbz, (8, 8), (4, 4))
    assert pixel.shape == valid.shape == (4, 4) and valid.all() and (pixel == 109).all()


# --- listing, detection, bad files ---------------------------------------------------------------

def test_detect_format_from_names_and_refuse_mixed_or_unknown(sample_data):
    for folder, name in (("radar-mch-sample", "mch"), ("radar-fmi-sample", "fmi"), ("radar-knmi-sample", "knmi")):
        assert resolve_format("auto", sample_data / folder).name == name
    assert detect_format(["RAD160711000600.png", "notes.txt"]).name == "hko"
    with pytest.raises(ValueError, match="mixed"):
        detect_format(["RAD160711000600.png", "RAD_NL25_RAP_5min_201008260000.h5"])
    with pytest.raises(ValueError, match="no file name matches"):
        detect_format(["radar.gif", "README.md"])
    with pytest.raises(ValueError, match="--format"):
        get_format("grib")


def test_bad_names_truncated_empty_and_off_grid_frames_are_rejected(mch_dir, tmp_path):
    fmt = get_format("mch")
    good = sorted(mch_dir.rglob("*.gif"))[:3]
    for path in good:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "PROVENANCE.md").write_text("ignored")
    (tmp_path / "radar_latest.gif").write_bytes(good[0].read_bytes())
    (tmp_path / "AQC161932100V_00005.801.gif").write_bytes(b"")
    (tmp_path / "AQC161932105V_00005.801.gif").write_bytes(good[0].read_bytes()[:4000])
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).convert("P").save(tmp_path / "AQC161932110V_00005.801.gif")
    (tmp_path / "AQC161932045F_00005.801.gif").write_bytes(good[0].read_bytes())
    frames, rejected = list_frames(tmp_path, fmt)
    reasons = {r["file"]: r["reason"] for r in rejected}
    assert reasons["radar_latest.gif"] == "name does not parse as mch"
    assert reasons["AQC161932045V_00005.801.gif"].startswith("duplicate timestamp")
    assert "PROVENANCE.md" not in reasons
    usable, grid, bad = probe_frames(frames, fmt)
    reasons = {r["file"]: r["reason"] for r in bad}
    assert grid == (640, 710)
    assert reasons["AQC161932100V_00005.801.gif"].startswith("unreadable mch frame")
    assert reasons["AQC161932110V_00005.801.gif"] == "grid 10x12 differs from 640x710"
    truncated = [f for f in usable if f.name == "AQC161932105V_00005.801.gif"]
    assert len(usable) == 4 and len(truncated) == 1  # its header is intact: found when decoding
    with pytest.raises(FrameError, match="unreadable mch frame"):
        read_dbz(fmt, truncated[0].path, 300.0)


# --- archives ------------------------------------------------------------------------------------

def test_tar_tgz_and_zip_sources_list_the_same_frames(mch_dir, tmp_path):
    fmt = get_format("mch")
    files = sorted(mch_dir.rglob("*.gif"))[:4]
    with tarfile.open(tmp_path / "s.tar", "w") as tar, tarfile.open(tmp_path / "s.tar.gz", "w:gz") as tgz, \
            zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
        for path in files:
            tar.add(path, arcname=f"20160711/{path.name}")
            tgz.add(path, arcname=f"20160711/{path.name}")
            zf.write(path, arcname=f"20160711/{path.name}")
    for name in ("s.tar", "s.tar.gz", "s.zip"):
        with source_folder(tmp_path / name) as root:
            frames, rejected = list_frames(root, fmt)
            assert [f.name for f in frames] == [f"20160711/{p.name}" for p in files] and rejected == []
            assert (frames[0].path.read_bytes() == files[0].read_bytes())
        assert not root.exists()
    with pytest.raises(FileNotFoundError, match="--src"):
        with source_folder(tmp_path / "absent.tar"):
            pass
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(ValueError, match="neither a folder nor"):
        with source_folder(tmp_path / "notes.txt"):
            pass


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_malicious_tar_is_refused_before_writing_anything(tmp_path, kind):
    target = tmp_path / "dest"
    target.mkdir()
    member = tarfile.TarInfo({"dotdot": "../escaped.txt", "absolute": str(tmp_path / "abs.txt")}.get(kind, "link"))
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        member.type, member.linkname = tarfile.LNKTYPE, "ok.txt"
    elif kind == "device":
        member.type, member.devmajor, member.devminor = tarfile.CHRTYPE, 1, 3
    archive = _tar_with(tmp_path / "evil.tar", member, b"pwned")
    with pytest.raises(ValueError, match="unsafe member|link or special file"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "abs.txt").exists()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_malicious_zip_is_refused_before_writing_anything(tmp_path, kind):
    target = tmp_path / "dest"
    target.mkdir()
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "ok")
        if kind == "symlink":
            info = zipfile.ZipInfo("link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            # zipfile.writestr would sanitise the name; write the raw name through a ZipInfo.
            zf.writestr(zipfile.ZipInfo("../escaped.txt" if kind == "dotdot" else "/abs.txt"), "pwned")
    with pytest.raises(ValueError, match="unsafe member|link or special file"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


# --- timelines -----------------------------------------------------------------------------------

def test_time_step_runs_gaps_and_windows():
    times = [utc(2016, 7, 11, 20, 0) + FIVE_MIN * k for k in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11)]
    assert infer_time_step(times) == FIVE_MIN
    assert contiguous_runs(times, FIVE_MIN) == [(0, 5), (5, 6)]
    assert find_gaps(times, FIVE_MIN) == [
        {"after": "2016-07-11T20:20:00Z", "before": "2016-07-11T20:30:00Z", "missing": 1}]
    starts = window_starts(times, FIVE_MIN, 4, 1)
    assert starts == [0, 1, 5, 6, 7]
    for s in starts:
        assert times[s + 3] - times[s] == 3 * FIVE_MIN
    assert window_starts(times, FIVE_MIN, 4, 2) == [0, 5, 7]
    with pytest.raises(ValueError):
        infer_time_step(times[:1])


# --- splits --------------------------------------------------------------------------------------

def paper_times(days: int = 97) -> list[datetime]:
    step = timedelta(minutes=6)
    first = utc(2016, 1, 1)
    return [first + timedelta(days=d) + step * k for d in range(days) for k in range(240)]


def test_paper_blocks_give_the_papers_8148_2037_2037():
    step = timedelta(minutes=6)
    units = plan_units(paper_times(), step, length=20, stride=1, plan=SplitPlan("paper-blocks", seed=0))
    counts = {s: sum(len(u.starts) for u in units if u.split == s) for s in ("train", "val", "test")}
    assert counts == {"train": 8148, "val": 2037, "test": 2037}
    assert len(units) == 97 * 6
    for unit in units:
        assert len(unit.times) == BLOCK_FRAMES and len(unit.starts) == 21
        assert unit.times[-1] - unit.times[0] == step * (BLOCK_FRAMES - 1)
    per_day = {}
    for unit in units:
        per_day.setdefault(unit.id.split("/")[0], []).append(unit.split)
    assert all(sorted(s) == ["test"] + ["train"] * 4 + ["val"] for s in per_day.values())
    again = plan_units(paper_times(), step, length=20, stride=1, plan=SplitPlan("paper-blocks", seed=0))
    other = plan_units(paper_times(), step, length=20, stride=1, plan=SplitPlan("paper-blocks", seed=1))
    assert [u.split for u in again] == [u.split for u in units]
    assert [u.split for u in other] != [u.split for u in units]


def test_days_split_is_seeded_stable_and_follows_a_days_file(tmp_path):
    step = timedelta(minutes=6)
    times = paper_times(120)
    plan = lambda seed, t=times: {u.id: u.split for u in plan_units(t, step, 20, 5, SplitPlan("days", seed, 0.2, 0.1))}
    first = plan(0)
    assert first == plan(0) and first != plan(1)
    assert set(first.values()) == {"train", "val", "test"}
    assert 10 < sum(s == "val" for s in first.values()) < 40 and 3 < sum(s == "test" for s in first.values()) < 25
    # Adding days never moves the others.
    assert {d: s for d, s in plan(0, times[: 240 * 50]).items()} == {d: first[d] for d in list(first)[:50]}
    days_file = tmp_path / "days.json"
    days_file.write_text('{"train": ["2016-01-01", "2016-01-02"], "test": ["2016-01-03"]}')
    units = plan_units(times, step, 20, 1, SplitPlan("days", days=load_days_file(days_file)))
    assert [(u.id, u.split, len(u.starts)) for u in units] == [
        ("2016-01-01", "train", 221), ("2016-01-02", "train", 221), ("2016-01-03", "test", 221)]
    days_file.write_text('{"train": ["2016-01-01"], "val": ["2016-01-01"]}')
    with pytest.raises(ValueError, match="--days-file.*both"):
        load_days_file(days_file)
    days_file.write_text('{"training": []}')
    with pytest.raises(ValueError, match="--days-file"):
        load_days_file(days_file)
    with pytest.raises(ValueError, match="--val-fraction"):
        plan_units(times, step, 20, 1, SplitPlan("days", val_fraction=1.5))


def test_mch_sample_crosses_midnight_into_two_days(mch_dir):
    frames, _ = list_frames(mch_dir, get_format("mch"))
    times = [f.time for f in frames]
    units = plan_units(times, FIVE_MIN, length=6, stride=1,
                       plan=SplitPlan("days", days={"2016-07-11": "train", "2016-07-12": "val"}))
    assert [(u.id, len(u.times), len(u.starts)) for u in units] == [("2016-07-11", 39, 34), ("2016-07-12", 1, 0)]
    blocks = plan_units(times, FIVE_MIN, length=6, stride=1, plan=SplitPlan("paper-blocks"))
    # 200-minute blocks from midnight: 20:45-23:15 is b06 (31 frames), 23:20-23:55 b07, 00:00 the next day's b00.
    assert [(u.id, len(u.times), len(u.starts)) for u in blocks] == [
        ("2016-07-11/b06", 31, 26), ("2016-07-11/b07", 8, 3), ("2016-07-12/b00", 1, 0)]


# --- nowcasting input ----------------------------------------------------------------------------

def test_load_sequence_reads_latest_frames_like_prepare_and_reports_gaps(mch_dir, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    files = sorted(mch_dir.rglob("*.gif"))[:6]
    for path in files:
        shutil.copy(path, folder / path.name)
    (folder / files[3].name).unlink()
    params = {"crop": [400, 400], "size": [50, 50]}
    pixels, mask, times, gaps = load_sequence(folder, "auto", utc(2016, 7, 11, 21, 8), 4, params)
    assert times == [utc(2016, 7, 11, 20, 50) + FIVE_MIN * k for k in range(4)]
    assert gaps == [{"time": "2016-07-11T21:00:00Z", "reason": "missing"}]
    assert pixels.shape == mask.shape == (4, 1, 50, 50) and pixels.dtype == mask.dtype == np.uint8
    assert not mask[2].any() and not pixels[2].any()
    for slot, path in ((0, files[1]), (3, files[4])):
        expected, valid = reference_frame(mch_reference(path), (400, 400), (50, 50))
        np.testing.assert_array_equal(mask[slot, 0], valid)
        np.testing.assert_array_equal(pixels[slot, 0], expected)
    with tarfile.open(tmp_path / "seq.tar", "w") as tar:
        tar.add(folder, arcname="frames")
    latest = load_sequence(tmp_path / "seq.tar", "mch", None, 2, params)
    assert latest[2] == [utc(2016, 7, 11, 21, 5), utc(2016, 7, 11, 21, 10)] and latest[3] == []
    np.testing.assert_array_equal(latest[0][0], pixels[3])


def test_time_split_is_chronological_and_windows_stay_inside_spans():
    from datetime import datetime, timedelta


    step = timedelta(minutes=5)
    times = [datetime(2016, 7, 11, 20, 45) + i * step for i in range(40)]
    units = plan_units(times, step, length=6, stride=1, plan=SplitPlan("time", val_fraction=0.2, test_fraction=0.2))
    assert [u.split for u in units] == ["train", "val", "test"]
    assert [len(u.times) for u in units] == [24, 8, 8]
    assert units[0].times[-1] < units[1].times[0] < units[1].times[-1] < units[2].times[0]
    assert [len(u.starts) for u in units] == [19, 3, 3]
