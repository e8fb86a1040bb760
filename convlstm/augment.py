"""Training-time augmentation of frame sequences `[B, T, C, H, W]`.

Random crops: one `size` x `size` window per sequence, at the same place in every frame (and mask), so a
model trains on more, cheaper steps of full-resolution data and is scored on whole frames (it is fully
convolutional). The eight symmetries of the square (identity, three 90° rotations, and each of those mirrored)
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


def random_crop(*tensors: torch.Tensor, size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """One random `size` x `size` crop per sequence (axis 0), at the same place in every tensor given
    (frames, mask) and every frame; tensors are `[B, ...]` with frames on the last two axes."""
    batch = tensors[0].shape[0]
    height, width = tensors[0].shape[-2:]
    if not 1 <= size <= min(height, width):
        raise ValueError(f"crop size {size} does not fit {height}x{width} frames")
    tops = torch.randint(height - size + 1, (batch,), generator=generator).tolist()
    lefts = torch.randint(width - size + 1, (batch,), generator=generator).tolist()
    return tuple(torch.stack([t[i, ..., top:top + size, left:left + size] for i, (top, left) in enumerate(zip(tops, lefts))])
                 for t in tensors)
