"""`convlstm evaluate` end to end: real MeteoSwiss shards, a radar-tiny model trained for a few steps
and registered in the session's MLflow store, real Ray Data; KTH on a tiny synthetic set. Baseline
scores are checked against an independent numpy computation on the shards."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main

from tiny_models import IN_LEN, OUT_LEN, train_tiny

THRESHOLDS = (0.5, 2.0, 5.0, 10.0, 30.0)


@pytest.fixture(scope="module")
def radar_data(mch_tiny) -> Path:
    return mch_tiny


@pytest.fixture(scope="module")
def radar_model(radar_tiny) -> str:
    return radar_tiny


@pytest.fixture(scope="module")
def radar_result(radar_model, radar_data, tmp_path_factory) -> tuple[dict, Path]:
    """`convlstm evaluate` on the 15 test windows (batches of 8, the last padded), single process: the
    split is below the default Ray Data threshold."""
    out = tmp_path_factory.mktemp("evaluation")
    rc = main(["evaluate", "--model", radar_model, "--data", str(radar_data), "--out", str(out), "--log"])
    assert rc == 0
    return json.loads((out / "evaluation.json").read_text()), out


def independent_persistence(data: Path) -> dict[str, np.ndarray]:
    """Persistence scores per lead time straight from the shards, in float64 numpy."""
    from pipelines.shards import read_windows

    windows = read_windows(str(data), "test")
    frames, mask = windows["frames"][:, :, 0].astype(np.float64), windows["mask"][:, IN_LEN:, 0] == 1
    rain = ((10 ** ((frames * 70 / 255 - 10) / 10)) / 58.53) ** (1 / 1.56)
    forecast = np.repeat(rain[:, IN_LEN - 1:IN_LEN], OUT_LEN, axis=1)
    target = rain[:, IN_LEN:]
    error = np.where(mask, forecast - target, 0.0)
    valid = mask.sum(axis=(0, 2, 3))
    scores = {"rainfall_mse": (error**2).sum(axis=(0, 2, 3)) / valid,
              "rainfall_mae": np.abs(error).sum(axis=(0, 2, 3)) / valid}
    for t in THRESHOLDS:
        f, o = forecast >= t, target >= t
        hits, misses, false = ((a & b & mask).sum(axis=(0, 2, 3)) for a, b in ((f, o), (~f, o), (f, ~o)))
        with np.errstate(invalid="ignore", divide="ignore"):
            scores[f"csi_ge_{t:g}"] = hits / (hits + misses + false)
            scores[f"pod_ge_{t:g}"] = hits / (hits + misses)
    products = np.where(mask, forecast * target, 0).sum(axis=(2, 3))
    norms = np.where(mask, forecast**2, 0).sum(axis=(2, 3)) * np.where(mask, target**2, 0).sum(axis=(2, 3))
    scores["correlation"] = (products / np.sqrt(norms + 1e-9)).mean(axis=0)
    return scores


def as_array(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_radar_evaluation_outputs(radar_result, radar_data, radar_model):
    result, out = radar_result
    from pipelines.manifest import load_manifest

    manifest = load_manifest(radar_data)
    assert result["model"]["ref"] == radar_model and result["model"]["run_id"]
    assert result["model"]["data_fingerprint"] == manifest["fingerprint"]
    assert result["data"] == {"path": str(radar_data), "manifest": str(radar_data / "manifest.json"),
                              "fingerprint": manifest["fingerprint"], "split": "test", "windows": 15}
    assert result["protocol"]["in_len"] == IN_LEN and result["protocol"]["out_len"] == OUT_LEN
    assert result["protocol"]["time_step_s"] == 300
    assert set(result["methods"]) == {"model", "persistence", "optical-flow"}
    assert result["primary_metric"]["name"] == "rainfall_mse" and not result["primary_metric"]["higher_is_better"]
    assert result["primary_metric"]["value"] == result["methods"]["model"]["summary"]["rainfall_mse"]
    for method in result["methods"].values():
        categorical = (f"{score}_ge_{t:g}" for score in ("csi", "far", "pod", "hss") for t in THRESHOLDS)
        for key in ("rainfall_mse", "rainfall_mae", "correlation", *categorical):
            assert len(method["per_lead"][key]) == OUT_LEN, key
            assert key in method["summary"]
        assert method["summary"]["rainfall_mse"] >= 0
    model, persistence = result["methods"]["model"], result["methods"]["persistence"]
    skill = result["skill"]["model"]["per_lead"]
    np.testing.assert_allclose(as_array(skill["rainfall_mse_skill"]), 1 - as_array(model["per_lead"]["rainfall_mse"])
                               / as_array(persistence["per_lead"]["rainfall_mse"]))
    np.testing.assert_allclose(as_array(skill["csi_ge_0.5_gain"]),
                               as_array(model["per_lead"]["csi_ge_0.5"]) - as_array(persistence["per_lead"]["csi_ge_0.5"]))
    assert not result["skipped"] and result["distributed"] is False

    markdown = (out / "evaluation.md").read_text()
    assert "| persistence |" in markdown and "| optical-flow |" in markdown
    assert "None shares this protocol" in markdown
    for png in ("lead_scores.png", "lead_categorical.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_persistence_matches_independent_numpy(radar_result, radar_data):
    result, _ = radar_result
    expected = independent_persistence(radar_data)
    persistence = result["methods"]["persistence"]
    for key, values in expected.items():
        np.testing.assert_allclose(as_array(persistence["per_lead"][key]), values, rtol=1e-5, atol=1e-9, err_msg=key)
        summary = persistence["summary"][key]
        assert (summary is None) == bool(np.isnan(values).all()), key
        if summary is not None:
            assert summary == pytest.approx(np.nanmean(values), rel=1e-5), key
    assert expected["rainfall_mse"].min() > 0 and np.nanmax(expected["csi_ge_0.5"]) > 0  # the check is not vacuous


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_distributed_path_equals_single_process(radar_result, radar_data, radar_model, tmp_path):
    single, _ = radar_result
    from jobs.evaluation.evaluate import Scoring, evaluate

    distributed = evaluate(radar_model, str(radar_data), out=tmp_path, scoring=Scoring(distributed_min_windows=0))
    assert distributed["distributed"] is True
    for key in ("data", "protocol", "primary_metric", "methods", "skill"):
        assert distributed[key] == single[key], key
    assert json.loads((tmp_path / "evaluation.json").read_text())["methods"] == single["methods"]


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_evaluation_logged_to_the_model_run(radar_result):
    from jobs.registry import tracking

    result, _ = radar_result
    client = tracking.client()
    run = client.get_run(result["model"]["run_id"])
    summary = result["methods"]["model"]["summary"]
    assert run.data.metrics["test_rainfall_mse"] == pytest.approx(summary["rainfall_mse"])
    assert "test_persistence_csi_ge_0.5" in run.data.metrics
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation/test")}
    assert {"evaluation/test/evaluation.json", "evaluation/test/evaluation.md"} <= logged


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_model_score_is_the_primary_metric(radar_result, radar_data, radar_model):
    from jobs.evaluation.evaluate import model_score, primary_metric

    result, _ = radar_result
    assert primary_metric("radar") == ("rainfall_mse", False)
    summary = result["methods"]["model"]["summary"]
    assert model_score(radar_model, str(radar_data)) == summary["rainfall_mse"]
    assert model_score(radar_model, str(radar_data), metric="csi_ge_0.5") == summary["csi_ge_0.5"]
    with pytest.raises(ValueError, match="metric must be one of"):
        model_score(radar_model, str(radar_data), metric="accuracy")


@pytest.mark.slow  # shares the module's trained model (prepare + train + register: ~40-90 s)
def test_a_model_trained_on_random_crops_scores_whole_frames(radar_data, tmp_path):
    """`data.crop`: training steps see 16x16 crops of the 32x32 windows; validation and evaluation the
    whole frames (the encoder-forecaster is fully convolutional)."""
    from jobs.registry import tracking

    uri = train_tiny("radar", radar_data, "convlstm-radar-croptest", "data.crop=16")
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--model", uri, "--data", str(radar_data), "--out", str(out), "--baselines", "none"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["data"]["windows"] == 15 and math.isfinite(result["methods"]["model"]["summary"]["rainfall_mse"])
    run = tracking.client().get_run(result["model"]["run_id"])
    assert run.data.params["data.crop"] == "16" and math.isfinite(run.data.metrics["val_loss"])


def test_bad_arguments_exit_2(radar_model, radar_data, capsys):
    cases = [
        (["--split", "nope"], "--split 'nope' has no windows"),
        (["--baselines", "persistence,magic"], "--baselines must be among"),
        (["--log", "--log-to-run", "0" * 32], "either --log"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ]
    for extra, message in cases:
        rc = main(["evaluate", "--model", radar_model, "--data", str(radar_data), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (extra, err)
    assert main(["evaluate", "--model", "models:/no-such-model@champion", "--data", str(radar_data)]) == 2


def test_training_and_evaluate_agree_on_the_validation_scores(radar_model, radar_data, tmp_path):
    """Validation runs in float32 with the task's own summaries, so the registered checkpoint's
    `val_<name>` equals `convlstm evaluate --split val`'s `<name>` (batches differ: float tolerance)."""
    from jobs.evaluation.evaluate import evaluate
    from jobs.registry.modelio import load_state

    metrics = load_state(radar_model)["metrics"]
    summary = evaluate(radar_model, str(radar_data), "val", (), out=tmp_path)["methods"]["model"]["summary"]
    for name in ("rainfall_mse", "rainfall_mae", "correlation", "b_mse"):
        assert metrics[f"val_{name}"] == pytest.approx(summary[name], rel=1e-4), name
    assert metrics["val_rainfall_mse"] > 0


