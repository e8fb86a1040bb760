"""What a user finds when browsing MLflow (issue 12), and registered models that load without this
project (issue 8, item 6), checked through a real `mlflow server`'s REST API.

One tiny radar model (the MeteoSwiss sample at 32x32, `radar-tiny` for one epoch in this process) is
trained against the server and scored with `convlstm evaluate --log`; the tests read back what the
server holds: the experiment's kind tag, the run's dataset inputs (contexts, digests, sources, schema,
profile), source/user/git tags and description, system metrics, per-epoch previews and evaluation
plots, the model version's and registered model's descriptions, and the LoggedModel's metrics linked
to their datasets.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import sysconfig
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jobs.registry import tracking
from jobs.registry.descriptions import DIGEST_CHARS
from jobs.registry.lineage import git_commit

from tiny_models import IN_LEN, OUT_LEN

EXPERIMENT = "browsing-radar"
MODEL = "test-browsing-radar"
SIZE = 32
GIF = b"GIF89a"
PNG = b"\x89PNG\r\n\x1a\n"


def api(uri: str, endpoint: str, **params) -> dict:
    """GET `<uri>/api/2.0/mlflow/<endpoint>?<params>` as JSON."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/{endpoint}{query}", timeout=30) as response:
        return json.loads(response.read())


def artifact(uri: str, run_id: str, path: str) -> bytes:
    query = urllib.parse.urlencode({"run_uuid": run_id, "path": path})
    with urllib.request.urlopen(f"{uri}/get-artifact?{query}", timeout=30) as response:
        return response.read()


def listing(uri: str, run_id: str, path: str = "") -> set[str]:
    return {f["path"] for f in api(uri, "artifacts/list", run_id=run_id, path=path).get("files", [])}


def tags_of(entity: dict) -> dict[str, str]:
    """REST tags (`[{key, value}]`, under `tags` or `data.tags`) as a dict."""
    tags = entity.get("tags", entity.get("data", {}).get("tags", []))
    return {t["key"]: t.get("value", "") for t in tags}


@pytest.fixture(scope="module")
def browsed(mch_tiny, mlflow_server, tmp_path_factory) -> SimpleNamespace:
    """radar-tiny trained for one epoch against the server (workers=0), registered as `MODEL`, then
    `convlstm evaluate --log` on the 15 test windows; what the server holds afterwards."""
    from jobs.cli import main
    from jobs.training.config import load_config
    from jobs.training.driver import Compute, RunOptions, train
    from pipelines.manifest import load_manifest

    uri, _ = mlflow_server
    tmp = tmp_path_factory.mktemp("browsing")
    data = mch_tiny
    cfg = load_config("radar-tiny", "radar", [f"registry.name={MODEL}", "train.epochs=1"])
    summary = train(cfg, str(data), compute=Compute(workers=0),
                    run=RunOptions(tracking_uri=uri, experiment=EXPERIMENT, storage_path=str(tmp / "storage"),
                                   run_name="radar-browsing"))
    out = tmp / "evaluation"
    rc = main(["evaluate", "--model", summary.model_uri, "--data", str(data), "--out", str(out), "--log",
               "--tracking-uri", uri])
    assert rc == 0
    version = api(uri, "registered-models/alias", name=MODEL, alias="champion")["model_version"]
    return SimpleNamespace(
        uri=uri, data=data, manifest=load_manifest(data), summary=summary, version=version,
        result=json.loads((out / "evaluation.json").read_text()),
        run=api(uri, "runs/get", run_id=summary.run_id)["run"], model_id=version["source"].removeprefix("models:/"))


