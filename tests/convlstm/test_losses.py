"""Losses: BCE on logits (paper's measure), MSE/MAE reductions, HKO-7 balanced weights and B-MSE/B-MAE."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convlstm import units
from convlstm.losses import (balanced_mae, balanced_mse, bce_loss, hko_balance_weights, hko_thresholds_scaled,
                             mae_loss, mse_loss)


def pair(seed=0, shape=(2, 3, 1, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64), torch.rand(shape, generator=g, dtype=torch.float64)


def test_bce_sums_pixels_and_frames_and_averages_sequences():
    logits, target = pair()
    p = torch.sigmoid(logits)
    per_pixel = -(target * p.log() + (1 - target) * (1 - p).log())
    want = per_pixel.sum() / 2
    torch.testing.assert_close(bce_loss(logits, target), want)


def test_bce_is_stable_for_saturated_logits():
    logits = torch.tensor([200.0, -200.0]).view(1, 1, 1, 1, 2)
    assert bce_loss(logits, torch.tensor([1.0, 0.0]).view(1, 1, 1, 1, 2)).item() == 0.0
    assert bce_loss(logits, torch.tensor([0.0, 1.0]).view(1, 1, 1, 1, 2)).item() == pytest.approx(400.0)


def test_mse_mae_sum_per_frame_mean_over_frames_and_sequences():
    pred, target = pair()
    torch.testing.assert_close(mse_loss(pred, target), ((pred - target) ** 2).sum() / 6)
    torch.testing.assert_close(mae_loss(pred, target), (pred - target).abs().sum() / 6)


def test_mask_drops_pixels_and_broadcasts():
    pred, target = pair(shape=(2, 3, 2, 4, 5))
    mask = torch.ones(2, 3, 1, 4, 5, dtype=torch.uint8)
    mask[..., :2, :] = 0
    kept = (slice(None),) * 3 + (slice(2, None),)
    torch.testing.assert_close(mse_loss(pred, target, mask), ((pred - target)[kept] ** 2).sum() / 6)
    torch.testing.assert_close(bce_loss(pred, target, mask), bce_loss(pred[kept], target[kept]))
    torch.testing.assert_close(balanced_mae(pred, target, mask), balanced_mae(pred[kept], target[kept]))


def test_hko_weights_at_the_threshold_rain_rates():
    thresholds = hko_thresholds_scaled().float()
    below, at = thresholds - 1e-4, thresholds
    target = torch.cat([torch.tensor([0.0]), torch.stack([below, at], 1).flatten(), torch.tensor([1.0])])
    weights = hko_balance_weights(target)
    assert weights.tolist() == [1, 1, 2, 2, 5, 5, 10, 10, 30, 30]


def test_hko_weights_agree_with_units_on_every_pixel_value():
    pixels = np.arange(256)
    rate = units.pixel_to_rainrate(pixels)
    want = np.select([rate >= 30, rate >= 10, rate >= 5, rate >= 2], [30, 10, 5, 2], default=1)
    got = hko_balance_weights(torch.from_numpy(pixels / 255.0))
    np.testing.assert_array_equal(got.numpy(), want)


def test_balanced_losses_weight_each_pixel():
    pred, target = pair()
    weights = hko_balance_weights(target)
    assert weights.max() > 1  # random [0, 1] targets cover heavy rain
    torch.testing.assert_close(balanced_mse(pred, target), (weights * (pred - target) ** 2).sum() / 6)
    torch.testing.assert_close(balanced_mae(pred, target), (weights * (pred - target).abs()).sum() / 6)


def test_balanced_mse_weights_from_another_tensor():
    """`weighted_by` sets the weights when prediction and target live in another space (e.g. log rain)."""
    pred, target = pair()
    pixels = torch.rand_like(target)
    want = (hko_balance_weights(pixels) * (pred - target) ** 2).sum() / 6
    torch.testing.assert_close(balanced_mse(pred, target, weighted_by=pixels), want)
    assert not torch.allclose(balanced_mse(pred, target, weighted_by=pixels), balanced_mse(pred, target))


def test_bad_shapes_raise():
    pred, target = pair()
    with pytest.raises(ValueError, match="target"):
        mse_loss(pred, target[:, :2])
    with pytest.raises(ValueError, match="mask"):
        balanced_mse(pred, target, torch.ones(2, 2, 1, 4, 5))
    with pytest.raises(ValueError, match="pred"):
        bce_loss(pred[0], target[0])


def test_rainfall_mse_is_the_metrics_squared_rain_rate_error_per_frame():
    from convlstm.losses import rainfall_mse
    from convlstm.metrics.continuous import RainfallErrors

    rng = np.random.default_rng(0)
    pred, target = (torch.from_numpy(rng.uniform(0, 0.9, (2, 3, 1, 8, 8)).astype(np.float64)) for _ in range(2))
    mask = torch.from_numpy(rng.uniform(size=(2, 3, 1, 8, 8)) > 0.3)
    metric = RainfallErrors(3)
    metric.update(units.scaled_pixel_to_rainrate(pred.numpy()), units.scaled_pixel_to_rainrate(target.numpy()),
                  mask.numpy())
    squared_sum = float(metric.compute()["mse_overall"]) * float(mask.sum())
    assert float(rainfall_mse(pred, target, mask)) == pytest.approx(squared_sum / 6, rel=1e-5)
    pred.requires_grad_(True)
    rainfall_mse(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
