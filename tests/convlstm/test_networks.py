"""Networks (paper parameter counts, structure, patching, shapes) and the model factory."""
from __future__ import annotations

import json

import pytest
import torch
from torch_threads import single_thread  # noqa: F401 (autouse fixture)

from convlstm.factory import build_model, model_spec
from convlstm.networks import ConvLSTMClassifier, EncoderForecaster, FCLSTM, depth_to_space, space_to_depth


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Shi et al. 2015, Table 1 (Moving MNIST: 64x64 frames, 4x4 patches, 1 channel, peepholes).
@pytest.mark.parametrize("name, hidden, input_kernel, hidden_kernel, count", [
    ("ConvLSTM(5x5)-5x5-256", [256], 5, 5, 13_524_496),
    ("ConvLSTM(5x5)-5x5-128-5x5-128", [128, 128], 5, 5, 10_042_896),
    ("ConvLSTM(5x5)-5x5-128-5x5-64-5x5-64", [128, 64, 64], 5, 5, 7_585_296),
    ("ConvLSTM(9x9)-1x1-128-1x1-128", [128, 128], 9, 1, 11_550_224),
    ("ConvLSTM(9x9)-1x1-128-1x1-64-1x1-64", [128, 64, 64], 9, 1, 8_830_480),
])
def test_encoder_forecaster_matches_paper_parameter_counts(name, hidden, input_kernel, hidden_kernel, count):
    model = EncoderForecaster(1, hidden, input_kernel, hidden_kernel, patch_size=4, peephole=True)
    assert n_params(model) == count, name


def test_fc_lstm_matches_paper_parameter_count():
    assert n_params(FCLSTM(64 * 64, [2048, 2048], peephole=True)) == 142_667_776


def test_patching_round_trip_and_layout():
    x = torch.rand(2, 3, 2, 8, 12)
    patches = space_to_depth(x, 4)
    assert patches.shape == (2, 3, 32, 2, 3)
    torch.testing.assert_close(depth_to_space(patches, 4), x, atol=0, rtol=0)
    # channel c*P*P + i*P + j of patch (r, s) is pixel (r*P + i, s*P + j) of channel c
    torch.testing.assert_close(patches[1, 2, 16 + 4 * 3 + 1, 1, 2], x[1, 2, 1, 4 + 3, 8 + 1])
    with pytest.raises(ValueError, match="patch_size"):
        space_to_depth(torch.rand(1, 1, 1, 10, 12), 4)


def test_encoder_forecaster_structure_and_output():
    torch.manual_seed(0)
    model = EncoderForecaster(2, [6, 4], input_kernel_size=3, hidden_kernel_size=1, patch_size=2, out_frames=3)
    assert [c.in_channels for c in model.encoder.cells] == [8, 6]
    assert [c.in_channels for c in model.forecaster.cells] == [0, 6]  # no input; upper layer reads the lower
    assert model.head.in_channels == 10 and model.head.out_channels == 8 and model.head.bias is not None
    x = torch.rand(2, 4, 2, 6, 8)
    y = model(x)
    assert y.shape == (2, 3, 2, 6, 8) and ((y > 0) & (y < 1)).all()
    logits_model = EncoderForecaster(2, [6, 4], 3, 1, patch_size=2, out_frames=3, output_activation=None)
    logits_model.load_state_dict(model.state_dict())
    torch.testing.assert_close(torch.sigmoid(logits_model(x)), y)


def test_forecaster_starts_from_the_encoder_states():
    torch.manual_seed(0)
    model = EncoderForecaster(1, [4, 3], 3, 3, patch_size=2, out_frames=2, output_activation=None)
    x = torch.rand(1, 3, 1, 4, 4)
    _, states = model.encoder(space_to_depth(x, 2))
    outputs, _ = model.forecaster(None, states, steps=2)
    hidden = torch.cat(outputs, dim=2).flatten(0, 1)
    want = depth_to_space(model.head(hidden).unflatten(0, (1, 2)), 2)
    torch.testing.assert_close(model(x), want)


def test_encoder_forecaster_bad_arguments():
    with pytest.raises(ValueError, match="patch_size"):
        EncoderForecaster(1, [4], 3, 3, patch_size=4)(torch.rand(1, 2, 1, 10, 8))
    with pytest.raises(ValueError, match="output_activation"):
        EncoderForecaster(output_activation="relu")
    with pytest.raises(ValueError, match="x must be"):
        EncoderForecaster(1, [4], 3, 3, patch_size=2)(torch.rand(1, 2, 3, 8, 8))


def test_fc_lstm_forward_shapes():
    torch.manual_seed(0)
    model = FCLSTM(frame_size=2 * 4 * 4, hidden_sizes=[16, 8], out_frames=3)
    y = model(torch.rand(2, 5, 2, 4, 4))
    assert y.shape == (2, 3, 2, 4, 4) and ((y > 0) & (y < 1)).all()
    with pytest.raises(ValueError, match="frame_size"):
        model(torch.rand(2, 5, 1, 4, 4))


def test_classifier_shapes_and_arguments():
    model = ConvLSTMClassifier(1, 9, 12, [4, 3], kernel_size=3, num_classes=5)
    assert model.head.in_features == 3 * 5 * 6  # MaxPool2d(5, 2, 2) halves, rounding up
    assert model(torch.rand(2, 4, 1, 9, 12)).shape == (2, 5)
    with pytest.raises(ValueError, match="height, width"):
        model(torch.rand(2, 4, 1, 10, 12))
    with pytest.raises(ValueError, match="kernel_size"):
        ConvLSTMClassifier(kernel_size=4)


@pytest.mark.parametrize("name, kwargs", [
    ("classifier", dict(height=8, width=10, hidden_channels=[4], kernel_size=(3, 5), num_classes=3)),
    ("encoder_forecaster", dict(hidden_channels=[4, 4], input_kernel_size=(5, 3), hidden_kernel_size=1)),
    ("fc_lstm", dict(frame_size=16, hidden_sizes=[8, 8], out_frames=2)),
])
def test_factory_builds_and_spec_rebuilds_through_json(name, kwargs):
    model = build_model(name, **kwargs)
    spec = json.loads(json.dumps(model_spec(model)))
    assert spec["name"] == name
    rebuilt = build_model(spec["name"], **spec["kwargs"])
    assert type(rebuilt) is type(model)
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(rebuilt) == shapes(model)


def test_factory_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="classifier.*encoder_forecaster.*fc_lstm"):
        build_model("transformer")
    with pytest.raises(ValueError, match="kernel"):
        build_model("fc_lstm", kernel=3)
    with pytest.raises(ValueError, match="Linear"):
        model_spec(torch.nn.Linear(2, 2))
