"""ConvLSTMCell: the paper's equations, exact gradients (float64 gradcheck), arguments, autocast."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from convlstm.cell import ConvLSTMCell, LSTMPointwise, lstm_pointwise
from torch_threads import single_thread  # noqa: F401 (autouse fixture)


def make_cell(in_channels=2, hidden=3, input_kernel=3, hidden_kernel=None, peephole=False, dtype=torch.float64):
    torch.manual_seed(0)
    cell = ConvLSTMCell(in_channels, hidden, input_kernel, hidden_kernel, peephole=peephole).to(dtype)
    with torch.no_grad():
        for p in (cell.w_ci, cell.w_cf, cell.w_co):
            if p is not None:
                p.uniform_(-0.5, 0.5)  # peepholes start at zero; make them matter
    return cell


def paper_step(cell: ConvLSTMCell, x, h, c):
    """Shi et al. 2015 eq. 3, term by term, from the cell's parameters."""
    pad = lambda k: (k[0] // 2, k[1] // 2)  # noqa: E731
    wx = cell.weight_x.chunk(4) if cell.weight_x is not None else [None] * 4
    wh, b = cell.weight_h.chunk(4), cell.bias.chunk(4)

    def term(n):
        out = F.conv2d(h, wh[n], b[n], padding=pad(cell.hidden_kernel))
        return out if x is None else out + F.conv2d(x, wx[n], padding=pad(cell.input_kernel))

    peep = cell.peephole
    i = torch.sigmoid(term(0) + (cell.w_ci * c if peep else 0))
    f = torch.sigmoid(term(1) + (cell.w_cf * c if peep else 0))
    c_new = f * c + i * torch.tanh(term(3))
    o = torch.sigmoid(term(2) + (cell.w_co * c_new if peep else 0))
    return o * torch.tanh(c_new), c_new


CASES = [
    dict(peephole=False),
    dict(peephole=True),
    dict(input_kernel=(3, 5), hidden_kernel=1, peephole=True),  # asymmetric kernels
    dict(input_kernel=5, hidden_kernel=(1, 3), peephole=False),
    dict(in_channels=0, hidden_kernel=3, peephole=True),  # forecaster cell: no input
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cell_follows_the_paper_equations(case):
    cell = make_cell(**case)
    x = torch.randn(2, cell.in_channels, 6, 5, dtype=torch.float64) if cell.in_channels else None
    h, c = torch.randn(2, 2, 3, 6, 5, dtype=torch.float64).unbind(0)
    got = cell(x, (h, c))
    want = paper_step(cell, x, h, c)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cell_gradcheck_inputs_and_parameters(case):
    cell = make_cell(**case)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in cell.named_parameters()]
    x = torch.randn(2, cell.in_channels, 4, 3, dtype=torch.float64, requires_grad=True)
    h, c = (torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))

    def step(x, h, c, *params):
        return functional_call(cell, dict(zip(names, params)), (x if cell.in_channels else None, (h, c)))

    assert torch.autograd.gradcheck(step, (x, h, c, *params))


