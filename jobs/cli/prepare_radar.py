"""`convlstm prepare radar`: radar frames (folder or .tar/.zip; HKO-7, MeteoSwiss, FMI, KNMI, ODIM_H5, BoM NetCDF) -> window shards.

Registered by `jobs.cli.prepare` under its datasets. Bad arguments and sources without
usable frames end with a one-line error and exit 2 before anything is written; with --strict any
rejected input fails the run (exit 1) and nothing is published.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.errors import CommandError
from jobs.cli import options
from pipelines.driver import RejectedSourcesError
from pipelines.radar.days import SPLIT_MODES, load_days_file
from pipelines.radar.formats import FORMATS, PYSTEPS_PREFIX
from pipelines.radar.prepare import RadarOptions, prepare_radar
from pipelines.radar.preprocess import parse_hw

if TYPE_CHECKING:
    from pipelines.manifest import Manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "radar", help="radar frames -> Parquet window shards (HKO-7 pixel dBZ + nodata mask)",
        description="Decode timestamped radar frames to dBZ, encode them as HKO-7 pixels with a validity mask, "
                    "crop/resize, and write windows of in-len + out-len consecutive frames split by day "
                    "or by the paper's 40-frame blocks. No window spans a missing frame.")
    p.add_argument("--src", help="folder or .tar/.tar.gz/.zip archive of frames (required)")
    p.add_argument("--format", default="auto", metavar="|".join([*FORMATS, "pysteps:<importer>", "auto"]),
                   help="input format; auto detects it from the file names, or by content for ODIM_H5 and NetCDF; "
                        "pysteps:<importer> reads with a pySTEPS importer, e.g. pysteps:mrms_grib (needs "
                        "pip install 'convlstm-pipeline[pysteps]'; docs/pysteps.md) (default: auto)")
    p.add_argument("--fn-pattern", help="with --format pysteps:<importer>: strftime pattern of the whole file "
                                        "name, e.g. 'PrecipRate_00.00_%%Y%%m%%d-%%H%%M%%S.grib2' (default: the "
                                        "pattern of pySTEPS' data source for that importer)")
    options.dataset_output(p)
    p.add_argument("--in-len", type=int, default=5, help="input frames per window (default: 5)")
    p.add_argument("--out-len", type=int, default=15, help="target frames per window (default: 15)")
    p.add_argument("--stride", type=int, default=1, help="frames between window starts (default: 1)")
    p.add_argument("--size", default="100x100", help="output HxW, area resize (default: 100x100)")
    p.add_argument("--crop", help="centre crop HxW before resizing (paper: 330x330); default: none")
    p.add_argument("--split", default="days", metavar="|".join(SPLIT_MODES),
                   help="days: whole UTC days per split; paper-blocks: 40-frame blocks, 4/1/1 per day; "
                        "time: chronological train/val/test spans of one short archive (default: days)")
    p.add_argument("--days-file",
                   help='JSON {"train": ["YYYY-MM-DD", ...], "val": [...], "test": [...]} (--split days)')
    p.add_argument("--seed", type=int, default=0, help="seed of the day/block assignment (default: 0)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of days (--split days) or of frames (--split time) for val (default: 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of days (--split days) or of frames (--split time) for test (default: 0.1)")
    p.add_argument("--strict", action="store_true", help="fail (exit 1, nothing published) if any input is rejected")
    p.add_argument("--incremental", action="store_true",
                   help="add the frames the existing dataset has not seen (days/blocks/spans they change are redone)")
    p.add_argument("--allow-empty-split", action="store_true",
                   help="publish even when a split gets no window (default: fail, nothing published, when train "
                        "or a split with a fraction > 0 or days in --days-file would be empty)")
    p.add_argument("--layout", default="runs", choices=["runs", "windows"],
                   help="runs: each frame stored once, windows cut when read (default); "
                        "windows: each window stored whole (the layout before runs)")
    options.max_unpacked_mb(p)
    p.set_defaults(func=run)


def required_splits(opts: RadarOptions) -> tuple[str, ...]:
    """The splits that must get windows: train always; val/test when asked for (a fraction > 0, or days
    named in --days-file)."""
    if opts.days_file:
        named = set(load_days_file(opts.days_file).values())
        return ("train",) + tuple(s for s in ("val", "test") if s in named)
    fractions = {"val": opts.val_fraction, "test": opts.test_fraction}
    return ("train",) + tuple(s for s, f in fractions.items() if f > 0)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    options.require(args, "src", "out")
    opts = RadarOptions(
        in_len=args.in_len, out_len=args.out_len, stride=args.stride, size=parse_hw(args.size, "--size"),
        crop=parse_hw(args.crop, "--crop") if args.crop else None, split=args.split,
        days_file=Path(args.days_file) if args.days_file else None, seed=args.seed,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    try:
        manifest = prepare_radar(args.src, args.out, with_fn_pattern(args.format, args.fn_pattern), opts,
                                 publish=options.publish(args), max_unpacked_mb=args.max_unpacked_mb,
                                 layout=args.layout,
                                 require_splits=() if args.allow_empty_split else required_splits(opts))
    except RejectedSourcesError as exc:
        raise CommandError(str(exc), 1) from exc
    print(options.dataset_summary(args.out, manifest, time.monotonic() - started))
    print(radar_summary(manifest))
    return 0


def with_fn_pattern(fmt: str, fn_pattern: str | None) -> str:
    """`--format pysteps:<importer>` with `--fn-pattern P` -> `pysteps:<importer>:P`; ValueError naming
    --fn-pattern for another format."""
    if not fn_pattern:
        return fmt

    if not fmt.startswith(PYSTEPS_PREFIX) or fmt.count(":") > 1:
        raise ValueError(f"--fn-pattern applies to --format pysteps:<importer> only, got --format {fmt}")
    return f"{fmt}:{fn_pattern}"


def radar_summary(manifest: Manifest) -> str:
    """The radar specifics: source format, time step, output grid, gaps between frames."""
    grid = manifest.grid
    return (f"radar: {manifest.encoding['source_format']} frames every {manifest.time_step_s:g} s -> "
            f"{grid.height}x{grid.width}; gaps: {len(manifest.gaps or [])} (manifest.json 'gaps')")
