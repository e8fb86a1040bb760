"""The motion-aware encoder-forecaster (`motion="advection"`) and its warp (`convlstm.motion`): the
untrained model is exactly the optical-flow baseline, gradients pass the warp, the motion field is the
baseline's, and the option changes nothing for the plain ConvLSTM."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convlstm.baselines import optical_flow
from convlstm.factory import build_model, model_spec
from convlstm.motion import advect, motion_field, motion_field_array
from convlstm.networks import EncoderForecaster


def moving_blobs(batch: int = 2, frames: int = 5, size: int = 32, seed: int = 0) -> torch.Tensor:
    """`[B, frames, 1, size, size]` in [0, 1]: a soft blob per window drifting by (1, 2) pixels a frame."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size]
    out = np.zeros((batch, frames, 1, size, size), np.float32)
    for b in range(batch):
        y0, x0 = rng.uniform(8, 14, 2)
        for t in range(frames):
            out[b, t, 0] = 0.8 * np.exp(-((ys - y0 - 1.0 * t) ** 2 + (xs - x0 - 2.0 * t) ** 2) / 18.0)
    return torch.from_numpy(out)


@pytest.mark.parametrize("cell", ["conv", "sa"])
def test_untrained_motion_model_forecasts_exactly_the_optical_flow_baseline(cell):
    x = moving_blobs()
    model = EncoderForecaster(1, [8, 8], 3, 3, patch_size=2, out_frames=6, motion="advection", cell=cell)
    with torch.no_grad():
        forecast = model(x)
    assert torch.equal(forecast, optical_flow(x, 6))
    assert not torch.equal(forecast, x[:, -1:].expand_as(forecast))  # the blob moved


