"""Decode rate of one radar frame per input format: what one `prepare radar` decode task spends per frame.

For each real sample in `../shared/data` (or `--data`), the first `--frames` frames are decoded and
preprocessed the way a decode task does it (`pipelines.radar.latest.load_frames`: the format's
decoder to dBZ, HKO-7 pixels, validity mask, area resize to `--size`), in this one process, after one
warm-up frame (imports, pySTEPS' configuration). Reported: source grid, ms per frame (best of
`--repeats`), frames/s and the process's peak RSS so far (formats run in the order given). The `pysteps:` formats need
`pip install 'convlstm-pipeline[pysteps]'`; MRMS is the full 3500 x 7000 composite, which pySTEPS'
`mrms_grib` importer block-averages 4 x 4 to 875 x 1750 before our resize.

    .venv/bin/python benchmarks/decode_rate.py --frames 5 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import machine  # noqa: E402
from pipelines.radar.formats import get_format, list_frames, probe_frames  # noqa: E402
from pipelines.radar.latest import load_frames  # noqa: E402

SAMPLES = {"mch": "radar-mch-sample", "fmi": "radar-fmi-sample", "knmi": "radar-knmi-sample",
           "odim": "radar-opera-sample", "bom": "radar-bom-sample", "pysteps:mrms_grib": "radar-mrms-sample",
           "pysteps:mch_gif": "radar-mch-sample", "pysteps:fmi_pgm": "radar-fmi-sample"}


def measure(fmt_name: str, root: Path, frames: int, repeats: int, size: tuple[int, int]) -> dict:
    fmt = get_format(fmt_name)
    listed, _ = list_frames(root, fmt)
    usable, grid, _ = probe_frames(listed[:frames + 1], fmt)
    load_frames(fmt, usable[:1], 300.0, grid, None, size)  # warm-up
    timed = usable[1:frames + 1]
    best = min(_timed(fmt, timed, grid, size) for _ in range(repeats))
    return {"format": fmt_name, "grid": f"{grid[0]}x{grid[1]}", "frames": len(timed),
            "ms_per_frame": round(1000 * best / len(timed), 1), "frames_per_s": round(len(timed) / best, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _timed(fmt, frames, grid, size) -> float:
    start = time.perf_counter()
    _, _, errors = load_frames(fmt, frames, 300.0, grid, None, size)
    assert not errors, errors
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of the samples")
    parser.add_argument("--formats", default=",".join(SAMPLES), help="comma-separated formats")
    parser.add_argument("--frames", type=int, default=5, help="frames timed per format (default: 5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per format; the best counts (default: 3)")
    parser.add_argument("--size", default="100x100", help="output HxW (default: 100x100)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    print(machine.line())
    print("| format | source grid | frames | ms/frame | frames/s | peak RSS MB |\n|---|---|---:|---:|---:|---:|")
    rows = []
    for name in args.formats.split(","):
        row = measure(name, Path(args.data) / SAMPLES[name], args.frames, args.repeats, size)
        rows.append(row)
        print(f"| {row['format']} | {row['grid']} | {row['frames']} | {row['ms_per_frame']} | "
              f"{row['frames_per_s']} | {row['peak_rss_mb']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
