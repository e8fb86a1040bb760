"""Ctrl-C and SIGTERM in every command (issue 27, item 4): exit 130 (SIGINT) or 143 (SIGTERM) with one
line, the MLflow run (where there is one) KILLED, nothing registered or published, no Ray process of
the command left behind. One handler serves every command (`jobs/signals.py`).

Where Ray is the point (train, prepare, evaluate) the command runs as a subprocess with its own local
Ray (its own RAY_TMPDIR, by which its processes are found) under a pseudo-terminal in its own process
group, as in a shell: Ctrl-C goes to the whole group, as a terminal's does; SIGTERM to the command's
process (`kill PID`) or to the whole group (`kill -- -PGID`), which stops Ray's own processes too.
`submit` waits on a Jobs API that never answers, and follows a job on a real Ray head (Ctrl-C
detaches; the job keeps running). The rest runs in this process (`signalled`)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from faults import cli, one_line
from jobs import signals
from jobs.cli import main
from jobs.registry import tracking

REPO = Path(__file__).resolve().parents[2]
KTH = ["--frame-len", "5", "--stride", "5", "--size", "24x32"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """KTH-style videos: persons 11, 12 (train), 1 (val), 2 (test) and 13-24 (train, enough to keep a
    prepare busy for a while), two actions, 10 frames."""
    from pipelines.synthetic import write_kth_videos

    root = tmp_path_factory.mktemp("faults-signals-videos")
    write_kth_videos(root, persons=[11, 12, 1, 2, *range(13, 25)], actions=("boxing", "walking"),
                     scenarios=("d1",), frames=10)
    return root


@pytest.fixture(scope="module")
def dataset(ray_local, videos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults-signals")
    assert main(["prepare", "kth", "--src", str(videos), "--out", str(root / "kth"), *KTH]) == 0
    return root / "kth"


# --- a command in its own process group under a pseudo-terminal -----------------------------------

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


def under_pty(argv: list, signum: int, send: Callable[[int, int], None], ready: Callable[[str], bool],
              env: dict | None = None) -> tuple[int, str, str]:
    """Run `convlstm ARGV` in its own session under a pseudo-terminal with its own RAY_TMPDIR; once
    `ready(ray_tmp)` holds, `send(pid, signum)` (os.killpg: the whole group, as a terminal's Ctrl-C;
    os.kill: the command alone). -> (exit code, the terminal's text without colours, ray_tmp)."""
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths
    tracking.client(None).search_experiments()  # the store exists before two processes would create it at once
    primary, secondary = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", *map(str, argv)], stdin=secondary, stdout=secondary,
                            stderr=secondary, cwd=REPO, start_new_session=True,
                            env={**os.environ, "RAY_TMPDIR": ray_tmp, **(env or {})})
    os.close(secondary)
    output = bytearray()
    reader = threading.Thread(target=_drain, args=(primary, output), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 400
        while not ready(ray_tmp):
            assert proc.poll() is None, output.decode(errors="replace")
            assert time.monotonic() < deadline, "the command did not get there"
            time.sleep(0.2)
        send(proc.pid, signum)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output.decode(errors="replace").replace("\r", ""))  # colours
    return code, text, ray_tmp


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


def stopped_in_one_line(code: int, text: str, command: str, signum: int) -> None:
    """Exit 130 / 143 and, as the last of the terminal's lines, `convlstm COMMAND: interrupted|terminated`."""
    word, expected = ("terminated", 143) if signum == signal.SIGTERM else ("interrupted", 130)
    assert code == expected, text
    assert "Traceback" not in text, text
    one_line(text[text.rfind(f"convlstm {command}: "):], f"convlstm {command}: {word}")


def no_ray_left(ray_tmp: str) -> None:
    """No process of the command's Ray remains (a worker orphaned by its dead raylet exits within 60 s)."""
    deadline = time.monotonic() + 60
    while ray_processes(ray_tmp) and time.monotonic() < deadline:
        time.sleep(1)
    assert ray_processes(ray_tmp) == []


def the_run(name: str):
    client = tracking.client(None)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.info.run_name == name]
    return runs[0] if runs else None


def _training(name: str) -> Callable[[str], bool]:
    def ready(_: str) -> bool:  # a step logged by the Ray Train worker
        run = the_run(name)
        return run is not None and "train_loss" in run.data.metrics
    return ready


def _ray_started(ray_tmp: str) -> bool:
    return bool(ray_processes(ray_tmp))


@pytest.mark.parametrize("signum, send", [(signal.SIGINT, os.killpg), (signal.SIGTERM, os.kill),
                                          (signal.SIGTERM, os.killpg)],
                         ids=["ctrl-c", "sigterm-to-the-driver", "sigterm-to-the-group"])
