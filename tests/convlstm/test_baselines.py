"""Forecast baselines: persistence and optical-flow on a moving Gaussian blob (pySTEPS' nowcasts: tests/pipelines/test_pysteps_io.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convlstm.baselines import OpticalFlow, Persistence, get_baseline, optical_flow, persistence

SIZE, VX, VY = 64, 2.0, 1.0  # blob velocity in px/frame: right and down


def moving_blob(frames: int = 15, sigma: float = 4.0) -> np.ndarray:
    """`[1, frames, 1, 64, 64]` float32 Gaussian blob starting at (x, y) = (14, 14)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    blob = [np.exp(-((xs - 14 - VX * t) ** 2 + (ys - 14 - VY * t) ** 2) / (2 * sigma**2)) for t in range(frames)]
    return np.stack(blob).astype(np.float32)[None, :, None]


def centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    return np.array([(frame * xs).sum(), (frame * ys).sum()]) / frame.sum()


@pytest.mark.parametrize("method, options", [
    ("dis", {}),  # the default: every pair of the window, light smoothing
    ("dis-medium", dict(pairs=3, span=1, smoothing=0.125)),  # the first version of the baseline
    ("farneback", {}),
])
def test_optical_flow_recovers_constant_motion_and_beats_persistence(method, options):
    sequence = moving_blob()
    x, future = sequence[:, :5], sequence[:, 5:]
    forecast = optical_flow(x, 10, method=method, **options)
    assert forecast.shape == (1, 10, 1, SIZE, SIZE) and forecast.dtype == np.float32
    start = centroid(x[0, -1, 0])
    for lead in range(10):
        velocity = (centroid(forecast[0, lead, 0]) - start) / (lead + 1)
        assert np.abs(velocity - [VX, VY]).max() < 0.5, (lead, velocity)
    flow_mse = np.mean((forecast - future) ** 2)
    persistence_mse = np.mean((persistence(x, 10) - future) ** 2)
    assert flow_mse * 3 < persistence_mse


def test_persistence_repeats_the_last_frame_in_the_input_type():
    rng = np.random.default_rng(0)
    x = rng.random((2, 4, 3, 5, 6))
    forecast = persistence(x, 3)
    assert forecast.shape == (2, 3, 3, 5, 6) and forecast.dtype == np.float64
    for lead in range(3):
        np.testing.assert_array_equal(forecast[:, lead], x[:, -1])
    tensor = torch.from_numpy(x).float()
    from_torch = Persistence(3)(tensor)
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    assert torch.equal(from_torch, tensor[:, -1:].expand(-1, 3, -1, -1, -1))


def test_optical_flow_round_trips_torch_and_advects_channels_alike():
    blob = moving_blob(frames=5)
    x = np.concatenate([blob, 0.5 * blob], axis=2)  # C = 2
    from_numpy = optical_flow(x, 4)
    from_torch = OpticalFlow(4)(torch.from_numpy(x).double())
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float64
    assert tuple(from_torch.shape) == (1, 4, 2, SIZE, SIZE)
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, atol=1e-6)
    np.testing.assert_allclose(from_numpy[:, :, 1], 0.5 * from_numpy[:, :, 0], atol=1e-6)


def test_get_baseline_by_name():
    x = moving_blob(frames=5)
    for name in ("persistence", "optical-flow"):
        baseline = get_baseline(name, 2)
        assert baseline.name == name
        assert baseline(x).shape == (1, 2, 1, SIZE, SIZE)
    np.testing.assert_array_equal(get_baseline("persistence", 2)(x), persistence(x, 2))
    with pytest.raises(ValueError, match="optical-flow.*persistence.*'rover'"):
        get_baseline("rover", 2)


def test_bad_arguments_raise_value_errors_naming_them():
    x = moving_blob(frames=5)
    with pytest.raises(ValueError, match="x must"):
        persistence(x[0], 2)
    with pytest.raises(ValueError, match="x must"):
        optical_flow((x * 255).astype(np.uint8), 2)
    with pytest.raises(ValueError, match="x needs at least 2"):
        optical_flow(x[:, :1], 2)
    with pytest.raises(ValueError, match="out_frames"):
        persistence(x, 0)
    with pytest.raises(ValueError, match="method"):
        OpticalFlow(2, method="lucas-kanade")
    with pytest.raises(ValueError, match="pairs"):
        optical_flow(x, 2, pairs=0)
    with pytest.raises(ValueError, match="span"):
        OpticalFlow(2, span=0)
    with pytest.raises(ValueError, match="smoothing"):
        optical_flow(x, 2, smoothing=0.0)


def test_the_old_pysteps_name_names_the_one_pysteps_extrapolation():
    from jobs.evaluation.baselines import check_baselines

    with pytest.raises(ValueError, match="'pysteps' is now 'pysteps-extrapolation'"):
        get_baseline("pysteps", 10)
    with pytest.raises(ValueError, match="--baselines: 'pysteps' is now 'pysteps-extrapolation'"):
        check_baselines(("persistence", "pysteps"))

