"""Skill of the forecast baselines on real radar: CSI at 20.5 dBZ (and MSE) per lead time.

Frames of a real radar sample are decoded and preprocessed the way `prepare radar` does it
(`pipelines.radar.sequence.load_frames`: dBZ -> HKO-7 pixels, optional centre crop, area resize to
`--size`, validity mask), cut into sliding windows of `--in-len` + `--out-len` frames (stride
`--stride`), scaled to [0, 1] (p / 255, the models' range) and forecast by each baseline of
`convlstm.baselines`:

- `persistence`: the last input frame;
- `optical-flow-v1`: the first optical-flow baseline (DIS on the last 3 consecutive pairs, motion
  smoothed over 0.125 x the frame size), kept here for comparison;
- `optical-flow`: the current default of `convlstm.baselines.optical_flow`;
- `pysteps-extrapolation`: pySTEPS' nowcast (`jobs.evaluation.baselines`: Lucas-Kanade motion of the last 3 frames, semi-Lagrangian extrapolation of dB rain rates),
  where pysteps is installed (`pip install 'convlstm-pipeline[pysteps]'`).

Scores, on valid target pixels (mask = 1) of all windows: CSI of the event dBZ >= `--threshold`
(20.5 dBZ is 0.5 mm/h under MeteoSwiss' Z = 316 R^1.5, 1.5 mm/h under HKO-7's Z = 58.53 R^1.56),
MSE of the [0, 1] pixels, and the mean wall time per window. Windows overlap (stride 1 by default),
so they are not independent samples.

    python benchmarks/baselines.py --source mch
    python benchmarks/baselines.py --source fmi --stride 2 --json fmi.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from convlstm.baselines import get_baseline, optical_flow, pysteps_available  # noqa: E402
from convlstm.metrics.categorical import CategoricalScores  # noqa: E402
from convlstm.units import pixel_to_dbz  # noqa: E402
from pipelines.radar.formats import get_format, list_frames, probe_frames  # noqa: E402
from pipelines.radar.preprocess import parse_hw  # noqa: E402
from pipelines.radar.sequence import load_frames  # noqa: E402
from pipelines.radar.timeline import infer_time_step, window_starts  # noqa: E402

SOURCES = ("mch", "fmi", "knmi")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=SOURCES, default="mch", help="which shared radar sample")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of radar frames (default: ../shared/data/radar-<source>-sample)")
    parser.add_argument("--size", default="100x100", help="frame size HxW after resizing")
    parser.add_argument("--crop", default=None, help="centre crop HxW before resizing (default: none)")
    parser.add_argument("--in-len", type=int, default=5)
    parser.add_argument("--out-len", type=int, default=15)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=20.5, help="CSI event: dBZ >= threshold")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of persistence,optical-flow-v1,optical-flow,pysteps-extrapolation")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    for name in ("in_len", "out_len", "stride"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.in_len < 2:
        parser.error("--in-len must be >= 2 for optical flow")
    return args


def load_windows(root: Path, source: str, size: tuple[int, int], crop: tuple[int, int] | None, in_len: int,
                 out_len: int, stride: int) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """(frames float32 `[N, T, 1, H, W]` in [0, 1], mask bool `[N, T, 1, H, W]`, window start times,
    minutes per frame) for every gap-free window of `in_len + out_len` frames."""
    fmt = get_format(source)
    frames, _ = list_frames(root, fmt)
    frames, grid, _ = probe_frames(frames, fmt)
    if len(frames) < 2:
        raise SystemExit(f"{root}: {len(frames)} usable {source} frame(s)")
    times = [f.time for f in frames]
    step = infer_time_step(times)
    pixels, valid, errors = load_frames(fmt, frames, step.total_seconds(), grid, crop, size)
    if errors:
        print(f"unusable frames (held as gaps): {errors}")
    length = in_len + out_len
    starts = [s for s in window_starts(times, step, length, stride) if not set(range(s, s + length)) & set(errors)]
    if not starts:
        raise SystemExit(f"{root}: no gap-free window of {length} frames")
    x = np.stack([pixels[s:s + length] for s in starts]).astype(np.float32)[:, :, None] / 255.0
    mask = np.stack([valid[s:s + length] for s in starts])[:, :, None]
    return x, mask, [times[s].isoformat() for s in starts], step.total_seconds() / 60


def methods(out_len: int, names: list[str] | None) -> dict:
    available = {
        "persistence": get_baseline("persistence", out_len),
        "optical-flow-v1": lambda x: optical_flow(x, out_len, method="dis-medium", pairs=3, smoothing=0.125, span=1),
        "optical-flow": get_baseline("optical-flow", out_len),
    }
    if pysteps_available():
        from jobs.evaluation.baselines import get_baseline as evaluation_baseline

        available["pysteps-extrapolation"] = evaluation_baseline("pysteps-extrapolation", out_len)
    if names is None:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"--methods: {unknown} not available (have {sorted(available)})")
    return {n: available[n] for n in names}


def evaluate(forecast: np.ndarray, target: np.ndarray, mask: np.ndarray, threshold: float) -> dict:
    out_len = target.shape[1]
    scores = CategoricalScores([threshold], out_len)
    scores.update(pixel_to_dbz(forecast * 255.0), pixel_to_dbz(target * 255.0), mask)
    computed = scores.compute()
    squared = (forecast - target) ** 2 * mask
    mse = squared.sum(axis=(0, 2, 3, 4)) / np.maximum(mask.sum(axis=(0, 2, 3, 4)), 1)
    return {"csi": computed["csi"][0].tolist(), "csi_overall": float(computed["csi_overall"][0]),
            "pod": computed["pod"][0].tolist(), "far": computed["far"][0].tolist(), "mse": mse.tolist()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root = args.data or REPO.parent / "shared" / "data" / f"radar-{args.source}-sample"
    size = parse_hw(args.size, "--size")
    crop = parse_hw(args.crop, "--crop") if args.crop else None
    windows, mask, starts, minutes = load_windows(root, args.source, size, crop, args.in_len, args.out_len,
                                                  args.stride)
    x, target, target_mask = windows[:, :args.in_len], windows[:, args.in_len:], mask[:, args.in_len:]
    results = {}
    for name, baseline in methods(args.out_len, args.methods.split(",") if args.methods else None).items():
        start = time.perf_counter()
        forecast = np.concatenate([baseline(x[i:i + 1]) for i in range(len(x))])
        seconds = (time.perf_counter() - start) / len(x)
        results[name] = {**evaluate(forecast, target, target_mask, args.threshold), "s_per_window": seconds}
    events = float((pixel_to_dbz(target * 255.0) >= args.threshold)[target_mask].mean())
    summary = dict(source=args.source, data=str(root), size=list(size), crop=list(crop) if crop else None,
                   in_len=args.in_len, out_len=args.out_len, stride=args.stride, windows=len(x),
                   first_window=starts[0], last_window=starts[-1], minutes_per_frame=minutes,
                   threshold_dbz=args.threshold, event_fraction=events, results=results)

    print(f"{args.source}: {len(x)} windows of {args.in_len} + {args.out_len} frames ({minutes:g} min apart) "
          f"at {size[0]}x{size[1]}{f' (crop {crop[0]}x{crop[1]})' if crop else ''}, {starts[0]} .. {starts[-1]}; "
          f"{100 * events:.2f}% of valid target pixels >= {args.threshold:g} dBZ")
    names = list(results)
    print(f"CSI at {args.threshold:g} dBZ by lead time")
    print(f"{'lead min':>8} " + " ".join(f"{n:>15}" for n in names))
    for lead in range(args.out_len):
        print(f"{(lead + 1) * minutes:>8g} " + " ".join(f"{results[n]['csi'][lead]:>15.3f}" for n in names))
    print(f"{'mean':>8} " + " ".join(f"{np.mean(results[n]['csi']):>15.3f}" for n in names))
    print(f"{'overall':>8} " + " ".join(f"{results[n]['csi_overall']:>15.3f}" for n in names))
    print(f"{'MSE':>8} " + " ".join(f"{np.mean(results[n]['mse']):>15.5f}" for n in names))
    print(f"{'s/window':>8} " + " ".join(f"{results[n]['s_per_window']:>15.3f}" for n in names))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
