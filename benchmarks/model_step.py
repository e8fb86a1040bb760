"""Train-step throughput: this library's ConvLSTMClassifier vs the PyTorch tutorial's ConvLSTMKTH.

Both models get the same weights (the tutorial's, converted by `convlstm.interop`) and the same
clips; their float32 logits are first checked equal to 1e-5. A step is forward + cross-entropy
+ backward + Adam. Steps alternate (tutorial, ours, tutorial, ours, ...) so load on a shared
machine hits both alike; the speedup is the ratio of median step times, printed beside the
median of the ratios of adjacent pairs and the ratio of median process CPU times (with one
thread the least load-sensitive of the three). GFLOP/s counts the ConvLSTM convolutions
analytically (2 FLOPs per multiply-add, forward x 3 for forward + backward) for the tutorial's
formulation, so both rates measure the same useful work.

    python benchmarks/model_step.py --threads 2 --iters 7 --warmup 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "helpers"), str(REPO / "benchmarks")]

import machine  # noqa: E402
from convlstm.interop import classifier_from_tutorial  # noqa: E402
from tutorial_reference import ConvLSTMKTH, tutorial_config  # noqa: E402

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SWITCHES = {"auto": None, "on": True, "off": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--height", type=int, default=60)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--iters", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--tf32", choices=["on", "off"], default="on",
                        help="CUDA: let float32 matmuls and convolutions use TF32 while timing (cuDNN's default); "
                             "the equality check always runs in full float32. Report TF32 and bf16 (--amp bf16) "
                             "runs separately")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--hoist-input", choices=sorted(SWITCHES), default="auto",
                        help="ablation: ConvLSTM.hoist_input of the library's model")
    parser.add_argument("--channels-last", choices=sorted(SWITCHES), default="auto",
                        help="ablation: ConvLSTM.channels_last of the library's model")
    args = parser.parse_args(argv)
    for name in ("batch", "frames", "height", "width", "iters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    return args


def cpu_description() -> dict:
    """The machine (benchmarks/machine.py) plus the ISA that torch's kernels dispatch to, the oneDNN
    ISA cap if set and the stack's automatic CPU choices."""
    from convlstm.stack import cpu_execution_choices

    return dict(machine.describe(), torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                onednn_max_cpu_isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
                auto_choices=cpu_execution_choices())


