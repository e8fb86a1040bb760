"""Training-time augmentation of frame sequences `[B, T, C, H, W]`.

The eight symmetries of the square (identity, three 90° rotations, and each of those mirrored)
applied per sequence: every frame of a sequence (and its mask) gets the same transform, so motion
stays coherent through the sequence while its direction changes. Radar fields have no preferred
orientation in their physics, only in their climatology (prevailing winds), which is what the
model is asked to learn less of; `benchmarks/skill.py --augment` measures what that buys.
"""
from __future__ import annotations

import torch

DIHEDRAL = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry `k` (0..7) of the square applied to the last two axes: `k % 4` quarter turns, then a
    left-right mirror when `k >= 4`. Quarter turns of non-square frames change their shape."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def random_dihedral(*tensors: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """One random symmetry per sequence (axis 0), the same for every tensor given (frames, mask);
    tensors are `[B, ...]` with square frames on the last two axes."""
    batch = tensors[0].shape[0]
    height, width = tensors[0].shape[-2:]
    if height != width:
        raise ValueError(f"random_dihedral needs square frames, got {height}x{width}")
    ks = torch.randint(DIHEDRAL, (batch,), generator=generator).tolist()
    return tuple(torch.stack([dihedral(t[i], k) for i, k in enumerate(ks)]) for t in tensors)