def test_project_experiments_are_custom_model_development(mlflow_server):
    """A new experiment is created with the kind tag; an existing one without it gets it."""
    uri, _ = mlflow_server
    created = tracking.ensure_experiment(uri, "browsing-new")
    legacy = tracking.client(uri).create_experiment("browsing-legacy")
    assert "mlflow.experimentKind" not in tags_of(api(uri, "experiments/get", experiment_id=legacy)["experiment"])
    assert tracking.ensure_experiment(uri, "browsing-legacy") == legacy
    for experiment_id in (created, legacy):
        experiment = api(uri, "experiments/get", experiment_id=experiment_id)["experiment"]
        assert tags_of(experiment)["mlflow.experimentKind"] == "custom_model_development"


def test_epoch_previews_helpers(tmp_path):
    """Radar: a GIF of the input then truth beside forecast per lead (rain palette, >= 160 px panels);
    KTH: the confusion matrix."""
    from PIL import Image

    from jobs.tasks.kth import KthTask
    from jobs.tasks.radar import RadarTask

    radar = object.__new__(RadarTask)  # the preview helpers need only the window lengths and time step
    radar.in_len, radar.time_step_s = 2, 300
    frames = torch.arange(5 * SIZE * SIZE, dtype=torch.int64).reshape(5, 1, SIZE, SIZE) % 256
    preview = {"input": frames[:2].to(torch.uint8), "target": frames[2:].to(torch.uint8),
               "forecast": (255 - frames[2:]).to(torch.uint8), "mask": torch.ones(3, 1, SIZE, SIZE, dtype=torch.uint8)}
    [gif] = radar.epoch_previews({}, preview, tmp_path)
    assert gif.name == "forecast.gif" and gif.read_bytes()[:6] == GIF
    image = Image.open(gif)
    assert image.n_frames == 5 and image.width >= 2 * 160 and image.height >= 160
    assert radar.lead_label(3) == "+15 min"
    assert radar.epoch_previews({}, {}, tmp_path) == []

    kth = object.__new__(KthTask)
    evaluation = {"classification": {"confusion_matrix": [[2, 0], [1, 1]], "class_names": ["boxing", "walking"]}}
    [png] = kth.epoch_previews(evaluation, {}, tmp_path)
    assert png.name == "confusion_matrix.png" and png.read_bytes()[:8] == PNG


@pytest.mark.slow  # the module's model: prepare + train + register + evaluate against a server (~1-2 min)
def test_run_inputs_are_the_exact_shards(browsed):
    """Train and validation splits from training, test from `evaluate --log`: contexts, digest = the
    fingerprint's first 12 hex digits, source = the split's shard folder, schema and window counts."""
    inputs = browsed.run["inputs"]["dataset_inputs"]
    by_context = {tags_of(i)["mlflow.data.context"]: i["dataset"] for i in inputs}
    assert set(by_context) == {"train", "validation", "test"}
    fingerprint = browsed.manifest["fingerprint"]
    for context, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        dataset = by_context[context]
        assert dataset["name"] == f"mch32/{split}"
        assert dataset["digest"] == fingerprint[:DIGEST_CHARS] and len(dataset["digest"]) <= 36
        assert dataset["source_type"] == "local"
        assert json.loads(dataset["source"]) == {"uri": str(browsed.data / split)}
        columns = {c["name"]: c["type"] for c in json.loads(dataset["schema"])["mlflow_colspec"]}
        assert columns["frames"].startswith(f"uint8 [{IN_LEN + OUT_LEN}, 1, {SIZE}, {SIZE}]")
        assert "mask" in columns
        profile = json.loads(dataset["profile"])
        assert profile["fingerprint"] == fingerprint and profile["windows"] == browsed.manifest["splits"][split]["count"]
        assert (profile["windows_train"], profile["windows_val"], profile["windows_test"]) == (7, 3, 15)


