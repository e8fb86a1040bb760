"""Forecast skill of the radar model after a fixed CPU budget, beside persistence and optical flow.

1. Prepares the real radar samples in `shared/data` (MeteoSwiss, FMI, KNMI) with the project's own
   `prepare radar` (`pipelines.radar.prepare.prepare_radar`, local Ray): 100 x 100 frames, windows of
   5 + 15 frames, stride 1, a chronological split per sample (first part train, then
   `--val-fraction` validation, last `--test-fraction` test; no validation by default). Prepared
   datasets are reused if present under `--work`.
2. Trains the radar model of `jobs/configs/radar.yaml` (encoder-forecaster, 2 x 64 channels, 3x3
   kernels, 2x2 patches, peepholes, sigmoid; HKO-7 balanced MSE on valid pixels; RMSProp lr 1e-3,
   alpha 0.9) on all samples' training windows, in one process, until `--budget-min` minutes of this
   process's CPU time are spent (CPU time, not wall time, so that other jobs on a shared machine
   change the wall time but not the budget). `--hidden` changes the channels. Training recipes, one
   flag each: `--augment dihedral`, `--crop N` (random N x N crops of the --size frames),
   `--warmup-steps N` (linear learning-rate ramp), `--scaling log-rain` (the network's space),
   early stopping with `--val-fraction F`: the validation loss every `--val-every` steps, the best
   checkpoint kept, and where `--patience` validations without improvement would have stopped.
3. Scores it and the `--baselines` (default persistence and optical flow; any of `convlstm evaluate`'s, pySTEPS'
   `pysteps-extrapolation` and `pysteps-sprog` included) on the test windows at every lead
   time: MSE of [0, 1] pixels on valid pixels, CSI at 0.5 mm/h (rain rate from the HKO-7 pixels with
   Z = 58.53 R^1.56, as the project's radar evaluation does), and the paper's correlation; writes
   `skill.json` and `skill.png` (three panels against lead time) to `--out`. With validation, the
   checkpoint best on it and the one early stopping would have kept are scored beside the last.

    python benchmarks/skill.py --budget-min 15 --out skill-results
    python benchmarks/skill.py --budget-min 3 --hidden 16,16
    python benchmarks/skill.py --budget-min 8 --size 200 --crop 100
    python benchmarks/skill.py --budget-min 8 --val-fraction 0.25 --val-every 5 --patience 5
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from convlstm.augment import random_crop, random_dihedral  # noqa: E402
from jobs.evaluation.baselines import check_baselines, get_baseline  # noqa: E402
from convlstm.losses import balanced_mse  # noqa: E402
from convlstm.metrics import CategoricalScores, CorrelationScore  # noqa: E402
from convlstm.networks import EncoderForecaster  # noqa: E402
from convlstm.units import rainrate_to_scaled_pixel, scaled_pixel_to_rainrate  # noqa: E402

SOURCES = ("mch", "fmi", "knmi")
IN_LEN, OUT_LEN = 5, 15
THRESHOLD_MMH = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-min", type=float, default=15.0, help="training budget, minutes of CPU time")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated radar samples")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="folder of the samples")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "convlstm-skill",
                        help="where the prepared datasets go (reused when present)")
    parser.add_argument("--out", type=Path, default=Path("skill-results"), help="skill.json and skill.png go here")
    parser.add_argument("--size", type=int, default=100, help="frame size (square)")
    parser.add_argument("--test-fraction", type=float, default=0.5,
                        help="last fraction of each sample's frames held out for testing")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="training recipe, early stopping: the fraction of each sample's frames, between the "
                             "training and the test frames, held out for validation (0: none)")
    parser.add_argument("--val-every", type=int, default=10, help="steps between validations")
    parser.add_argument("--patience", type=int, default=5,
                        help="validations without improvement after which early stopping stops (as train.patience; "
                             "the run itself goes on to the budget, to show what stopping saved and cost)")
    parser.add_argument("--hidden", default="64,64", help="hidden channels per layer (radar.yaml: 64,64)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", default="persistence,optical-flow",
                        help="comma-separated baselines of convlstm evaluate, e.g. persistence,optical-flow,"
                             "pysteps-extrapolation,pysteps-sprog (pySTEPS' need the [pysteps] extra)")
    parser.add_argument("--augment", choices=("none", "dihedral"), default="none",
                        help="training recipe: dihedral gives each window one of the 8 symmetries of the square "
                             "(convlstm.augment, as data.augment in the training config)")
    parser.add_argument("--crop", type=int, default=None,
                        help="training recipe: train on random CROP x CROP crops of the --size frames (one per "
                             "window, all frames alike; as data.crop in the training config); scoring stays on the "
                             "whole --size frames")
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="training recipe: raise the learning rate linearly from 0 over this many steps")
    parser.add_argument("--scaling", choices=sorted(SCALINGS), default="dbz",
                        help="training recipe: what the network sees and predicts; dbz: HKO-7 pixels / 255 "
                             "(linear in dBZ, the project's); log-rain: log(1 + R) / log(1 + R_max), R in mm/h. "
                             "The loss keeps the HKO-7 weights of the target's rain rate")
    args = parser.parse_args(argv)
    if args.budget_min <= 0 or args.batch < 1 or not 0 < args.test_fraction < 1:
        parser.error("--budget-min and --batch must be positive, --test-fraction in (0, 1)")
    if not 0 <= args.val_fraction < 1 - args.test_fraction:
        parser.error("--val-fraction must be >= 0 and leave training frames beside --test-fraction")
    if args.val_every < 1 or args.patience < 1:
        parser.error("--val-every and --patience must be >= 1")
    if args.crop is not None and not 4 <= args.crop <= args.size:
        parser.error(f"--crop must be between 4 and --size ({args.size}), got {args.crop}")
    if args.crop is not None and args.crop % 2:
        parser.error(f"--crop must be even (the model's 2x2 patches), got {args.crop}")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    return args


_LOG_RAIN_MAX = float(np.log1p(scaled_pixel_to_rainrate(1.0)))  # log(1 + R) at 60 dBZ (255)


def _to_log_rain(scaled: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.from_numpy(scaled_pixel_to_rainrate(scaled.numpy()))) / _LOG_RAIN_MAX


def _from_log_rain(value: torch.Tensor) -> torch.Tensor:
    rate = torch.expm1(value.clamp(0, 1) * _LOG_RAIN_MAX)
    return torch.from_numpy(rainrate_to_scaled_pixel(rate.numpy()))


# network space <- HKO-7 pixels / 255, and back
SCALINGS = {"dbz": (lambda x: x, lambda y: y), "log-rain": (_to_log_rain, _from_log_rain)}


def prepare(sources: list[str], data: Path, work: Path, size: int, test_fraction: float,
            val_fraction: float = 0.0) -> dict[str, Path]:
    """`prepare radar` of each sample (skipped where a dataset is already there)."""
    from pipelines.radar.prepare import RadarOptions, prepare_radar

    options = RadarOptions(in_len=IN_LEN, out_len=OUT_LEN, stride=1, size=(size, size), split="time",
                           val_fraction=val_fraction, test_fraction=test_fraction)
    out = {}
    for source in sources:
        path = work / (f"{source}-{size}-t{test_fraction:g}" + (f"-v{val_fraction:g}" if val_fraction else ""))
        if not (path / "manifest.json").exists():
            prepare_radar(data / f"radar-{source}-sample", str(path), source, options, progress=False)
        out[source] = path
    return out


def read(paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 frames and masks `[N, 20, 1, H, W]` of one split of every dataset, and each window's source."""
    from pipelines.shards import read_windows

    frames, masks, names = [], [], []
    for source, path in paths.items():
        if split not in json.loads((path / "manifest.json").read_text())["splits"]:
            continue  # a sample too short to hold a window of this split
        windows = read_windows(str(path), split, ["frames", "mask"])
        frames.append(windows["frames"])
        masks.append(windows["mask"])
        names += [source] * len(windows["frames"])
    return np.concatenate(frames), np.concatenate(masks), names


