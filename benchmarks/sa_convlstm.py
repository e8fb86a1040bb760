"""SA-ConvLSTM vs ConvLSTM: train-step time and peak memory as the map grows, and Moving MNIST scores.

Part 1, step cost. One stack layer (`convlstm.stack.ConvLSTM`, ConvLSTM or SA-ConvLSTM cells, equal
hidden sizes) trained on random `[B, T, 1, S, S]` clips for each map side S (default 64 and 100:
N = S*S attention positions, 4096 and 10,000). A step is forward, MSE, backward and Adam. Each case
runs in its own process: median step time (wall and process CPU; "vs conv" compares CPU times,
the less load-sensitive of the two on a shared machine), and peak memory as the process's ru_maxrss minus its
resident size just before the first step (the step's working set: activations kept for the
backward pass, gradients, Adam state). `sa-math` forces the math backend of
`scaled_dot_product_attention`, which materialises the N x N attention matrices; it is skipped
when its estimated saved softmax (2 attentions x B x T x N^2 x 4 bytes) exceeds --math-limit-gb GiB.

Part 2, Moving MNIST. EncoderForecaster with each cell (same hidden sizes, 4x4 patches, 10 -> 10
frames of 64x64, 2 digits; `pipelines.mnist`'s generator on the shared MNIST test images, no Ray),
trained on the same batches in the same order for the same budget of process CPU seconds (or of
steps, `--budget-steps`), then
scored on held-out sequences: MSE per pixel against persistence (last input frame repeated) and
the blank forecast (all zeros).

    python benchmarks/sa_convlstm.py --threads 1 --budget 90
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
import machine  # noqa: E402
from machine import rss_mb  # noqa: E402

MNIST = REPO.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
MODELS = ("conv", "sa", "sa-math")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every process")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 100], help="map sides S for part 1")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--hidden", type=int, default=16, help="hidden channels of the part-1 layer")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--math-limit-gb", type=float, default=3.0, help="skip sa-math above this many GiB")
    parser.add_argument("--budget", type=float, default=90.0, help="CPU seconds of training per model (part 2)")
    parser.add_argument("--budget-steps", type=int, default=None,
                        help="part 2: train each model this many steps instead of --budget CPU seconds")
    parser.add_argument("--mnist-hidden", type=int, nargs="+", default=[32, 32])
    parser.add_argument("--mnist-batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-sequences", type=int, default=1024)
    parser.add_argument("--eval-sequences", type=int, default=256)
    parser.add_argument("--mnist", type=Path, default=MNIST, help="MNIST IDX images (gzip or raw)")
    parser.add_argument("--skip-steps", action="store_true", help="skip part 1")
    parser.add_argument("--skip-mnist", action="store_true", help="skip part 2")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one part-1 case, "model:size"
    return parser.parse_args(argv)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in machine.load_average() or []) or "?"


# --- part 1 ---------------------------------------------------------------------------------------

def run_case(args: argparse.Namespace) -> dict:
    """One (model, size) case in this process; printed as JSON by the child."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from convlstm.cell import ConvLSTMCell
    from convlstm.sa_cell import SAConvLSTMCell
    from convlstm.stack import ConvLSTM

    model_name, size = args.case.split(":")
    size = int(size)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cell = ConvLSTMCell if model_name == "conv" else SAConvLSTMCell
    stack = ConvLSTM(1, [args.hidden], 3, cell_factory=cell)
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-3)
    x = torch.rand(args.batch, args.frames, 1, size, size)
    target = torch.rand(args.batch, args.frames, args.hidden, size, size)
    def backend():  # a fresh context manager per step (they are single-use)
        return sdpa_kernel(SDPBackend.MATH) if model_name == "sa-math" else contextlib.nullcontext()

    def step() -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        with backend():
            (out,), _ = stack(x)
            loss = F.mse_loss(out, target)
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        return time.perf_counter() - start, time.process_time() - cpu_start

    baseline = rss_mb()
    warmup = step()
    times = [step() for _ in range(args.iters)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model_name, "size": size, "positions": size * size, "warmup_s": warmup[0],
            "step_s": statistics.median(t for t, _ in times), "step_cpu_s": statistics.median(c for _, c in times),
            "steps_s": times, "baseline_rss_mb": baseline, "peak_rss_mb": peak, "step_peak_mb": peak - baseline}


def math_softmax_gb(args: argparse.Namespace, size: int) -> float:
    return 2 * args.batch * args.frames * (size * size) ** 2 * 4 / 2**30


