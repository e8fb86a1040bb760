"""`convlstm models list|history|promote|rollback`: registered models, who was champion when, and by hand."""
from __future__ import annotations

import argparse
import json

from jobs.cli import options
from jobs.ops import models
from jobs.registry.history import history


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models, their champion history; promote or roll back",
                       description="Registered models of the MLflow store: `list` them with their @champion and "
                                   "@challenger, show the `history` of every alias decision (time, versions, "
                                   "scores on the shared windows, reason), `promote` a version to @champion or "
                                   "`rollback` to the champion before the current one (both recorded).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="registered models with their versions and aliases")
    shown = actions.add_parser("history", help="every alias decision about one model, oldest first")
    promote = actions.add_parser("promote", help="move @champion to a version (removes its @challenger)")
    rollback = actions.add_parser("rollback", help="return @champion to the previous champion")
    for action in (shown, promote, rollback):
        action.add_argument("name", metavar="MODEL", help="registered model name, e.g. convlstm-radar")
    promote.add_argument("--version", required=True, help="the version to make champion")
    for action in (promote, rollback):
        action.add_argument("--reason", required=True, help="why, recorded in the history")
    for action in (listing, shown, promote, rollback):
        options.tracking_uri(action)
        options.json_output(action, "the result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        result = models.list_models(args.tracking_uri)
    elif args.action == "history":
        models.champion_of(args.tracking_uri, args.name)  # ValueError for an unknown model
        result = history(args.tracking_uri, args.name)
    elif args.action == "promote":
        result = models.promote(args.tracking_uri, args.name, args.version, args.reason)
    else:
        result = models.rollback(args.tracking_uri, args.name, args.reason)
    if args.json:
        print(json.dumps(result))
    elif args.action == "list":
        print(f"{'MODEL':32s} {'VERSIONS':>8s}  {'CHAMPION':8s}  {'CHALLENGER':10s}  LATEST")
        for row in result:
            print(f"{row['name']:32s} {row['versions']:8d}  {_v(row['champion']):8s}  {_v(row['challenger']):10s}  "
                  f"{_v(row['latest'])}")
    elif args.action == "history":
        print(format_history(result))
    else:
        print(f"{result['model']}@champion: {_v(result['champion_before'])} -> {_v(result['champion_after'])} "
              f"({result['reason']})")
    return 0


def format_history(entries: list[dict]) -> str:
    """One line per decision: time, action, champion before -> after, challenger, reason, then the
    scores on the shared windows in brackets."""
    lines = [f"{'TIME (UTC)':25s} {'ACTION':14s} {'CHAMPION':10s} {'CHALLENGER':10s} REASON [SCORES]"]
    for e in entries:
        scores = ", ".join(f"{role} {value:.4g}" for role, value in e["scores"].items())
        lines.append(f"{e['time']:25s} {e['action']:14s} {_v(e['champion_before']) + '->' + _v(e['champion_after']):10s} "
                     f"{_v(e['challenger']):10s} {e['reason']}" + (f" [{e['metric']}: {scores}]" if scores else ""))
    return "\n".join(lines)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "-"
