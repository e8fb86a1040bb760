"""Training on several radar archives at once (`convlstm train --data A,B`): two real samples, MeteoSwiss
and KNMI, prepared at the same window size, pooled in one `radar-tiny` run in this process (through the
CLI) and on Ray Train (from the config's `data.paths`): steps over both, validation per dataset and
pooled (the pooled loss is the window-weighted one), both datasets as MLflow inputs with their digests,
lineage in tags, checkpoints and descriptions; datasets that cannot be pooled, a dataset listed twice,
a resume on other data and `evaluate` with a comma list are refused in one line."""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.cli import main
from jobs.registry import tracking
from jobs.registry.descriptions import DIGEST_CHARS
from jobs import checkpoints

from tiny_models import IN_LEN, OUT_LEN

MODEL = "test-multi-radar"
BATCH = 4  # radar-tiny's global batch; limit_train 64 and limit_val 32 per dataset leave these sets whole


def prepare_knmi_tiny(sample_data: Path, out: Path, frames: int = 24) -> Path:
    """The first `frames` KNMI frames -> 32x32 windows of 3 + 3 frames (600x600 crop), chronological
    split (30 % validation, 30 % test), like `prepare_mch_tiny`'s MeteoSwiss windows: another archive."""
    from pipelines.radar.prepare import RadarOptions, prepare_radar
    from pipelines.driver import Publish

    src = out.parent / "knmi-frames"
    src.mkdir()
    for path in sorted((sample_data / "radar-knmi-sample").rglob("*.h5"))[:frames]:
        shutil.copy(path, src / path.name)
    options = RadarOptions(in_len=IN_LEN, out_len=OUT_LEN, size=(32, 32), crop=(600, 600), split="time",
                           val_fraction=0.3, test_fraction=0.3)
    prepare_radar(src, str(out), "knmi", options, publish=Publish(progress=False))
    return out


@pytest.fixture(scope="module")
def archives(mch_tiny, sample_data, tmp_path_factory) -> SimpleNamespace:
    from pipelines.manifest import load_manifest

    root = tmp_path_factory.mktemp("multi")
    mch, knmi = mch_tiny, prepare_knmi_tiny(sample_data, root / "knmi32")
    return SimpleNamespace(root=root, paths=(mch, knmi), manifests=(load_manifest(mch), load_manifest(knmi)))


def windows(manifest: dict, split: str) -> int:
    return manifest["splits"][split]["count"]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, argv)))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def local_run(archives) -> SimpleNamespace:
    """`convlstm train --data mch32,knmi32 --workers 0` for one epoch, registered as MODEL."""
    storage = archives.root / "storage"
    code, out, err = cli("train", "--task", "radar", "--data", ",".join(map(str, archives.paths)),
                         "--config", "radar-tiny", "--workers", 0, "--run-name", "multi-local", "--storage", storage,
                         "--json", "train.epochs=1", f"registry.name={MODEL}")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    return SimpleNamespace(summary=summary, storage=storage, best=checkpoints.load(summary["best_checkpoint"]))


