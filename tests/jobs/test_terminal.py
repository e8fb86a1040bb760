"""The `convlstm` command as a person runs it: in a pseudo-terminal (stdin, stdout and stderr are a
tty), so the progress bars and terminal-only paths run. The tests' own environment switches bars
off; here they are switched back on."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

CONVLSTM = str(Path(sys.executable).parent / "convlstm")


def run_in_terminal(argv: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run `argv` with a pty as its terminal; returns (exit code, everything it wrote)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "RAY_DATA_DISABLE_PROGRESS_BARS")}
    env.update(TERM="xterm-256color", COLUMNS="100", LINES="40")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # a 100x40 window, as terminals have
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as ray_tmp:
        env["RAY_TMPDIR"] = ray_tmp
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                start_new_session=True)
        os.close(slave)
        chunks, deadline = [], time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: the child closed the terminal
                        break
                    if not data:
                        break
                    chunks.append(data)
                elif proc.poll() is not None:
                    break
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_help_in_a_terminal(tmp_path):
    code, out = run_in_terminal([CONVLSTM, "--help"], tmp_path, timeout=60)
    assert code == 0 and "usage: convlstm" in out and "prepare" in out and "Traceback" not in out


@pytest.mark.integration  # a prepare under a pseudo-terminal starts Ray
def test_prepare_in_a_terminal_shows_progress_and_a_summary(tmp_path):
    from pipelines.synthetic import write_kth_videos

    write_kth_videos(tmp_path / "videos", persons=[11, 1], actions=("boxing", "walking"), scenarios=("d1",),
                     frames=10)
    argv = [CONVLSTM, "prepare", "kth", "--src", str(tmp_path / "videos"), "--out", str(tmp_path / "out"),
            "--frame-len", "5", "--stride", "5", "--size", "24x32"]
    code, out = run_in_terminal(argv, tmp_path)
    assert code == 0, out[-3000:]
    assert "sources: 100%" in out or "sources:100%" in out.replace(" ", ""), out[-3000:]  # the tqdm bar
    assert f"kth dataset published at {tmp_path / 'out'}" in out and "fingerprint:" in out
    assert "Traceback" not in out and " INFO " not in out  # Ray Data's per-dataset log lines stay out


@pytest.mark.parametrize("argv, message", [
    (["prepare", "kth", "--out", "x"], "--src is required"),
    (["train", "--task", "kth", "--data", "nowhere", "--config", "kth-tiny", "optim.lr=fast"], "optim.lr"),
])
def test_errors_in_a_terminal_are_one_line(tmp_path, argv, message):
    code, out = run_in_terminal([CONVLSTM, *argv], tmp_path, timeout=120)
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], out
