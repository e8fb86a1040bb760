"""The ConvLSTM input term W_x * X + b on the CPU: oneDNN's convolution vs im2col + matmul, per input width.

For each number of input channels, one train-time input term `[B, C, H, W] -> [B, 4 C_h, H, W]`
(forward, then the weight and bias gradients; X needs no gradient, as raw frames) computed by
`F.conv2d` and by `convlstm.cell._conv_as_matmul`, alternating; prints median process CPU ms and
the ratio. This sets `convlstm.cell.NARROW_INPUT`, the width below which the cell uses the matmul.

    python benchmarks/input_term.py --threads 1
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/input_term.py --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import machine  # noqa: E402
from convlstm.cell import NARROW_INPUT, _conv_as_matmul  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", default="1,2,4,8,16,32", help="input widths C")
    parser.add_argument("--hidden", type=int, default=32, help="C_h (the term has 4 C_h output channels)")
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--shape", default="8x60x80", help="B x H x W (default: the tutorial's KTH step)")
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, height, width = (int(v) for v in args.shape.split("x"))
    print(machine.line() + f"; torch kernels {torch.backends.cpu.get_cpu_capability()}; "
          f"{torch.get_num_threads()} threads; NARROW_INPUT = {NARROW_INPUT}")
    print(f"{'C':>3} {'conv ms':>9} {'matmul ms':>10} {'matmul / conv':>14}")
    for channels in (int(c) for c in args.channels.split(",")):
        x = torch.randn(batch, channels, height, width)
        weight = torch.randn(4 * args.hidden, channels, args.kernel, args.kernel, requires_grad=True)
        bias = torch.randn(4 * args.hidden, requires_grad=True)
        grad = torch.randn(batch, 4 * args.hidden, height, width)
        ways = {"conv": lambda: F.conv2d(x, weight, bias, padding=args.kernel // 2),
                "matmul": lambda: _conv_as_matmul(x, weight, bias, (args.kernel, args.kernel))}
        torch.testing.assert_close(ways["matmul"](), ways["conv"](), rtol=1e-4, atol=1e-4)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for i in range(args.iters + 1):
            for name, term in ways.items():
                start = time.process_time()
                torch.autograd.grad(term(), (weight, bias), grad)
                if i:  # the first round warms up
                    times[name].append(1e3 * (time.process_time() - start))
        conv, matmul = statistics.median(times["conv"]), statistics.median(times["matmul"])
        print(f"{channels:>3} {conv:>9.2f} {matmul:>10.2f} {matmul / conv:>14.2f}")


if __name__ == "__main__":
    main()
