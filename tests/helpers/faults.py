"""Shared helpers of the fault-injection suite (tests/jobs/test_faults_*.py): run the CLI in this
process, and check that a command's own stderr is one line."""
from __future__ import annotations

import re

# Timestamped log lines of MLflow and Ray, and Ray's worker-prefixed lines: not the command's own output.
LOG_LINE = re.compile(r"^(\d{4}[/-]\d\d[/-]\d\d \d\d:\d\d:\d\d[,.\d]*\s+(INFO|WARNING|DEBUG) |\(\w+ pid=\d+\))")


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`convlstm ARGV` in this process -> (exit code, stdout, stderr)."""
    from jobs.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *needles: str) -> str:
    """The one line of `err` besides log lines, which holds every needle; no traceback anywhere."""
    lines = [line for line in err.strip().splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
