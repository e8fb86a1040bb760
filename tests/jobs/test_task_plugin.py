"""A fourth dataset is one pipeline module and one task module, installed as a plugin: the toy "blobs"
dataset (`tests/helpers/blobs_plugin.py`) is installed into a site folder with a `convlstm.tasks` entry
point, found by name like the built-ins, prepared with the generic Ray Data driver, then trained and
evaluated by the unchanged `train` and `evaluate` (see docs/architecture.md, "Adding a dataset")."""
from __future__ import annotations

import importlib
import sys

import pytest

import blobs_plugin
from blobs_plugin import FRAMES, BlobsTask, prepare_blobs
from jobs.tasks import check_name, task_class


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`blobs_plugin` installed as a distribution would be: a dist-info folder whose entry_points.txt
    declares `blobs = blobs_plugin:BlobsTask` in the `convlstm.tasks` group, on sys.path."""
    site = tmp_path_factory.mktemp("site")
    info = site / "convlstm_blobs-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: convlstm-blobs\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[convlstm.tasks]\nblobs = blobs_plugin:BlobsTask\n")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))


def test_blobs_is_not_a_task_before_its_package_is_installed():
    with pytest.raises(ValueError, match="task must be one of kth, radar, mnist, got 'blobs'"):
        check_name("blobs")


def test_a_task_is_found_through_its_entry_point(installed):
    assert check_name("blobs") == "blobs"
    assert task_class("blobs") is BlobsTask
    assert BlobsTask.metric_higher_is_better("val_mse") is False


@pytest.fixture(scope="module")
def blobs_data(installed, ray_local, tmp_path_factory) -> str:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(blobs_plugin)  # the decode tasks run this module's code
    out = str(tmp_path_factory.mktemp("blobs") / "data")
    manifest = prepare_blobs(out)
    assert manifest["task"] == "blobs" and manifest["splits"]["test"]["count"] == 16
    return out


def test_a_registered_task_trains_and_evaluates_like_the_builtins(blobs_data, tmp_path):
    from jobs.evaluation.evaluate import evaluate
    from jobs.training.config import from_dict
    from jobs.training.driver import Compute, RunOptions, train

    assert task_class("blobs") is BlobsTask
    cfg = from_dict({
        "task": "blobs",
        "model": {"name": BlobsTask.model_family,
                  "params": {"hidden_channels": [4], "input_kernel_size": 3, "hidden_kernel_size": 3,
                             "output_activation": "sigmoid"}},
        "loss": {"name": "mse"}, "data": {"batch_size": 4},
        "train": {"epochs": 2, "monitor": "val_mse", "log_every_steps": 2},
        "registry": {"register": False},
    })
    summary = train(cfg, blobs_data, compute=Compute(workers=0),
                    run=RunOptions(storage_path=str(tmp_path / "ckpt"), run_name="blobs-run"))
    assert summary.monitor == "val_mse" and summary.best_score >= 0 and summary.steps == 8

    result = evaluate(summary.best_checkpoint, blobs_data, "test", ("persistence",), out=tmp_path / "eval")
    assert result["task"] == "blobs" and result["data"]["windows"] == 16
    assert result["primary_metric"]["name"] == "mse" and not result["primary_metric"]["higher_is_better"]
    assert set(result["methods"]) == {"model", "persistence"}
    assert result["methods"]["persistence"]["summary"]["mse"] > 0
    assert len(result["methods"]["model"]["per_lead"]["mse"]) == FRAMES - 3
    assert "| persistence |" in (tmp_path / "eval" / "evaluation.md").read_text()


def test_unknown_tasks_are_refused_by_name():
    from jobs.training.config import from_dict

    with pytest.raises(ValueError, match=r"^task: must be one of kth, radar, mnist.*got 'nope'"):
        from_dict({"task": "nope", "model": {"name": "x"}, "loss": {"name": "mse"}})
