"""Hostile inputs and bad arguments, one case per defect found: the one-line message, the exit code,
nothing published, and nothing outside the output and temporary folders changed.

Grows with every defect: add the case here first (it must fail), then fix it.
"""
from __future__ import annotations

import gzip
import hashlib
import re
import io
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobs.cli import main
from pipelines.manifest import load_manifest
from pipelines.owner_markers import OWNER_FILE
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


RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|DEBUG) ")


def one_line_error(err: str, *needles: str) -> str:
    """The command's own stderr is one line (Ray's timestamped log lines from its worker tasks aside)."""
    lines = [line for line in err.strip().splitlines() if line.strip() and not RAY_LOG_LINE.match(line)]
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
def mch_src(sample_data, tmp_path) -> Path:
    """A writable copy of the real MeteoSwiss sample (40 frames, 2016-07-11 20:45 to 07-12 00:00)."""
    src = tmp_path / "mch"
    shutil.copytree(sample_data / "radar-mch-sample", src)
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


def test_oversized_pgm_header_is_a_rejected_fmi_frame(ray_local, sample_data, tmp_path, capsys):
    src = tmp_path / "fmi"
    src.mkdir()
    files = sorted((sample_data / "radar-fmi-sample").rglob("*.pgm.gz"))[:8]
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
    from jobs.nowcast.forecast import read_input
    from manifests import manifest_of
    from pipelines.manifest import Grid
    from pipelines.radar import mch

    manifest = manifest_of("radar", params={"crop": None, "size": [16, 16]}).model_copy(update={
        "encoding": {"source_format": "mch", "source_conversion": mch.CONVERSION, "source_zr": None},
        "grid": Grid(source_height=640, source_width=710, crop=None, height=16, width=16), "time_step_s": 300.0})
    latest = next(mch_src.rglob("AQC161940000V_00005.801.gif"))  # 2016-07-12 00:00
    latest.write_bytes(oversized_gif())
    with pytest.raises(ValueError, match="2016-07-12T00:00:00Z.*header claims") as caught:
        read_input(mch_src, "auto", None, manifest, in_len=3)
    assert "\n" not in str(caught.value)


