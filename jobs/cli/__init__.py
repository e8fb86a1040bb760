"""The `convlstm` command: one entry point, one module per subcommand in this package.

Each command module (`jobs.cli.<name>`) exposes `register(subparsers)`, which adds its parser and sets
`func=run`; `run(args) -> int` returns the exit code. User errors (bad parameters, missing or
unreadable inputs, storage faults) surface as one line on stderr and exit code 2; failed jobs exit 1,
an unreachable tracking server 75, Ctrl-C 130 and SIGTERM 143 (the exceptions and codes live in
`jobs.errors`). Only this package imports the CLI; library code never does.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from jobs import signals
from jobs.errors import EXIT_USAGE, MLFLOW_HTTP_DEFAULTS, USER_ERRORS, CommandError, fault_message

# Order is the order `convlstm --help` lists them in.
COMMAND_MODULES = [
    "demo",
    "prepare",
    "train",
    "evaluate",
    "nowcast",
    "submit",
    "jobs_cmd",
    "retrain",
    "models",
    "samples",
    "verify",
    "version",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convlstm",
        description="ConvLSTM pipeline: Ray Data shards, Ray Train DDP, MLflow tracking and registry.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"jobs.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # MLflow's sqlite store logs a database error with its traceback before raising it; the error
    # reaches the user as one line below.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    ray_before = signals.ray_running()
    with signals.kept():  # the caller's handlers come back afterwards
        try:
            signals.begin()  # Ctrl-C and SIGTERM raise in every command (jobs.signals); inside the try
            return int(args.func(args) or 0)
        except (Exception, KeyboardInterrupt) as exc:
            if signals.stopped(exc):  # the signal, or what Ray raised after it stopped Ray's processes too
                signals.ignore()  # stopping: a second Ctrl-C must not cut the rest short
                word, code = signals.outcome(exc)
                print(f"convlstm {args.command}: {word}", file=sys.stderr, flush=True)
                if not ray_before and signals.ray_running():
                    signals.stop_ray(code)  # the Ray this command started; bounded
                return code
            message, code = _one_line(exc, getattr(args, "tracking_uri", None))
            if message is None:
                raise
            print(f"convlstm {args.command}: error: {message}", file=sys.stderr)
            return code
        finally:
            signals.end()


def _one_line(exc: Exception, tracking_uri: str | None) -> tuple[str | None, int]:
    """The user-facing line and exit code for `exc` (see `jobs.errors`); (None, 0) for a bug, which
    keeps its traceback. A storage or MLflow fault wins over the CommandError wrapping it."""
    fault = fault_message(exc, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "the project's sqlite store")
    if fault is not None and not isinstance(exc, USER_ERRORS):
        return fault
    if isinstance(exc, CommandError):
        return _first(str(exc)), exc.code
    if isinstance(exc, USER_ERRORS):
        return _first(str(exc)), EXIT_USAGE
    return None, 0


def _first(text: str) -> str:
    """The first line of a message (wrapped errors from Ray can carry a traceback after it)."""
    return text.strip().splitlines()[0] if text.strip() else text
