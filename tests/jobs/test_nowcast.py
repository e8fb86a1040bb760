"""`convlstm nowcast` end to end with a radar-tiny model trained on the MeteoSwiss sample: outputs in
physical units, valid times, inputs preprocessed exactly like the training windows, and refusals of
input that does not match the training data (grid, time step, gaps)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.cli import main
from jobs.nowcast.forecast import GIF_FRAME_MS
from tiny_models import IN_LEN, OUT_LEN

@pytest.fixture(scope="module")
def trained(radar_tiny, mch_tiny) -> tuple[str, Path]:
    return radar_tiny, mch_tiny


@pytest.fixture(scope="module")
def mch(sample_data) -> Path:
    return sample_data / "radar-mch-sample"


def nowcast_cli(model: str, src: Path, out: Path, *extra: str) -> int:
    return main(["nowcast", "--model", model, "--src", str(src), "--out", str(out), *extra])


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_latest_frames_to_physical_units(trained, mch, tmp_path):
    from convlstm.units import dbz_to_rainrate

    model, _ = trained
    assert nowcast_cli(model, mch, tmp_path) == 0
    sidecar = json.loads((tmp_path / "forecast.json").read_text())
    assert sidecar["input_times"] == ["2016-07-11T23:50:00Z", "2016-07-11T23:55:00Z", "2016-07-12T00:00:00Z"]
    assert sidecar["valid_times"] == ["2016-07-12T00:05:00Z", "2016-07-12T00:10:00Z", "2016-07-12T00:15:00Z"]
    assert sidecar["format"] == "mch" and sidecar["time_step_s"] == 300 and sidecar["model"] == model

    dbz, rain = np.load(tmp_path / "forecast_dbz.npy"), np.load(tmp_path / "forecast_mmh.npy")
    assert dbz.shape == rain.shape == (OUT_LEN, 32, 32) and dbz.dtype == rain.dtype == np.float32
    nodata = np.isnan(dbz)
    assert nodata.any() and not nodata.all() and np.array_equal(nodata, np.isnan(rain))
    assert np.array_equal(nodata, np.broadcast_to(nodata[0], nodata.shape))  # the last input frame's nodata
    assert np.all((dbz[~nodata] >= -10) & (dbz[~nodata] <= 60))
    assert np.all((rain[~nodata] >= 0) & (rain[~nodata] < 250))
    np.testing.assert_allclose(dbz_to_rainrate(dbz[~nodata]), rain[~nodata], rtol=1e-4)

    assert sidecar["png"] == ["rain_20160712T0005Z.png", "rain_20160712T0010Z.png", "rain_20160712T0015Z.png"]
    for name in sidecar["png"]:
        with Image.open(tmp_path / name) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    with Image.open(tmp_path / "forecast.gif") as gif:
        durations = []
        for index in range(gif.n_frames):  # PIL merges identical consecutive frames, adding their durations
            gif.seek(index)
            durations.append(gif.info["duration"])
        assert gif.size == (32, 32) and sum(durations) == OUT_LEN * GIF_FRAME_MS


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_inputs_preprocessed_like_the_training_windows(trained, mch, tmp_path):
    """--at 23:45 reads 23:35, 23:40, 23:45: the input frames of the test window starting at 23:35, so the
    forecast equals the model's on that window (same preprocessing, same nodata)."""
    from convlstm.units import pixel_to_dbz
    from jobs.evaluation.inference import predict
    from jobs.registry.modelio import load_model
    from jobs.nowcast.forecast import nowcast, parse_time
    from pipelines.shards import read_windows

    model_ref, data = trained
    sidecar = nowcast(model_ref, mch, tmp_path, "mch", parse_time("2016-07-11T23:45"))
    assert sidecar["input_times"][0] == "2016-07-11T23:35:00Z"
    assert sidecar["valid_times"] == ["2016-07-11T23:50:00Z", "2016-07-11T23:55:00Z", "2016-07-12T00:00:00Z"]

    windows = read_windows(str(data), "test")
    row = list(windows["start"]).index("2016-07-11T23:35:00Z")
    model, _ = load_model(model_ref)
    scaled = np.clip(predict(model, windows["frames"][row:row + 1, :IN_LEN].astype(np.float32) / 255.0), 0, 1)
    expected = pixel_to_dbz(scaled[0, :, 0] * 255.0)
    expected[:, windows["mask"][row, IN_LEN - 1, 0] == 0] = np.nan
    np.testing.assert_array_equal(np.load(tmp_path / "forecast_dbz.npy"), expected)


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_refuses_another_grid_and_format(trained, sample_data, tmp_path, capsys):
    model, _ = trained
    assert nowcast_cli(model, sample_data / "radar-fmi-sample", tmp_path, "--format", "auto") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the model's training data" in err
    assert "grid 1226x760 differs from the training data's 640x710" in err and "format fmi" in err
    assert not (tmp_path / "forecast.json").exists()


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_refuses_gap_and_other_time_step(trained, mch, tmp_path, capsys):
    model, _ = trained
    files = sorted(mch.rglob("*.gif"))
    gap = tmp_path / "gap"
    gap.mkdir()
    for path in files:
        if "1932355" not in path.name:  # drop 2016-07-11 23:55
            shutil.copy(path, gap / path.name)
    assert nowcast_cli(model, gap, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert ("1 of the 3 input frames up to 2016-07-12T00:00:00Z are missing or unusable: "
            "2016-07-11T23:55:00Z (missing)") in err

    ten_minutes = tmp_path / "ten-minutes"
    ten_minutes.mkdir()
    for path in files[::2]:
        shutil.copy(path, ten_minutes / path.name)
    assert nowcast_cli(model, ten_minutes, tmp_path / "out") == 2
    assert "time step 600 s differs from the training data's 300 s" in capsys.readouterr().err

    assert nowcast_cli(model, mch, tmp_path / "out", "--at", "yesterday") == 2
    assert "--at must be an ISO 8601 time" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rain_colours_and_times():
    from jobs.nowcast.forecast import parse_time
    from jobs.images import NO_RAIN_COLOUR, NODATA_COLOUR, RAIN_COLOURS, colorize_rainrate

    rate = np.array([[0.0, 0.09, 0.1, 1.5], [30.0, 250.0, np.nan, 0.5]], dtype=np.float32)
    rgb = colorize_rainrate(rate, valid=np.array([[1, 1, 1, 0], [1, 1, 1, 1]]))
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    assert [tuple(c) for c in rgb[0]] == [NO_RAIN_COLOUR, NO_RAIN_COLOUR, RAIN_COLOURS[0], NODATA_COLOUR]
    assert [tuple(c) for c in rgb[1]] == [RAIN_COLOURS[8], RAIN_COLOURS[-1], NODATA_COLOUR, RAIN_COLOURS[2]]
    with pytest.raises(ValueError, match=r"rate must be \[H, W\]"):
        colorize_rainrate(np.zeros((2, 2, 2)))

    assert parse_time(None) is None
    assert parse_time("2016-07-11T23:45").isoformat() == "2016-07-11T23:45:00+00:00"
    assert parse_time("2016-07-12T01:45+02:00") == parse_time("2016-07-11T23:45Z")


@pytest.mark.parametrize("content", ["empty", "readme-only"])
def test_nowcast_inputs_from_a_source_without_frames_name_src(tmp_path, content):
    """Nowcasting from an empty folder (or one of other files) names --src, as prepare does."""
    from jobs.nowcast.forecast import read_input
    from pipelines.radar.latest import load_sequence

    src = tmp_path / "src"
    src.mkdir()
    if content == "readme-only":
        (src / "README.md").write_text("no frames")
    params = {"crop": None, "size": [16, 16]}
    with pytest.raises(ValueError, match=rf"^--src {src}: no radar frame .*; nothing to forecast from$"):
        load_sequence(src, "auto", None, 4, params)
    with pytest.raises(ValueError, match=rf"^--src {src}: no radar frame .*; nothing to forecast from$"):
        read_input(src, "auto", None, {"params": params}, 4)
