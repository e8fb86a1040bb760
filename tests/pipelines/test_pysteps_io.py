"""pySTEPS importers as radar formats, without Ray: file-name patterns, unit conversion from the
importer's metadata, the MRMS sample read through `pysteps:mrms_grib`, the caps, the pySTEPS
baselines, and the one-line error when pySTEPS is not installed."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from pipelines.radar import pysteps_io
from pipelines.radar.formats import get_format, list_frames, probe_frames, read_dbz
from pipelines.radar.frame_format import FrameError

MRMS = REPO / "tests" / "data" / "radar-mrms-sample"
MRMS_FILES = sorted(MRMS.rglob("*.grib2"))


def test_mrms_sample_lists_probes_and_decodes_like_pysteps_importer():
    from pysteps.io import import_mrms_grib

    fmt = get_format("pysteps:mrms_grib")
    frames, rejected = list_frames(MRMS, fmt)
    assert rejected == [] and len(frames) == 12
    assert frames[0].time == datetime(2019, 6, 10, 0, 0, tzinfo=timezone.utc)
    assert frames[-1].time == datetime(2019, 6, 10, 0, 22, tzinfo=timezone.utc)
    usable, grid, bad = probe_frames(frames, fmt)
    assert bad == [] and grid == (125, 250)  # 500 x 1000 points, averaged 4 x 4 by the importer
    dbz = read_dbz(fmt, frames[0].path, 120.0)
    rate, _, metadata = import_mrms_grib(str(frames[0].path))
    assert metadata["unit"] == "mm/h" and dbz.shape == rate.shape == grid
    assert np.array_equal(np.isnan(dbz), np.isnan(rate)) and np.isnan(dbz).any()
    assert np.array_equal(np.isneginf(dbz), rate == 0) and (rate == 0).any()
    wet = rate > 0
    np.testing.assert_allclose(dbz[wet], 10 * np.log10(200 * rate[wet].astype(np.float64) ** 1.6), rtol=1e-5)


def test_units_from_the_importer_metadata():
    rate = np.array([[0.0, 1.0], [10.0, np.nan]])
    meta = {"transform": None, "threshold": 0.1, "zerovalue": 0.0, "accutime": 5.0}
    from_rate = pysteps_io.to_dbz(rate, {**meta, "unit": "mm/h"})
    np.testing.assert_allclose(from_rate[0, 1], 10 * np.log10(200), rtol=1e-6)
    assert np.isneginf(from_rate[0, 0]) and np.isnan(from_rate[1, 1])
    # 1/12 mm in 5 minutes is 1 mm/h
    np.testing.assert_allclose(pysteps_io.to_dbz(rate / 12, {**meta, "unit": "mm"}), from_rate, rtol=1e-5)
    with np.errstate(divide="ignore"):
        in_db = 10 * np.log10(rate)
    db_meta = {**meta, "unit": "mm/h", "transform": "dB", "threshold": -10.0, "zerovalue": -15.0}
    np.testing.assert_allclose(pysteps_io.to_dbz(np.where(rate == 0, -15.0, in_db), db_meta), from_rate, rtol=1e-5)
    assert np.array_equal(pysteps_io.to_dbz(rate, {**meta, "unit": "dBZ"}), rate.astype(np.float32), equal_nan=True)
    assert np.isnan(pysteps_io.to_dbz(np.array([[-3.0]]), {**meta, "unit": "mm/h"})).all()  # MRMS' missing data
    with pytest.raises(FrameError, match="unit 'kg'"):
        pysteps_io.to_dbz(rate, {**meta, "unit": "kg"})


def test_fn_pattern_with_wildcards_and_day_of_year():
    fmt = get_format("pysteps:mch_gif")  # pySTEPS' data source: AQC%y%j%H%M?_00005.801 + .gif
    assert fmt.timestamp("AQC161932045V_00005.801.gif") == datetime(2016, 7, 11, 20, 45, tzinfo=timezone.utc)
    assert fmt.timestamp("AQC161932045V_00005.801.png") is None
    own = get_format("pysteps:mrms_grib:mrms_%Y%m%d_%H%M*.grb2")
    assert own.fn_pattern == "mrms_%Y%m%d_%H%M*.grb2" and own.claims("x.grib2")
    assert own.timestamp("mrms_20190610_0002_v2.grb2") == datetime(2019, 6, 10, 0, 2, tzinfo=timezone.utc)
    assert own.timestamp("mrms_20191310_0002.grb2") is None  # month 13


@pytest.mark.parametrize("name, message", [
    ("pysteps:no_such_importer", r"--format pysteps:no_such_importer: pySTEPS has no importer 'no_such_importer'"),
    ("pysteps:mrms_grib:mrms_%Y%m%d_%I.grib2", r"--fn-pattern .*: %I is not one of"),
    ("pysteps:mrms_grib:mrms.grib2", r"--fn-pattern 'mrms.grib2' holds no time directive"),
    ("pysteps:mch_metranet", r"documents no file-name pattern for mch_metranet; give one with --fn-pattern"),
])
def test_bad_formats_name_the_flag(name, message):
    with pytest.raises(ValueError, match=message):
        get_format(name)


def test_caps_refuse_oversized_grib_headers_and_files(monkeypatch, tmp_path):
    fmt = get_format("pysteps:mrms_grib")
    monkeypatch.setattr(pysteps_io, "MAX_SOURCE_PIXELS", 500 * 1000 - 1)
    with pytest.raises(FrameError, match=r"header claims a 1000x500 grid.*MAX_SOURCE_PIXELS"):
        fmt.probe(MRMS_FILES[0])
    with pytest.raises(FrameError, match="MAX_SOURCE_PIXELS"):
        fmt.decode(MRMS_FILES[0], 120.0)
    monkeypatch.setattr(pysteps_io, "MAX_FILE_BYTES", 1000)
    with pytest.raises(FrameError, match="MAX_FILE_BYTES"):
        fmt.probe(MRMS_FILES[0])


def test_unreadable_and_misnamed_grib_files_are_rejected(tmp_path):
    fmt = get_format("pysteps:mrms_grib")
    for path in MRMS_FILES[:3]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "PrecipRate_00.00_20190610-000600.grib2").write_bytes(b"GRIB" + bytes(200))  # truncated
    (tmp_path / "notes.grib2").write_bytes(MRMS_FILES[3].read_bytes())
    frames, rejected = list_frames(tmp_path, fmt)
    assert [f.name for f in frames][-1] == "PrecipRate_00.00_20190610-000600.grib2" and len(frames) == 4
    assert rejected == [{"file": "notes.grib2", "reason": "name does not parse as pysteps:mrms_grib"}]
    usable, grid, bad = probe_frames(frames, fmt)
    assert len(usable) == 3 and grid == (125, 250)
    assert [r["file"] for r in bad] == ["PrecipRate_00.00_20190610-000600.grib2"]
    assert bad[0]["reason"].startswith("unreadable pysteps:mrms_grib frame")


def test_pysteps_baselines_move_the_rain_with_it():
    """A rain cell moving 2 pixels right per step: both pySTEPS nowcasts carry it on; persistence does not."""
    from convlstm.units import rainrate_to_scaled_pixel
    from jobs.evaluation.baselines import get_baseline

    yy, xx = np.mgrid[:64, :64]
    frames = [8.0 * np.exp(-((yy - 32) ** 2 + (xx - 16 - 2 * t) ** 2) / 40.0) for t in range(6)]
    x = rainrate_to_scaled_pixel(np.stack(frames[:3]))[None, :, None]
    truth = rainrate_to_scaled_pixel(np.stack(frames[3:]))[None, :, None]
    persistence = get_baseline("persistence", 3)(x)
    for name in ("pysteps-extrapolation", "pysteps-sprog"):
        out = get_baseline(name, 3)(x)
        assert out.shape == (1, 3, 1, 64, 64) and out.dtype == np.float32 and (0 <= out).all() and (out <= 1).all()
        assert np.abs(out - truth).mean() < 0.7 * np.abs(persistence - truth).mean(), name
        column = out[0, -1, 0].sum(axis=0).argmax()
        assert abs(column - 26) <= 2, (name, column)
    dry = get_baseline("pysteps-sprog", 2)(np.zeros((1, 3, 1, 16, 16), dtype=np.float32))
    assert not dry.any()


HIDE_PYSTEPS = "import sys; sys.modules['pysteps'] = None; sys.modules['pygrib'] = None; " \
               "from jobs.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("argv", [
    ["prepare", "radar", "--src", str(MRMS), "--format", "pysteps:mrms_grib", "--out", "{tmp}/out"],
    ["evaluate", "--data", "{tmp}/nothing", "--baselines", "pysteps-sprog"],
])
def test_without_pysteps_one_line_naming_the_extra(argv, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    result = subprocess.run([sys.executable, "-c", HIDE_PYSTEPS, *argv], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "pip install 'convlstm-pipeline[pysteps]'" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_base_formats_work_without_pysteps():
    code = ("import sys; sys.modules['pysteps'] = None; from pipelines.radar.formats import get_format; "
            "import jobs.evaluation.evaluate, jobs.nowcast.forecast; print(get_format('mch').name)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "mch", result.stderr


def test_fn_pattern_flag_and_archive_members():
    from jobs.cli.prepare_radar import with_fn_pattern
    from pipelines.radar.formats import members_of

    assert with_fn_pattern("pysteps:mrms_grib", None) == "pysteps:mrms_grib"
    assert with_fn_pattern("pysteps:mrms_grib", "m_%Y%m%d%H%M.grib2") == "pysteps:mrms_grib:m_%Y%m%d%H%M.grib2"
    for fmt in ("knmi", "auto", "pysteps:mrms_grib:m_%Y.grib2"):
        with pytest.raises(ValueError, match="--fn-pattern applies to --format pysteps:<importer> only"):
            with_fn_pattern(fmt, "m_%Y.grib2")
    keep = members_of("pysteps:mrms_grib")
    assert keep("2019/06/10/PrecipRate_00.00_20190610-000000.grib2") and keep("a/b.gif") and not keep("README")
    assert not members_of("auto")("x.grib2")
