"""Arguments that several commands share, declared once, and small argument helpers."""
from __future__ import annotations

import os
import sys

import argparse
from typing import TYPE_CHECKING

from jobs.ops.submit import DEFAULT_ADDRESS
from pipelines.driver import Publish
from jobs.paths import STORAGE_ENV
from jobs.tasks.plugins import BUILTIN
from pipelines.manifest import SPLITS

if TYPE_CHECKING:
    from pipelines.manifest import Manifest


def task(p: argparse.ArgumentParser) -> None:
    """--task: a registered task (`jobs.tasks`); checked when the command runs, so --help stays light."""
    p.add_argument("--task", required=True, metavar="|".join(BUILTIN),
                   help="the task (dataset kind) of the data and the model")


def ray_address(p: argparse.ArgumentParser) -> None:
    """--address: the Ray cluster to run on."""
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray bound to 127.0.0.1)")


def jobs_api_address(p: argparse.ArgumentParser) -> None:
    """--address: the Ray Jobs API to talk to (submit, jobs)."""
    p.add_argument("--address", default=None,
                   help="Ray Jobs API URL, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, "
                        f"else {DEFAULT_ADDRESS})")


def tracking_uri(p: argparse.ArgumentParser) -> None:
    """--tracking-uri: the MLflow tracking server or store."""
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the embedded store under the project home)")


def storage_root(p: argparse.ArgumentParser) -> None:
    """--storage-root: the shared storage root for default outputs (CONVLSTM_STORAGE)."""
    p.add_argument("--storage-root", metavar="URI",
                   help="shared storage for this job's default outputs, an s3:// (any pyarrow filesystem) URI "
                        "or a folder every node mounts: checkpoints <root>/train, evaluations <root>/evaluations, "
                        "nowcasts <root>/nowcasts, retrain reports <root>/retrain (default: CONVLSTM_STORAGE, "
                        "else <home>/outputs; required on a multi-node cluster)")


def apply_storage_root(args: argparse.Namespace) -> None:
    """Make --storage-root the CONVLSTM_STORAGE of this process (every default output follows it)."""
    if getattr(args, "storage_root", None):
        os.environ[STORAGE_ENV] = args.storage_root


def json_output(p: argparse.ArgumentParser, what: str) -> None:
    """--json: print `what` as one JSON object instead of lines."""
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")


def dataset_output(p: argparse.ArgumentParser) -> None:
    """--out, --overwrite and --address, shared by every `prepare` dataset."""
    p.add_argument("--out", help="dataset folder or s3:// URI to publish (required)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the published dataset at --out (only a folder with this project's manifest.json; "
                        "the old one stays until the new one is complete)")
    ray_address(p)


def publish(args: argparse.Namespace) -> Publish:
    """How a `prepare` command publishes: its --overwrite, --incremental, --strict and --address, with
    a progress bar on a terminal."""
    return Publish(overwrite=args.overwrite, incremental=getattr(args, "incremental", False),
                   strict=getattr(args, "strict", False), address=args.address, progress=sys.stderr.isatty())


def device(p: argparse.ArgumentParser) -> None:
    """--device: where the model runs for inference."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="run the model on the CPU or a CUDA GPU (default auto: a GPU when one is visible); "
                        "CPU outputs are bit-reproducible, GPU outputs agree to float tolerance")


def max_unpacked_mb(p: argparse.ArgumentParser) -> None:
    """--max-unpacked-mb: the cap on what an archive --src may expand to."""
    p.add_argument("--max-unpacked-mb", type=float,
                   help="an archive --src may unpack to at most this many MB (default: 10240); archives "
                        "expanding over 100x are refused as bombs")


def require(args: argparse.Namespace, *names: str) -> None:
    """ValueError `--NAME is required` for the first of `names` left unset."""
    for name in names:
        if not getattr(args, name):
            raise ValueError(f"--{name.replace('_', '-')} is required")


def dataset_summary(out: str, manifest: Manifest, seconds: float | None = None) -> str:
    """Windows per split (and per class), rejected inputs (first five with reasons), fingerprint, path
    and, given `seconds`, how long the command took for how many sources. A standard split without
    windows is marked as empty."""
    lines = [f"{manifest.task} dataset published at {out}"]
    if seconds is not None:
        lines[0] += f" in {seconds:.1f} s ({len(manifest.sources)} sources, Ray start-up included)"
    for split, info in manifest.splits.items():
        classes = ", ".join(f"{name} {n}" for name, n in (info.per_class or {}).items())
        lines.append(f"  {split}: {info.count} windows" + (f" ({classes})" if classes else "")
                     + ("  <- empty split" if not info.count else ""))
    lines += [f"  {split}: 0 windows  <- empty split" for split in SPLITS if split not in manifest.splits]
    lines.append(f"rejected inputs: {len(manifest.rejected)}")
    lines += [f"  {r.file}: {r.reason}" for r in manifest.rejected[:5]]
    if len(manifest.rejected) > 5:
        lines.append(f"  ... and {len(manifest.rejected) - 5} more (manifest.json 'rejected')")
    lines.append(f"fingerprint: {manifest.fingerprint}")
    return "\n".join(lines)