@pytest.mark.slow  # the module's model (see test_run_inputs_are_the_exact_shards)
def test_run_source_user_tags_and_description(browsed):
    tags = tags_of(browsed.run)
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] and tags["mlflow.user"]
    commit = git_commit()
    if commit:  # a git checkout (CI's clone is one)
        assert tags["mlflow.source.git.commit"] == commit
    note = tags["mlflow.note.content"]
    assert note.startswith("Training a **radar** ConvLSTM") and "mch32" in note
    assert f"**Result**: best epoch 1 of 1" in note and f"`{MODEL}` v{browsed.summary.model_version} @champion" in note
    assert "**test** (15 windows of mch32/test" in note and "persistence" in note


@pytest.mark.slow  # the module's model (see test_run_inputs_are_the_exact_shards)
def test_system_metrics_from_the_training_process(browsed):
    """MLflow's system metrics (psutil: CPU, memory; GPU only with an NVIDIA GPU and pynvml), at least one
    sample even for a run shorter than the sampling interval, from step 1 on."""
    metrics = {m["key"] for m in browsed.run["data"]["metrics"]}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= metrics
    history = api(browsed.uri, "metrics/get-history", run_id=browsed.summary.run_id,
                  metric_key="system/system_memory_usage_megabytes")["metrics"]
    assert history and min(int(m.get("step", 0)) for m in history) >= 1 and history[0]["value"] > 0


@pytest.mark.slow  # the module's model (see test_run_inputs_are_the_exact_shards)
def test_previews_and_evaluation_plots_are_artifacts(browsed):
    from PIL import Image

    uri, run_id = browsed.uri, browsed.summary.run_id
    assert listing(uri, run_id, "previews") == {"previews/epoch_0001"}
    assert listing(uri, run_id, "previews/epoch_0001") == {"previews/epoch_0001/forecast.gif"}
    gif = artifact(uri, run_id, "previews/epoch_0001/forecast.gif")
    assert gif[:6] == GIF and Image.open(io.BytesIO(gif)).n_frames == IN_LEN + OUT_LEN
    assert {"frames.png", "learning_curve.png", "evaluation.json", "config.yaml"} <= listing(uri, run_id)
    evaluation = listing(uri, run_id, "evaluation/test")
    for name in ("evaluation.json", "evaluation.md", "lead_scores.png", "lead_categorical.png"):
        assert f"evaluation/test/{name}" in evaluation
    assert artifact(uri, run_id, "evaluation/test/lead_scores.png")[:8] == PNG


@pytest.mark.slow  # the module's model (see test_run_inputs_are_the_exact_shards)
def test_model_version_and_registered_model_descriptions(browsed):
    """The version says where it comes from, its data (path, windows, fingerprint, dataset inputs), its
    validation score and its test scores next to the baselines'; the registered model lists it."""
    version, summary, fingerprint = browsed.version, browsed.summary, browsed.manifest["fingerprint"]
    model = browsed.result["methods"]["model"]["summary"]
    persistence = browsed.result["methods"]["persistence"]["summary"]
    text = version["description"]
    assert f"from run [`radar-browsing`](#/experiments/{summary.experiment_id}/runs/{summary.run_id})" in text
    assert f"best epoch 1 of 1: val_loss = {summary.best_score:.6g} on mch32/val" in text
    assert f"Data `{browsed.data}`: 7 train / 3 val / 15 test windows, fingerprint `{fingerprint[:12]}`" in text
    assert "mch32/train (train) and mch32/val (validation)" in text
    line = next(p for p in text.split("\n\n") if p.startswith("**test**"))
    assert line.startswith(f"**test** (15 windows of mch32/test, {fingerprint[:12]}): rainfall_mse "
                           f"{model['rainfall_mse']:.4g} (persistence {persistence['rainfall_mse']:.4g}, optical-flow ")
    tags = tags_of(version)
    assert (tags["dataset"], tags["data_uri"], tags["data_fingerprint"]) == ("mch32", str(browsed.data), fingerprint)
    assert tags["eval.test"] == line.replace("**", "")
    registered = api(browsed.uri, "registered-models/get", name=MODEL)["registered_model"]
    assert "ConvLSTM models for the **radar** task" in registered["description"]
    assert f"- **v{version['version']}** @champion: data mch32 ({fingerprint[:12]}), val_loss" in registered["description"]
    assert "test (15 windows of mch32/test" in registered["description"]