def part1(args: argparse.Namespace) -> list[dict]:
    results = []
    print(f"\nPart 1: one layer, hidden {args.hidden}, batch {args.batch}, {args.frames} frames, 3x3 kernels; "
          f"median of {args.iters} steps after 1 warm-up")
    print(f"{'model':8} {'map':>8} {'N':>6} {'N^2 scores':>11} {'step s':>8} {'CPU s':>8} {'vs conv':>8} "
          f"{'step peak MiB':>13}  load before / after")
    for size in args.sizes:
        conv_step = None
        for model_name in args.models:
            if model_name == "sa-math" and math_softmax_gb(args, size) > args.math_limit_gb:
                print(f"{model_name:8} {size:>4}x{size:<3} {size * size:>6} {(size * size) ** 2:>11.3g} skipped: "
                      f"saved softmax ~{math_softmax_gb(args, size):.1f} GiB > --math-limit-gb {args.math_limit_gb}")
                continue
            command = [sys.executable, __file__, "--case", f"{model_name}:{size}", "--hidden", str(args.hidden),
                       "--batch", str(args.batch), "--frames", str(args.frames), "--iters", str(args.iters)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            before = load()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{model_name:8} {size:>4}x{size:<3} failed (exit {done.returncode}): "
                      f"{done.stderr.strip()[-300:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["load"] = f"{before} / {load()}"
            conv_step = result["step_cpu_s"] if model_name == "conv" else conv_step
            ratio = f"{result['step_cpu_s'] / conv_step:.1f}x" if conv_step else "-"
            print(f"{model_name:8} {size:>4}x{size:<3} {size * size:>6} {(size * size) ** 2:>11.3g} "
                  f"{result['step_s']:>8.2f} {result['step_cpu_s']:>8.2f} {ratio:>8} {result['step_peak_mb']:>13.0f}  "
                  f"{result['load']}", flush=True)
            results.append(result)
    return results


# --- part 2 ---------------------------------------------------------------------------------------

def moving_mnist(args: argparse.Namespace):
    import numpy as np
    import torch

    from pipelines.mnist import MnistOptions, load_idx_images, sequence, subset_indices

    options = MnistOptions()
    images = load_idx_images(args.mnist)
    digits = images[subset_indices(len(images), options.subset, options.seed)]

    def split(name: str, count: int) -> torch.Tensor:
        frames = np.stack([sequence(digits, name, i, options) for i in range(count)])
        return torch.from_numpy(frames)[:, :, None]  # uint8 [count, 20, 1, 64, 64]

    return split("train", args.train_sequences), split("test", args.eval_sequences)


def part2(args: argparse.Namespace) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from convlstm.networks import EncoderForecaster

    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = moving_mnist(args)
    test = test.float() / 255
    inputs, target = test[:, :10], test[:, 10:]
    persistence = F.mse_loss(inputs[:, -1:].expand_as(target), target).item()
    blank = target.square().mean().item()
    print(f"\nPart 2: Moving MNIST 10 -> 10, 64x64, 2 digits; EncoderForecaster hidden {args.mnist_hidden}, "
          f"3x3 kernels, 4x4 patches; BCE on logits, Adam lr {args.lr}, batch {args.mnist_batch}, "
          f"{f'{args.budget_steps} steps' if args.budget_steps else f'{args.budget:g} CPU s'} each; "
          f"{len(train)} training sequences (cycled), {len(test)} test sequences")
    print(f"persistence MSE {persistence:.5f}, blank (zeros) MSE {blank:.5f}")
    results = []
    for cell in ("conv", "sa"):
        torch.manual_seed(0)
        model = EncoderForecaster(1, args.mnist_hidden, 3, 3, patch_size=4, peephole=False, out_frames=10,
                                  output_activation=None, cell=cell)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        cpu, wall, steps, before = 0.0, time.perf_counter(), 0, load()
        while (steps < args.budget_steps) if args.budget_steps else (cpu < args.budget):
            start = (steps * args.mnist_batch) % len(train)
            clips = train[start:start + args.mnist_batch].float() / 255
            cpu_start = time.process_time()
            loss = F.binary_cross_entropy_with_logits(model(clips[:, :10]), clips[:, 10:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            cpu += time.process_time() - cpu_start
            steps += 1
        wall = time.perf_counter() - wall
        with torch.no_grad():
            forecast = torch.cat([torch.sigmoid(model(inputs[i:i + 32])) for i in range(0, len(inputs), 32)])
        mse = F.mse_loss(forecast, target).item()
        result = {"cell": cell, "params": sum(p.numel() for p in model.parameters()), "steps": steps,
                  "cpu_s": cpu, "wall_s": wall, "mse": mse, "mse_vs_persistence": mse / persistence,
                  "mse_vs_blank": mse / blank, "persistence_mse": persistence, "blank_mse": blank,
                  "load": f"{before} / {load()}", "last_loss": loss.item()}
        print(f"{cell:5} params {result['params']:>7}  steps {steps:>5}  cpu {cpu:6.1f} s  wall {wall:6.1f} s  "
              f"MSE {mse:.5f}  / persistence {mse / persistence:.3f}  / blank {mse / blank:.3f}  "
              f"(per frame {mse * 64 * 64:.1f})  load {result['load']}", flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return
    import torch

    info = machine.describe()
    print(machine.line(info))
    print(f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, "
          f"CUDA {'available' if torch.cuda.is_available() else 'not available'}, load average {load()}")
    results = {"machine": info, "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
               "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_steps:
        results["steps"] = part1(args)
    if not args.skip_mnist:
        results["mnist"] = part2(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
