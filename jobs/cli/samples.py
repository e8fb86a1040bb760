"""`convlstm samples list|fetch`: the real radar, MNIST and KTH samples the tour uses, fetched with checksums."""
from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import options
from jobs.ops.samples import catalogue, fetch, fetched_files, sample, samples_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("samples", help="list and fetch the real sample archives (radar, MNIST, KTH annotations)",
                       description="List the real sample archives of the tour and fetch them, with sha256 checks, "
                                   "from their public sources into <home>/samples/<name>/ (CONVLSTM_HOME).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="the samples, their sizes and whether they are fetched",
                          description="List the samples: name, files, size, how many files are fetched, format.")
    options.json_output(ls, "the samples")
    ls.set_defaults(func=run_list)
    fetch = verbs.add_parser("fetch", help="download samples into <home>/samples/<name>/",
                             description="Download the named samples (or all), verify every file's sha256, and "
                                         "print each sample's folder. Files already fetched and verified are kept.")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="samples to fetch (default: all)")
    fetch.add_argument("--base-url", metavar="URL",
                       help="a mirror that replaces https://raw.githubusercontent.com in every URL "
                            "(default: CONVLSTM_SAMPLES_URL, else the public sources)")
    fetch.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    rows = [{"name": s.name, "files": len(s.files), "mb": round(s.size / 1e6, 1), "fetched": fetched_files(s),
             "format": s.format, "description": s.description} for s in catalogue().values()]
    if args.json:
        print(json.dumps({"folder": str(samples_dir()), "samples": rows}))
        return 0
    print(f"{'name':14s} {'files':>5s} {'MB':>6s} {'fetched':>7s}  format / description")
    for r in rows:
        print(f"{r['name']:14s} {r['files']:5d} {r['mb']:6.1f} {r['fetched']:7d}  "
              f"{r['format'] or '-'}: {r['description']}")
    print(f"folder: {samples_dir()}  (convlstm samples fetch NAME)")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    chosen = [sample(n) for n in args.names] if args.names else list(catalogue().values())
    for s in chosen:
        done = 0

        def tick(_f, s=s) -> None:
            nonlocal done
            done += 1
            print(f"\r{s.name}: {done} file(s) downloaded", end="", file=sys.stderr, flush=True)

        folder = fetch(s, args.base_url, progress=tick)
        if done:
            print(file=sys.stderr)
        print(f"{s.name}: {len(s.files)} files, {s.size / 1e6:.1f} MB, verified in {folder}")
    return 0