def train(model: torch.nn.Module, frames: np.ndarray, masks: np.ndarray, budget_s: float, batch: int, lr: float,
          seed: int, augment: str = "none", crop: int | None = None, warmup_steps: int = 0,
          scaling: str = "dbz", val: tuple[np.ndarray, np.ndarray] | None = None, val_every: int = 10) -> dict:
    """RMSProp on balanced MSE over valid pixels until `budget_s` seconds of process CPU time are spent.
    Recipes (`convlstm.augment`, as `data.augment` and `data.crop` in the training config):
    `augment="dihedral"`, a random symmetry of the square per window (frames and mask alike);
    `crop`, a random crop per window; `warmup_steps`, a linear learning-rate ramp; `scaling`, the
    network's space (SCALINGS), with the HKO-7 balancing weights of the target pixels either way.
    With `val` (frames, masks), the validation loss every `val_every` steps (CPU time not charged to
    the budget), and `checkpoints`: the model's state at each new best, by step."""
    optimizer = torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.9)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1)))
    to_net = SCALINGS[scaling][0]
    rng = np.random.default_rng(seed)
    start_cpu, start_wall, steps, losses = time.process_time(), time.perf_counter(), 0, []
    val_cpu, val_curve, checkpoints, best = 0.0, [], {}, float("inf")
    model.train()
    while time.process_time() - start_cpu - val_cpu < budget_s:
        rows = rng.choice(len(frames), size=min(batch, len(frames)), replace=False)
        x = torch.from_numpy(frames[rows]).float() / 255.0
        mask = torch.from_numpy(masks[rows]).float()
        if crop is not None:
            x, mask = random_crop(x, mask, size=crop)
        if augment == "dihedral":
            x, mask = random_dihedral(x, mask)
        loss = balanced_mse(*forward(model, x, mask, to_net))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        warmup.step()
        steps += 1
        losses.append(float(loss.detach()))
        if val is not None and steps % val_every == 0:
            started = time.process_time()
            val_curve.append((steps, validation_loss(model, *val, batch, to_net)))
            if val_curve[-1][1] < best:  # strictly lower, as the training loop's train.patience counts it
                best, checkpoints[steps] = val_curve[-1][1], copy.deepcopy(model.state_dict())
            val_cpu += time.process_time() - started
    model.eval()
    return dict(steps=steps, windows_seen=steps * batch, cpu_s=time.process_time() - start_cpu - val_cpu,
                val_cpu_s=val_cpu, wall_s=time.perf_counter() - start_wall, first_losses=losses[:5],
                last_losses=losses[-5:], val_curve=val_curve, checkpoints=checkpoints)


