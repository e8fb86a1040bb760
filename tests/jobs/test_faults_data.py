"""Datasets are checked against their manifests before anything trains or scores on them, and nothing
is registered from a run that read fewer windows than its manifest promises (issue 27, items 2 and 6).

One small KTH dataset is prepared per module; each case tampers with a copy of it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from faults import cli, one_line
from jobs.cli import main
from jobs.registry import tracking
from pipelines.manifest import fingerprint, load_manifest

KTH = ["--frame-len", "5", "--stride", "5", "--size", "24x32"]
TRAIN = ["--task", "kth", "--config", "kth-tiny", "--workers", "0", "train.epochs=1", "data.batch_size=4",
         "data.val_batch_size=4"]


@pytest.fixture(scope="module")
def dataset(ray_local, tmp_path_factory) -> Path:
    """Persons 11, 12, 13 (train), 1 (val) and 2 (test) of the official split, 2 actions, 10 frames:
    several shard files in the training split."""
    from pipelines.synthetic import write_kth_videos

    root = tmp_path_factory.mktemp("faults-data")
    write_kth_videos(root / "videos", persons=[11, 12, 13, 1, 2], actions=("boxing", "walking"),
                     scenarios=("d1",), frames=10)
    assert main(["prepare", "kth", "--src", str(root / "videos"), "--out", str(root / "kth"), *KTH]) == 0
    return root / "kth"


def copy(dataset: Path, target: Path) -> Path:
    shutil.copytree(dataset, target)
    return target


def edit_manifest(folder: Path, edit, refingerprint: bool = False) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    if refingerprint and isinstance(manifest, dict):
        manifest["fingerprint"] = fingerprint(manifest)
    path.write_text(json.dumps(manifest))


def shards(folder: Path, split: str) -> list[Path]:
    return sorted((folder / split).glob("*.parquet"))


def runs_in_store() -> int:
    client = tracking.client(None)
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


def test_the_manifest_lists_every_shard_and_verify_recounts_everything(dataset, capsys):
    manifest = load_manifest(dataset)
    assert {split: sum(files.values()) for split, files in manifest["files"].items()} == \
        {split: info["count"] for split, info in manifest["splits"].items()}
    assert len(manifest["files"]["train"]) >= 2
    code, out, err = cli(capsys, "verify", "--data", dataset, "--json")
    assert code == 0, err
    report = json.loads(out)[str(dataset)]
    assert report == {"fingerprint": manifest["fingerprint"],
                      "splits": {split: info["count"] for split, info in sorted(manifest["splits"].items())}}


def delete_one(folder: Path, split: str = "train") -> str:
    victim = shards(folder, split)[0]
    victim.unlink()
    return f"split {split}: {victim} is missing"


def delete_all(folder: Path) -> str:
    for shard in shards(folder, "train"):
        shard.unlink()
    return "split train:"


def truncate(folder: Path) -> str:
    victim = shards(folder, "train")[-1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return f"split train: {victim} is not a readable Parquet shard"


def extra_file(folder: Path) -> str:
    first = shards(folder, "train")[0]
    shutil.copy(first, first.with_name("0extra.parquet"))
    return f"split train: {first.with_name('0extra.parquet')} is not in the manifest"


def edited_count(folder: Path) -> str:
    edit_manifest(folder, lambda m: m["splits"]["train"].update(count=m["splits"]["train"]["count"] + 1))
    return "does not match its fingerprint"


def edited_count_refingerprinted(folder: Path) -> str:
    edit_manifest(folder, lambda m: m["splits"]["train"].update(count=m["splits"]["train"]["count"] + 1),
                  refingerprint=True)
    return "split train:"


def edited_shape_refingerprinted(folder: Path) -> str:
    edit_manifest(folder, lambda m: m["schema"]["frames"].update(shape=[5, 1, 32, 24]), refingerprint=True)
    return "holds column 'frames' as uint8 [5, 1, 24, 32], the manifest says uint8 [5, 1, 32, 24]"


def edited_size_refingerprinted(folder: Path) -> str:
    edit_manifest(folder, lambda m: m["schema"]["frames"].update(shape=[5, 1, 24, 24]), refingerprint=True)
    return "stores column 'frames' as fixed_size_binary[3840]"


def deleted_val_shard(folder: Path) -> str:
    return delete_one(folder, "val")


TAMPERING = [delete_one, delete_all, truncate, extra_file, edited_count, edited_count_refingerprinted,
             edited_shape_refingerprinted, edited_size_refingerprinted, deleted_val_shard]


@pytest.mark.parametrize("tamper", TAMPERING, ids=[t.__name__ for t in TAMPERING])
def test_tampered_shards_or_manifests_are_refused_before_any_run(dataset, tmp_path, capsys, tamper):
    data = copy(dataset, tmp_path / "kth")
    needle = tamper(data)
    code, _, err = cli(capsys, "verify", "--data", data)
    assert code == 2
    one_line(err, needle)
    runs, storage = runs_in_store(), tmp_path / "storage"
    code, _, err = cli(capsys, "train", "--data", data, "--storage", storage, *TRAIN)
    assert code == 2
    one_line(err, needle)
    assert runs_in_store() == runs and not storage.exists()


@pytest.mark.parametrize("content, needle", [("[]", "a JSON list, not an object"),
                                             ("{\"task\": \"kth\"}", "'pipeline_version' is missing"),
                                             ("{not json", "not a readable manifest")])
def test_a_broken_manifest_is_one_line_naming_it(dataset, tmp_path, capsys, content, needle):
    data = copy(dataset, tmp_path / "kth")
    (data / "manifest.json").write_text(content)
    for argv in (["verify", "--data", data], ["train", "--data", data, *TRAIN]):
        code, _, err = cli(capsys, *argv)
        assert code == 2
        one_line(err, str(data / "manifest.json"), needle)


def test_a_manifest_without_schema_is_one_line(dataset, tmp_path, capsys):
    data = copy(dataset, tmp_path / "kth")
    edit_manifest(data, lambda m: m.pop("schema"))
    code, _, err = cli(capsys, "train", "--data", data, *TRAIN)
    assert code == 2
    one_line(err, "'schema' is missing")


def test_a_copy_with_an_altered_fingerprint_does_not_pool_with_its_original(dataset, tmp_path, capsys):
    data = copy(dataset, tmp_path / "kth")
    edit_manifest(data, lambda m: m.update(fingerprint="0" * 64))
    code, _, err = cli(capsys, "train", "--data", f"{dataset},{data}", *TRAIN)
    assert code == 2
    one_line(err, "same dataset twice")


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory) -> Path:
    """A checkpoint of kth-tiny trained for one epoch in this process (not registered)."""
    from jobs import checkpoints

    storage = tmp_path_factory.mktemp("faults-model")
    assert main(["train", "--data", str(dataset), "--storage", str(storage), "--run-name", "faults-model",
                 *TRAIN, "registry.register=false"]) == 0
    return Path(checkpoints.latest(str(storage), "faults-model"))


def test_evaluate_on_a_split_whose_shard_is_gone_is_refused(dataset, model, tmp_path, capsys):
    data = copy(dataset, tmp_path / "kth")
    needle = delete_one(data, "test")
    out = tmp_path / "report"
    code, _, err = cli(capsys, "evaluate", "--model", model, "--data", data, "--split", "test", "--out", out)
    assert code == 2
    one_line(err, needle)
    assert not out.exists()


def test_nothing_is_registered_from_a_run_that_read_fewer_windows(dataset, tmp_path, capsys, monkeypatch):
    """A shard lost after the check at the start (the check is skipped here to stand in for that
    race): the run fails in one line, ends FAILED, and no model version is registered."""
    from pipelines import verify

    data = copy(dataset, tmp_path / "kth")
    shards(data, "train")[0].unlink()
    monkeypatch.setattr(verify, "check_dataset", lambda *args, **kwargs: {})
    name = "faults-fewer-windows"
    code, _, err = cli(capsys, "train", "--data", data, "--storage", tmp_path / "storage", "--run-name", name,
                       *TRAIN, f"registry.name={name}")
    assert code == 1
    one_line(err, "split train: the last epoch read", "nothing registered")
    client = tracking.client(None)
    assert not client.search_model_versions(f"name='{name}'")
    [run] = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
             if r.info.run_name == name]
    assert run.info.status == "FAILED"
