"""Models that visibly learn: a few hundred optimiser steps on synthetic moving blobs must beat
simple references by a wide margin, so a broken loss, scaling, mask, patching or optimiser wiring
fails here even when every shape and gradient check still passes.

Data are made the way the pipeline stores them: uint8 windows `[N, T, 1, H, W]` (plus a uint8
validity mask for the forecaster), scaled by 1/255 to [0, 1] at batch time. Everything is seeded
and runs on one thread (each test is a few seconds on an idle core).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_threads import single_thread  # noqa: F401 (autouse fixture)

from convlstm.baselines import persistence
from convlstm.losses import mse_loss
from convlstm.networks import ConvLSTMClassifier, EncoderForecaster

SIZE, IN_LEN, OUT_LEN = 16, 4, 4
SIGMA = 2.5
SPEED = (0.5, 1.0)  # px/frame


def blob_frames(rng: np.random.Generator, frames: int, velocity: tuple[float, float],
                start: tuple[float, float] | None = None) -> np.ndarray:
    """`[frames, 1, SIZE, SIZE]` uint8: a Gaussian blob (peak 255) moving `velocity` (vx, vy) px/frame,
    starting where it stays inside the frame for the whole clip (unless `start` is given)."""
    vx, vy = velocity
    if start is None:
        span = [(2 + max(0.0, -v * (frames - 1)), SIZE - 3 - max(0.0, v * (frames - 1))) for v in (vx, vy)]
        start = tuple(rng.uniform(low, high) for low, high in span)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    clip = [np.exp(-((xs - start[0] - vx * t) ** 2 + (ys - start[1] - vy * t) ** 2) / (2 * SIGMA**2))
            for t in range(frames)]
    return np.rint(255 * np.stack(clip)).astype(np.uint8)[:, None]


def forecast_windows(n: int, seed: int, garbage_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """`n` windows of IN_LEN + OUT_LEN frames (uint8) and their masks (uint8, 1 = valid).

    Each window's blob moves at a random velocity of 0.75-1.5 px/frame in a random direction. A random
    `garbage_fraction` of the target frames' pixels is invalid (mask 0) and holds 255, like clutter
    or an undecoded nodata value: a loss that ignores the mask learns to forecast it.
    """
    rng = np.random.default_rng(seed)
    frames, masks = [], []
    for _ in range(n):
        speed, angle = rng.uniform(*SPEED), rng.uniform(0, 2 * np.pi)
        clip = blob_frames(rng, IN_LEN + OUT_LEN, (speed * np.cos(angle), speed * np.sin(angle)))
        mask = np.ones_like(clip)
        mask[IN_LEN:] = rng.random(mask[IN_LEN:].shape) >= garbage_fraction
        frames.append(np.where(mask == 1, clip, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(frames), np.stack(masks)


def split(frames: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 windows -> (input, target, target mask) as the training task does: frames / 255."""
    x = torch.from_numpy(frames).float() / 255.0
    return x[:, :IN_LEN], x[:, IN_LEN:], torch.from_numpy(masks[:, IN_LEN:]).float()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error over valid pixels, written out here so the score does not depend on the
    library's losses (which the training under test uses)."""
    return float(((pred - target) ** 2 * mask).sum() / mask.sum())


@pytest.mark.integration  # trains hundreds of steps
def test_encoder_forecaster_learns_moving_blobs_to_half_of_persistence_mse():
    torch.manual_seed(0)
    model = EncoderForecaster(1, hidden_channels=[32], input_kernel_size=3, hidden_kernel_size=3, patch_size=2,
                              peephole=False, out_frames=OUT_LEN, output_activation="sigmoid")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    train_x, train_y, train_mask = split(*forecast_windows(512, seed=1))
    test_x, test_y, test_mask = split(*forecast_windows(128, seed=2))
    persistence_mse = masked_mse(persistence(test_x, OUT_LEN), test_y, test_mask)
    # The bar means something: forecasting nothing, or the blur of the inputs, is far above it.
    assert masked_mse(torch.zeros_like(test_y), test_y, test_mask) > 2 * persistence_mse
    assert masked_mse(test_x.mean(dim=1, keepdim=True).expand_as(test_y), test_y, test_mask) > 1.5 * persistence_mse
    batch, generator = 16, torch.Generator().manual_seed(0)
    for _ in range(400):
        rows = torch.randint(0, len(train_x), (batch,), generator=generator)
        loss = mse_loss(model(train_x[rows]), train_y[rows], train_mask[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        forecast = model(test_x)
    assert 0 <= forecast.min() and forecast.max() <= 1  # sigmoid output: frames in the [0, 1] of the data
    model_mse = masked_mse(forecast, test_y, test_mask)
    assert model_mse < 0.5 * persistence_mse, (model_mse, persistence_mse)


def action_clips(n: int, seed: int, frames: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` clips in [0, 1]: label 0 = a blob moving left, 1 = moving right (1-2 px/frame, small vertical
    drift). Every clip ends anywhere in the middle of the frame, so the last frame alone (or any one
    frame) does not tell the classes apart: only the motion does."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    clips = []
    for label in labels:
        velocity = ((1 if label else -1) * rng.uniform(1.0, 2.0), rng.uniform(-0.5, 0.5))
        end = rng.uniform(4, SIZE - 5, size=2)
        clips.append(blob_frames(rng, frames, velocity, start=tuple(end - np.array(velocity) * (frames - 1))))
    return torch.from_numpy(np.stack(clips)).float() / 255.0, torch.from_numpy(labels)


@pytest.mark.integration  # trains hundreds of steps
def test_classifier_separates_left_from_right_motion():
    torch.manual_seed(0)
    model = ConvLSTMClassifier(1, SIZE, SIZE, hidden_channels=[8], kernel_size=3, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_x, train_y = action_clips(256, seed=3)
    test_x, test_y = action_clips(128, seed=4)
    batch, generator = 16, torch.Generator().manual_seed(0)
    for _ in range(150):
        rows = torch.randint(0, len(train_x), (batch,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(train_x[rows]), train_y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy >= 0.9, accuracy