def forward(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, to_net) -> tuple:
    """balanced_mse's arguments for windows `x` `[B, 20, 1, H, W]` of [0, 1] pixels and their valid-pixel mask."""
    net_x = to_net(x)
    return model(net_x[:, :IN_LEN]), net_x[:, IN_LEN:], mask[:, IN_LEN:], x[:, IN_LEN:]


def validation_loss(model: torch.nn.Module, frames: np.ndarray, masks: np.ndarray, batch: int, to_net) -> float:
    """Mean balanced MSE over the validation windows (the loss `train.patience` watches)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(frames[i:i + batch]).float() / 255.0
            prediction, target, mask, weights = forward(model, x, torch.from_numpy(masks[i:i + batch]).float(), to_net)
            total += float(balanced_mse(prediction, target, mask, weighted_by=weights)) * len(x)
    model.train()
    return total / len(frames)


def early_stop(val_curve: list[tuple[int, float]], patience: int) -> tuple[int, int] | None:
    """(step where training would stop, step of the best checkpoint it keeps) after `patience`
    validations without improvement, or None if it would not stop."""
    best_step, best, since = None, float("inf"), 0
    for step, loss in val_curve:
        if loss < best:
            best_step, best, since = step, loss, 0
        else:
            since += 1
            if since >= patience:
                return step, best_step
    return None


def score(forecast: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    """Per-lead MSE ([0, 1] pixels), CSI at 0.5 mm/h and correlation (mm/h) over valid pixels."""
    valid = mask.astype(bool)
    squared = (forecast - target) ** 2 * valid
    mse = squared.sum(axis=(0, 2, 3, 4)) / np.maximum(valid.sum(axis=(0, 2, 3, 4)), 1)
    pred_mmh, target_mmh = scaled_pixel_to_rainrate(np.clip(forecast, 0, 1)), scaled_pixel_to_rainrate(target)
    csi, correlation = CategoricalScores([THRESHOLD_MMH], OUT_LEN), CorrelationScore(OUT_LEN)
    csi.update(pred_mmh, target_mmh, valid)
    correlation.update(pred_mmh, target_mmh, valid)
    csi_result, corr_result = csi.compute(), correlation.compute()
    return {"mse": mse.tolist(), "csi": csi_result["csi"][0].tolist(),
            "correlation": np.asarray(corr_result["correlation"]).tolist(),
            "mse_mean": float(mse.mean()), "csi_overall": float(csi_result["csi_overall"][0]),
            "correlation_overall": float(corr_result["correlation_overall"])}


def predict(model: torch.nn.Module, inputs: np.ndarray, scaling: str) -> np.ndarray:
    """The model's forecasts `[N, 15, 1, H, W]` ([0, 1] pixels) of input windows `[N, 5, 1, H, W]`."""
    to_net, from_net = SCALINGS[scaling]
    with torch.no_grad():
        return np.concatenate([from_net(model(to_net(torch.from_numpy(inputs[i:i + 4])))).numpy()
                               for i in range(0, len(inputs), 4)])


