"""Shared builders for the stack tests (ConvLSTM and SA-ConvLSTM cells): a seeded two-layer stack
and a seeded random clip `[B, T, C, H, W]`."""
from __future__ import annotations

import torch

from convlstm.stack import ConvLSTM


def make_stack(**kwargs) -> ConvLSTM:
    """ConvLSTM(2 -> [4, 3], 3x3, peepholes), seeded; keyword arguments override (e.g. `cell_factory`)."""
    torch.manual_seed(0)
    args = dict(in_channels=2, hidden_channels=[4, 3], input_kernel_size=3, peephole=True)
    args.update(kwargs)
    return ConvLSTM(**args)


def clip(batch=2, steps=5, channels=2, height=7, width=6, seed=1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(batch, steps, channels, height, width)