def conv_flops_per_step(model: ConvLSTMKTH, batch: int, frames: int, height: int, width: int) -> float:
    """Forward + backward FLOPs of the ConvLSTM convolutions for one train step (3 x forward)."""
    macs_per_pixel = sum(cell.conv.weight.numel() for cell in model.conv_lstm.cell_list)
    return 3 * 2 * macs_per_pixel * batch * frames * height * width


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA float32 matmuls and cuDNN convolutions (no effect on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def matmul_gflops(device: torch.device, size: int = 2048, reps: int = 5) -> float:
    """Median float32 rate of a size x size matmul on `device`."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    times = []
    for _ in range(reps + 1):
        start = _now(device)
        a @ b
        times.append(_now(device) - start)
    return 2 * size**3 / statistics.median(times[1:]) / 1e9


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def make_step(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, amp: torch.dtype | None):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    tutorial = ConvLSTMKTH(tutorial_config(height=args.height, width=args.width)).to(device)
    ours = classifier_from_tutorial(tutorial.state_dict(), height=args.height, width=args.width).to(device)
    ours.convlstm.hoist_input = SWITCHES[args.hoist_input]
    ours.convlstm.channels_last = SWITCHES[args.channels_last]
    cpu = cpu_description()
    x = torch.rand(args.batch, args.frames, 1, args.height, args.width, device=device)
    labels = torch.randint(0, 6, (args.batch,), device=device)

    set_tf32(False)  # TF32 rounds float32 inputs to 10-bit mantissas: 1e-5 would not hold on Ampere+
    with torch.no_grad():
        max_diff = (tutorial(x) - ours(x)).abs().max().item()
    if max_diff > 1e-5:
        raise SystemExit(f"outputs differ by {max_diff:.3g} > 1e-5: not the same function")
    set_tf32(device.type == "cuda" and args.tf32 == "on")

    models = {"tutorial": tutorial, "convlstm": ours}
    if args.compile:
        models = {name: torch.compile(m) for name, m in models.items()}
    steps = {name: make_step(m, x, labels, AMP_DTYPES[args.amp]) for name, m in models.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}  # wall seconds per step
    cpu_times = {name: [] for name in steps}  # this process's CPU seconds (all threads) per step
    for _ in range(args.iters):
        for name, step in steps.items():
            start, cpu_start = _now(device), time.process_time()
            step()
            times[name].append(_now(device) - start)
            cpu_times[name].append(time.process_time() - cpu_start)

    flops = conv_flops_per_step(tutorial, args.batch, args.frames, args.height, args.width)
    median = {name: statistics.median(t) for name, t in times.items()}
    cpu_median = {name: statistics.median(t) for name, t in cpu_times.items()}
    result = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        threads=torch.get_num_threads(), torch=torch.__version__, batch=args.batch, frames=args.frames,
        height=args.height, width=args.width, amp=args.amp, compile=args.compile, iters=args.iters,
        tf32=device.type == "cuda" and args.tf32 == "on",
        hoist_input=args.hoist_input, channels_last=args.channels_last,
        max_abs_diff=max_diff, conv_gflop_per_step=flops / 1e9,
        **{f"{name}_clips_per_s": args.batch / median[name] for name in median},
        **{f"{name}_gflops": flops / median[name] / 1e9 for name in median},
        **{f"{name}_cpu_s_per_step": cpu_median[name] for name in median},
        speedup=median["tutorial"] / median["convlstm"],
        paired_speedup=statistics.median(t / o for t, o in zip(times["tutorial"], times["convlstm"])),
        cpu_speedup=cpu_median["tutorial"] / cpu_median["convlstm"],
        matmul_gflops=matmul_gflops(device), **cpu,
        load_average_end=[round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    )
    print(f"CPU: {cpu['cpu_model']} ({cpu['logical_cpus']} logical CPUs); vector extensions: "
          f"{' '.join(cpu['vector_extensions']) or 'unknown'}; torch kernels: {cpu['torch_cpu_capability']}"
          f"{'; ONEDNN_MAX_CPU_ISA=' + cpu['onednn_max_cpu_isa'] if cpu['onednn_max_cpu_isa'] else ''}; "
          f"load average {cpu['load_average']} at start, {result['load_average_end']} at end")
    print(f"automatic execution choices on this CPU: {cpu['auto_choices']}")
    print(f"{result['device']} ({result['threads']} threads), torch {result['torch']}, batch {args.batch}, "
          f"clip {args.frames}x1x{args.height}x{args.width}, amp {args.amp}, tf32 {result['tf32']}, "
          f"compile {args.compile}, "
          f"hoist_input {args.hoist_input}, channels_last {args.channels_last}")
    print(f"float32 outputs equal: max |diff| {max_diff:.2e}")
    print(f"{'model':<10} {'median s/step':>14} {'clips/s':>9} {'GFLOP/s':>9} {'CPU s/step':>11}  steps (s)")
    for name in steps:
        print(f"{name:<10} {median[name]:>14.3f} {args.batch / median[name]:>9.2f} "
              f"{flops / median[name] / 1e9:>9.1f} {cpu_median[name]:>11.3f}  "
              f"{' '.join(f'{t:.2f}' for t in times[name])}")
    print(f"speedup {result['speedup']:.2f}x (median of per-pair ratios {result['paired_speedup']:.2f}x, "
          f"of CPU time {result['cpu_speedup']:.2f}x); "
          f"conv work {flops / 1e9:.1f} GFLOP/step; fp32 matmul 2048x2048: {result['matmul_gflops']:.1f} GFLOP/s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