def test_a_signal_during_ray_training(dataset, tmp_path, signum, send):
    """SIGTERM to the group stops Ray's raylet and GCS too: the driver no longer waits for them (Ray's
    60 s, then exit 1) but reports the signal, exit 143."""
    name = f"faults-signal-{signum}-{send.__name__}"
    code, text, ray_tmp = under_pty(
        ["train", "--task", "kth", "--data", dataset, "--config", "kth-tiny", "--workers", "1",
         "--storage", tmp_path / "storage", "--run-name", name, "train.epochs=200", "train.log_every_steps=1",
         "data.batch_size=2", f"registry.name={name}"], signum, send, _training(name))
    stopped_in_one_line(code, text, "train", signum)
    assert the_run(name).info.status == "KILLED"
    assert not tracking.client(None).search_model_versions(f"name='{name}'")
    no_ray_left(ray_tmp)


def test_sigterm_to_the_group_while_prepare_decodes_with_ray(videos, tmp_path):
    out = tmp_path / "kth"
    code, text, ray_tmp = under_pty(["prepare", "kth", "--src", videos, "--out", out, *KTH], signal.SIGTERM,
                                    os.killpg, _ray_started)
    stopped_in_one_line(code, text, "prepare", signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []  # nothing published, no staging folder left
    no_ray_left(ray_tmp)


def test_ctrl_c_while_evaluate_scores_with_ray_data(mch_tiny, radar_tiny, tmp_path):
    out = tmp_path / "report"
    code, text, ray_tmp = under_pty(
        ["evaluate", "--model", radar_tiny, "--data", mch_tiny, "--split", "test", "--distributed-min-windows", "0",
         "--out", out], signal.SIGINT, os.killpg, _ray_started)
    stopped_in_one_line(code, text, "evaluate", signal.SIGINT)
    assert not (out / "evaluation.json").exists()
    no_ray_left(ray_tmp)


def test_ctrl_c_while_submit_waits_for_the_jobs_api(tmp_path):
    """A Jobs API address that accepts the connection and never answers: Ctrl-C stops the wait."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
        code, text, _ = under_pty(["submit", "--address", f"http://127.0.0.1:{server.getsockname()[1]}",
                                   "--no-upload", "--", "convlstm", "version"], signal.SIGINT, os.killpg,
                                  lambda _: bool(accepted))
        for conn in accepted:
            conn.close()
    stopped_in_one_line(code, text, "submit", signal.SIGINT)


@pytest.mark.slow  # starts a Ray head with its Jobs API
def test_ctrl_c_while_submit_follows_a_job_detaches_and_the_job_keeps_running():
    from cluster_harness import client_env, start_head
    from ray.job_submission import JobStatus

    head = start_head(num_cpus=1)
    try:
        submission_id = "faults-signal-submit"
        client = head.client()
        code, text, _ = under_pty(
            ["submit", "--address", head.address, "--wait", "--no-upload", "--no-install", "--submission-id",
             submission_id, "--", "python", "-c", "import time; time.sleep(600)"], signal.SIGINT, os.killpg,
            lambda _: submission_id in {j.submission_id for j in client.list_jobs()}
            and client.get_job_status(submission_id) == JobStatus.RUNNING, env=client_env(head.token))
        stopped_in_one_line(code, text, "submit", signal.SIGINT)
        assert client.get_job_status(submission_id) == JobStatus.RUNNING  # detached, not stopped
    finally:
        head.stop()


# --- in this process ------------------------------------------------------------------------------

@contextmanager
def signalled(signum: int, ready: Callable[[], bool] = lambda: True) -> Iterator[threading.Event]:
    """Send `signum` to this process once the CLI's handlers are in place and `ready()` holds, while the
    block runs a command; yields an Event set when it was sent. Around the block both signals are
    caught by a no-op, so one arriving after the command returned cannot stop the test run."""
    sent, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            if all(signal.getsignal(s) is signals.stop_on_signal for s in signals.SIGNALS) and ready():
                os.kill(os.getpid(), signum)
                sent.set()
                return
            time.sleep(0.02)

    previous = {s: signal.signal(s, lambda *_: None) for s in signals.SIGNALS}
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield sent
    finally:
        done.set()
        watcher.join()
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_ctrl_c_while_prepare_runs_in_this_process_keeps_the_sessions_ray(ray_local, videos, tmp_path, capsys):
    """The Ray the command did not start (the test session's) stays up; the staging folder goes."""
    out = tmp_path / "kth"
    with signalled(signal.SIGINT, lambda: any(p.name.startswith("kth.tmp-") for p in tmp_path.iterdir())) as sent:
        code, _, err = cli(capsys, "prepare", "kth", "--src", videos, "--out", out, *KTH)
    assert sent.is_set() and code == 130
    one_line(err, "convlstm prepare: interrupted")
    assert list(tmp_path.iterdir()) == []
    assert ray_local.is_initialized() and ray_local.get(ray_local.put(7)) == 7


def test_sigterm_in_evaluate_without_ray_writes_nothing(mch_tiny, radar_tiny, tmp_path, capsys):
    out = tmp_path / "report"
    with signalled(signal.SIGTERM) as sent:
        code, _, err = cli(capsys, "evaluate", "--model", radar_tiny, "--data", mch_tiny, "--split", "test",
                           "--out", out)
    assert sent.is_set() and code == 143
    one_line(err, "convlstm evaluate: terminated")
    assert not (out / "evaluation.json").exists()


def test_a_signal_during_retrain_kills_the_challenger_run_and_promotes_nothing(dataset, videos, tmp_path, capsys):
    """Retrain on a copy of the dataset with new videos: SIGTERM while the challenger trains (in this
    process): exit 143, the challenger's run KILLED, no version registered, no report, the lock released."""
    import shutil

    from jobs.ops.locks import lock_uri_for
    from jobs.ops.retrain_report import REPORT_NAME
    from jobs.training.config import load_config
    from jobs.training.driver import Compute, train
    from pipelines.synthetic import write_kth_videos

    name = "faults-signal-retrain"
    data = shutil.copytree(dataset, tmp_path / "kth")
    train(load_config("kth-tiny", "kth", [f"registry.name={name}", "train.epochs=1", "data.batch_size=2"]),
          str(data), compute=Compute(workers=0))
    src = shutil.copytree(videos, tmp_path / "videos")
    write_kth_videos(src, persons=[25, 3], actions=("boxing", "walking"), scenarios=("d1",), frames=10)
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({"train_config": "kth-tiny", "workers": 0, "init": "from-scratch",
                                      "train_overrides": [f"registry.name={name}", "train.epochs=500",
                                                          "train.log_every_steps=1", "data.batch_size=2"]}))
    client = tracking.client(None)
    before = [v.version for v in client.search_model_versions(f"name='{name}'")]
    started = int(time.time() * 1000)

    def runs_since(status: str) -> list:
        return [r for e in client.search_experiments() for r in client.search_runs(
            [e.experiment_id], f"attributes.status = '{status}' and attributes.start_time >= {started}")]

    with signalled(signal.SIGTERM, lambda: any("train_loss" in r.data.metrics for r in runs_since("RUNNING"))) as sent:
        code, _, err = cli(capsys, "retrain", "--task", "kth", "--src", src, "--data", data, "--config", config,
                           "--out", tmp_path / "report")
    assert sent.is_set() and code == 143
    one_line(err, "convlstm retrain: terminated")
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == before
    assert len(runs_since("KILLED")) == 1 and runs_since("RUNNING") == [], [
        (r.info.run_name, r.info.status, r.info.start_time, started) for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])]
    assert not Path(lock_uri_for(str(data))).exists() and not (tmp_path / "report" / REPORT_NAME).exists()


