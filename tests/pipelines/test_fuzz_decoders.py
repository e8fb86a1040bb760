"""Fuzzing every radar and video decoder: hostile bytes either decode or are rejected, never crash.

For each format (MeteoSwiss GIF, FMI PGM and .pgm.gz, KNMI HDF5, HKO-7 PNG, KTH AVI) a seeded set of
mutants of a valid file: random bytes behind the format's magic, truncations at random offsets,
random bit flips anywhere, and garbled header bytes (dimensions, lengths). Each mutant goes through
the entry points the pipelines use: radar frames through `probe_frames` (which must return, listing
the frame as usable or rejected) and `read_dbz` (which must return a float32 grid or raise
FrameError); KTH videos through `decode_video` (which must return frames or raise Rejected).
Anything else (PIL's DecompressionBombError, struct.error, SyntaxError, cv2.error, a MemoryError
from a header claiming a huge grid...) is a bug. Bounded: CASES mutants per format, fixed seeds.
"""
from __future__ import annotations

import gzip
import io
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from pipelines.sources import Rejected
from pipelines.kth import decode_video
from pipelines.radar.formats import FrameFile, get_format, probe_frames, read_dbz
from pipelines.radar.frame_format import FrameError
from pipelines.synthetic import render, write_oversized_avi, write_video

CASES = 48  # per format: 12 of each mutation kind
KINDS = ("magic", "truncate", "bitflip", "header")

MAGIC = {
    "mch": b"GIF89a",
    "fmi": b"P5\n",
    "fmi-gz": b"\x1f\x8b\x08",
    "knmi": b"\x89HDF\r\n\x1a\n",
    "hko": b"\x89PNG\r\n\x1a\n",
    "kth": b"RIFF\x00\x10\x00\x00AVI LIST",
}
NAMES = {
    "mch": "AQC161932045V_00005.801.gif",
    "fmi": "201609281445_fmi.radar.composite.lowest_FIN_SUOMI1.pgm",
    "fmi-gz": "201609281445_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz",
    "knmi": "RAD_NL25_RAP_5min_201008260000.h5",
    "hko": "RAD1607112045" "00.png",
    "kth": "person01_boxing_d1_uncomp.avi",
}


def sample(kind: str, sample_data: Path, tmp: Path) -> bytes:
    """A valid file of the format: the real sample where there is one, else a faithful synthetic one."""
    if kind == "mch":
        return sorted((sample_data / "radar-mch-sample").rglob("*.gif"))[0].read_bytes()
    if kind in ("fmi", "fmi-gz"):
        data = sorted((sample_data / "radar-fmi-sample").rglob("*.pgm.gz"))[0].read_bytes()
        return data if kind == "fmi-gz" else gzip.decompress(data)
    if kind == "knmi":
        return sorted((sample_data / "radar-knmi-sample").rglob("*.h5"))[0].read_bytes()
    if kind == "hko":
        pixel = np.random.default_rng(0).integers(0, 256, (480, 480), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixel, mode="L").save(buffer, format="PNG")
        return buffer.getvalue()
    path = write_video(tmp / "sample.avi", render("boxing", "d1", 12, np.random.default_rng(0)))
    return path.read_bytes()


def mutate(data: bytes, kind: str, magic: bytes, rng: np.random.Generator) -> bytes:
    if kind == "magic":
        return magic + rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
    if kind == "truncate":
        return data[:int(rng.integers(0, len(data)))]
    buffer = np.frombuffer(data, dtype=np.uint8).copy()
    if kind == "bitflip":
        at = rng.integers(0, len(buffer), int(rng.integers(1, 17)))
        buffer[at] ^= (1 << rng.integers(0, 8, len(at))).astype(np.uint8)
    else:  # header: random values over a few bytes of the first 64 (dimensions, lengths, flags)
        at = rng.integers(len(magic) if len(magic) < 64 else 0, min(64, len(buffer)), int(rng.integers(1, 5)))
        buffer[at] = rng.integers(0, 256, len(at), dtype=np.uint8)
    return buffer.tobytes()


def check_radar_frame(fmt_name: str, path: Path) -> str:
    """Probe + decode as the pipeline does; returns the outcome, fails on any foreign exception."""
    fmt = get_format(fmt_name)
    frame = FrameFile(path, path.name, fmt.timestamp(path.name))
    usable, grid, rejected = probe_frames([frame], fmt)
    if not usable:
        assert len(rejected) == 1 and rejected[0]["reason"]
        return "rejected"
    try:
        dbz = read_dbz(fmt, path, 300.0)
    except FrameError as exc:
        assert str(exc)
        return "rejected"
    assert dbz.dtype == np.float32 and dbz.ndim == 2
    return "decoded"


def check_video(path: Path) -> str:
    try:
        frames = decode_video(str(path), (30, 40), False)
    except Rejected as exc:
        assert str(exc)
        return "rejected"
    assert frames.dtype == np.uint8 and frames.shape[1:] == (1, 30, 40)
    return "decoded"