@pytest.mark.slow  # the module's model (see test_run_inputs_are_the_exact_shards)
def test_logged_model_holds_its_scores_per_dataset(browsed):
    """Validation (from training) and test scores, baselines included (from `evaluate --log`), are the
    LoggedModel's metrics, each linked to the dataset it was computed on; nothing else is."""
    model = api(browsed.uri, f"logged-models/{browsed.model_id}")["model"]
    assert model["info"]["source_run_id"] == browsed.summary.run_id
    metrics = {m["key"]: m for m in model["data"]["metrics"]}
    digest = browsed.manifest["fingerprint"][:12]
    summary = browsed.result["methods"]["model"]["summary"]
    persistence = browsed.result["methods"]["persistence"]["summary"]
    expected = {"val_loss": ("mch32/val", browsed.summary.best_score),
                "test_rainfall_mse": ("mch32/test", summary["rainfall_mse"]),
                "test_persistence_rainfall_mse": ("mch32/test", persistence["rainfall_mse"])}
    for key, (dataset, value) in expected.items():
        assert (metrics[key]["dataset_name"], metrics[key]["dataset_digest"]) == (dataset, digest), key
        assert metrics[key]["value"] == pytest.approx(value, rel=1e-6), key
    history = api(browsed.uri, "metrics/get-history", run_id=browsed.summary.run_id, metric_key="val_loss")["metrics"]
    assert [int(m["step"]) for m in history] == [browsed.summary.steps]  # linked, not logged twice in the run
    assert "test_optical-flow_csi_ge_0.5" in metrics and "test_model_vs_persistence_rainfall_mse_skill" in metrics
    assert all(m.get("dataset_name") for m in metrics.values())  # no system metrics, no unlinked values
    params = {p["key"]: p["value"] for p in model["data"]["params"]}
    assert params["model.name"] == "encoder_forecaster" and params["train.epochs"] == "1"
    assert tags_of(model["info"])["mlflow.note.content"] == browsed.version["description"]
    assert tags_of(model["info"])["mlflow.source.name"] == tags_of(browsed.run)["mlflow.source.name"]


@pytest.mark.slow  # the module's model (see test_run_inputs_are_the_exact_shards)
def test_evaluation_run_names_the_model_and_the_data(browsed, tmp_path):
    """`--log-to-run` into a run of another experiment: the run gets the model and the test split as
    inputs, the model's scores are linked to it, and that experiment becomes custom model development."""
    from jobs.cli import main

    c = tracking.client(browsed.uri)
    experiment_id = c.create_experiment("browsing-evaluations")
    run_id = c.create_run(experiment_id, run_name="evaluation").info.run_id
    rc = main(["evaluate", "--model", f"models:/{MODEL}/{browsed.version['version']}", "--data", str(browsed.data),
               "--baselines", "persistence", "--out", str(tmp_path), "--log-to-run", run_id,
               "--tracking-uri", browsed.uri])
    assert rc == 0
    run = api(browsed.uri, "runs/get", run_id=run_id)["run"]
    assert [m["model_id"] for m in run["inputs"]["model_inputs"]] == [browsed.model_id]
    [dataset_input] = run["inputs"]["dataset_inputs"]
    assert dataset_input["dataset"]["name"] == "mch32/test" and tags_of(dataset_input)["mlflow.data.context"] == "test"
    experiment = api(browsed.uri, "experiments/get", experiment_id=experiment_id)["experiment"]
    assert tags_of(experiment)["mlflow.experimentKind"] == "custom_model_development"
    assert "**test** (15 windows of mch32/test" in tags_of(run)["mlflow.note.content"]
    models = c.search_logged_models(experiment_ids=[experiment_id, browsed.summary.experiment_id])
    linked = [m for m in models if m.model_id == browsed.model_id]
    assert linked and any(m.run_id == run_id and m.key == "test_rainfall_mse" for m in linked[0].metrics)


