"""pySTEPS both ways, end to end on real samples: the MRMS PrecipRate sample (tests/data) prepared
through `--format pysteps:mrms_grib` -> shards -> `convlstm evaluate` of the baselines alone, pySTEPS'
nowcasts among them; and a radar-tiny model trained on the MeteoSwiss sample read by pySTEPS'
`mch_gif` importer, called as a pySTEPS nowcast method and verified with `pysteps.verification`."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from jobs.cli import main
from pipelines.manifest import load_manifest
from pipelines.shards import read_windows

MRMS = REPO / "tests" / "data" / "radar-mrms-sample"
BASELINES = ("persistence", "optical-flow", "pysteps-extrapolation", "pysteps-sprog")
pytestmark = pytest.mark.slow  # prepare, train and register: minutes on 2 cores


@pytest.fixture(scope="module")
def mrms_data(ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mrms") / "shards"
    assert main(["prepare", "radar", "--src", str(MRMS), "--format", "pysteps:mrms_grib", "--out", str(out),
                 "--in-len", "3", "--out-len", "2", "--size", "32x64", "--split", "time",
                 "--val-fraction", "0.2", "--test-fraction", "0.5", "--allow-empty-split"]) == 0  # test windows only
    return out


def test_mrms_through_pysteps_importer_to_shards(mrms_data):
    from pysteps.io import import_mrms_grib

    from pipelines.radar.preprocess import preprocess
    from pipelines.radar.pysteps_io import rain_to_dbz

    manifest = load_manifest(mrms_data)
    assert manifest["params"]["format"] == "pysteps:mrms_grib" and manifest["rejected"] == []
    assert manifest["time_step_s"] == 120 and manifest["gaps"] == []
    assert manifest["grid"] == {"height": 32, "width": 64, "source_height": 125, "source_width": 250, "crop": None}
    assert manifest["encoding"]["source_zr"] == {"a": 200.0, "b": 1.6}
    windows = read_windows(mrms_data, "test")
    assert len(windows["start"]) >= 2
    by_time = {datetime.strptime(p.stem[-15:], "%Y%m%d-%H%M%S"): p for p in MRMS.rglob("*.grib2")}
    for row, start in enumerate(windows["start"]):
        for t in range(5):
            time = datetime.fromisoformat(start).replace(tzinfo=None) + timedelta(minutes=2 * t)
            rate, _, _ = import_mrms_grib(str(by_time[time]))
            pixel, valid = preprocess(rain_to_dbz(rate), None, (32, 64))
            np.testing.assert_array_equal(windows["frames"][row, t, 0], pixel)
            np.testing.assert_array_equal(windows["mask"][row, t, 0], valid.astype(np.uint8))
    assert (windows["mask"] == 0).any() and (windows["mask"] == 1).any()


def test_evaluate_baselines_alone_with_pysteps_nowcasts(mrms_data, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(mrms_data), "--baselines", ",".join(BASELINES), "--out", str(out),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(result["methods"]) == list(BASELINES)
    assert result["primary_metric"]["value"] is None and result["model"]["ref"] is None
    leads = {name: m["per_lead"] for name, m in result["methods"].items()}
    assert all(list(per_lead) == list(leads["persistence"]) for per_lead in leads.values())
    for name, per_lead in leads.items():
        assert len(per_lead["rainfall_mse"]) == 2 and all(np.isfinite(per_lead["rainfall_mse"])), name
        assert all(0 <= v <= 1 for v in per_lead["csi_ge_0.5"]), name
    for name in ("pysteps-extrapolation", "pysteps-sprog"):
        assert leads[name]["rainfall_mse"] != leads["persistence"]["rainfall_mse"]
        assert "rainfall_mse_skill" in result["skill"][name]["per_lead"]
    assert (out / "evaluation.md").read_text().startswith("# Evaluation of the baselines")
    assert main(["evaluate", "--data", str(mrms_data), "--baselines", "none", "--out", str(tmp_path / "x")]) == 2
    assert "without --model evaluate scores baselines only" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(mrms_data), "--log", "--out", str(tmp_path / "y")]) == 2
    assert "give --model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.fixture(scope="module")
def mch_model(ray_local, sample_data, tmp_path_factory) -> tuple[str, Path]:
    from pipelines.radar.prepare import RadarOptions, prepare_radar
    from pipelines.driver import Publish
    from tiny_models import train_tiny

    out = tmp_path_factory.mktemp("mch-pysteps") / "shards"
    options = RadarOptions(in_len=3, out_len=3, size=(32, 32), crop=(600, 600), split="time",
                           val_fraction=0.2, test_fraction=0.5)
    prepare_radar(sample_data / "radar-mch-sample", str(out), "pysteps:mch_gif", options,
                  publish=Publish(progress=False))
    return train_tiny("radar", out, "convlstm-radar-pystepstest"), out


def _mch_rates(sample_data: Path, times: list[datetime]) -> np.ndarray:
    """Rain rates [mm/h] of the MeteoSwiss frames at `times`, read the pySTEPS way (data source + to_rainrate)."""
    import pysteps
    from pysteps.utils import to_rainrate

    source = pysteps.rcparams.data_sources["mch"]
    frames = []
    for time in times:
        [path] = (sample_data / "radar-mch-sample").rglob(time.strftime("AQC%y%j%H%M") + "?_00005.801.gif")
        precip, _, metadata = pysteps.io.import_mch_gif(str(path), **source["importer_kwargs"])
        frames.append(to_rainrate(precip, metadata)[0])
    return np.stack(frames)


def test_model_as_pysteps_nowcast_method_in_a_verification_loop(mch_model, sample_data):
    from pysteps import nowcasts, motion
    from pysteps.verification import det_cat_fct, det_cont_fct, fss

    from jobs.nowcast.pysteps_method import forecast, model_input

    model, data = mch_model
    manifest = load_manifest(data)
    windows = read_windows(data, "test")
    start = datetime.fromisoformat(windows["start"][0])
    times = [start + timedelta(minutes=5 * t) for t in range(6)]
    rates = _mch_rates(sample_data, times)
    assert rates.shape == (6, 640, 710) and np.isnan(rates).any()
    # The model sees exactly what training saw: the shard's input frames.
    np.testing.assert_array_equal(model_input(rates[:3], manifest), windows["frames"][0, :3, 0])

    ours = forecast(rates[:3], None, 3, model=model)
    assert ours.shape == (3, 640, 710) and ours.dtype == np.float32
    assert np.isnan(ours[:, :20]).all() and np.isnan(ours[:, :, :55]).all()  # outside the 600 x 600 crop
    assert np.isnan(ours[:, np.isnan(rates[2])]).all()
    inside = ours[:, 20:620, 55:655]
    assert np.isfinite(inside[:, ~np.isnan(rates[2, 20:620, 55:655])]).all() and np.nanmin(inside) >= 0
    assert np.array_equal(forecast(rates[:3], None, [2], model=model)[0], ours[1], equal_nan=True)

    velocity = motion.get_method("LK")(rates[:3])
    extrapolated = nowcasts.get_method("extrapolation")(rates[2], velocity, 3)
    for name, nowcast in (("convlstm", ours), ("extrapolation", extrapolated)):
        for lead in range(3):
            cont = det_cont_fct(nowcast[lead], rates[3 + lead], scores=["MSE", "corr_p"])
            cat = det_cat_fct(nowcast[lead], rates[3 + lead], thr=0.5, scores=["CSI"])
            assert np.isfinite(cont["MSE"]) and np.isfinite(cont["corr_p"]), (name, lead)
            assert 0 <= cat["CSI"] <= 1 and 0 <= fss(nowcast[lead], rates[3 + lead], 1.0, 16) <= 1, (name, lead)

    with pytest.raises(ValueError, match=r"takes \(t >= 3, 640, 710\) rain rates"):
        forecast(rates[:3, :100], None, 3, model=model)
    with pytest.raises(ValueError, match=r"timesteps: the model forecasts lead times 1..3"):
        forecast(rates[:3], None, 4, model=model)


def test_nowcast_cli_reads_through_the_same_pysteps_format(mch_model, sample_data, tmp_path):
    model, _ = mch_model
    assert main(["nowcast", "--model", model, "--src", str(sample_data / "radar-mch-sample"),
                 "--format", "pysteps:mch_gif", "--out", str(tmp_path)]) == 0
    sidecar = json.loads((tmp_path / "forecast.json").read_text())
    assert sidecar["format"] == "pysteps:mch_gif" and sidecar["input_times"][-1] == "2016-07-12T00:00:00Z"
    assert np.load(tmp_path / "forecast_mmh.npy").shape == (3, 32, 32)


def test_incremental_prepare_decodes_only_the_new_day(ray_local, tmp_path):
    """A second day (the sample's files renamed: the pysteps: formats take the time from the name) is
    added by --incremental without touching the first day's shards."""
    src, out = tmp_path / "src", tmp_path / "shards"
    (src / "d1").mkdir(parents=True)
    for path in sorted(MRMS.rglob("*.grib2"))[:6]:
        (src / "d1" / path.name).write_bytes(path.read_bytes())
    args = ["prepare", "radar", "--src", str(src), "--format", "pysteps:mrms_grib", "--out", str(out),
            "--in-len", "3", "--out-len", "2", "--size", "16x32", "--split", "days",
            "--val-fraction", "0", "--test-fraction", "0"]
    assert main(args) == 0
    first = load_manifest(out)
    shards = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    (src / "d2").mkdir()
    for path in sorted((src / "d1").iterdir()):
        (src / "d2" / path.name.replace("20190610", "20190611")).write_bytes(path.read_bytes())
    assert main([*args, "--incremental"]) == 0
    second = load_manifest(out)
    assert len(first["sources"]) == 1 and set(first["sources"]) < set(second["sources"])
    assert len(second["sources"]) == 2 and second["splits"]["train"]["count"] == 2 * first["splits"]["train"]["count"]
    assert all(path.read_bytes() == data for path, data in shards.items())
    assert second["rejected"] == []
