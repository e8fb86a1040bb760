"""ODIM_H5 composites and BoM Rainfields NetCDF: the real OPERA and BoM samples, detection by name and by
content, synthetic h5py-written variants the samples do not show, `prepare radar --format auto` end to
end, and nowcasting input read through the format registry.

Expected values come from independent decodes written here from the PROVENANCE.md formulas (h5py +
Marshall-Palmer Z = 200 R^1.6), sharing no code with pipelines.radar.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

from jobs.cli import main
from pipelines.manifest import load_manifest
from pipelines.radar import bom, odim
from pipelines.radar.formats import detect_format, get_format, list_frames, probe_frames, read_dbz, resolve_format
from pipelines.radar.frame_format import FrameError
from pipelines.radar.timeline import infer_time_step
from pipelines.shards import read_windows
from radar_reference import reference_frame

UTC = timezone.utc
OPERA_NODATA, OPERA_UNDETECT = -9999000.0, -8888000.0
OPERA_FIRST, OPERA_STEP = datetime(2018, 8, 24, 18, 0, tzinfo=UTC), timedelta(minutes=15)
BOM_FIRST, BOM_STEP = datetime(2020, 10, 31, 16, 0, tzinfo=UTC), timedelta(minutes=10)


def mp_dbz(rate: np.ndarray) -> np.ndarray:
    """Marshall-Palmer dBZ of a rain rate in mm/h (0 -> -inf), as float32."""
    with np.errstate(divide="ignore"):
        return (10.0 * np.log10(200.0 * np.power(rate, 1.6))).astype(np.float32)


def opera_reference(path: Path) -> np.ndarray:
    """PROVENANCE: dataset1 is RATE (mm/h) = 1 * raw + 0; raw -9999000 nodata, -8888000 undetect (no echo)."""
    with h5py.File(path, "r") as f:
        assert f["dataset1/what"].attrs["quantity"] == b"RATE" and f["dataset2/what"].attrs["quantity"] == b"QIND"
        raw = f["dataset1/data1/data"][...]
    dbz = mp_dbz(np.where(raw >= 0, raw, 0.0))
    dbz[raw == OPERA_UNDETECT] = -np.inf
    dbz[raw == OPERA_NODATA] = np.nan
    return dbz


def bom_pv(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["precipitation"][...]


def bom_reference(path: Path, period_s: float = 600.0) -> np.ndarray:
    """PROVENANCE: mm per period = 0.05 * PV, PV -1 nodata (negative PVs taken as nodata too)."""
    pv = bom_pv(path)
    dbz = mp_dbz(np.where(pv >= 0, 0.05 * pv, 0.0) * (3600.0 / period_s))
    dbz[pv < 0] = np.nan
    return dbz


@pytest.fixture(scope="module")
def opera_files(sample_data) -> list[Path]:
    return sorted((sample_data / "radar-opera-sample").rglob("*.hdf"))


@pytest.fixture(scope="module")
def bom_files(sample_data) -> list[Path]:
    return sorted((sample_data / "radar-bom-sample").rglob("*.nc"))


# --- synthetic files --------------------------------------------------------------------------------

def _text(value: str, as_bytes: bool):
    return np.bytes_(value) if as_bytes else value


def write_odim(path: Path, fields: list[tuple[str, np.ndarray, dict]], *, obj: str = "COMP",
               layout: str = "data", as_bytes: bool = True, conventions: str | None = "ODIM_H5/V2_2",
               version: str = "H5rad 2.2", date: str = "20240101", time: str = "120000") -> Path:
    """An ODIM_H5 file: one `datasetN/data1` per (quantity, raw, what-attributes) field. `layout` puts the
    what-attributes in `dataN/what` ("data"), in `datasetN/what` ("dataset", as OPERA does) or the
    quantity/gain/offset in `dataN/what` and the rest in `datasetN/what` ("split", inherited)."""
    with h5py.File(path, "w") as f:
        if conventions:
            f.attrs["Conventions"] = _text(conventions, as_bytes)
        for key, value in (("object", obj), ("version", version), ("date", date), ("time", time)):
            f.require_group("what").attrs[key] = _text(value, as_bytes)
        for n, (quantity, raw, attrs) in enumerate(fields, 1):
            f.create_dataset(f"dataset{n}/data1/data", data=raw)
            attrs = {"quantity": quantity, **attrs}
            for key, value in attrs.items():
                inner = layout == "data" or (layout == "split" and key in ("quantity", "gain", "offset"))
                group = f.require_group(f"dataset{n}/data1/what" if inner else f"dataset{n}/what")
                group.attrs[key] = _text(value, as_bytes) if isinstance(value, str) else value
    return path


def write_bom(path: Path, pv: np.ndarray, start: datetime | None, valid: datetime, *, units: str = "kg m-2",
              time_units: str = "seconds since 1970-01-01 00:00:00 UTC") -> Path:
    """A Rainfields-like NetCDF-4 file (attributes stored as NetCDF writes them: 1-element arrays, bytes)."""
    with h5py.File(path, "w") as f:
        f.attrs["Conventions"] = np.bytes_("CF-1.7")
        var = f.create_dataset("precipitation", data=pv.astype(np.int16))
        var.attrs["units"] = np.bytes_(units)
        var.attrs["scale_factor"] = np.array([0.05])
        var.attrs["add_offset"] = np.array([0.0])
        var.attrs["_FillValue"] = np.array([-1], dtype=np.int16)
        for name, time in (("start_time", start), ("valid_time", valid)):
            if time is not None:
                f.create_dataset(name, data=np.int64(time.timestamp())).attrs["units"] = np.bytes_(time_units)
    return path


RAW_DBZH = np.array([[0, 1, 2, 100], [150, 200, 254, 255]], dtype=np.uint8)
DBZH_ATTRS = {"gain": 0.5, "offset": -32.0, "nodata": 255.0, "undetect": 0.0}


def expected_dbzh() -> np.ndarray:
    dbz = (0.5 * RAW_DBZH.astype(np.float64) - 32.0).astype(np.float32)
    dbz[RAW_DBZH == 0] = -np.inf
    dbz[RAW_DBZH == 255] = np.nan
    return dbz


# --- the real samples --------------------------------------------------------------------------------

def sample_frames(root, name: str, count: int, first, step):
    """The sample's format (auto-detected, Marshall-Palmer source Z-R) and its `count` frames, all
    listed in order `first + step * k` and none rejected."""
    fmt = resolve_format("auto", root)
    assert fmt is get_format(name) and fmt.source_zr == {"a": 200.0, "b": 1.6}
    frames, rejected = list_frames(root, fmt)
    assert rejected == [] and len(frames) == count
    assert [f.time for f in frames] == [first + step * k for k in range(count)]
    return fmt, frames


def test_opera_sample_rain_rate_composite(sample_data, opera_files):
    root = sample_data / "radar-opera-sample"
    fmt, frames = sample_frames(root, "odim", 4, OPERA_FIRST, OPERA_STEP)  # times: what/date + what/time
    usable, grid, bad = probe_frames(frames, fmt)
    assert grid == (2200, 1900) and bad == [] and len(usable) == 4
    for frame in (frames[0], frames[-1]):
        dbz = read_dbz(fmt, frame.path, 900.0)
        assert dbz.shape == (2200, 1900) and dbz.dtype == np.float32
        np.testing.assert_array_equal(dbz, opera_reference(frame.path))
        assert 0.49 < np.isnan(dbz).mean() < 0.51  # about half the LAEA grid lies outside OPERA coverage
        assert 0.3 < np.isneginf(dbz).mean() < 0.45  # undetect, and 0 mm/h
        # PROVENANCE: valid maxima per frame 131-8,647 mm/h (artefacts kept: they are data).
        assert mp_dbz(np.array(131.0)) <= dbz[np.isfinite(dbz)].max() <= mp_dbz(np.array(8647.0))


def test_bom_sample_ten_minute_accumulations(sample_data, bom_files):
    root = sample_data / "radar-bom-sample"
    fmt, frames = sample_frames(root, "bom", 24, BOM_FIRST, BOM_STEP)  # valid_time = the name's time
    assert probe_frames(frames[:3], fmt)[1] == (512, 512)
    pvs = [bom_pv(frame.path) for frame in frames]
    fills = [int((pv == -1).sum()) for pv in pvs]
    assert min(fills) == 0 and max(fills) == 6  # PROVENANCE: 0-19 nodata pixels per file (0-6 in 16:00-19:50)
    assert min(pv.max() for pv in pvs) == 2 and max(pv.max() for pv in pvs) == 222  # PROVENANCE: maxima PV 2..306
    for frame, pv in list(zip(frames, pvs))[::11] + [(frames[10], pvs[10])]:  # 10: 17:40, PV -2 beside fills
        dbz = read_dbz(fmt, frame.path, 600.0)
        assert dbz.shape == (512, 512) and dbz.dtype == np.float32
        np.testing.assert_allclose(dbz, bom_reference(frame.path), rtol=1e-6)
        np.testing.assert_array_equal(read_dbz(fmt, frame.path, 300.0), dbz)  # the period comes from the file
        assert np.array_equal(np.isnan(dbz), pv < 0)
        finite = dbz[np.isfinite(dbz)]
        assert finite.min() >= mp_dbz(np.array(0.3)) - 1e-4 and finite.max() <= mp_dbz(np.array(6 * 15.3)) + 1e-4
    assert (pvs[10] == -2).sum() == 7


def test_content_detection_for_arbitrary_names(opera_files, bom_files, sample_data, tmp_path):
    opera, nc, knmi = tmp_path / "opera", tmp_path / "nc", tmp_path / "knmi"
    for folder in (opera, nc, knmi):
        folder.mkdir()
    for k, path in enumerate(opera_files[:2]):
        shutil.copy(path, opera / f"composite_{k}.{'h5' if k else 'hdf'}")
    for k, path in enumerate(bom_files[:3]):
        shutil.copy(path, nc / f"rain{k}.nc")
    (opera / "notes.txt").write_text("ignored")
    fmt = resolve_format("auto", opera)
    assert fmt.name == "odim"
    frames, rejected = list_frames(opera, fmt)
    assert [f.time for f in frames] == [OPERA_FIRST, OPERA_FIRST + OPERA_STEP] and rejected == []
    np.testing.assert_array_equal(read_dbz(fmt, frames[1].path, 900.0), opera_reference(opera_files[1]))
    fmt = resolve_format("auto", nc)
    assert fmt.name == "bom"
    assert [f.time for f in list_frames(nc, fmt)[0]] == [BOM_FIRST, BOM_FIRST + BOM_STEP, BOM_FIRST + 2 * BOM_STEP]

    # KNMI is HDF5 too: by name it stays knmi; under another name it is neither ODIM nor BoM.
    knmi_file = sorted((sample_data / "radar-knmi-sample").rglob("*.h5"))[0]
    assert resolve_format("auto", sample_data / "radar-knmi-sample").name == "knmi"
    assert odim.sniff(knmi_file) is None and bom.sniff(knmi_file) is None
    assert odim.sniff(bom_files[0]) is None and bom.sniff(opera_files[0]) is None
    shutil.copy(knmi_file, knmi / "radar.h5")
    with pytest.raises(ValueError, match="no file name matches any of .* and no file's content is odim or bom"):
        resolve_format("auto", knmi)
    # A KNMI-named file beside an ODIM one: names decide, as before, and the ODIM file is rejected.
    shutil.copy(knmi_file, knmi / knmi_file.name)
    shutil.copy(opera_files[0], knmi / "composite.h5")
    fmt = resolve_format("auto", knmi)
    assert fmt.name == "knmi"
    assert {r["file"]: r["reason"] for r in list_frames(knmi, fmt)[1]} == {
        "radar.h5": "name does not parse as knmi", "composite.h5": "name does not parse as knmi"}
    with pytest.raises(ValueError, match="mixed formats"):
        detect_format([knmi_file.name, opera_files[0].name])
    # Names alone (no paths) are never opened.
    with pytest.raises(ValueError, match="no file name matches"):
        detect_format(["composite.h5", "rain.nc"])


def test_odim_listing_content_time_wins_and_bad_files_are_rejected(opera_files, tmp_path):
    fmt = get_format("odim")
    renamed = tmp_path / "T_PAAH21_C_EUOC_20990101000000.hdf"  # the name says 2099, what/date + what/time 18:00
    shutil.copy(opera_files[0], renamed)
    truncated = tmp_path / opera_files[1].name
    truncated.write_bytes(opera_files[1].read_bytes()[:5000])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    write_odim(tmp_path / "volume.h5", [("DBZH", RAW_DBZH, DBZH_ATTRS)], obj="PVOL")
    frames, rejected = list_frames(tmp_path, fmt)
    assert rejected == [{"file": "junk.h5", "reason": "name does not parse as odim and the content is not odim"}]
    assert {f.name: f.time for f in frames} == {
        renamed.name: OPERA_FIRST, truncated.name: OPERA_FIRST + OPERA_STEP,  # unreadable: the name's time
        "volume.h5": datetime(2024, 1, 1, 12, tzinfo=UTC)}
    usable, grid, bad = probe_frames(frames, fmt)
    assert [f.name for f in usable] == [renamed.name] and grid == (2200, 1900)
    reasons = {r["file"]: r["reason"] for r in bad}
    assert reasons[truncated.name].startswith("unreadable odim frame: ")
    assert reasons["volume.h5"] == ("unreadable odim frame: ODIM object PVOL: only composites "
                                    "(what/object = COMP) are supported")
    with pytest.raises(FrameError, match="unreadable odim frame"):
        read_dbz(fmt, tmp_path / "junk.h5", 900.0)


# --- synthetic ODIM variants ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["data", "dataset", "split"])
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes-attrs", "str-attrs"])
def test_odim_dbzh_what_attributes_wherever_odim_allows_them(tmp_path, layout, as_bytes):
    path = write_odim(tmp_path / "x.h5", [("DBZH", RAW_DBZH, DBZH_ATTRS)], layout=layout, as_bytes=as_bytes)
    fmt = get_format("odim")
    assert fmt.probe(path) == (2, 4) and odim.sniff(path) == datetime(2024, 1, 1, 12, tzinfo=UTC)
    np.testing.assert_array_equal(read_dbz(fmt, path, 300.0), expected_dbzh())


def test_odim_older_and_newer_versions_and_th(tmp_path):
    fmt = get_format("odim")
    old = write_odim(tmp_path / "old.h5", [("TH", RAW_DBZH, DBZH_ATTRS)], layout="dataset",
                     conventions="ODIM_H5/V2_0", version="H5rad 2.0")
    bare = write_odim(tmp_path / "bare.h5", [("DBZH", RAW_DBZH, DBZH_ATTRS)], conventions=None, version="H5rad 2.4",
                      time="063000")
    for path in (old, bare):
        np.testing.assert_array_equal(read_dbz(fmt, path, 300.0), expected_dbzh())
    assert odim.sniff(bare) == datetime(2024, 1, 1, 6, 30, tzinfo=UTC)  # no Conventions: what/version H5rad
    not_odim = write_odim(tmp_path / "other.h5", [("DBZH", RAW_DBZH, DBZH_ATTRS)], conventions=None, version="x")
    assert odim.sniff(not_odim) is None


def test_odim_quality_index_first_and_choice_by_quantity(tmp_path):
    rate = np.array([[0.0, 0.5, 10.0], [-1.0, -8888000.0, -9999000.0]])
    attrs = {"gain": 1.0, "offset": 0.0, "nodata": -9999000.0, "undetect": -8888000.0}
    qind = (np.arange(6, dtype=np.float64).reshape(2, 3) / 5, {"gain": 1.0, "offset": 0.0})
    path = write_odim(tmp_path / "rate.h5", [("QIND", *qind), ("RATE", rate, attrs)], layout="dataset")
    expected = np.array([[-np.inf, *mp_dbz(np.array([0.5, 10.0]))], [np.nan, -np.inf, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(read_dbz(get_format("odim"), path, 900.0), expected)  # R < 0 -> nodata

    both = write_odim(tmp_path / "both.h5", [("QIND", *qind), ("RATE", rate, attrs), ("DBZH", RAW_DBZH, DBZH_ATTRS)])
    np.testing.assert_array_equal(read_dbz(get_format("odim"), both, 900.0), expected_dbzh())  # reflectivity first
    only_quality = write_odim(tmp_path / "qind.h5", [("QIND", *qind)])
    with pytest.raises(FrameError, match=r"no DBZH/TH/RATE/ACRR field in the composite \(quantities: QIND\)"):
        get_format("odim").probe(only_quality)
    twice = write_odim(tmp_path / "twice.h5", [("RATE", rate, attrs), ("RATE", rate, attrs)])
    with pytest.raises(FrameError, match="2 RATE fields"):
        get_format("odim").probe(twice)


def test_odim_acrr_over_its_accumulation_time_else_the_time_step(tmp_path):
    mm = np.array([[0.0, 0.25, 2.5, 255.0]], dtype=np.float32)
    attrs = {"gain": 1.0, "offset": 0.0, "nodata": 255.0, "undetect": -1.0}
    window = {"startdate": "20240101", "starttime": "114500", "enddate": "20240101", "endtime": "120000"}
    fifteen = write_odim(tmp_path / "acrr15.h5", [("ACRR", mm, {**attrs, **window})], layout="split")
    plain = write_odim(tmp_path / "acrr.h5", [("ACRR", mm, attrs)])
    fmt = get_format("odim")
    expected = mp_dbz(mm[0, :3].astype(np.float64) * 4.0)  # 15 minutes: x4 to mm/h
    np.testing.assert_array_equal(read_dbz(fmt, fifteen, 300.0)[0], [*expected, np.nan])
    expected = mp_dbz(mm[0, :3].astype(np.float64) * 12.0)  # no start/end: the 300 s frame interval
    np.testing.assert_array_equal(read_dbz(fmt, plain, 300.0)[0], [*expected, np.nan])
    backwards = write_odim(tmp_path / "back.h5", [("ACRR", mm, {**attrs, **window, "endtime": "113000"})])
    with pytest.raises(FrameError, match="not after its start"):
        read_dbz(fmt, backwards, 300.0)


def test_odim_polar_volume_huge_grid_and_bad_time_are_refused(tmp_path):
    fmt = get_format("odim")
    volume = write_odim(tmp_path / "pvol.h5", [("DBZH", RAW_DBZH, DBZH_ATTRS)], obj="PVOL")
    for call in (lambda: fmt.probe(volume), lambda: read_dbz(fmt, volume, 300.0)):
        with pytest.raises(FrameError) as info:
            call()
        assert str(info.value) == "ODIM object PVOL: only composites (what/object = COMP) are supported"
    huge = write_odim(tmp_path / "huge.h5", [])
    with h5py.File(huge, "a") as f:  # declared 9000 x 9000, never written: the header alone must refuse it
        f.create_dataset("dataset1/data1/data", shape=(9000, 9000), dtype=np.uint8, chunks=(64, 64))
        f.create_group("dataset1/data1/what").attrs["quantity"] = np.bytes_("DBZH")
    assert huge.stat().st_size < 100_000
    with pytest.raises(FrameError, match="header claims a 9000x9000 grid"):
        read_dbz(fmt, huge, 300.0)
    bad_time = write_odim(tmp_path / "time.h5", [("DBZH", RAW_DBZH, DBZH_ATTRS)], time="25h")
    assert odim.sniff(bad_time) is None


# --- synthetic BoM variants ------------------------------------------------------------------------------

PV = np.array([[-1, 0, 1, 20], [306, -2, 5, 0]], dtype=np.int16)


def expected_bom(period_s: float) -> np.ndarray:
    dbz = mp_dbz(np.where(PV >= 0, 0.05 * PV, 0.0) * (3600.0 / period_s))
    dbz[PV < 0] = np.nan
    return dbz


def test_bom_six_and_ten_minute_accumulations(tmp_path):
    fmt = get_format("bom")
    end = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    six = write_bom(tmp_path / "66_20240101_120000.prcp-c6.nc", PV, end - timedelta(minutes=6), end)
    ten = write_bom(tmp_path / "ten.nc", PV, end - timedelta(minutes=10), end)
    no_start = write_bom(tmp_path / "no_start.nc", PV, None, end)
    np.testing.assert_allclose(read_dbz(fmt, six, 600.0), expected_bom(360.0), rtol=1e-6)
    np.testing.assert_allclose(read_dbz(fmt, ten, 360.0), expected_bom(600.0), rtol=1e-6)
    np.testing.assert_allclose(read_dbz(fmt, no_start, 300.0), expected_bom(300.0), rtol=1e-6)
    six_dbz, ten_dbz = read_dbz(fmt, six, 0), read_dbz(fmt, ten, 0)
    rain = np.isfinite(six_dbz)  # the same amount over 6 minutes is a higher rate: +16 log10(10/6) dBZ
    np.testing.assert_allclose(six_dbz[rain] - ten_dbz[rain], 16 * np.log10(10 / 6), rtol=1e-5)
    assert fmt.timestamp(six.name) == end and bom.sniff(ten) == end

    series = tmp_path / "series"
    series.mkdir()
    for k in range(4):
        write_bom(series / f"66_2024010{k}.nc", PV, end + timedelta(minutes=6 * k - 6), end + timedelta(minutes=6 * k))
    frames, rejected = list_frames(series, resolve_format("auto", series))
    assert rejected == [] and infer_time_step([f.time for f in frames]) == timedelta(minutes=6)


def test_bom_bad_files_are_refused(tmp_path):
    fmt = get_format("bom")
    end = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    rate = write_bom(tmp_path / "rate.nc", PV, end - timedelta(minutes=10), end, units="mm h-1")
    with pytest.raises(FrameError, match="units 'mm h-1', expected an accumulation in kg m-2 or mm"):
        fmt.probe(rate)
    backwards = write_bom(tmp_path / "back.nc", PV, end + timedelta(minutes=10), end)
    with pytest.raises(FrameError, match="accumulation period -600 s"):
        read_dbz(fmt, backwards, 600.0)
    minutes = write_bom(tmp_path / "minutes.nc", PV, None, end, time_units="minutes since 1970-01-01")
    assert bom.sniff(minutes) is None
    with pytest.raises(FrameError, match="valid_time units 'minutes since 1970-01-01'"):
        read_dbz(fmt, minutes, 600.0)
    huge = tmp_path / "huge.nc"
    with h5py.File(huge, "w") as f:
        f.attrs["Conventions"] = np.bytes_("CF-1.7")
        f.create_dataset("precipitation", shape=(20000, 1000), dtype=np.int16, chunks=(64, 16))
    with pytest.raises(FrameError, match="header claims a 1000x20000 grid"):
        fmt.probe(huge)
    plain = tmp_path / "plain.nc"
    with h5py.File(plain, "w") as f:  # HDF5, but neither NetCDF nor Rainfields
        f.create_dataset("precipitation", data=PV)
    assert bom.sniff(plain) is None and bom.sniff(tmp_path / "absent.nc") is None


# --- prepare radar end to end, nowcasting input ---------------------------------------------------------

def convlstm(*argv) -> int:
    return main(["prepare", "radar", *map(str, argv)])


def assert_windows_match(windows: dict, step: timedelta, files_by_time: dict, decode, size) -> None:
    length = windows["frames"].shape[1]
    expected = {}
    for row, start in enumerate(windows["start"]):
        for t in range(length):
            time = datetime.fromisoformat(start) + step * t
            if time not in expected:
                expected[time] = reference_frame(decode(files_by_time[time]), None, size)
            pixel, valid = expected[time]
            np.testing.assert_array_equal(windows["frames"][row, t, 0], pixel)
            np.testing.assert_array_equal(windows["mask"][row, t, 0], valid.astype(np.uint8))


def test_prepare_opera_sample_auto_end_to_end(ray_local, opera_files, tmp_path, capsys):
    src = tmp_path / "src" / "20180824"
    src.mkdir(parents=True)
    for path in opera_files[:4]:
        shutil.copy(path, src / path.name)
    out = tmp_path / "ds"
    assert convlstm("--src", src.parent, "--out", out, "--format", "auto", "--in-len", 2, "--out-len", 1,
                    "--size", "44x38", "--val-fraction", 0, "--test-fraction", 0) == 0
    assert "odim frames every 900 s -> 44x38; gaps: 0" in capsys.readouterr().out
    manifest = load_manifest(out)
    assert manifest["params"]["format"] == "odim" and manifest["time_step_s"] == 900
    assert manifest["grid"] == {"height": 44, "width": 38, "source_height": 2200, "source_width": 1900, "crop": None}
    assert manifest["encoding"]["source_format"] == "odim"
    assert manifest["encoding"]["source_conversion"] == odim.CONVERSION
    assert manifest["encoding"]["source_zr"] == {"a": 200.0, "b": 1.6}
    assert manifest["rejected"] == [] and manifest["gaps"] == []
    windows = read_windows(str(out), "train")
    assert list(windows["start"]) == ["2018-08-24T18:00:00Z", "2018-08-24T18:15:00Z"]
    assert 0 < windows["mask"].mean() < 1
    assert_windows_match(windows, OPERA_STEP, {OPERA_FIRST + OPERA_STEP * k: p for k, p in enumerate(opera_files)},
                         opera_reference, (44, 38))


def test_prepare_bom_sample_auto_end_to_end_and_nowcast_input(ray_local, sample_data, bom_files, tmp_path, capsys):
    from jobs.nowcast.forecast import read_input

    src = sample_data / "radar-bom-sample"
    out = tmp_path / "ds"
    assert convlstm("--src", src, "--out", out, "--in-len", 2, "--out-len", 2, "--stride", 4, "--size", "16x16",
                    "--val-fraction", 0, "--test-fraction", 0) == 0
    assert "bom frames every 600 s -> 16x16; gaps: 0" in capsys.readouterr().out
    manifest = load_manifest(out)
    assert manifest["params"]["format"] == "bom" and manifest["time_step_s"] == 600
    assert manifest["grid"]["source_height"] == manifest["grid"]["source_width"] == 512
    assert manifest["encoding"]["source_conversion"] == bom.CONVERSION
    assert manifest["encoding"]["source_zr"] == {"a": 200.0, "b": 1.6}
    assert manifest["rejected"] == [] and manifest["splits"]["train"]["count"] == 6
    windows = read_windows(str(out), "train")
    assert windows["start"][0] == "2020-10-31T16:00:00Z" and windows["start"][-1] == "2020-10-31T19:20:00Z"
    by_time = {BOM_FIRST + BOM_STEP * k: p for k, p in enumerate(bom_files)}
    assert_windows_match(windows, BOM_STEP, by_time, bom_reference, (16, 16))

    # `convlstm nowcast` reads its input through the same registry: the last two frames, as in the last window.
    pixels, mask, times = read_input(src, "auto", None, manifest, 2)
    assert times == [datetime(2020, 10, 31, 19, 40, tzinfo=UTC), datetime(2020, 10, 31, 19, 50, tzinfo=UTC)]
    np.testing.assert_array_equal(pixels, windows["frames"][-1, 2:])
    np.testing.assert_array_equal(mask, windows["mask"][-1, 2:])
    # ... and refuses another format's input with the model's manifest.
    with pytest.raises(ValueError, match="format odim converts .* the model was trained on bom data"):
        read_input(sample_data / "radar-opera-sample", "auto", None, manifest, 2)


@pytest.mark.slow  # prepare + train + register a radar-tiny model on the BoM sample (~1 min)
def test_nowcast_cli_on_the_bom_sample(ray_local, sample_data, tmp_path, capsys):
    from pipelines.radar.prepare import RadarOptions, prepare_radar
    from pipelines.driver import Publish
    from tiny_models import train_tiny

    src = sample_data / "radar-bom-sample"
    data = tmp_path / "bom32"
    options = RadarOptions(in_len=3, out_len=3, size=(32, 32), split="time", val_fraction=0.3, test_fraction=0.3)
    prepare_radar(src, str(data), "bom", options, publish=Publish(progress=False))
    model = train_tiny("radar", data, "convlstm-radar-bomnowcasttest")
    out = tmp_path / "nowcast"
    assert main(["nowcast", "--model", model, "--src", str(src), "--out", str(out)]) == 0
    sidecar = json.loads((out / "forecast.json").read_text())
    assert sidecar["format"] == "bom" and sidecar["time_step_s"] == 600
    assert sidecar["input_times"] == ["2020-10-31T19:30:00Z", "2020-10-31T19:40:00Z", "2020-10-31T19:50:00Z"]
    assert sidecar["valid_times"] == ["2020-10-31T20:00:00Z", "2020-10-31T20:10:00Z", "2020-10-31T20:20:00Z"]
    assert np.load(out / "forecast_dbz.npy").shape == (3, 32, 32)
    capsys.readouterr()
    assert main(["nowcast", "--model", model, "--src", str(sample_data / "radar-opera-sample"),
                 "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "format odim" in err and "grid 2200x1900 differs from the training data's 512x512" in err