@pytest.mark.parametrize("fmt", list(MAGIC))
def test_decoder_decodes_or_rejects_every_mutant(fmt, sample_data, tmp_path):
    data = sample(fmt, sample_data, tmp_path)
    assert data.startswith(MAGIC[fmt][:4])
    rng = np.random.default_rng(zlib.crc32(fmt.encode()))
    outcomes = {}
    for case in range(CASES):
        kind = KINDS[case % len(KINDS)]
        mutant = mutate(data, kind, MAGIC[fmt], rng)
        folder = tmp_path / f"case{case:03d}"
        folder.mkdir()
        path = folder / NAMES[fmt]
        path.write_bytes(mutant)
        try:
            outcome = check_video(path) if fmt == "kth" else check_radar_frame(fmt.removesuffix("-gz"), path)
        except AssertionError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the point: nothing but FrameError/Rejected escapes
            keep = tmp_path.parent / f"fuzz-{fmt}-case{case:03d}-{kind}"
            shutil.copy(path, keep)
            pytest.fail(f"{fmt} case {case} ({kind}, {len(mutant)} bytes, kept at {keep}): "
                        f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
        outcomes.setdefault(kind, []).append(outcome)
        shutil.rmtree(folder)
    # The valid file itself decodes, and mutants are mostly rejected (the fuzzer reached the decoder).
    assert all(o == "rejected" for o in outcomes["magic"]), outcomes
    assert "rejected" in outcomes["truncate"]


def test_unmutated_samples_decode(sample_data, tmp_path):
    for fmt in MAGIC:
        path = tmp_path / fmt / NAMES[fmt]
        path.parent.mkdir()
        path.write_bytes(sample(fmt, sample_data, tmp_path))
        outcome = check_video(path) if fmt == "kth" else check_radar_frame(fmt.removesuffix("-gz"), path)
        assert outcome == "decoded", fmt


def test_compressed_payloads_cannot_expand_without_bound(tmp_path):
    """A .pgm.gz or HKO-7 mask that inflates far beyond any grid is refused, not read into memory."""
    fmi = get_format("fmi")
    bomb = tmp_path / NAMES["fmi-gz"]
    header = b"P5\n4000 4000\n255\n"
    with gzip.open(bomb, "wb", compresslevel=1) as f:
        f.write(header)
        zeros = bytes(1 << 20)
        for _ in range(80):  # 80 MB of pixels behind a 16 M pixel header
            f.write(zeros)
    with pytest.raises(FrameError, match="expands|larger"):
        read_dbz(fmi, bomb, 300.0)

    hko = get_format("hko")
    png = tmp_path / NAMES["hko"]
    Image.fromarray(np.zeros((48, 48), np.uint8), mode="L").save(png)
    png.with_suffix(".mask").write_bytes(zlib.compress(bytes(50 << 20), 1))
    with pytest.raises(FrameError, match="mask"):
        read_dbz(hko, png, 300.0)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (MAGIC["hko"] + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def _knmi_header(path: Path, width: int, height: int) -> None:
    with h5py.File(path, "w") as f:  # chunked + compressed, nothing written: a few kB on disk
        f.create_dataset("image1/image_data", shape=(height, width), dtype="uint16", chunks=(256, 256),
                         compression="gzip")


OVERSIZED = {
    "mch": lambda p: p.write_bytes(b"GIF89a" + struct.pack("<HHBBB", 30000, 30000, 0x80, 0, 0) + bytes(6)
                                   + b"," + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + b"\x08\x02\x4c\x01\x00;"),
    "fmi": lambda p: p.write_bytes(b"P5\n30000 30000\n255\n" + bytes(1000)),
    "fmi-gz": lambda p: p.write_bytes(gzip.compress(b"P5\n5000 5000\n255\n" + bytes(5000 * 5000))),
    "hko": lambda p: p.write_bytes(_png_header(30000, 30000)),
    "knmi": lambda p: _knmi_header(p, 30000, 30000),
    "kth": lambda p: write_oversized_avi(p, 4000, 3000),
}


@pytest.mark.parametrize("fmt", list(OVERSIZED))
def test_oversized_headers_are_refused_before_decoding(fmt, tmp_path):
    """A header claiming a huge grid (30000x30000, or 5000x5000 in a 25 kB gzip) is a rejection, before decoding."""
    path = tmp_path / NAMES[fmt]
    OVERSIZED[fmt](path)
    if fmt == "kth":
        with pytest.raises(Rejected, match="4000x3000"):
            decode_video(str(path), (30, 40), False)
    else:
        radar = get_format(fmt.removesuffix("-gz"))
        [rejection] = probe_frames([FrameFile(path, path.name, radar.timestamp(path.name))], radar)[2]
        assert "header claims" in rejection["reason"]
        with pytest.raises(FrameError, match="header claims"):
            read_dbz(radar, path, 300.0)