def test_data_unlike_the_training_data_is_refused(radar_model, sample_data, tmp_path, capsys):
    """Same window shape, other source crop: the scores would not mean what they say (exit 2)."""
    from pipelines.radar.prepare import RadarOptions, prepare_radar
    from pipelines.driver import Publish

    other = tmp_path / "mch-crop400"
    prepare_radar(sample_data / "radar-mch-sample", str(other), "mch", RadarOptions(in_len=IN_LEN, out_len=OUT_LEN,
                                                                                    size=(32,
                                                                                          32), crop=(400, 400), split="time",
                               val_fraction=0.2, test_fraction=0.5), publish=Publish(progress=False))
    args = ["evaluate", "--model", radar_model, "--data", str(other), "--out", str(tmp_path / "e")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "source grid" in err and "--allow-data-mismatch" in err
    assert not (tmp_path / "e").exists()
    assert main([*args, "--allow-data-mismatch", "--baselines", "persistence"]) == 0


def test_foreign_checkpoints_are_refused_in_one_line(radar_data, tmp_path, capsys):
    import collections

    import torch

    files = {"empty.pt": b"", "text.pt": b"not a checkpoint at all"}
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    torch.save(collections.Counter(a=1), tmp_path / "pickled-object.pt")  # needs full unpickling
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign-dict.pt")
    for name in ("empty.pt", "text.pt", "pickled-object.pt", "foreign-dict.pt"):
        assert main(["evaluate", "--model", str(tmp_path / name), "--data", str(radar_data)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and name in err and "checkpoint" in err, err
        assert "weights_only=False" not in err


def test_device_choice(radar_model, radar_data, tmp_path, capsys):
    """--device cpu scores as the default does on this machine; cuda without a GPU is one line, exit 2."""
    import torch

    from jobs.evaluation.inference import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    args = ["evaluate", "--model", radar_model, "--data", str(radar_data), "--baselines", "persistence"]
    code = main([*args, "--device", "cuda", "--out", str(tmp_path / "gpu")])
    if torch.cuda.is_available():
        assert code == 0
    else:
        assert code == 2 and "--device cuda: no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "gpu").exists()


def test_kth_classification(ray_local, tmp_path):
    from pipelines.kth import CATEGORIES, KthOptions, prepare_kth
    from pipelines.driver import Publish
    from pipelines.synthetic import write_kth_videos

    write_kth_videos(tmp_path / "videos", persons=[11, 1, 2], scenarios=("d1",), frames=24)
    data = tmp_path / "kth"
    prepare_kth(tmp_path / "videos", str(data), KthOptions(frame_len=6, stride=6, size=(24, 32)),
                publish=Publish(progress=False))
    uri = train_tiny("kth", data, "convlstm-kth-evaltest")

    rc = main(["evaluate", "--model", uri, "--data", str(data), "--out", str(tmp_path / "eval")])
    assert rc == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    scores = result["methods"]["model"]["summary"]
    matrix = np.array(scores["confusion_matrix"])
    assert set(result["methods"]) == {"model"}
    assert [s["method"] for s in result["skipped"]] == ["persistence", "optical-flow"]
    assert scores["classes"] == list(CATEGORIES) and matrix.shape == (6, 6)
    assert matrix.sum() == result["data"]["windows"] == 6 * 4  # person 2 (test): 6 clips of 24 frames, 4 windows each
    assert np.array_equal(matrix.sum(axis=1), np.full(6, 4))
    assert scores["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    assert "Confusion matrix" in (tmp_path / "eval" / "evaluation.md").read_text()


def test_published_figures_only_where_the_protocol_matches():
    from jobs.evaluation.report import evaluation_markdown
    from jobs.evaluation.result import EvaluationResult
    from jobs.tasks import task_class

    def published_figures(task: str, protocol: dict) -> list[dict]:
        return task_class(task).published_figures(protocol)

    paper = {"in_len": 5, "out_len": 15, "height": 100, "width": 100, "time_step_s": 360.0}
    tables = published_figures("radar", paper)
    assert len(tables) == 1
    assert tables[0]["source"].startswith("Shi et al. 2015, Table 2") and tables[0]["rows"][0][1] == 1.420
    assert published_figures("radar", {**paper, "out_len": 20}) == []
    assert len(published_figures("mnist", {"in_len": 10, "out_len": 10, "height": 64, "width": 64, "digits": 2})) == 2
    assert published_figures("mnist", {"in_len": 10, "out_len": 10, "height": 64, "width": 64, "digits": 3}) == []
    kth = {"seq_len": 15, "channels": 1, "height": 60, "width": 80, "person_split": "tutorial", "split": "val"}
    assert published_figures("kth", kth)[0]["rows"][-1] == ("tutorial ConvLSTM classifier, epoch 30", 0.655)
    assert published_figures("kth", {**kth, "split": "test"}) == []

    result = {"task": "radar", "model": {"ref": "models:/x@champion"}, "protocol": {**paper, "thresholds_mmh": [0.5]},
              "data": {"path": "d", "manifest": "d/manifest.json", "split": "test", "windows": 1, "fingerprint": "f"},
              "primary_metric": {"name": "rainfall_mse", "higher_is_better": False},
              "methods": {"model": {"summary": {"rainfall_mse": 1.25, "csi_ge_0.5": None},
                                    "per_lead": {}}}, "skill": {}}
    markdown = evaluation_markdown(EvaluationResult.parse(result, "test"))
    assert "## Published figures (the papers' numbers, not ours)" in markdown
    assert "| ConvLSTM(3x3)-3x3-64-3x3-64 | 1.42 | 0.577 | 0.195 | 0.66 | 0.908 |" in markdown
    assert "| model | 1.25 | — |" in markdown


def test_window_states_sum_to_the_same_scores_in_any_grouping(radar_data):
    """The public per-window API benchmarks/skill.py pools archives with: states merged in two groups
    and in reverse order give the persistence scores straight from the shards."""
    from jobs.evaluation.baselines import baselines_only
    from jobs.evaluation.window_scores import WindowScorer, merge_states, window_states
    from jobs.tasks import get_task
    from jobs.training.config import from_dict
    from pipelines.manifest import load_manifest

    _, info = baselines_only(str(radar_data), ("persistence",))
    task = get_task(from_dict(info["config"]), load_manifest(str(radar_data)))
    scorer = WindowScorer(task, None, ("persistence",))
    keyed = window_states(scorer, str(radar_data), "test")
    assert len(keyed) == 15 and keyed == sorted(keyed, key=lambda item: item[0])
    expected = independent_persistence(radar_data)
    for order in (keyed, keyed[::-1], keyed[1::2] + keyed[::2]):
        scores = task.summarize(merge_states(scorer, order)["persistence"])["per_lead"]
        for name in ("rainfall_mse", "csi_ge_0.5"):
            np.testing.assert_allclose(np.asarray(scores[name], dtype=float), expected[name], rtol=1e-5)
