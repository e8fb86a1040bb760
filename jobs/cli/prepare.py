"""`convlstm prepare kth|mnist|radar`: build a window-shard dataset with Ray Data and publish it atomically.

Missing or bad arguments end with a one-line error and exit 2 before anything is written; with
--strict any rejected input fails the run (exit 1) and nothing is published. Each run ends with a
summary: windows per split and class, rejected inputs, fingerprint and output path.
"""
from __future__ import annotations

import argparse
import time
from functools import partial

from jobs.cli import options, prepare_radar
from jobs.errors import CommandError
from pipelines.driver import RejectedSourcesError
from pipelines.kth import KthOptions, prepare_kth
from pipelines.mnist import MnistOptions, prepare_mnist
from pipelines.radar.preprocess import parse_hw


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="decode a dataset into Parquet window shards (kth, mnist, radar)",
                       description="Decode raw inputs with Ray Data into Parquet window shards "
                                   "(<out>/<split>/*.parquet + manifest.json), published atomically.")
    kinds = p.add_subparsers(dest="dataset", metavar="DATASET")
    _register_kth(kinds)
    _register_mnist(kinds)
    prepare_radar.register(kinds)
    p.set_defaults(func=partial(_usage, p))


def _usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    parser.print_help()
    return 2


def _register_kth(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "kth", help="KTH action videos -> windows labelled by action, split by person",
        description="Decode KTH .avi videos (nested by action as downloaded, or flat) into gray (or RGB) "
                    "windows of --frame-len frames every --stride frames, resized to --size with INTER_AREA. "
                    "Unusable videos are rejected with a reason and the job goes on.")
    p.add_argument("--src", help="folder holding the KTH videos (required)")
    options.dataset_output(p)
    p.add_argument("--split", default="official",
                   help="person split: official (Schuldt 2004), tutorial (PyTorch tutorial), openstl "
                        "(train 1-16, test 17-25), or a JSON file {split: [person ids]} (default: official)")
    p.add_argument("--frame-len", type=int, default=15, help="frames per window (default: 15)")
    p.add_argument("--stride", type=int, default=15, help="frames between window starts (default: 15, no overlap)")
    p.add_argument("--size", default="60x80", help="output frame size HxW (default: 60x80; KTH is 120x160)")
    p.add_argument("--color", action="store_true", help="keep 3 RGB channels instead of gray")
    p.add_argument("--sequences", help="KTH 00sequences.txt: cut windows only inside the annotated subsequences")
    p.add_argument("--strict", action="store_true", help="fail (exit 1, nothing published) if any input is rejected")
    p.add_argument("--incremental", action="store_true",
                   help="decode only videos not yet in the existing dataset at --out and add their windows")
    p.set_defaults(func=run_kth)


def _register_mnist(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "mnist", help="Moving MNIST generated from an MNIST IDX file",
        description="Generate Moving MNIST (Srivastava et al. 2015): digits from a fixed subset of the MNIST "
                    "file bounce inside a square canvas; reproducible by --seed.")
    p.add_argument("--mnist", help="MNIST images, IDX3 format, .gz or raw (required)")
    options.dataset_output(p)
    p.add_argument("--counts", default="10000,2000,3000", help="sequences per split train,val,test (default: 10000,2000,3000)")
    p.add_argument("--digits", type=int, default=2, help="digits per sequence (default: 2)")
    p.add_argument("--size", type=int, default=64, help="canvas side in pixels (default: 64)")
    p.add_argument("--frames", type=int, default=20, help="frames per sequence (default: 20: 10 in, 10 out)")
    p.add_argument("--subset", type=int, default=500, help="size of the fixed digit subset (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of every sequence (default: 0)")
    p.set_defaults(func=run_mnist)


def run_kth(args: argparse.Namespace) -> int:
    started = time.monotonic()
    options.require(args, "src", "out")
    opts = KthOptions(frame_len=args.frame_len, stride=args.stride, size=parse_hw(args.size, "--size"),
                         color=args.color, split=args.split, sequences=args.sequences)
    try:
        manifest = prepare_kth(args.src, args.out, opts, publish=options.publish(args))
    except RejectedSourcesError as exc:
        raise CommandError(str(exc), 1) from exc
    print(options.dataset_summary(args.out, manifest, time.monotonic() - started))
    return 0


def run_mnist(args: argparse.Namespace) -> int:
    started = time.monotonic()
    options.require(args, "mnist", "out")
    try:
        counts = tuple(int(c) for c in args.counts.split(","))
    except ValueError:
        raise ValueError(f"--counts must be three integers train,val,test, got {args.counts!r}") from None
    opts = MnistOptions(counts=counts, digits=args.digits, size=args.size, frames=args.frames,
                           subset=args.subset, seed=args.seed)
    manifest = prepare_mnist(args.mnist, args.out, opts, publish=options.publish(args))
    print(options.dataset_summary(args.out, manifest, time.monotonic() - started))
    return 0