def plot(results: dict, minutes: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, label in zip(axes, ("mse", "csi", "correlation"),
                              ("MSE ([0, 1] pixels)", f"CSI at {THRESHOLD_MMH} mm/h", "correlation")):
        for name, result in results.items():
            ax.plot(minutes, result[key], marker="o", markersize=3, label=name)
        ax.set_xlabel("lead time (min)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def recipe(args: argparse.Namespace) -> str:
    """The training recipe in a few words, for titles."""
    parts = [f"augment {args.augment}", f"scaling {args.scaling}"]
    if args.crop:
        parts.append(f"crops {args.crop}")
    if args.warmup_steps:
        parts.append(f"warm-up {args.warmup_steps}")
    if args.val_fraction:
        parts.append(f"validation {args.val_fraction:g}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sources = [s for s in args.sources.split(",") if s]
    baselines = tuple(b for b in args.baselines.split(",") if b)
    try:
        check_baselines(baselines)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise SystemExit(f"--sources: unknown {unknown} (have {', '.join(SOURCES)})")
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    paths = prepare(sources, args.data, args.work, args.size, args.test_fraction, args.val_fraction)
    prepare_s = time.perf_counter() - start
    train_frames, train_masks, train_sources = read(paths, "train")
    test_frames, test_masks, test_sources = read(paths, "test")
    counts = {"training": train_sources, "test": test_sources}
    val = None
    if args.val_fraction:
        *val, counts["validation"] = read(paths, "val")
    print(f"prepared {', '.join(sources)} in {prepare_s:.0f} s: " + "; ".join(
        f"{len(names)} {split} windows ({', '.join(f'{s} {names.count(s)}' for s in sources if s in names)})"
        for split, names in counts.items()))

    hidden = [int(c) for c in args.hidden.split(",")]
    model = EncoderForecaster(1, hidden, 3, 3, patch_size=2, peephole=True, out_frames=OUT_LEN,
                              output_activation="sigmoid")
    training = train(model, train_frames, train_masks, 60 * args.budget_min, args.batch, args.lr, args.seed,
                     args.augment, args.crop, args.warmup_steps, args.scaling, val, args.val_every)
    checkpoints = training.pop("checkpoints")
    print(f"trained {training['steps']} steps ({training['windows_seen']} windows) in {training['cpu_s']:.0f} CPU s "
          f"({training['wall_s']:.0f} wall s); balanced MSE {training['first_losses'][0]:.1f} -> "
          f"{np.mean(training['last_losses']):.1f}")

    x = test_frames.astype(np.float32) / 255.0
    inputs, target, mask = x[:, :IN_LEN], x[:, IN_LEN:], test_masks[:, IN_LEN:]
    forecasts = {"model": predict(model, inputs, args.scaling)}
    if checkpoints:
        best_step = max(checkpoints)
        stop = early_stop(training["val_curve"], args.patience)
        training["best_step"], training["early_stop"] = best_step, stop and dict(step=stop[0], kept=stop[1])
        print(f"validation loss {training['val_curve'][0][1]:.1f} (step {training['val_curve'][0][0]}) -> best "
              f"{min(loss for _, loss in training['val_curve']):.1f} (step {best_step}) -> last "
              f"{training['val_curve'][-1][1]:.1f}; patience {args.patience} "
              + (f"stops at step {stop[0]}, keeping step {stop[1]}" if stop else "would not have stopped"))
        for name, step in (("model, best on val.", best_step), (f"model, patience {args.patience}", stop and stop[1])):
            if step and step != training["steps"]:
                model.load_state_dict(checkpoints[step])
                forecasts[name] = predict(model, inputs, args.scaling)
    for name in baselines:
        forecasts[name] = get_baseline(name, OUT_LEN)(inputs)
    results = {name: score(f, target, mask) for name, f in forecasts.items()}

    minutes = [5.0 * (lead + 1) for lead in range(OUT_LEN)]
    summary = dict(sources=sources, size=args.size, in_len=IN_LEN, out_len=OUT_LEN, test_fraction=args.test_fraction,
                   train_windows=len(train_frames), test_windows=len(test_frames), hidden=hidden,
                   parameters=sum(p.numel() for p in model.parameters()), budget_min=args.budget_min,
                   augment=args.augment, crop=args.crop, warmup_steps=args.warmup_steps, scaling=args.scaling,
                   val_fraction=args.val_fraction, val_windows=len(val[0]) if val else 0, val_every=args.val_every,
                   patience=args.patience,
                   threads=torch.get_num_threads(), training=training, prepare_s=prepare_s,
                   load_average=list(os.getloadavg()), results=results)
    (args.out / "skill.json").write_text(json.dumps(summary, indent=1))
    plot(results, minutes, args.out / "skill.png",
         f"{len(test_frames)} test windows ({', '.join(sources)}), model {hidden} after "
         f"{args.budget_min:g} CPU min ({training['steps']} steps, {recipe(args)})")
    print(f"{'':<22} {'MSE':>8} {'CSI@0.5':>8} {'corr':>6}   CSI@0.5 mm/h at 5 / 30 / 60 / 75 min")
    for name, r in results.items():
        print(f"{name:<22} {r['mse_mean']:>8.5f} {r['csi_overall']:>8.3f} {r['correlation_overall']:>6.3f}   "
              + " / ".join(f"{r['csi'][i]:.3f}" for i in (0, 5, 11, 14)))
    print(f"wrote {args.out / 'skill.json'} and {args.out / 'skill.png'}")
    return summary


if __name__ == "__main__":
    main()