def test_one_handler_turns_either_signal_into_its_exit_and_puts_the_callers_back():
    """`jobs.signals` on its own: what the CLI runs every command between (no command, no Ray)."""
    from jobs.errors import Terminated

    mine = {s: signal.signal(s, lambda *_: None) for s in signals.SIGNALS}
    try:
        callers = {s: signal.getsignal(s) for s in signals.SIGNALS}
        for signum, kind, expected in [(signal.SIGINT, KeyboardInterrupt, ("interrupted", 130)),
                                       (signal.SIGTERM, Terminated, ("terminated", 143))]:
            with signals.kept():
                signals.begin()
                with pytest.raises(kind) as caught:
                    os.kill(os.getpid(), signum)
                    time.sleep(1)  # the handler raises in this (main) thread before this ends
                assert signals.outcome(caught.value) == expected
                assert signals.stopped(RuntimeError("what Ray raises next"))  # a failure after it is the signal
                with pytest.raises(kind):
                    signals.raise_if_stopped()  # e.g. before registering a model
                signals.end()
                assert not signals.stopped(RuntimeError("a plain failure"))
            assert {s: signal.getsignal(s) for s in signals.SIGNALS} == callers
        aborted = []
        with signals.kept():
            signals.install(abort=lambda: aborted.append(signal.getsignal(signal.SIGINT)))
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            assert aborted == [signal.SIG_IGN]  # a second Ctrl-C cannot cut the abort short
            assert signal.getsignal(signal.SIGINT) is signals.stop_on_signal
        signals.end()
    finally:
        for s, handler in mine.items():
            signal.signal(s, handler)
