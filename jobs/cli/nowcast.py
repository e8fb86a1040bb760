"""`convlstm nowcast`: forecast the next frames from the latest radar frames with a registered model."""
from __future__ import annotations

import argparse
import json

from jobs.cli import options
from jobs.nowcast.forecast import default_out, nowcast, parse_time
from pipelines.radar.archive import unpack_limit


def register(sub: argparse._SubParsersAction) -> None:
    # deferred: pipelines.radar.formats loads OpenCV ~4 s, h5py ~1.4 s; the module's other users skip it
    from pipelines.radar.formats import FORMATS

    p = sub.add_parser(
        "nowcast", help="forecast from the latest radar frames; write dBZ/mm/h arrays, PNGs and a GIF",
        description="Read the latest in-len frames up to --at from a radar folder or archive, preprocess them "
                    "exactly as the model's training data (from the model's lineage), and write the forecast in "
                    "dBZ and mm/h (.npy, valid times in forecast.json), rain-rate PNGs and an animated GIF. "
                    "Input whose grid, time step or format conversion differ from the training data, or with "
                    "a missing frame among those needed, is refused (exit 2).")
    p.add_argument("--model", default="models:/convlstm-radar@champion",
                   help="radar model: models:/NAME@ALIAS, a run id or a path "
                        "(default: models:/convlstm-radar@champion)")
    p.add_argument("--src", required=True, help="folder or .tar/.zip archive of radar frames")
    p.add_argument("--format", default="auto", metavar="|".join([*FORMATS, "pysteps:<importer>", "auto"]),
                   help="input format; auto detects it from the file names, or by content for ODIM_H5 and NetCDF; "
                        "pysteps:<importer>[:<fn_pattern>] as the model's training data was read (default: auto)")
    p.add_argument("--at", help="forecast from the latest frame at or before this ISO time, UTC "
                                "(default: the latest frame)")
    p.add_argument("--out", help="output folder or s3:// URI (default: <CONVLSTM_STORAGE>/nowcasts/<time>, "
                                 "else <home>/outputs/nowcasts/<time>)")
    options.storage_root(p)
    options.tracking_uri(p)
    options.json_output(p, "forecast.json's content")
    options.max_unpacked_mb(p)
    options.device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options.apply_storage_root(args)
    out = args.out or default_out()
    with unpack_limit(args.max_unpacked_mb):
        sidecar = nowcast(args.model, args.src, out, args.format, parse_time(args.at), args.tracking_uri,
                          device=args.device)
    if args.json:
        print(json.dumps(sidecar))
        return 0
    print(f"inputs     {sidecar['input_times'][0]} .. {sidecar['input_times'][-1]} ({sidecar['format']})")
    valid = sidecar["valid_times"]
    print(f"forecast   {len(valid)} frames valid {valid[0]} .. {valid[-1]}")
    print(f"outputs    {out}")
    return 0