def test_hostile_videos_among_good_ones_are_rejected_inputs(ray_local, kth_src, tmp_path, capsys):
    good = next(kth_src.rglob("*.avi"))
    hostile = {"zero-byte": b"", "wrong-magic": b"\x89PNG\r\n\x1a\n" + good.read_bytes()[8:],
               "random": bytes(range(256)) * 64, "truncated": good.read_bytes()[:3000]}
    paths = {}
    for person, (kind, data) in enumerate(hostile.items(), start=12):
        paths[kind] = kth_src / "boxing" / f"person{person}_boxing_d1_uncomp.avi"
        paths[kind].write_bytes(data)
    before = snapshot(kth_src)
    out = tmp_path / "out"
    rc, printed, err = run(["prepare", "kth", "--src", kth_src, "--out", out, *KTH_ARGS], capsys)
    assert rc == 0, err
    manifest = load_manifest(out)
    reasons = {r["file"]: r["reason"] for r in manifest["rejected"]}
    assert set(reasons) == {str(p) for p in paths.values()} and all(reasons.values())
    assert manifest["splits"]["train"]["count"] == 2  # the good 10-frame video, windows of 5
    assert snapshot(kth_src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kth", "out"]


def test_avi_whose_header_claims_a_huge_frame_is_rejected_before_decoding(ray_local, kth_src, tmp_path, capsys):
    huge = write_oversized_avi(kth_src / "boxing" / "person12_boxing_d1_uncomp.avi", 4000, 3000)
    absurd = write_oversized_avi(kth_src / "boxing" / "person13_boxing_d1_uncomp.avi", 30000, 30000)
    out = tmp_path / "out"
    rc, printed, _ = run(["prepare", "kth", "--src", kth_src, "--out", out, *KTH_ARGS], capsys)
    assert rc == 0 and "rejected inputs: 2" in printed
    reasons = {r["file"]: r["reason"] for r in load_manifest(out)["rejected"]}
    assert reasons[str(huge)] == "frames are 4000x3000, KTH videos are 160x120"
    assert reasons[str(absurd)]  # OpenCV cannot decode it at all: rejected, never allocated


# --- 4./6. archives: bombs, traversal and links refused in one line; plain zipfile.writestr zips accepted --

def mch_zip(path: Path, mch_src: Path, count: int = 40, extra: dict[str, bytes] | None = None) -> Path:
    """A zip written like most scripts do, zipfile.writestr(name, data): permission bits, no file type."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for frame in sorted(mch_src.rglob("*.gif"))[:count]:
            zf.writestr(f"mch/{frame.parent.name}/{frame.name}", frame.read_bytes())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def assert_refused(argv: list, capsys, root: Path, *needles: str) -> str:
    """Exit 2, one line naming the needles, nothing published, nothing under `root` changed."""
    before = snapshot(root)
    rc, _, err = run(argv, capsys)
    assert rc == 2, err
    line = one_line_error(err, *needles)
    assert snapshot(root) == before
    assert not list(root.glob(".radar-src-*")) and not list(root.glob("*.tmp-*"))
    return line


def test_zip_written_by_writestr_is_accepted(ray_local, mch_src, tmp_path, capsys):
    archive = mch_zip(tmp_path / "mch.zip", mch_src, extra={"mch/README.txt": b"notes"})
    assert (zipfile.ZipFile(archive).infolist()[0].external_attr >> 16) == 0o600  # no S_IFREG bit
    rc, printed, err = run(["prepare", "radar", "--src", archive, "--out", tmp_path / "ds", *RADAR_ARGS], capsys)
    assert rc == 0, err
    assert "train: 34 windows" in printed and load_manifest(tmp_path / "ds")["rejected"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "mch", "mch.zip"]


def test_only_radar_members_are_unpacked(mch_src, tmp_path):
    from pipelines.radar.archive import source_folder

    archive = mch_zip(tmp_path / "mch.zip", mch_src, count=3,
                      extra={"mch/README.txt": b"notes", "mch/blob.bin": bytes(1 << 20), "mch/x.mask": b"m"})
    with source_folder(archive) as root:
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    names.remove(OWNER_FILE)  # the unpacking run's owner marker (issue 9.8)
    assert names == ["mch/20160711/AQC161932045V_00005.801.gif", "mch/20160711/AQC161932050V_00005.801.gif",
                     "mch/20160711/AQC161932055V_00005.801.gif", "mch/x.mask"]


def bomb_zip(path: Path, mch_src: Path, megabytes: int = 8) -> Path:
    """3 real frames and one 'frame' of `megabytes` MB of zeros (deflated to a few kB)."""
    return mch_zip(path, mch_src, count=3,
                   extra={"mch/20160711/AQC161932100V_00005.801.gif": bytes(megabytes << 20)})


def test_zip_bomb_is_refused_by_the_size_cap(mch_src, tmp_path, capsys):
    archive = bomb_zip(tmp_path / "bomb.zip", mch_src)
    assert archive.stat().st_size < 200_000
    assert_refused(["prepare", "radar", "--src", archive, "--out", tmp_path / "ds", "--max-unpacked-mb", "1",
                    *RADAR_ARGS], capsys, tmp_path, f"--src {archive}", "--max-unpacked-mb 1 MB")


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_bomb_is_refused_by_the_ratio_cap(mch_src, tmp_path, capsys, kind):
    """Default size cap; a zip member expanding 1000x, or a .tar.gz whose members declare over 100x
    the archive's bytes (a tar.gz has no per-member compressed size), is refused before extraction."""
    archive = bomb_zip(tmp_path / "bomb.zip", mch_src, megabytes=8 if kind == "zip" else 32)
    if kind == "tar.gz":
        with zipfile.ZipFile(archive) as zf, tarfile.open(tmp_path / "bomb.tar.gz", "w:gz") as tar:
            for info in zf.infolist():
                member = tarfile.TarInfo(info.filename)
                member.size = info.file_size
                tar.addfile(member, zf.open(info))
        archive.unlink()
        archive = tmp_path / "bomb.tar.gz"
    assert_refused(["prepare", "radar", "--src", archive, "--out", tmp_path / "ds", *RADAR_ARGS],
                   capsys, tmp_path, f"--src {archive}", "(more than 100x): refusing a likely")


def test_zip_member_larger_than_declared_is_refused(mch_src, tmp_path, capsys):
    """A central directory that under-declares a member's size: never more than the declared bytes
    are written, and the member is refused (its CRC does not match)."""
    archive = bomb_zip(tmp_path / "liar.zip", mch_src, megabytes=4)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("mch/20160711/AQC161932100V_00005.801.gif")
    central = data.rfind(b"PK\x01\x02", 0, data.find(b"PK\x05\x06"))  # the bomb is the last entry
    struct.pack_into("<I", data, central + 24, 50_000)  # uncompressed size
    struct.pack_into("<I", data, info.header_offset + 22, 50_000)
    archive.write_bytes(bytes(data))
    assert_refused(["prepare", "radar", "--src", archive, "--out", tmp_path / "ds", *RADAR_ARGS],
                   capsys, tmp_path, f"--src {archive}", "unreadable archive")


def _zip_with(path: Path, info: zipfile.ZipInfo, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mch/AQC161932045V_00005.801.gif", b"GIF89a")
        zf.writestr(info, data)
    return path


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _symlink_zip_info() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("mch/AQC161932050V_00005.801.gif")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    return member


MALICIOUS = {
    "zip-dotdot": lambda p: _zip_with(p / "a.zip", zipfile.ZipInfo("../AQC161932050V_00005.801.gif"), b"x"),
    "zip-absolute": lambda p: _zip_with(p / "a.zip", zipfile.ZipInfo("/tmp/AQC161932050V_00005.801.gif"), b"x"),
    "zip-symlink": lambda p: _zip_with(p / "a.zip", _symlink_zip_info(), b"/etc/passwd"),
    "tar-dotdot": lambda p: _tar_with(p / "a.tar", _tar_member("../AQC161932050V_00005.801.gif"), b"x"),
    "tar-absolute": lambda p: _tar_with(p / "a.tar", _tar_member(str(p / "abs.gif")), b"x"),
    "tar-symlink": lambda p: _tar_with(p / "a.tar", _tar_member("x.gif", tarfile.SYMTYPE, "/etc/passwd")),
    "tar-hardlink": lambda p: _tar_with(p / "a.tar", _tar_member("x.gif", tarfile.LNKTYPE, "/etc/passwd")),
}


@pytest.mark.parametrize("kind", list(MALICIOUS))
def test_traversal_and_link_members_are_refused(tmp_path, capsys, kind):
    work = tmp_path / "work"
    work.mkdir()
    archive = MALICIOUS[kind](work)
    needle = "unsafe member" if kind.endswith(("dotdot", "absolute")) else "link or special file"
    assert_refused(["prepare", "radar", "--src", archive, "--out", work / "ds", *RADAR_ARGS],
                   capsys, tmp_path, f"--src {archive}", needle)


def test_nowcast_archive_input_obeys_max_unpacked_mb(mch_src, tmp_path, capsys):
    """nowcast's --max-unpacked-mb sets the limit jobs.nowcast's source_folder calls obey."""
    from pipelines.radar.archive import source_folder, unpack_limit

    archive = mch_zip(tmp_path / "mch.zip", mch_src)  # 40 frames, 2 MB
    with unpack_limit(1), pytest.raises(ValueError, match="--max-unpacked-mb 1 MB"):
        with source_folder(archive):
            pass
    with unpack_limit(3), source_folder(archive) as root:
        assert len(list(root.rglob("*.gif"))) == 40
    with pytest.raises(SystemExit):
        main(["nowcast", "--help"])
    assert "--max-unpacked-mb" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_unpacked_mb_must_be_positive(mch_src, tmp_path, capsys, value):
    archive = mch_zip(tmp_path / "mch.zip", mch_src, count=3)
    assert_refused(["prepare", "radar", "--src", archive, "--out", tmp_path / "ds", "--max-unpacked-mb", value,
                    *RADAR_ARGS], capsys, tmp_path, "--max-unpacked-mb must be > 0")


# --- 9. an empty source publishes nothing: exit 2 naming the parameter --------------------------------

@pytest.mark.parametrize("dataset", ["kth", "radar"])
@pytest.mark.parametrize("content", ["empty", "readme-only"])
def test_empty_source_folder_is_refused(tmp_path, capsys, dataset, content):
    src = tmp_path / "src"
    src.mkdir()
    if content == "readme-only":
        (src / "README.md").write_text("no data here")
    assert_refused(["prepare", dataset, "--src", src, "--out", tmp_path / "ds"], capsys, tmp_path,
                   f"--src {src}", "nothing to prepare")
    assert not (tmp_path / "ds").exists()


def test_kth_source_without_any_usable_video_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "person1_boxing.avi").write_bytes(b"")  # name does not parse
    assert_refused(["prepare", "kth", "--src", src, "--out", tmp_path / "ds", *KTH_ARGS], capsys, tmp_path,
                   f"--src {src}", "none usable", "person1_boxing.avi")


def test_mnist_counts_producing_nothing_are_refused(sample_data, tmp_path, capsys):
    mnist = sample_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    assert_refused(["prepare", "mnist", "--mnist", mnist, "--out", tmp_path / "ds", "--counts", "0,0,0"],
                   capsys, tmp_path, "--counts 0,0,0", "nothing to prepare")


# --- 8. staging folders of killed runs are swept by later runs; live ones are kept -------------------

DEAD_PID = 2 ** 22 + 7  # above Linux's largest pid_max: no process has it


def _killed_stage(out: Path) -> Path:
    """Run `pipelines.publish.staging(out)` in a child process and kill -9 it inside: its staging
    folder stays behind, as after a real kill."""
    code = ("import sys, time; from pipelines.publish import staging\n"
            "with staging(sys.argv[1]) as stage:\n"
            "    open(stage.path + '/half-written.parquet', 'w').write('x'); print(stage.path, flush=True)\n"
            "    time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    path = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert path.is_dir() and path.name.startswith(f"{out.name}.tmp-")
    return path


def _marker(folder: Path, **fields) -> Path:
    """A staging folder with an owner marker of this process, `fields` overridden (`age` in seconds)."""
    from pipelines.owner_markers import claim

    age = fields.pop("age", 0)
    folder.mkdir()
    claim(folder)
    marker = json.loads((folder / OWNER_FILE).read_text())
    marker.update(fields, created=time.time() - age)
    (folder / OWNER_FILE).write_text(json.dumps(marker))
    (folder / "data.bin").write_bytes(b"x")
    return folder


def test_staging_folders_of_killed_runs_are_swept(ray_local, kth_src, tmp_path, capsys):
    out = tmp_path / "out"
    killed = _killed_stage(out)
    live = _marker(tmp_path / "out.tmp-0000000live0")  # this process: running
    reused = _marker(tmp_path / "out.tmp-00000reused0", start="1")  # our pid, but another process's start
    far_old = _marker(tmp_path / "out.tmp-000000farold", host="elsewhere", age=8 * 24 * 3600)
    far_new = _marker(tmp_path / "out.tmp-000000farnew", host="elsewhere", age=3600)
    unmarked = tmp_path / "out.tmp-0000unmarked"
    unmarked.mkdir()
    other_out = _marker(tmp_path / "other.tmp-0000000dead", pid=DEAD_PID)

    rc, _, err = run(["prepare", "kth", "--src", kth_src, "--out", out, *KTH_ARGS], capsys)
    assert rc == 0, err
    assert not killed.exists() and not reused.exists() and not far_old.exists()
    assert live.is_dir() and far_new.is_dir() and unmarked.is_dir()
    assert other_out.is_dir()  # another dataset's staging: swept by that dataset's next run
    assert not (out / OWNER_FILE).exists() and (out / "manifest.json").is_file()


def test_unpacked_archives_of_killed_runs_are_swept(ray_local, mch_src, tmp_path, capsys):
    archive = mch_zip(tmp_path / "mch.zip", mch_src, count=8)
    dead = _marker(tmp_path / ".radar-src-dead0001", pid=DEAD_PID)
    live = _marker(tmp_path / ".radar-src-live0001")
    rc, _, err = run(["prepare", "radar", "--src", archive, "--out", tmp_path / "ds", *RADAR_ARGS], capsys)
    assert rc == 0, err
    assert not dead.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.glob(".radar-src-*")) == [live.name]


def test_sources_that_all_fail_while_decoding_publish_nothing(ray_local, tmp_path, capsys):
    """Videos whose names parse but whose content yields no window (short, truncated, not a video):
    planning accepts them, decoding rejects every one, and nothing is published (exit 2)."""
    from pipelines.synthetic import write_bad_inputs

    src, out = tmp_path / "kth", tmp_path / "out"
    paths = write_bad_inputs(src, person=1)
    for kind in ("bad_name", "unknown_person", "wrong_size"):
        paths[kind].unlink()
    before = snapshot(src)
    assert main(["prepare", "kth", "--src", str(src), "--out", str(out), *KTH_ARGS]) == 2
    one_line_error(capsys.readouterr().err, "no windows", "refusing to publish an empty dataset")
    assert not out.exists() and snapshot(src) == before
    assert not list(tmp_path.glob("out.tmp-*"))


@pytest.mark.integration  # starts a local Ray
def test_local_ray_listens_on_loopback_only():
    """The CLI's local Ray binds every listening socket (gRPC, the autoscaler and dashboard metrics
    endpoints, which answer without authentication) to the loopback interface."""
    import os
    import subprocess
    import sys
    import tempfile
    import textwrap

    script = textwrap.dedent("""
        from pipelines.ray_session import init_ray
        ray = init_ray(num_cpus=1)
        import psutil  # a declared dependency (MLflow system metrics); Ray also vendors one
        kids = {p.pid for p in psutil.Process().children(recursive=True)}
        hosts = sorted({c.laddr[0] for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in kids})
        print("HOSTS", hosts)
        ray.shutdown()
    """)
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as ray_tmp:  # short: Ray's socket paths
        env = {**os.environ, "RAY_TMPDIR": ray_tmp}
        for name in ("RAY_enable_metrics_collection", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    hosts = eval(done.stdout.split("HOSTS", 1)[1].strip())
    assert hosts and set(hosts) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, hosts
