"""`convlstm train` end to end on synthetic KTH shards: Ray Train DDP on the session's 2-CPU Ray,
the Registry aliases, resume in the same MLflow run, a killed worker, a diverging run, and the
checks that fail before any cluster work."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs import checkpoints
from jobs.registry import tracking
from jobs.cli import main
from jobs.training.config import from_dict, load_config
from jobs.registry.modelio import load_model
from jobs.tasks import get_task
from jobs.training.driver import Compute, NonFiniteLossError, RunOptions, train

REGISTERED = "test-train-kth"
TRAIN_WINDOWS, VAL_WINDOWS = 24, 12


@pytest.fixture(scope="module")
def kth_data(ray_local, tmp_path_factory) -> str:
    """Synthetic KTH videos through the real prepare: persons 11, 12 (train) and 1 (val), 3 actions,
    2 scenarios, 30 frames -> two 15-frame windows each, 30x40 grey."""
    from pipelines.kth import KthOptions, prepare_kth
    from pipelines.driver import Publish
    from pipelines.synthetic import write_kth_videos

    root = tmp_path_factory.mktemp("kth")
    write_kth_videos(root / "videos", persons=[11, 12, 1], actions=("boxing", "handwaving", "walking"),
                     scenarios=("d1", "d2"), frames=30)
    manifest = prepare_kth(root / "videos", str(root / "data"), KthOptions(size=(30, 40)),
                           publish=Publish(progress=False))
    assert (manifest["splits"]["train"]["count"], manifest["splits"]["val"]["count"]) == (TRAIN_WINDOWS, VAL_WINDOWS)
    return str(root / "data")


@pytest.fixture(scope="module")
def ddp_run(kth_data, tmp_path_factory) -> tuple[dict, Path]:
    """`convlstm train --workers 2` through the CLI: (the printed JSON summary, checkpoint storage)."""
    storage = tmp_path_factory.mktemp("storage")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "--task", "kth", "--data", kth_data, "--config", "kth-tiny", "--workers", "2",
                     "--run-name", "kth-ddp", "--storage", str(storage), "--json", f"registry.name={REGISTERED}"])
    assert code == 0
    return json.loads(out.getvalue().strip().splitlines()[-1]), storage


def steps_of(run_id: str, key: str) -> list[int]:
    return [step for step, _ in tracking.metric_history(None, run_id, key)]


def test_two_worker_run_registers_champion_with_lineage(ddp_run, kth_data):
    from pipelines.manifest import load_manifest

    summary, _ = ddp_run
    assert (summary["status"], summary["epochs"], summary["alias"], summary["model_version"]) == (
        "completed", 2, "champion", "1")
    # 2 workers x 4 windows per step over 12 windows each: 3 steps per epoch
    assert summary["steps"] == 6
    client = tracking.client()
    run = client.get_run(summary["run_id"])
    manifest = load_manifest(kth_data)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.003" and run.data.params["model.params.height"] == "30"
    tags = run.data.tags
    assert tags["convlstm.task"] == "kth" and tags["convlstm.data_fingerprint"] == manifest["fingerprint"]
    assert tags["convlstm.manifest_path"] == str(Path(kth_data, "manifest.json"))
    assert {"convlstm.ray_version", "convlstm.torch_version"} <= set(tags)
    artifacts = {f.path for f in client.list_artifacts(summary["run_id"])}
    assert {"config.yaml", "learning_curve.png", "confusion_matrix.png", "evaluation.json"} <= artifacts
    # the loss is synced and logged every train.log_every_steps (2) steps, not every step
    assert steps_of(summary["run_id"], "train_loss") == [2, 4, 6]
    assert steps_of(summary["run_id"], "val_accuracy") == [3, 6]

    version = client.get_model_version(REGISTERED, "1")
    assert version.run_id == summary["run_id"]
    assert version.tags["data_fingerprint"] == manifest["fingerprint"]
    assert summary["run_id"] in version.description and "val_accuracy" in version.description


def test_ddp_validation_equals_a_single_process_evaluation(ddp_run, kth_data):
    """The merged per-rank validation of the best epoch is what one process computes on all windows."""
    from pipelines.shards import read_windows

    _, storage = ddp_run
    best = checkpoints.load(checkpoints.latest(str(storage), "kth-ddp"))
    model, info = load_model(str(Path(storage, "kth-ddp", checkpoints.epoch_dir_name(best["epoch"]))))
    task = get_task(from_dict(info["config"]), info["manifest"])
    windows = read_windows(kth_data, "val", task.columns)
    evaluator = task.evaluator()
    with torch.no_grad():
        for start in range(0, VAL_WINDOWS, 5):  # batches unlike training's, on purpose
            evaluator.update(model, {k: torch.from_numpy(v[start:start + 5]) for k, v in windows.items()})
    scalars, evaluation = evaluator.compute()
    assert evaluation["windows"] == VAL_WINDOWS == best["evaluation"]["windows"]
    assert scalars["val_accuracy"] == best["metrics"]["val_accuracy"]
    assert scalars["val_loss"] == pytest.approx(best["metrics"]["val_loss"], rel=1e-5)
    assert np.array_equal(evaluation["classification"]["confusion_matrix"],
                          best["evaluation"]["classification"]["confusion_matrix"])


def test_ddp_ranks_validate_disjoint_windows(kth_data, tmp_path):
    """Validation is sharded: each rank reads its own windows once per epoch, together all of them."""
    cfg = load_config("kth-tiny", "kth", ["train.epochs=1", "registry.register=false"])
    progress = tmp_path / "progress"
    train(cfg, kth_data, compute=Compute(workers=2),
          run=RunOptions(storage_path=str(tmp_path / "ckpt"), run_name="kth-sharded-val", progress_dir=str(progress)))
    read = [json.loads((progress / f"rank{rank}.json").read_text())["val_windows"] for rank in (0, 1)]
    assert sum(read) == VAL_WINDOWS and all(0 < n < VAL_WINDOWS for n in read)


def test_a_second_identical_ddp_run_is_bit_identical_and_registers_challenger(ddp_run, kth_data, tmp_path):
    """The same config and shards through 2 DDP workers again: the same steps, scores and weights bit for
    bit (seeded initialisation and shuffles, order-preserving Ray Data splits, gloo's fixed reduction order
    on CPU), registered as the challenger beside the first run's champion."""
    first, _ = ddp_run
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "--task", "kth", "--data", kth_data, "--config", "kth-tiny", "--workers", "2",
                     "--run-name", "kth-ddp", "--storage", str(tmp_path), "--json", f"registry.name={REGISTERED}"])
    assert code == 0
    again = json.loads(out.getvalue().strip().splitlines()[-1])
    assert (again["alias"], again["model_version"]) == ("challenger", "2")
    assert (again["best_epoch"], again["steps"], again["best_score"]) == \
           (first["best_epoch"], first["steps"], first["best_score"])
    a, b = checkpoints.load(first["best_checkpoint"]), checkpoints.load(again["best_checkpoint"])
    metrics = [{k: v for k, v in c["metrics"].items() if k != "samples_per_s"} for c in (a, b)]
    assert metrics[0] == metrics[1]
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert a["model"].keys() == b["model"].keys() and not different, different
    client = tracking.client()
    assert str(client.get_model_version_by_alias(REGISTERED, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(REGISTERED, "challenger").version) == "2"


def test_resume_continues_the_same_mlflow_run(kth_data, tmp_path):
    common = ["registry.register=false", "data.shuffle_buffer=0"]
    first = train(load_config("kth-tiny", "kth", [*common, "train.epochs=1"]), kth_data, compute=Compute(workers=0),
                  run=RunOptions(storage_path=str(tmp_path), run_name="kth-resume"))
    assert (first.epochs, first.steps) == (1, 3)
    with pytest.raises(ValueError, match="^train.epochs"):
        train(load_config("kth-tiny", "kth", [*common, "train.epochs=1"]), kth_data, compute=Compute(workers=0),
              run=RunOptions(storage_path=str(tmp_path), run_name="kth-resume", resume=True))
    resumed = train(load_config("kth-tiny", "kth", [*common, "train.epochs=2"]), kth_data, compute=Compute(workers=0),
                    run=RunOptions(storage_path=str(tmp_path), run_name="kth-resume", resume=True))
    assert resumed.run_id == first.run_id
    assert (resumed.epochs, resumed.steps) == (2, 6)
    assert steps_of(first.run_id, "train_loss") == list(range(2, 7, 2))  # synced every log_every_steps (2)
    assert tracking.metric_history(None, first.run_id, "epoch") == [(3, 1.0), (6, 2.0)]
    assert tracking.client().get_run(first.run_id).info.status == "FINISHED"
    assert checkpoints.list_epochs(str(tmp_path), "kth-resume") == [1, 2]


def test_resume_without_a_checkpoint_fails_before_any_run(kth_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume: run 'nothing-here' has no checkpoint"):
        train(load_config("kth-tiny", "kth"), kth_data, compute=Compute(workers=0),
              run=RunOptions(storage_path=str(tmp_path), run_name="nothing-here", resume=True))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(kth_data, tmp_path):
    """One step per epoch; the warm-up makes step 1's learning rate 0 and step 2's 3e37 (Adam moves
    the weights by ~1e38), so step 3's logits overflow: epochs 1 and 2 are checkpointed, epoch 3
    stops the run."""
    cfg = load_config("kth-tiny", "kth", [
        f"data.batch_size={TRAIN_WINDOWS}", "optim.lr=3e37", "schedule.name=cosine_warmup",
        "schedule.warmup_steps=1", "train.epochs=5", "registry.register=false"])
    with pytest.raises(NonFiniteLossError,
                       match=r"non-finite training loss \((nan|inf)\) by step 3 \(epoch 3\)") as err:
        train(cfg, kth_data, compute=Compute(workers=0), run=RunOptions(storage_path=str(tmp_path), run_name="kth-nan"))
    assert str(err.value).endswith(str(tmp_path / "kth-nan" / "epoch_0002"))
    assert checkpoints.list_epochs(str(tmp_path), "kth-nan") == [1, 2]
    client = tracking.client()
    (run,) = client.search_runs([client.get_experiment_by_name("convlstm-kth").experiment_id],
                                "attributes.run_name = 'kth-nan'")
    assert run.info.status == "FAILED" and "non-finite" in run.data.tags["convlstm.error"]


def test_best_checkpoint_is_the_earliest_best_surviving_one(tmp_path):
    for epoch, accuracy in ((1, 0.5), (2, 0.5), (3, 0.25), (4, float("nan"))):
        checkpoints.save({"epoch": epoch, "model": {}, "model_spec": {}}, {"val_accuracy": accuracy},
                         tmp_path / "run" / checkpoints.epoch_dir_name(epoch))
    best = checkpoints.best(str(tmp_path), "run", "val_accuracy", "max")
    assert best.endswith("epoch_0001") and checkpoints.load(best)["epoch"] == 1
    assert checkpoints.best(str(tmp_path), "run", "val_accuracy", "min").endswith("epoch_0003")
    assert checkpoints.best(str(tmp_path), "run", "val_loss", "min").endswith("epoch_0004")  # no values: latest
    assert checkpoints.best(str(tmp_path), "nothing", "val_accuracy", "max") is None


def test_monitor_val_loss_on_an_accuracy_config_registers_the_lowest_loss_epoch(kth_data, tmp_path):
    """kth-tiny ranks by val_accuracy; overriding the monitor alone must rank by the lowest val_loss (the
    task's direction), never keep a config's `max`."""
    cfg = load_config("kth-tiny", "kth", ["train.monitor=val_loss", "train.epochs=3", "train.keep_checkpoints=3",
                                          "registry.name=test-train-monitor-loss"])
    assert cfg.train.mode is None
    summary = train(cfg, kth_data, compute=Compute(workers=0),
                    run=RunOptions(storage_path=str(tmp_path), run_name="kth-monitor-loss"))
    losses = [value for _, value in tracking.metric_history(None, summary.run_id, "val_loss")]
    assert len(losses) == 3
    lowest = int(np.argmin(losses)) + 1
    assert summary.best_epoch == lowest and summary.best_score == pytest.approx(min(losses))
    version = tracking.client().get_model_version_by_alias("test-train-monitor-loss", "champion")
    assert version.tags["epoch"] == str(lowest) and version.tags["monitor"] == "val_loss"


@pytest.mark.parametrize("task, overrides, match", [
    ("mnist", [], "--data holds a 'kth' dataset"),
    ("kth", ["train.monitor=val_nope"], "^train.monitor"),
    ("kth", ["train.monitor=val_loss", "train.mode=max"], r"^train.mode: max contradicts train.monitor=val_loss"),
    ("kth", ["model.params.height=31"], "^model.params"),
    ("kth", ["model.params.layers=2"], "^model: cannot build"),
    ("kth", ["loss.name=mse"], "^loss.name"),
    ("kth", ["data.batch_size=3"], "^data.batch_size"),
])
def test_bad_settings_fail_before_any_cluster_or_mlflow_work(kth_data, tmp_path, task, overrides, match):
    client = tracking.client()
    before = len(client.search_experiments())
    with pytest.raises(ValueError, match=match):
        train(load_config(f"{task}-tiny", task, overrides), kth_data, compute=Compute(workers=2),
              run=RunOptions(storage_path=str(tmp_path)))
    assert len(client.search_experiments()) == before and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_killed_worker_restarts_from_the_last_checkpoint(kth_data, tmp_path):
    """SIGKILL rank 1 in epoch 3 of 4: Ray Train restarts the worker group from the latest checkpoint
    (max_failures=1) and the run finishes in one MLflow run with strictly increasing steps."""
    progress = tmp_path / "progress"
    seen: dict = {}

    def kill_rank1_in_epoch_3() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and "restarted" not in seen:
            try:
                state = json.loads((progress / "rank1.json").read_text())
            except (OSError, ValueError):
                state = None
            if state and "killed" not in seen and state["epoch"] >= 2:
                os.kill(state["pid"], signal.SIGKILL)
                seen["killed"] = state
            elif state and "killed" in seen and state["pid"] != seen["killed"]["pid"]:
                seen["restarted"] = state
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank1_in_epoch_3, daemon=True)
    killer.start()
    cfg = load_config("kth-tiny", "kth", ["train.epochs=4", "train.max_failures=1", "registry.register=false"])
    summary = train(cfg, kth_data, compute=Compute(workers=2),
                    run=RunOptions(storage_path=str(tmp_path / "storage"), run_name="kth-killed",
                                   progress_dir=str(progress)))
    killer.join(timeout=30)
    assert seen["killed"]["epoch"] >= 2
    assert seen["restarted"]["epoch"] >= 1  # resumed from a checkpoint, not from scratch
    assert (summary.status, summary.epochs, summary.steps) == ("completed", 4, 12)
    client = tracking.client()
    runs = client.search_runs([client.get_experiment_by_name("convlstm-kth").experiment_id],
                              "attributes.run_name = 'kth-killed'")
    assert [r.info.run_id for r in runs] == [summary.run_id]
    assert steps_of(summary.run_id, "train_loss") == list(range(2, 13, 2))
    assert steps_of(summary.run_id, "epoch") == [3, 6, 9, 12]


def test_ray_train_poll_default_is_set_for_the_run_only_and_a_users_value_wins(monkeypatch):
    from jobs.training.ray_fit import CONTROLLER_POLL, environ_defaults

    (name, value), = CONTROLLER_POLL.items()
    monkeypatch.delenv(name, raising=False)
    with environ_defaults(CONTROLLER_POLL):
        assert os.environ[name] == value
    assert name not in os.environ
    monkeypatch.setenv(name, "3")
    with environ_defaults(CONTROLLER_POLL):
        assert os.environ[name] == "3"
    assert os.environ[name] == "3"
