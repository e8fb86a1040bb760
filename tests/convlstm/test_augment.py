"""convlstm.augment: the eight symmetries of the square, applied alike to a window's frames and mask."""
from __future__ import annotations

import pytest
import torch

from convlstm.augment import DIHEDRAL, dihedral, random_crop, random_dihedral


def test_the_eight_symmetries_are_distinct_and_invertible():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)  # no symmetry of its own
    images = [dihedral(image, k) for k in range(DIHEDRAL)]
    assert len({tuple(x.flatten().tolist()) for x in images}) == DIHEDRAL
    for k, x in enumerate(images):  # undo: mirror back, then turn back
        undone = torch.rot90(x.flip(-1) if k >= 4 else x, -(k % 4), dims=(-2, -1))
        assert torch.equal(undone, image)


def test_one_symmetry_per_window_shared_by_its_frames_and_mask():
    torch.manual_seed(0)
    frames = torch.rand(16, 5, 1, 6, 6)
    mask = frames > 0.5  # a mask derived from the frames must still match them afterwards
    out_frames, out_mask = random_dihedral(frames, mask)
    assert out_frames.shape == frames.shape and out_mask.dtype == torch.bool
    assert torch.equal(out_mask, out_frames > 0.5)
    for i in range(len(frames)):  # every window got one of the symmetries, all its frames the same one
        assert any(torch.equal(out_frames[i], dihedral(frames[i], k)) for k in range(DIHEDRAL))
    assert not torch.equal(out_frames, frames)  # 16 windows: the identity for all has odds 8**-16


def test_seeded_generator_repeats():
    frames = torch.rand(4, 3, 1, 5, 5)
    a = random_dihedral(frames, generator=torch.Generator().manual_seed(3))[0]
    b = random_dihedral(frames, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


def test_non_square_frames_refused():
    with pytest.raises(ValueError, match="square"):
        random_dihedral(torch.rand(2, 3, 1, 4, 6))


def test_one_crop_per_window_shared_by_its_frames_and_mask():
    frames = torch.arange(4 * 3 * 8 * 10, dtype=torch.float32).reshape(4, 3, 1, 8, 10)  # every pixel distinct
    mask = frames.long() % 3 == 0
    out_frames, out_mask = random_crop(frames, mask, size=4, generator=torch.Generator().manual_seed(0))
    assert out_frames.shape == (4, 3, 1, 4, 4) and torch.equal(out_mask, out_frames.long() % 3 == 0)
    for i in range(4):  # a window's frames share one crop: recover its corner from the first pixel
        top, left = divmod(int(out_frames[i, 0, 0, 0, 0] - frames[i, 0, 0, 0, 0]), 10)
        assert torch.equal(out_frames[i], frames[i, ..., top:top + 4, left:left + 4])
    with pytest.raises(ValueError, match="does not fit 8x10"):
        random_crop(frames, size=9)
