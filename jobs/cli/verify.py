"""`convlstm verify`: check published datasets against their manifests, reading every window."""
from __future__ import annotations

import argparse
import json

from jobs.cli import options
from pipelines.manifest import load_manifest
from pipelines.verify import verify_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check datasets against their manifests (every shard, every window)",
        description="Check published datasets against their manifests: the fingerprint is recomputed from "
                    "the manifest, every split's shard files must be the ones the manifest lists with its "
                    "window counts and schema, and every window is read and counted again (per split and per "
                    "class). `train` and `evaluate` run the cheap part (Parquet footers) by themselves. "
                    "A mismatch is one line naming the split and the file, exit code 2.")
    p.add_argument("--data", required=True, help="dataset folder or URI, or several comma-separated")
    options.json_output(p, "each dataset's fingerprint and windows per split")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = {}
    for data in (part.strip() for part in args.data.split(",")):
        if not data:
            raise ValueError(f"--data: empty entry in {args.data!r}")
        manifest = load_manifest(data)
        report[data] = {"fingerprint": manifest.fingerprint, "splits": verify_dataset(data, manifest)}
    if args.json:
        print(json.dumps(report))
        return 0
    for data, result in report.items():
        splits = ", ".join(f"{split} {count}" for split, count in result["splits"].items())
        print(f"verified   {data}: fingerprint {result['fingerprint'][:12]}, windows: {splits}")
    return 0