def test_a_training_step_moves_the_forecast_off_the_advection():
    torch.manual_seed(0)
    x, target = moving_blobs(frames=5), moving_blobs(frames=9)[:, 5:] * 0.5  # decaying echo
    model = EncoderForecaster(1, [8, 8], 3, 3, patch_size=2, out_frames=4, motion="advection")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = ((model(x) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.parameters())


def test_advect_is_differentiable_in_the_frame_and_the_field():
    torch.manual_seed(0)
    last = torch.rand(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    field = (torch.rand(1, 2, 6, 7, dtype=torch.float64) - 0.5).mul(1.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, f: advect(a, f, 3), (last, field))
    advect(last, field, 3).sum().backward()
    assert last.grad.abs().sum() > 0 and field.grad.abs().sum() > 0


def test_advect_shifts_by_whole_pixels_and_reads_zero_from_outside():
    last = torch.arange(1.0, 1.0 + 5 * 6).reshape(1, 1, 5, 6)
    field = torch.zeros(1, 2, 5, 6)
    field[:, 0] = -1.0  # backward dx = -1: the frame moves one pixel right per step
    out = advect(last, field, 2)[0, :, 0]
    close = dict(atol=1e-5, rtol=0)  # grid_sample's [-1, 1] coordinates round in float32
    torch.testing.assert_close(out[0, :, 1:], last[0, 0, :, :-1], **close)
    torch.testing.assert_close(out[1, :, 2:], last[0, 0, :, :-2], **close)
    torch.testing.assert_close(out[1, :, :2], torch.zeros(5, 2), **close)
    with pytest.raises(ValueError, match="field"):
        advect(last, field[:, :1], 2)


def test_motion_field_is_the_baselines_field_per_window():
    x = moving_blobs(batch=2, size=40)
    field = motion_field(x.double())
    assert field.shape == (2, 2, 40, 40) and field.dtype == torch.float64 and not field.requires_grad
    for b in range(2):
        np.testing.assert_array_equal(field[b].float().numpy(), motion_field_array(x[b, :, 0].numpy()))
    # the blob moves (+2, +1) pixels a frame, so the backward field near it is about (-2, -1)
    dx, dy = (float(field[0, c, 12:20, 12:24].mean()) for c in (0, 1))
    assert dx == pytest.approx(-2.0, abs=0.4) and dy == pytest.approx(-1.0, abs=0.4)



def test_motion_field_does_not_depend_on_opencvs_thread_count():
    """The demo's reproducibility rests on it: DIS runs on OpenCV's thread pool."""
    import cv2

    frames = moving_blobs(batch=1, size=64)[0, :, 0].numpy()
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = motion_field_array(frames)
        cv2.setNumThreads(8)
        eight = motion_field_array(frames)
    finally:
        cv2.setNumThreads(threads)
    np.testing.assert_array_equal(one, eight)

def test_spec_round_trips_and_the_plain_model_is_unchanged():
    model = EncoderForecaster(1, [4], 3, 3, patch_size=2, out_frames=3, motion="advection", cell="sa")
    spec = model_spec(model)
    assert spec["kwargs"]["motion"] == "advection"
    assert model_spec(build_model(spec["name"], **spec["kwargs"]))["kwargs"] == spec["kwargs"]
    plain = EncoderForecaster(1, [4], 3, 3, patch_size=2, out_frames=3)
    assert "motion" not in plain.config and plain.forecaster.cells[0].in_channels == 0
    with pytest.raises(ValueError, match="output_activation must be 'sigmoid'"):
        EncoderForecaster(1, [4], 3, 3, patch_size=2, out_frames=3, motion="advection", output_activation=None)
    with pytest.raises(ValueError, match="motion must be one of"):
        EncoderForecaster(1, [4], motion="flow")


@pytest.mark.parametrize("cell", ["conv", "sa"])
def test_untrained_smoothing_model_still_forecasts_exactly_the_optical_flow_baseline(cell):
    x = moving_blobs()
    model = EncoderForecaster(1, [8, 8], 3, 3, patch_size=2, out_frames=6, motion="advection", cell=cell,
                              smoothing=[1.0, 2.0])
    with torch.no_grad():
        assert torch.equal(model(x), optical_flow(x, 6))
    assert model.config["smoothing"] == [1.0, 2.0] and model.config["smoothing_threshold"] == 2.0
    spec = model_spec(model)
    assert model_spec(build_model(spec["name"], **spec["kwargs"]))["kwargs"] == spec["kwargs"]


def test_lead_smoothing_spreads_only_the_rain_above_its_threshold_and_keeps_it_above():
    from convlstm.motion import SMOOTHING_GAIN, LeadSmoothing
    from convlstm.units import scaled_pixel_to_rainrate_torch

    frames = moving_blobs()[:1, :2].double()  # [1, 2 leads, 1, 32, 32], peak 0.8: about 65 mm/h
    smoothing = LeadSmoothing(2, [2.0], threshold_mmh=2.0).double()
    with torch.no_grad():
        smoothing.weights[1, 0] = 1.0 / SMOOTHING_GAIN  # lead 2 fully blurred, lead 1 unchanged
        out = frames + smoothing(frames)
    before, after = scaled_pixel_to_rainrate_torch(frames), scaled_pixel_to_rainrate_torch(out)
    assert torch.equal(out[:, 0], frames[:, 0])
    assert float(after[:, 1].max()) < 0.8 * float(before[:, 1].max())  # the peak spreads
    heavy = before[:, 1] >= 2.0
    assert bool((after[:, 1][heavy] >= 2.0 - 1e-6).all())  # what was above the threshold stays above
    light = before[:, 1] < 2.0
    assert bool((after[:, 1][light] >= before[:, 1][light] - 1e-9).all())  # light rain only gains
    # mass above the threshold is conserved away from the edges
    excess = lambda r: (r - 2.0).clamp(min=0).sum()  # noqa: E731
    assert float(after[:, 1].sum() - before[:, 1].sum()) == pytest.approx(0.0, abs=1e-6 * float(excess(before[:, 1])))


def test_smoothing_weights_get_gradients_and_smoothing_needs_motion():
    x, target = moving_blobs(), moving_blobs(frames=9)[:, 5:]
    model = EncoderForecaster(1, [4], 3, 3, patch_size=2, out_frames=4, motion="advection", smoothing=[1.0])
    from convlstm.losses import rainfall_mse

    rainfall_mse(model(x), target).backward()
    assert model.smoothing.weights.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="smoothing"):
        EncoderForecaster(1, [4], smoothing=[1.0])
    with pytest.raises(ValueError, match="scales"):
        EncoderForecaster(1, [4], motion="advection", smoothing=[0.0])
