"""Full and read-only disks, and atomic checkpoints (issue 27, items 3, 5 and 6).

Disk faults are real: the command runs in a private mount namespace (`unshare --mount`, root, as the
multi-node harness does for worker nodes) with a small tmpfs, or a read-only one, mounted over a
folder of this test; outside the namespace that folder stays empty. Each case checks the one line,
the exit code, and that nothing outside the faulty folder was lost."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from faults import one_line
from jobs.cli import main
from jobs.registry import tracking
from jobs import checkpoints

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["--task", "kth", "--config", "kth-tiny", "--workers", "0", "train.epochs=1", "data.batch_size=4",
         "data.val_batch_size=4"]


def in_tmpfs(mount: Path, size: str, argv: list, read_only: bool = False, copy: Path | None = None) -> subprocess.CompletedProcess:
    """`convlstm ARGV` with a `size` tmpfs over `mount` in a private mount namespace; `copy` (a file) is
    copied into it first, then it is made read-only if asked."""
    mount.mkdir(parents=True, exist_ok=True)
    fill = f' && cp "{copy}" "{mount}/"' if copy else ""
    remount = f' && mount -o remount,ro "{mount}"' if read_only else ""
    script = f'mount -t tmpfs -o size={size} tmpfs "{mount}"{fill}{remount} && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           sys.executable, "-m", "jobs.cli", *map(str, argv)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    from pipelines.synthetic import write_kth_videos

    root = tmp_path_factory.mktemp("faults-videos")
    write_kth_videos(root, persons=[11, 12, 1], actions=("boxing", "walking"), scenarios=("d1",), frames=10)
    return root


@pytest.fixture(scope="module")
def dataset(ray_local, videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults-storage") / "kth"
    assert main(["prepare", "kth", "--src", str(videos), "--out", str(out), "--frame-len", "5", "--stride", "5",
                 "--size", "24x32"]) == 0
    return out


@pytest.mark.integration  # the prepare in the private mount namespace starts Ray
def test_prepare_into_a_read_only_folder_is_one_line(videos, tmp_path):
    mount = tmp_path / "ro"
    done = in_tmpfs(mount, "1m", ["prepare", "kth", "--src", videos, "--out", mount / "kth", "--frame-len", "5",
                                  "--stride", "5", "--size", "24x32"], read_only=True)
    assert done.returncode == 2
    one_line(done.stderr, str(mount), "Read-only file system")


@pytest.mark.integration  # the prepare in the private mount namespace starts Ray
def test_prepare_onto_a_full_disk_is_one_line_and_publishes_nothing(videos, tmp_path):
    mount = tmp_path / "full"
    done = in_tmpfs(mount, "48k", ["prepare", "kth", "--src", videos, "--out", mount / "kth", "--frame-len", "5",
                                   "--stride", "5", "--size", "96x128"])
    assert done.returncode == 2, done.stderr
    one_line(done.stderr, "No space left on device")


def test_training_onto_a_full_disk_is_one_line_and_registers_nothing(dataset, tmp_path):
    mount, name = tmp_path / "full", "faults-full-disk"
    done = in_tmpfs(mount, "16k", ["train", "--data", dataset, "--storage", mount, "--run-name", name, *TRAIN,
                                   f"registry.name={name}"])
    assert done.returncode == 2, done.stderr
    one_line(done.stderr, f"{mount}/{name}/epoch_0001", "No space left on device")
    client = tracking.client(None)
    assert not client.search_model_versions(f"name='{name}'")
    [run] = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
             if r.info.run_name == name]
    assert run.info.status == "FAILED"


def test_a_failed_checkpoint_write_leaves_no_file_under_the_final_name(tmp_path):
    """checkpoints.save onto a full disk (here: a folder that cannot take the file) keeps nothing
    half-written as checkpoint.pt and says which file."""
    import torch

    folder = tmp_path / "epoch_0001"
    folder.mkdir()
    (folder / checkpoints.CHECKPOINT_FILE).mkdir()  # rename onto a folder fails like a bad disk would
    with pytest.raises(OSError, match=re.escape(str(folder / checkpoints.CHECKPOINT_FILE))):
        checkpoints.save({"model": {"w": torch.zeros(3)}, "model_spec": {}}, {"epoch": 1}, folder)
    assert sorted(p.name for p in folder.iterdir()) == [checkpoints.CHECKPOINT_FILE]
    assert not checkpoints.is_complete(str(folder))


@pytest.fixture(scope="module")
def two_epochs(dataset, tmp_path_factory) -> tuple[Path, str]:
    storage, name = tmp_path_factory.mktemp("faults-resume"), "faults-resume"
    assert main(["train", "--data", str(dataset), "--storage", str(storage), "--run-name", name, *TRAIN,
                 "train.epochs=2", "train.keep_checkpoints=2", "registry.register=false"]) == 0
    return storage, name


def test_checkpoints_are_complete_and_a_partial_one_is_skipped_on_resume(two_epochs, tmp_path, capsys):
    storage, name = two_epochs
    run = tmp_path / "storage"
    shutil.copytree(storage, run)
    assert checkpoints.list_epochs(str(run), name) == [1, 2]
    partial = run / name / "epoch_0002" / checkpoints.CHECKPOINT_FILE
    partial.write_bytes(partial.read_bytes()[:1000])  # a full disk or a kill while it was copied
    assert checkpoints.list_epochs(str(run), name) == [1]
    assert checkpoints.incomplete(str(run), name) == [str(partial.parent)]
    capsys.readouterr()
    code = main(["train", "--data", _data(storage), "--storage", str(run), "--run-name", name, "--resume", *TRAIN, "train.epochs=3",
                 "registry.register=false"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"skipped incomplete checkpoint {partial.parent}; resuming from {run / name / 'epoch_0001'}" in err
    assert checkpoints.list_epochs(str(run), name)[-1] == 3


def _data(storage: Path) -> str:
    """The dataset a run in `storage` trained on (its checkpoint's lineage)."""
    first = checkpoints.latest(str(storage), "faults-resume")
    return checkpoints.load(first)["datasets"][0]["uri"]


def test_resume_with_only_incomplete_checkpoints_is_one_line(two_epochs, tmp_path, capsys):
    storage, name = two_epochs
    run = tmp_path / "storage"
    shutil.copytree(storage, run)
    for folder in (run / name).glob("epoch_*"):
        (folder / checkpoints.COMPLETE_FILE).unlink()
        (folder / checkpoints.METRICS_FILE).unlink()
    capsys.readouterr()
    code = main(["train", "--data", _data(storage), "--storage", str(run), "--run-name", name, "--resume", *TRAIN,
                 "train.epochs=3"])
    assert code == 2
    one_line(capsys.readouterr().err, f"--resume: run '{name}' has no checkpoint", "only incomplete ones, skipped")


def test_a_read_only_tracking_store_is_one_line_naming_it(dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # a valid, initialised store
    mount = tmp_path / "ro"
    uri = f"sqlite:///{mount}/mlflow.db"
    done = in_tmpfs(mount, "64m", ["train", "--data", dataset, "--storage", tmp_path / "storage", "--tracking-uri",
                                   uri, *TRAIN], read_only=True, copy=db)
    assert done.returncode == 1, done.stderr
    one_line(done.stderr, f"MLflow tracking store {uri}", "readonly database")


def test_resume_of_a_deleted_run_is_one_line(two_epochs, tmp_path, capsys):
    """Last in this module: it deletes the shared run's MLflow run."""
    storage, name = two_epochs
    run_id = checkpoints.load(checkpoints.latest(str(storage), name))["run_id"]
    tracking.client(None).delete_run(run_id)
    capsys.readouterr()
    code = main(["train", "--data", _data(storage), "--storage", str(storage), "--run-name", name, "--resume", *TRAIN,
                 "train.epochs=3"])
    assert code == 2
    one_line(capsys.readouterr().err, f"MLflow run {run_id}", "is deleted")
    assert checkpoints.list_epochs(str(storage), name) == [1, 2]
