"""Ctrl-C and SIGTERM during Ray Train (issue 27, item 4): the training command runs under a pseudo-
terminal in its own process group (as in a shell). Ctrl-C goes to the whole group, as a terminal's
does; SIGTERM to the command's process, as `kill PID` does. Exit 130 (SIGINT) or 143 (SIGTERM) with
one line, the MLflow run KILLED, nothing registered, and no Ray process of the command left behind.
(SIGTERM to the whole group also stops Ray's own processes, and Ray's driver then waits 60 s for its
GCS before exiting 1: not covered.)"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from faults import one_line
from jobs.cli import main
from jobs.registry import tracking

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(ray_local, tmp_path_factory) -> Path:
    from pipelines.synthetic import write_kth_videos

    root = tmp_path_factory.mktemp("faults-signals")
    write_kth_videos(root / "videos", persons=[11, 12, 1], actions=("boxing", "walking"), scenarios=("d1",), frames=10)
    assert main(["prepare", "kth", "--src", str(root / "videos"), "--out", str(root / "kth"), "--frame-len", "5",
                 "--stride", "5", "--size", "24x32"]) == 0
    return root / "kth"


def ray_processes(marker: str) -> list[int]:
    """Pids whose command line mentions `marker` (the command's own RAY_TMPDIR)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def the_run(name: str):
    client = tracking.client(None)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.info.run_name == name]
    return runs[0] if runs else None


@pytest.mark.parametrize("signum, code, word, send", [(signal.SIGINT, 130, "interrupted", os.killpg),
                                                     (signal.SIGTERM, 143, "terminated", os.kill)])
def test_a_signal_during_ray_training(dataset, tmp_path, signum, code, word, send):
    name = f"faults-signal-{signum}"
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "train", "--task", "kth", "--data", str(dataset), "--config", "kth-tiny",
         "--workers", "1", "--storage", str(tmp_path / "storage"), "--run-name", name, "train.epochs=200",
         "train.log_every_steps=1", "data.batch_size=2", f"registry.name={name}"],
        stdin=secondary, stdout=secondary, stderr=secondary, cwd=REPO, start_new_session=True,
        env={**os.environ, "RAY_TMPDIR": ray_tmp})
    os.close(secondary)
    output = bytearray()
    reader = threading.Thread(target=_drain, args=(primary, output), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 400
        while not _training(name):  # a step logged by the Ray Train worker
            assert proc.poll() is None, output.decode(errors="replace")
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(1)
        send(proc.pid, signum)
        assert proc.wait(timeout=300) == code, output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output.decode(errors="replace").replace("\r", ""))  # terminal colours
    assert "Traceback" not in text, text
    one_line(text[text.find("convlstm train: "):], f"convlstm train: {word}")  # the last of the terminal's lines
    run = the_run(name)
    assert run.info.status == "KILLED"
    assert not tracking.client(None).search_model_versions(f"name='{name}'")
    deadline = time.monotonic() + 60
    while ray_processes(ray_tmp) and time.monotonic() < deadline:
        time.sleep(1)
    assert ray_processes(ray_tmp) == []


def _training(name: str) -> bool:
    run = the_run(name)
    return run is not None and "train_loss" in run.data.metrics


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)
