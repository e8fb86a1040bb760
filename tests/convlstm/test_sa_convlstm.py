"""SA-ConvLSTM (Lin et al. 2020): the SAM equations against numpy, gradients, stacks, networks, learning."""
from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch_threads import single_thread  # noqa: F401 (autouse fixture)

from convlstm.cell import ConvLSTMCell
from convlstm.factory import build_model, model_spec
from convlstm.networks import ConvLSTMClassifier, EncoderForecaster
from convlstm.sa_cell import SAConvLSTMCell, SelfAttentionMemory
from stacks import clip, make_stack


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


sa_stack = functools.partial(make_stack, cell_factory=SAConvLSTMCell)
clip = functools.partial(clip, height=5, width=4)


# --- the SAM module against the paper's equations, written out in numpy ---------------------------

def numpy_sam(weights: dict[str, np.ndarray], h: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lin et al. 2020, SAM, for one sample: `h`, `m` `[C, H, W]`; 1x1 convolutions as matrices, one
    position at a time. `weights`: W_q, W_k, W_v, W_mk, W_mv, W_z `[out, in]`, W_gates `[3C, 2C]`, b `[3C]`."""
    channels, height, width = h.shape
    n = height * width
    hf, mf = h.reshape(channels, n), m.reshape(channels, n)  # column j = position j
    q, k_h, v_h = weights["W_q"] @ hf, weights["W_k"] @ hf, weights["W_v"] @ hf
    k_m, v_m = weights["W_mk"] @ mf, weights["W_mv"] @ mf

    def attend(keys, values):  # Z[:, i] = sum_j softmax_j(q_i . k_j) v_j, no 1/sqrt(d) scale
        z = np.zeros((values.shape[0], n))
        for i in range(n):
            scores = np.array([q[:, i] @ keys[:, j] for j in range(n)])
            alpha = np.exp(scores - scores.max())
            alpha /= alpha.sum()
            z[:, i] = sum(alpha[j] * values[:, j] for j in range(n))
        return z

    z = weights["W_z"] @ np.concatenate([attend(k_h, v_h), attend(k_m, v_m)])
    pre = weights["W_gates"] @ np.concatenate([z, hf]) + weights["b"][:, None]
    sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    i, g, o = sigmoid(pre[:channels]), np.tanh(pre[channels:2 * channels]), sigmoid(pre[2 * channels:])
    m_new = (1 - i) * mf + i * g
    return (o * m_new).reshape(h.shape), m_new.reshape(h.shape)


def sam_weights(sam: SelfAttentionMemory) -> dict[str, np.ndarray]:
    a = sam.attention_channels
    qkv = sam.hidden_qkv.weight.detach().double().numpy()[:, :, 0, 0]
    kv = sam.memory_kv.weight.detach().double().numpy()[:, :, 0, 0]
    return {"W_q": qkv[:a], "W_k": qkv[a:2 * a], "W_v": qkv[2 * a:], "W_mk": kv[:a], "W_mv": kv[a:],
            "W_z": sam.fuse.weight.detach().double().numpy()[:, :, 0, 0],
            "W_gates": sam.gates.weight.detach().double().numpy()[:, :, 0, 0],
            "b": sam.gates.bias.detach().double().numpy()}


@pytest.mark.parametrize("attention_channels", [None, 1, 3])
def test_sam_matches_the_paper_equations_in_numpy(attention_channels):
    torch.manual_seed(0)
    sam = SelfAttentionMemory(2, attention_channels).double()
    with torch.no_grad():
        for p in sam.parameters():
            p.uniform_(-1.5, 1.5)  # large enough for peaked, non-uniform attention
    h, m = torch.randn(2, 3, 2, 2, 2, dtype=torch.float64).unbind(0)  # batch 3, 2 channels, 2x2 map
    h_hat, m_new = sam(h, m)
    for b in range(3):
        want_h, want_m = numpy_sam(sam_weights(sam), h[b].numpy(), m[b].numpy())
        np.testing.assert_allclose(h_hat[b].detach().numpy(), want_h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m_new[b].detach().numpy(), want_m, rtol=1e-12, atol=1e-12)


def test_cell_is_the_convlstm_cell_then_sam():
    torch.manual_seed(0)
    cell = SAConvLSTMCell(2, 3, 3, 1, peephole=True).double()
    plain = ConvLSTMCell(2, 3, 3, 1, peephole=True).double()
    plain.load_state_dict({k: v for k, v in cell.state_dict().items() if not k.startswith("sam.")})
    with torch.no_grad():
        for p in (cell.w_ci, cell.w_cf, cell.w_co, plain.w_ci, plain.w_cf, plain.w_co):
            p.fill_(0.3)
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    h, c, m = torch.randn(3, 2, 3, 4, 5, dtype=torch.float64).unbind(0)
    h_lstm, c_lstm = plain(x, (h, c))  # the ConvLSTM part reads Ĥ_{t-1} = h
    want_h, want_m = cell.sam(h_lstm, m)
    got = cell(x, (h, c, m))
    torch.testing.assert_close(got, (want_h, c_lstm, want_m), atol=1e-12, rtol=0)
    # zero state: h = c = m = 0
    zeros = torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(cell(x), cell(x, (zeros, zeros, zeros)), atol=1e-12, rtol=0)


# --- parameter counts, written out from the paper's equations -------------------------------------

def convlstm_layer_count(c_in: int, c_h: int, k_x: int, k_h: int, peephole: bool) -> int:
    """W_x* (i, f, o, g), W_h* (i, f, o, g), b (i, f, o, g) [, W_ci, W_cf, W_co]."""
    return 4 * c_h * c_in * k_x * k_x + 4 * c_h * c_h * k_h * k_h + 4 * c_h + (3 * c_h if peephole else 0)


def sam_count(c: int, a: int) -> int:
    """W_q, W_k (C -> C~); W_v (C -> C); W_mk (C -> C~); W_mv (C -> C); W_z (2C -> C); i', g', o' each
    W_z* (C -> C) + W_h* (C -> C) + b (C). No projection biases (the paper writes none)."""
    return c * a + c * a + c * c + c * a + c * c + 2 * c * c + 3 * (c * c + c * c + c)


@pytest.mark.parametrize("c_in, c_h, k_x, k_h, attention, peephole", [
    (16, 64, 3, 3, None, False),  # the paper's Moving MNIST layer: 4x4 patches of 1 channel, 64 hidden
    (64, 64, 3, 3, None, False),
    (0, 64, 5, 5, None, True),    # a forecaster's input-less first layer, peepholes
    (2, 8, 3, 1, 4, True),        # C~ < C, asymmetric kernels
])
def test_parameter_count_per_layer(c_in, c_h, k_x, k_h, attention, peephole):
    cell = SAConvLSTMCell(c_in, c_h, k_x, k_h, peephole=peephole, attention_channels=attention)
    a = c_h if attention is None else attention
    assert n_params(cell.sam) == sam_count(c_h, a)
    assert n_params(cell) == convlstm_layer_count(c_in, c_h, k_x, k_h, peephole) + sam_count(c_h, a)


def test_parameter_count_of_the_moving_mnist_model():
    # 4 x 64 SA-ConvLSTM layers, 3x3 kernels, 4x4 patches of 64x64 frames (jobs/configs/mnist-sa.yaml):
    # encoder (16 -> 64, then 64 -> 64 x3), forecaster (0 -> 64, then 64 -> 64 x3), head 1x1 (256 -> 16).
    assert sam_count(64, 64) == 53_440
    layer_16, layer_64, layer_0 = (convlstm_layer_count(c, 64, 3, 3, False) + 53_440 for c in (16, 64, 0))
    assert (layer_16, layer_64, layer_0) == (238_016, 348_608, 201_152)
    head = 4 * 64 * 16 + 16
    model = EncoderForecaster(1, [64] * 4, 3, 3, patch_size=4, peephole=False, cell="sa")
    assert n_params(model) == layer_16 + 3 * layer_64 + layer_0 + 3 * layer_64 + head == 2_534_928


# --- gradients --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    dict(in_channels=2, peephole=False, attention_channels=None),
    dict(in_channels=2, peephole=True, attention_channels=1),
    dict(in_channels=0, peephole=True, attention_channels=None),  # input-less (forecaster) cell
], ids=str)
def test_cell_gradcheck_inputs_state_and_parameters(case):
    torch.manual_seed(0)
    in_channels = case.pop("in_channels")
    cell = SAConvLSTMCell(in_channels, 2, 3, **case).double()
    with torch.no_grad():
        for p in (cell.w_ci, cell.w_cf, cell.w_co):
            if p is not None:
                p.uniform_(-0.5, 0.5)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in cell.named_parameters()]
    x = torch.randn(1, in_channels, 3, 2, dtype=torch.float64, requires_grad=True)
    h, c, m = (torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def step(x, h, c, m, *params):
        return functional_call(cell, dict(zip(names, params)), (x if in_channels else None, (h, c, m)))

    assert torch.autograd.gradcheck(step, (x, h, c, m, *params))


def test_stack_gradcheck_over_three_steps():
    stack = sa_stack(hidden_channels=[2, 2], peephole=False).double()
    x = torch.rand(1, 3, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: stack(x)[0][0], (x,))


# --- stacks: shapes, states, arguments (chunks, layouts and execution paths: test_stack.py) --------------------------------------

def test_stack_shapes_and_states():
    stack = sa_stack(return_all_layers=True)
    outputs, states = stack(clip())
    assert [o.shape for o in outputs] == [(2, 5, 4, 5, 4), (2, 5, 3, 5, 4)]
    assert [len(s) for s in states] == [3, 3]
    assert [tuple(t.shape) for t in states[1]] == [(2, 3, 5, 4)] * 3
    torch.testing.assert_close(outputs[-1][:, -1], states[-1][0])  # the output is Ĥ, the state's h


def test_attention_channels_via_partial_and_input_less_stack():
    factory = functools.partial(SAConvLSTMCell, attention_channels=2)
    forecaster = sa_stack(in_channels=0, cell_factory=factory)
    assert [c.sam.attention_channels for c in forecaster.cells] == [2, 2]
    state = [tuple(torch.randn(2, c, 5, 4) for _ in range(3)) for c in (4, 3)]
    (out,), states = forecaster(None, state, steps=3)
    assert out.shape == (2, 3, 3, 5, 4) and [len(s) for s in states] == [3, 3]


def test_bad_states_and_arguments_raise():
    stack = sa_stack()
    with pytest.raises(ValueError, match=r"state\[0\] must be 3 tensors"):
        stack(clip(), [(torch.zeros(2, 4, 5, 4),) * 2, (torch.zeros(2, 3, 5, 4),) * 3])
    with pytest.raises(ValueError, match=r"state\[1\]"):
        stack(clip(), [(torch.zeros(2, 4, 5, 4),) * 3, (torch.zeros(2, 4, 5, 4),) * 3])
    with pytest.raises(ValueError, match="attention_channels"):
        SAConvLSTMCell(2, 4, attention_channels=0)
    with pytest.raises(ValueError, match="cell must be one of"):
        EncoderForecaster(cell="transformer")


def test_bf16_autocast_keeps_the_states_in_float32():
    stack = sa_stack()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out,), states = stack(clip())
    out.float().sum().backward()
    assert [t.dtype for t in states[0][1:]] == [torch.float32, torch.float32]  # c and m
    assert all(p.grad is not None and p.grad.isfinite().all() for p in stack.parameters())


# --- networks and the factory ----------------------------------------------------------------------

def test_networks_build_sa_cells_and_run():
    model = EncoderForecaster(1, [4, 3], 3, 3, patch_size=2, out_frames=2, cell="sa")
    assert all(type(c) is SAConvLSTMCell for s in (model.encoder, model.forecaster) for c in s.cells)
    assert model(torch.rand(2, 3, 1, 6, 4)).shape == (2, 2, 1, 6, 4)
    classifier = ConvLSTMClassifier(1, 6, 8, [4], kernel_size=3, num_classes=3, cell="sa")
    assert type(classifier.convlstm.cells[0]) is SAConvLSTMCell
    assert classifier(torch.rand(2, 3, 1, 6, 8)).shape == (2, 3)
    default = EncoderForecaster(1, [4], 3, 3, patch_size=2)
    assert type(default.encoder.cells[0]) is ConvLSTMCell and "cell" not in default.config


@pytest.mark.parametrize("name, kwargs, shape", [
    ("encoder_forecaster", dict(hidden_channels=[4, 4], input_kernel_size=3, hidden_kernel_size=1, patch_size=2,
                                out_frames=2, cell="sa"), (1, 3, 1, 4, 6)),
    ("classifier", dict(height=6, width=4, hidden_channels=[4], kernel_size=3, num_classes=3, cell="sa"),
     (1, 3, 1, 6, 4)),
])
def test_factory_round_trips_the_cell_through_json(name, kwargs, shape):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    spec = json.loads(json.dumps(model_spec(model)))
    assert spec == {"name": name, "kwargs": {**spec["kwargs"], "cell": "sa"}}
    rebuilt = build_model(spec["name"], **spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    x = torch.rand(shape)
    torch.testing.assert_close(rebuilt(x), model(x))


# --- learning: moving blobs -------------------------------------------------------------------------

def moving_blobs(n: int, frames: int, gen: torch.Generator, size: int = 16, sigma: float = 2.5) -> torch.Tensor:
    """`[n, frames, 1, size, size]`: one Gaussian blob per clip moving 1 px per frame along a random
    diagonal (all frames stay inside the canvas)."""
    start = torch.rand(n, 2, generator=gen) * (size / 2) + size / 4
    velocity = (torch.randint(0, 2, (n, 2), generator=gen) * 2 - 1).float()
    t = torch.arange(frames, dtype=torch.float32)[None, :, None] - frames / 2
    centre = start[:, None] + velocity[:, None] * t  # [n, frames, 2]
    grid = torch.arange(size, dtype=torch.float32)
    dy = grid[None, None, :, None] - centre[..., 0, None, None]
    dx = grid[None, None, None, :] - centre[..., 1, None, None]
    return torch.exp(-(dy**2 + dx**2) / (2 * sigma**2))[:, :, None]


@pytest.mark.integration  # trains hundreds of steps
def test_learns_moving_blobs_to_half_the_persistence_error():
    """One 16-channel SA-ConvLSTM layer per stack on 2x2 patches (8x8 map): 4 frames in, 3 out, BCE
    on logits, Adam; checked every 25 steps, it must reach half of persistence's MSE within 400
    (125 steps, 7 CPU s on the development VM)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    test = moving_blobs(64, 7, gen)
    persistence = F.mse_loss(test[:, 3:4].expand(-1, 3, -1, -1, -1), test[:, 4:]).item()
    model = EncoderForecaster(1, [16], 3, 3, patch_size=2, peephole=False, out_frames=3, output_activation=None,
                              cell="sa")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    start, history = time.process_time(), []
    for step in range(1, 401):
        clips = moving_blobs(16, 7, gen)
        loss = F.binary_cross_entropy_with_logits(model(clips[:, :4]), clips[:, 4:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            with torch.no_grad():
                history.append(F.mse_loss(torch.sigmoid(model(test[:, :4])), test[:, 4:]).item() / persistence)
            if history[-1] < 0.5:
                break
    assert history[-1] < 0.5, f"MSE / persistence MSE every 25 steps: {history}"
    print(f"{step} steps, {time.process_time() - start:.1f} CPU s, MSE / persistence: {history}")
