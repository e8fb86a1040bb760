"""The motion-aware radar model through the product: trained by `convlstm train` (radar-tiny with
`model.params.motion=advection`), resumed, evaluated (FSS and the per-baseline verdicts of
evaluation.md) and used by `convlstm nowcast`, which computes the motion field from the latest frames
inside the model, exactly as on the training windows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.training.config import load_config
from jobs.training.driver import Compute, RunOptions, train
from tiny_models import IN_LEN, prepare_mch_tiny

MOTION = "model.params.motion=advection"
COMMON = ["registry.name=convlstm-radar-motiontest", "data.shuffle_buffer=0", MOTION]


@pytest.fixture(scope="module")
def mch_tiny(ray_local, sample_data, tmp_path_factory) -> Path:
    return prepare_mch_tiny(sample_data, tmp_path_factory.mktemp("motion") / "mch32")


@pytest.fixture(scope="module")
def motion_run(mch_tiny, tmp_path_factory):
    storage = tmp_path_factory.mktemp("motion-train")
    first = train(load_config("radar-tiny", "radar", [*COMMON, "train.epochs=1"]), str(mch_tiny),
                  compute=Compute(workers=0),
                  run=RunOptions(storage_path=str(storage), run_name="motion-resume"))
    return first, storage


def test_resume_continues_the_motion_model_and_refuses_the_plain_one(motion_run, mch_tiny):
    first, storage = motion_run
    with pytest.raises(ValueError, match="^model: run 'motion-resume' was trained with"):
        train(load_config("radar-tiny", "radar", [*COMMON, "model.params.motion=null", "train.epochs=2"]),
              str(mch_tiny),
              compute=Compute(workers=0),
              run=RunOptions(storage_path=str(storage), run_name="motion-resume", resume=True))
    resumed = train(load_config("radar-tiny", "radar", [*COMMON, "train.epochs=2"]), str(mch_tiny),
                    compute=Compute(workers=0),
                    run=RunOptions(storage_path=str(storage), run_name="motion-resume", resume=True))
    assert resumed.run_id == first.run_id and resumed.epochs == 2 and resumed.steps == 2 * first.steps


def test_evaluate_scores_fss_and_says_which_baselines_the_model_beats(motion_run, mch_tiny, tmp_path):
    from jobs.evaluation.evaluate import Scoring, evaluate

    first, _ = motion_run
    result = evaluate(first.best_checkpoint, str(mch_tiny), "test", ("persistence", "optical-flow"), tmp_path,
                      scoring=Scoring(device="cpu"))
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["protocol"]["fss_scales_px"] == [1, 5, 15]
    model = written["methods"]["model"]
    for key in ("fss_ge_1_s1", "fss_ge_0.5_s5", "fss_ge_2_s15"):
        assert len(model["per_lead"][key]) == 3 and key in model["summary"]
    assert (tmp_path / "lead_fss.png").stat().st_size > 0
    markdown = (tmp_path / "evaluation.md").read_text()
    for baseline in ("persistence", "optical-flow"):
        ours, theirs = model["summary"]["rainfall_mse"], result["methods"][baseline]["summary"]["rainfall_mse"]
        verdict = "beats" if ours < theirs else "does not beat"
        assert f"- the model {verdict} {baseline} on rainfall_mse:" in markdown


def test_nowcast_runs_the_motion_model_on_the_latest_frames(motion_run, mch_tiny, sample_data, tmp_path):
    """--at 23:45 reads the input frames of the test window starting at 23:35: the nowcast equals the
    model's forecast of that window (the motion field computed from the same frames)."""
    from convlstm.units import pixel_to_dbz
    from jobs.evaluation.inference import predict
    from jobs.nowcast.forecast import nowcast, parse_time
    from jobs.registry.modelio import load_model
    from pipelines.shards import read_windows

    first, _ = motion_run
    sidecar = nowcast(first.best_checkpoint, sample_data / "radar-mch-sample", tmp_path, "mch",
                      parse_time("2016-07-11T23:45"), device="cpu")
    assert sidecar["input_times"][0] == "2016-07-11T23:35:00Z"
    windows = read_windows(str(mch_tiny), "test")
    row = list(windows["start"]).index("2016-07-11T23:35:00Z")
    model, info = load_model(first.best_checkpoint)
    assert info["model_spec"]["kwargs"]["motion"] == "advection"
    scaled = np.clip(predict(model, windows["frames"][row:row + 1, :IN_LEN].astype(np.float32) / 255.0), 0, 1)
    expected = pixel_to_dbz(scaled[0, :, 0] * 255.0)
    expected[:, windows["mask"][row, IN_LEN - 1, 0] == 0] = np.nan
    np.testing.assert_array_equal(np.load(tmp_path / "forecast_dbz.npy"), expected)