def check_pooled_validation(run_id: str, best: dict, archives) -> None:
    """Per-dataset and pooled metrics in MLflow and the checkpoint; pooled val_loss = the per-dataset
    losses weighted by their validation windows."""
    metrics = tracking.client().get_run(run_id).data.metrics
    counts = {name: windows(m, "val") for name, m in zip(("mch32", "knmi32"), archives.manifests)}
    for name in counts:
        assert {f"val_{name}_loss", f"val_{name}_rainfall_mse", f"val_{name}_csi_ge_0.5"} <= set(metrics)
        assert best["evaluation"]["datasets"][name]["windows"] == counts[name]
    assert best["evaluation"]["windows"] == sum(counts.values())
    weighted = sum(metrics[f"val_{name}_loss"] * n for name, n in counts.items()) / sum(counts.values())
    assert metrics["val_loss"] == pytest.approx(weighted, rel=1e-9)
    assert best["metrics"]["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-12)
    assert not any(key.startswith("val_mch32_val_") for key in metrics)


def test_pooled_run_in_process(local_run, archives):
    summary, best = local_run.summary, local_run.best
    train_windows = sum(windows(m, "train") for m in archives.manifests)
    assert summary["steps"] == math.ceil(train_windows / BATCH) and summary["epochs"] == 1
    check_pooled_validation(summary["run_id"], best, archives)

    fingerprints = [m["fingerprint"] for m in archives.manifests]
    assert [d["fingerprint"] for d in best["datasets"]] == fingerprints
    assert [d["name"] for d in best["datasets"]] == ["mch32", "knmi32"]
    assert best["data_fingerprint"] == fingerprints[0]

    run = tracking.client().get_run(summary["run_id"])
    inputs = {(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs}
    assert inputs == {(f"{name}/{split}", fp[:DIGEST_CHARS])
                      for name, fp in zip(("mch32", "knmi32"), fingerprints) for split in ("train", "val")}
    tags = run.data.tags
    for i, (path, fp) in enumerate(zip(archives.paths, fingerprints)):
        assert (tags[f"convlstm.data.{i}"], tags[f"convlstm.data.{i}.fingerprint"]) == (str(path), fp)
    assert tags["convlstm.data_fingerprint"] == ",".join(fingerprints)
    assert run.data.params["data.paths"] == str([str(p) for p in archives.paths])
    description = tags[tracking.NOTE_TAG]
    assert "2 pooled datasets" in description and all(fp[:12] in description for fp in fingerprints)

    version = tracking.client().get_model_version(MODEL, summary["model_version"])
    assert version.tags["data_fingerprint"] == ",".join(fingerprints)
    assert version.tags["dataset"] == "mch32,knmi32"
    assert all(str(p) in version.description and fp[:12] in version.description
               for p, fp in zip(archives.paths, fingerprints))


@pytest.mark.slow  # Ray Train with one worker on the session's Ray (~1 min)
def test_pooled_run_on_ray_from_the_config(archives, tmp_path):
    """`data.paths` in the config, no `--data`; the Ray path reads both datasets' splits."""
    from jobs.training.config import load_config
    from jobs.training.driver import Compute, RunOptions, train

    cfg = load_config("radar-tiny", "radar", ["train.epochs=1", "registry.register=false",
                                              f"data.paths={','.join(map(str, archives.paths))}"])
    summary = train(cfg, None, compute=Compute(workers=1),
                    run=RunOptions(storage_path=str(tmp_path), run_name="multi-ray"))
    train_windows = sum(windows(m, "train") for m in archives.manifests)
    assert summary.steps == math.ceil(train_windows / BATCH)
    check_pooled_validation(summary.run_id, checkpoints.load(summary.best_checkpoint), archives)


def test_one_dataset_keeps_todays_metric_names(archives, tmp_path):
    from jobs.training.config import load_config
    from jobs.training.driver import Compute, RunOptions, train

    cfg = load_config("radar-tiny", "radar", ["train.epochs=1", "registry.register=false"])
    summary = train(cfg, str(archives.paths[0]), compute=Compute(workers=0),
                    run=RunOptions(storage_path=str(tmp_path), run_name="single"))
    metrics = tracking.client().get_run(summary.run_id).data.metrics
    assert "val_loss" in metrics and not any(k.startswith(("val_mch32", "val_knmi32")) for k in metrics)
    assert "datasets" not in checkpoints.load(summary.best_checkpoint)["evaluation"]


def edited_copy(source: Path, target: Path, edit) -> Path:
    """A copy of a dataset whose manifest `edit` changed (the checks read only manifests)."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def set_in(keys: tuple, value):
    def edit(manifest: dict) -> None:
        node = manifest
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        manifest["fingerprint"] = "f" * 64  # another dataset
    return edit


@pytest.mark.parametrize("keys, value, field", [
    (("schema", "frames", "shape"), [IN_LEN + OUT_LEN, 1, 16, 16], "schema.frames.shape"),
    (("params", "in_len"), 2, "params.in_len"),
    (("time_step_s",), 600.0, "time_step_s"),
    (("task",), "mnist", "task"),
])
def test_datasets_that_cannot_be_pooled_are_refused_in_one_line(archives, tmp_path, keys, value, field):
    other = edited_copy(archives.paths[1], tmp_path / "other", set_in(keys, value))
    storage = tmp_path / "storage"
    code, _, err = cli("train", "--task", "radar", "--data", f"{archives.paths[0]},{other}", "--config", "radar-tiny",
                       "--workers", 0, "--storage", storage)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"their {field} differ" in err and str(archives.paths[0]) in err and str(other) in err
    assert not storage.exists()


def test_same_dataset_twice_and_no_data_are_refused(archives, tmp_path):
    mch = archives.paths[0]
    copy = edited_copy(mch, tmp_path / "mch-copy", lambda manifest: None)  # same fingerprint, other folder
    for data in (f"{mch},{mch}", f"{mch},{copy}"):
        code, _, err = cli("train", "--task", "radar", "--data", data, "--config", "radar-tiny", "--workers", 0)
        assert code == 2 and err.count("\n") == 1 and "same dataset twice" in err, err
    code, _, err = cli("train", "--task", "radar", "--config", "radar-tiny", "--workers", 0)
    assert code == 2 and err.count("\n") == 1 and "--data is required" in err, err


def test_resume_on_other_datasets_is_refused(local_run, archives):
    from jobs.training.config import load_config
    from jobs.training.driver import Compute, RunOptions, train

    cfg = load_config("radar-tiny", "radar", ["train.epochs=2", f"registry.name={MODEL}"])
    with pytest.raises(ValueError, match="^run 'multi-local' trained on data .*, this dataset is .*: start a new run"):
        train(cfg, str(archives.paths[0]), compute=Compute(workers=0),
              run=RunOptions(storage_path=str(local_run.storage), run_name="multi-local"))


def test_evaluate_scores_one_pooled_dataset_at_a_time(local_run, archives, tmp_path):
    model = f"models:/{MODEL}/{local_run.summary['model_version']}"
    code, _, err = cli("evaluate", "--model", model, "--data", ",".join(map(str, archives.paths)))
    assert code == 2 and err.count("\n") == 1 and "one dataset at a time" in err, err
    for path in archives.paths:  # each is like one of the model's training datasets
        code, _, err = cli("evaluate", "--model", model, "--data", path, "--split", "val", "--baselines", "none",
                           "--out", tmp_path / path.name)
        assert code == 0, err
        result = json.loads((tmp_path / path.name / "evaluation.json").read_text())
        name = path.name
        assert result["methods"]["model"]["summary"]["rainfall_mse"] == pytest.approx(
            local_run.best["metrics"][f"val_{name}_rainfall_mse"], rel=1e-4)


def test_dataset_names_are_short_sanitised_and_unique():
    from jobs.training.datasets import dataset_names

    names = dataset_names(["/a/mch32", "/b/mch32", "s3://bucket/KNMI 2010/", "/c/rainfall"],
                          ["val_loss", "val_rainfall_mse"])
    assert names == ["mch32", "mch32_2", "KNMI_2010", "rainfall_2"]
