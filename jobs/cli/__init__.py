"""The `convlstm` command: one entry point, one module per subcommand in this package.

Each command module (`jobs.cli.<name>`) exposes `register(subparsers)`, which adds its parser and sets
`func=run`; `run(args) -> int` returns the exit code. User errors (bad parameters, missing or
unreadable inputs) surface as one line on stderr and exit code 2; failed jobs exit 1 (the
exceptions and codes live in `jobs.errors`). Only this package imports the CLI; library code never does.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from jobs.errors import EXIT_INTERRUPTED, EXIT_USAGE, USER_ERRORS, CommandError

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
    except USER_ERRORS as exc:
        print(f"convlstm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"convlstm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