PORTABLE_SCRIPT = r"""
import importlib.util, json, sys
from pathlib import Path

# The project is not installed here: no editable finder, and none of its packages can be found.
assert not [f for f in sys.meta_path if "editable" in repr(f).lower()], sys.meta_path
missing = {name: importlib.util.find_spec(name) is None for name in ("convlstm", "jobs", "pipelines")}

import numpy as np
import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import torch

uri, model_uri, folder = sys.argv[1:4]
mlflow.set_tracking_uri(uri)
x = np.load(Path(folder) / "x.npy")
pyfunc_output = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(x))
model = mlflow.pytorch.load_model(model_uri)
with torch.no_grad():
    torch_output = model(torch.from_numpy(x)).numpy()
np.save(Path(folder) / "pyfunc.npy", pyfunc_output)
np.save(Path(folder) / "torch.npy", torch_output)
import convlstm
print(json.dumps({"missing_before_load": missing, "convlstm": convlstm.__file__,
                  "model_class": f"{type(model).__module__}.{type(model).__name__}",
                  "jobs": importlib.util.find_spec("jobs") is not None,
                  "pipelines": importlib.util.find_spec("pipelines") is not None,
                  "imported": sorted(m for m in ("ray", "jobs", "pipelines") if m in sys.modules)}))
"""


@pytest.mark.slow  # the module's model, plus a fresh interpreter importing torch and mlflow (~20 s)
def test_registered_model_loads_without_the_project(browsed, tmp_path):
    """`mlflow.pyfunc.load_model(uri).predict(ndarray)` and `mlflow.pytorch.load_model(uri)` in a fresh
    virtual environment that has mlflow and torch but not this project.

    How: `python -m venv --without-pip` creates the environment; a `.pth` file in it lists this
    interpreter's site-packages as a plain path, so mlflow, torch and numpy import, but the `.pth` files
    there are not processed: the project's editable install (`__editable__*.pth`, which installs a
    meta-path finder for convlstm/jobs/pipelines) stays inactive. The child runs isolated (`python -I`:
    no PYTHONPATH, no user site, no script or working directory on sys.path) from an empty folder. It
    asserts that no editable finder is installed and that `convlstm`, `jobs` and `pipelines` cannot be
    found before loading, loads `models:/<name>@champion` from the server both ways, and reports where
    `convlstm` came from: the model's own `code/convlstm` (the `code_paths` logged with it), with neither
    `jobs` nor `pipelines` findable and no Ray imported. Both outputs equal the project's own model's.
    """
    from jobs.registry.modelio import load_model

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site] = list((venv / "lib").glob("python*/site-packages"))
    stack = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "shared_stack.pth").write_text("\n".join(stack) + "\n")
    x = np.random.default_rng(0).random((3, IN_LEN, 1, SIZE, SIZE), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    model, _ = load_model(browsed.summary.model_uri, tracking_uri=browsed.uri)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", PORTABLE_SCRIPT, browsed.uri,
                           browsed.summary.model_uri, str(tmp_path)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["missing_before_load"] == {"convlstm": True, "jobs": True, "pipelines": True}
    convlstm_file = Path(report["convlstm"])
    assert convlstm_file.parts[-3:] == ("code", "convlstm", "__init__.py"), convlstm_file
    assert Path(__file__).resolve().parents[1] not in convlstm_file.parents
    assert report["model_class"].startswith("convlstm.") and not report["jobs"] and not report["pipelines"]
    assert report["imported"] == []
    for name in ("pyfunc", "torch"):
        output = np.load(tmp_path / f"{name}.npy")
        assert output.shape == (3, OUT_LEN, 1, SIZE, SIZE), name
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6, err_msg=name)
