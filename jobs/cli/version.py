"""`convlstm version`: versions of this package and of the stack it runs on."""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform

from jobs.cli import options


def versions() -> dict[str, str]:
    out = {"convlstm-pipeline": md.version("convlstm-pipeline"), "python": platform.python_version()}
    for dist in ("torch", "ray", "mlflow", "pyarrow", "numpy", "opencv-python-headless"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print versions of this package and its stack",
                       description="Print the versions of convlstm-pipeline, Python, torch, Ray, MLflow, pyarrow.")
    options.json_output(p, "the versions")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    v = versions()
    if args.json:
        print(json.dumps(v))
    else:
        for k, val in v.items():
            print(f"{k:24s} {val}")
    return 0
