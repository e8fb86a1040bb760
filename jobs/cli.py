"""The `convlstm` command: one entry point, one subcommand per job.

Each module in `jobs.commands` exposes `register(subparsers)`, which adds its parser and sets
`func=run`; `run(args) -> int` returns the exit code. User errors (bad parameters, missing or
unreadable inputs) surface as one line on stderr and exit code 2; failed jobs exit 1.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

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
    "version",
]


class CommandError(Exception):
    """A job failed for a reason the user can act on; printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convlstm",
        description="ConvLSTM pipeline: Ray Data shards, Ray Train DDP, MLflow tracking and registry.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"jobs.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"jobs.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"convlstm {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        print(f"convlstm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"convlstm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m jobs.cli` (how jobs run on a cluster) loads this file as __main__ and, through the
    # commands, again as jobs.cli: call that module's main so its CommandError is the one caught.
    from jobs.cli import main as _main

    sys.exit(_main())