def test_zero_state_step_skips_state_conv_but_matches_explicit_zeros():
    cell = make_cell(peephole=True)
    x = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(2, 3, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(cell(x), cell(x, (zeros, zeros)), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda x: cell(x), (x,))


@pytest.mark.parametrize("peephole", [False, True])
def test_fused_pointwise_matches_autograd_form(peephole):
    torch.manual_seed(1)
    gates = torch.randn(2, 12, 4, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    peeps = [torch.randn(3, 1, 1, dtype=torch.float64, requires_grad=True) if peephole else None for _ in range(3)]
    fused = LSTMPointwise.apply(gates, c, *peeps)
    plain = lstm_pointwise(gates, c, *peeps)
    torch.testing.assert_close(fused, plain, atol=1e-12, rtol=1e-12)
    inputs = [gates, c] + [p for p in peeps if p is not None]
    g_fused = torch.autograd.grad(sum(t.sum() * (k + 1) for k, t in enumerate(fused)), inputs)
    g_plain = torch.autograd.grad(sum(t.sum() * (k + 1) for k, t in enumerate(plain)), inputs)
    torch.testing.assert_close(g_fused, g_plain, atol=1e-12, rtol=1e-12)


def test_fused_pointwise_float32_tanh_within_1e6_of_torch_tanh():
    """The fused form computes tanh as 2 sigmoid(2x) - 1 (faster on CPU): float32 stays within 1e-6."""
    torch.manual_seed(2)
    gates, c = torch.randn(4, 64, 9, 7) * 4, torch.randn(4, 16, 9, 7) * 3
    torch.testing.assert_close(LSTMPointwise.apply(gates, c, None, None, None), lstm_pointwise(gates, c),
                               atol=1e-6, rtol=0)


def test_split_and_joint_input_convolutions_agree(monkeypatch):
    """W_x * x + W_h * h as one convolution over [x, h] or as two: same values and gradients."""
    import convlstm.cell as cell_module

    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    results = []
    for split in (False, True):
        monkeypatch.setattr(cell_module, "_split_on_cpu", lambda x, split=split: split)
        cell = make_cell(peephole=True)
        h, c = cell(x, state)
        results.append((h, c, *torch.autograd.grad((h.sum() + 2 * c.sum()), [x, *state, *cell.parameters()])))
    torch.testing.assert_close(results[0], results[1], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kernel, bias", [((3, 3), True), ((3, 5), False), ((1, 1), True)])
def test_narrow_input_matmul_equals_convolution(kernel, bias):
    """The CPU input term for narrow inputs (im2col + matmul): conv2d's values and gradients."""
    from convlstm.cell import _conv_as_matmul

    x = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 2, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(12, dtype=torch.float64, requires_grad=True) if bias else None
    padding = (kernel[0] // 2, kernel[1] // 2)
    want, got = F.conv2d(x, weight, b, padding=padding), _conv_as_matmul(x, weight, b, kernel)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    inputs = [t for t in (x, weight, b) if t is not None]
    torch.testing.assert_close(torch.autograd.grad(got.square().sum(), inputs),
                               torch.autograd.grad(want.square().sum(), inputs), atol=1e-10, rtol=1e-12)


def test_split_rule_on_cpu():
    """Two convolutions for narrow inputs and for gradient-free inputs in training; joint otherwise."""
    from convlstm.cell import _split_on_cpu

    narrow, wide = torch.zeros(1, 4, 2, 2), torch.zeros(1, 16, 2, 2)
    assert _split_on_cpu(narrow)
    assert _split_on_cpu(wide)  # data input in training: the joint backward would waste its gradient
    assert not _split_on_cpu(wide.clone().requires_grad_())  # inner layer
    with torch.no_grad():
        assert _split_on_cpu(narrow) and not _split_on_cpu(wide)


def test_parameter_layout():
    cell = ConvLSTMCell(4, 8, input_kernel_size=9, hidden_kernel_size=1, peephole=True)
    assert cell.weight_x.shape == (32, 4, 9, 9)
    assert cell.weight_h.shape == (32, 8, 1, 1)
    assert cell.bias.shape == (32,)
    assert [p.shape for p in (cell.w_ci, cell.w_cf, cell.w_co)] == [(8, 1, 1)] * 3
    forecaster = ConvLSTMCell(0, 8, 5)
    assert forecaster.weight_x is None and forecaster.weight_h.shape == (32, 8, 5, 5)
    assert sum(p.numel() for p in ConvLSTMCell(4, 8, 3, bias=False).parameters()) == 32 * (4 + 8) * 9


@pytest.mark.parametrize("kwargs, name", [
    (dict(input_kernel_size=4), "input_kernel_size"),
    (dict(input_kernel_size=(3, 2)), "input_kernel_size"),
    (dict(hidden_kernel_size=2), "hidden_kernel_size"),
    (dict(hidden_kernel_size=0), "hidden_kernel_size"),
])
def test_even_or_bad_kernel_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ConvLSTMCell(2, 3, **kwargs)


def test_input_less_cell_needs_state_and_no_input():
    cell = ConvLSTMCell(0, 3)
    with pytest.raises(ValueError, match="state"):
        cell(None)
    with pytest.raises(ValueError, match="x must be None"):
        cell(torch.zeros(1, 2, 4, 4), (torch.zeros(1, 3, 4, 4),) * 2)


def test_autocast_bf16_keeps_float32_state_and_tracks_float32():
    cell = make_cell(peephole=True, dtype=torch.float32)
    x = torch.rand(2, 2, 8, 8)
    h32, c32 = cell(x, cell(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, c = cell(x, cell(x))
    assert c.dtype == torch.float32 and h.dtype == torch.float32
    torch.testing.assert_close(h, h32, atol=0.05, rtol=0)
    h.sum().backward()
    assert cell.weight_h.grad.dtype == torch.float32 and torch.isfinite(cell.weight_h.grad).all()
