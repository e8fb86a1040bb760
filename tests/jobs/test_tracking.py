"""MLflow side of training: the logged model reloads at any batch size through MLflow and through
`jobs.registry.modelio` (registry alias, version, run, checkpoint), and a run against a real `mlflow server`
process (metrics from the Ray Train worker, artifacts and the Registry on the server)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs import checkpoints
from jobs.registry import tracking
from jobs.training.config import load_config
from jobs.registry.modelio import load_model
from jobs.training.driver import Compute, RunOptions, train

IN_LEN = OUT_LEN = 4
SIZE = 32


@pytest.fixture(scope="module")
def mnist_data(ray_local, sample_data, tmp_path_factory) -> str:
    """Moving MNIST from the real MNIST test digits: 16 train / 8 val sequences of 4 + 4 frames, 32x32."""
    from pipelines.mnist import MnistOptions, prepare_mnist
    from pipelines.driver import Publish

    out = tmp_path_factory.mktemp("mnist") / "data"
    prepare_mnist(sample_data / "mnist" / "t10k-images-idx3-ubyte.gz", str(out), MnistOptions(counts=(16, 8, 0),
                                                                                              size=SIZE, frames=IN_LEN + OUT_LEN, subset=50), publish=Publish(progress=False))
    return str(out)


@pytest.fixture(scope="module")
def trained(mnist_data, tmp_path_factory):
    """mnist-tiny for one epoch in this process, registered as `test-tracking-mnist`."""
    storage = tmp_path_factory.mktemp("storage")
    cfg = load_config("mnist-tiny", "mnist", ["registry.name=test-tracking-mnist", "train.epochs=1"])
    return train(cfg, mnist_data, compute=Compute(workers=0),
                 run=RunOptions(storage_path=str(storage), run_name="mnist-reload"))


def test_logged_model_reloads_at_any_batch_size(trained):
    import mlflow.pytorch

    model, info = load_model(trained.model_uri)
    with tracking.fluent(None):
        logged = mlflow.pytorch.load_model(trained.model_uri)
        mlflow_model = mlflow.models.get_model_info(trained.model_uri)
    assert tuple(mlflow_model.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, IN_LEN, 1, SIZE, SIZE)
    for batch in (1, 3):  # the input example has batch 1
        x = torch.rand(batch, IN_LEN, 1, SIZE, SIZE)
        with torch.no_grad():
            expected = model(x)
            assert expected.shape == (batch, OUT_LEN, 1, SIZE, SIZE)
            assert torch.equal(logged(x), expected)
    assert info["task"] == "mnist" and info["run_id"] == trained.run_id
    assert info["manifest"]["fingerprint"] == info["data_fingerprint"]
    assert info["monitor"] == "val_cross_entropy" and info["score"] == pytest.approx(trained.best_score)
    assert info["model_spec"]["kwargs"]["out_frames"] == OUT_LEN  # filled in from the data


def test_modelio_resolves_every_kind_of_reference(trained):
    refs = [trained.model_uri, f"models:/test-tracking-mnist/{trained.model_version}",
            f"runs:/{trained.run_id}/model", trained.run_id, trained.best_checkpoint,
            str(Path(trained.best_checkpoint, checkpoints.CHECKPOINT_FILE))]
    x = torch.rand(2, IN_LEN, 1, SIZE, SIZE)
    outputs = []
    for ref in refs:
        model, info = load_model(ref)
        assert (info["run_id"], info["epoch"], info["ref"]) == (trained.run_id, 1, ref)
        with torch.no_grad():
            outputs.append(model(x))
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
    with pytest.raises(FileNotFoundError):
        load_model("models:/test-tracking-mnist@nobody")
    with pytest.raises(FileNotFoundError):
        load_model("/no/such/checkpoint")


def test_run_artifacts_describe_the_best_epoch(trained):
    import json

    client = tracking.client()
    local = Path(client.download_artifacts(trained.run_id, "evaluation.json"))
    evaluation = json.loads(local.read_text())
    assert evaluation["epoch"] == 1 and evaluation["monitor"] == "val_cross_entropy"
    assert evaluation["evaluation"]["windows"] == 8
    assert len(evaluation["evaluation"]["video"]["mse"]) == OUT_LEN
    artifacts = {f.path for f in client.list_artifacts(trained.run_id)}
    assert {"config.yaml", "learning_curve.png", "frames.png", "evaluation.json"} <= artifacts


def test_run_against_a_tracking_server(mnist_data, mlflow_server, tmp_path):
    """One Ray Train worker logs its metrics straight to the server; the driver logs artifacts and
    registers the model there, and nothing lands in the embedded store."""
    uri, root = mlflow_server
    local_runs_before = _run_count(None)
    cfg = load_config("mnist-tiny", "mnist", ["registry.name=test-server-mnist", "train.epochs=1"])
    summary = train(cfg, mnist_data, compute=Compute(workers=1),
                    run=RunOptions(tracking_uri=uri, experiment="server-test", storage_path=str(tmp_path),
                                   run_name="mnist-server"))
    client = tracking.client(uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    every = cfg.train.log_every_steps  # the loss is synced and logged every N steps
    assert [s for s, _ in tracking.metric_history(uri, summary.run_id, "train_loss")] == list(
        range(every, summary.steps + 1, every))
    assert "val_cross_entropy" in run.data.metrics
    assert str(client.get_model_version_by_alias("test-server-mnist", "champion").version) == summary.model_version
    assert any(p.name == "evaluation.json" for p in (root / "artifacts").rglob("*"))
    model, info = load_model(summary.model_uri, tracking_uri=uri)
    assert info["run_id"] == summary.run_id
    assert np.isfinite(model(torch.zeros(1, IN_LEN, 1, SIZE, SIZE)).detach().numpy()).all()
    assert _run_count(None) == local_runs_before and "MLFLOW_TRACKING_URI" not in os.environ


def _run_count(uri: str | None) -> int:
    client = tracking.client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids)) if ids else 0
