"""One ConvLSTM cell, as in Shi et al. 2015 (eq. 3), with separate input and state convolutions.

    i_t = σ(W_xi * X_t + W_hi * H_{t-1} + W_ci ∘ C_{t-1} + b_i)
    f_t = σ(W_xf * X_t + W_hf * H_{t-1} + W_cf ∘ C_{t-1} + b_f)
    C_t = f_t ∘ C_{t-1} + i_t ∘ tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
    o_t = σ(W_xo * X_t + W_ho * H_{t-1} + W_co ∘ C_t + b_o)
    H_t = o_t ∘ tanh(C_t)

`*` is a same-padded convolution, `∘` the Hadamard product. The four gates are stacked in the
order i, f, o, g (g = the tanh candidate), so `weight_x` is `[4 C_h, C_in, kh, kw]`, `weight_h`
`[4 C_h, C_h, kh', kw']` and `bias` `[4 C_h]` (one bias per gate and channel, counted once).
Peephole weights hold one value per hidden channel: `w_ci`, `w_cf`, `w_co` are `[C_h, 1, 1]`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Inputs with fewer channels are "narrow" on the CPU: their input term is a matmul over unfolded patches
# and is not joined with the state's convolution (measured: benchmarks/README.md, "Model step").
NARROW_INPUT = 8

State = tuple[torch.Tensor, torch.Tensor]
aten = torch.ops.aten


def kernel_pair(kernel_size: int | tuple[int, int], name: str) -> tuple[int, int]:
    """`k` or `(kh, kw)` -> `(kh, kw)`; ValueError naming `name` unless both are odd and positive."""
    pair = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(pair) != 2 or not all(isinstance(k, int) and k > 0 and k % 2 == 1 for k in pair):
        raise ValueError(f"{name} must be an odd positive int or a pair of them, got {kernel_size!r}")
    return pair


def lstm_pointwise(gates: torch.Tensor, c: torch.Tensor, w_ci: torch.Tensor | None = None,
                   w_cf: torch.Tensor | None = None, w_co: torch.Tensor | None = None) -> State:
    """The gate equations as written, for autograd: `gates` `[B, 4 C_h, H, W]` (i, f, o, g), `c` C_{t-1}
    -> `(h, c_new)`. `LSTMPointwise` computes the same faster in eager mode; under torch.compile this
    form is used and the compiler fuses it."""
    a_i, a_f, a_o, a_g = gates.chunk(4, dim=1)
    if w_ci is not None:
        a_i, a_f = a_i + w_ci * c, a_f + w_cf * c
    c_new = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
    if w_co is not None:
        a_o = a_o + w_co * c_new
    return torch.sigmoid(a_o) * torch.tanh(c_new), c_new


class LSTMPointwise(torch.autograd.Function):
    """The gate nonlinearities and state update, fused: `(gates, c, w_ci, w_cf, w_co) -> (h, c_new)`.

    `gates` are the summed pre-activations `[B, 4 C_h, H, W]` (order i, f, o, g), `c` is C_{t-1};
    the peephole weights are `[C_h, 1, 1]` or all None. One sigmoid covers i, f, o (without
    peepholes); the hand-written backward writes the four gate gradients into one buffer in the
    gates' memory format (channels_last stays channels_last, so the convolution backward needs no
    reorder) and takes about a quarter less time than autograd's version of `lstm_pointwise` (CPU).
    Under autocast the gates may be bf16/fp16 while the cell state stays float32.
    """

    @staticmethod
    def forward(ctx, gates, c, w_ci, w_cf, w_co):
        hc = c.shape[1]
        act = torch.empty_like(gates)
        i, f, o, g = act.split(hc, dim=1)
        a_i, a_f, a_o, a_g = gates.split(hc, dim=1)
        _tanh(a_g, out=g)
        if w_ci is None:
            torch.sigmoid(gates[:, : 3 * hc], out=act[:, : 3 * hc])
            c_new = torch.mul(f, c).addcmul_(i, g)
        else:
            torch.sigmoid(torch.addcmul(a_i, w_ci, c), out=i)
            torch.sigmoid(torch.addcmul(a_f, w_cf, c), out=f)
            c_new = torch.mul(f, c).addcmul_(i, g)
            torch.sigmoid(torch.addcmul(a_o, w_co, c_new), out=o)
        tanh_c = _tanh(c_new, out=torch.empty_like(c_new))
        ctx.save_for_backward(act, c, c_new if w_ci is not None else None, tanh_c, w_ci, w_cf, w_co)
        return o * tanh_c, c_new

    @staticmethod
    @once_differentiable
    def backward(ctx, dh, dc_new):
        act, c, c_new, tanh_c, w_ci, w_cf, w_co = ctx.saved_tensors
        hc = c.shape[1]
        i, f, o, g = act.split(hc, dim=1)
        d = torch.empty_like(act)  # gradients w.r.t. the pre-activations, same layout as the gates
        d_i, d_f, d_o, d_g = d.split(hc, dim=1)
        dc = dh * o  # becomes dL/dC_t, then dL/dC_{t-1}, in place (fewer fresh allocations)
        aten.tanh_backward.grad_input(dc, tanh_c, grad_input=dc).add_(dc_new)
        torch.mul(dh, tanh_c, out=d_o)
        if w_ci is not None:  # o_t sees C_t: finish d_o first and route it into dc
            aten.sigmoid_backward.grad_input(d_o, o, grad_input=d_o)
            dc.addcmul_(d_o, w_co)
        torch.mul(dc, g, out=d_i)
        torch.mul(dc, c, out=d_f)
        torch.mul(dc, i, out=d_g)
        aten.tanh_backward.grad_input(d_g, g, grad_input=d_g)
        sig = slice(0, (2 if w_ci is not None else 3) * hc)
        aten.sigmoid_backward.grad_input(d[:, sig], act[:, sig], grad_input=d[:, sig])
        if w_ci is None:
            return d, dc.mul_(f), None, None, None
        dims = (0, 2, 3)
        dw = [(d_i * c).sum(dims).view_as(w_ci), (d_f * c).sum(dims).view_as(w_cf),
              (d_o * c_new).sum(dims).view_as(w_co)]
        return d, dc.mul_(f).addcmul_(d_i, w_ci).addcmul_(d_f, w_cf), *dw


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell on `[B, C, H, W]` maps; `in_channels=0` makes an input-less cell (the forecaster).

    Kernel sizes must be odd (same padding). Weights and bias are initialised like one Conv2d over
    the concatenation [X, H] (uniform ±1/sqrt(fan_in)), peephole weights at zero.
    """

    state_size = 2  # tensors in a state: (h, c)

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        input_kernel_size: int | tuple[int, int] = 3,
        hidden_kernel_size: int | tuple[int, int] | None = None,
        bias: bool = True,
        peephole: bool = False,
    ):
        super().__init__()
        if in_channels < 0:
            raise ValueError(f"in_channels must be >= 0, got {in_channels}")
        if hidden_channels < 1:
            raise ValueError(f"hidden_channels must be >= 1, got {hidden_channels}")
        self.input_kernel = kernel_pair(input_kernel_size, "input_kernel_size")
        self.hidden_kernel = self.input_kernel if hidden_kernel_size is None else kernel_pair(
            hidden_kernel_size, "hidden_kernel_size")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        gates = 4 * hidden_channels
        self.weight_x = nn.Parameter(torch.empty(gates, in_channels, *self.input_kernel)) if in_channels else None
        self.weight_h = nn.Parameter(torch.empty(gates, hidden_channels, *self.hidden_kernel))
        self.bias = nn.Parameter(torch.empty(gates)) if bias else None
        self.peephole = peephole
        self.w_ci = self.w_cf = self.w_co = None
        if peephole:
            self.w_ci, self.w_cf, self.w_co = (nn.Parameter(torch.zeros(hidden_channels, 1, 1)) for _ in range(3))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight_h[0].numel() + (self.weight_x[0].numel() if self.weight_x is not None else 0)
        bound = 1.0 / math.sqrt(fan_in)
        for p in (self.weight_x, self.weight_h, self.bias):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)
        for p in (self.w_ci, self.w_cf, self.w_co):
            if p is not None:
                nn.init.zeros_(p)

    @property
    def joint(self) -> bool:
        """Whether W_x * X + W_h * H can run as one convolution over [X, H] (equal kernels)."""
        return self.weight_x is not None and self.input_kernel == self.hidden_kernel

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """Input term W_x * X + b for any number of frames: `[N, C_in, H, W] -> [N, 4 C_h, H, W]`."""
        if _narrow_on_cpu(x):
            return _conv_as_matmul(x, self.weight_x, self.bias, self.input_kernel)
        return F.conv2d(x, self.weight_x, self.bias, padding=_same(self.input_kernel))

    def gates(self, x: torch.Tensor | None, h: torch.Tensor | None) -> torch.Tensor:
        """Pre-activations W_x * x + W_h * h + b `[B, 4 C_h, H, W]`; `h=None` is the zero state."""
        if h is None:
            return self.project_input(x)
        if x is None:
            return F.conv2d(h, self.weight_h, self.bias, padding=_same(self.hidden_kernel))
        if self.joint and not _split_on_cpu(x):
            weight = torch.cat((self.weight_x, self.weight_h), dim=1)
            return F.conv2d(torch.cat((x, h), dim=1), weight, self.bias, padding=_same(self.input_kernel))
        return F.conv2d(h, self.weight_h, padding=_same(self.hidden_kernel)).add_(self.project_input(x))

    def forward(self, x: torch.Tensor | None, state: State | None = None) -> State:
        """One step: `x` `[B, C_in, H, W]` (None when in_channels=0), `state` `(h, c)` or None (zeros).

        Returns `(h, c)`, each `[B, C_h, H, W]`.
        """
        if (x is None) != (self.weight_x is None):
            raise ValueError("x must be None exactly when the cell has in_channels=0")
        if state is None and x is None:
            raise ValueError("state is required for an input-less cell (in_channels=0)")
        return self.update(self.gates(x, None if state is None else state[0]), None if state is None else state[1])

    def step(self, x_gates: torch.Tensor, state: State | None) -> State:
        """One step from a precomputed input term `x_gates = project_input(x_t)`; `state=None` is zeros."""
        if state is None:
            return self.update(x_gates, None)
        h, c = state
        return self.update(x_gates + F.conv2d(h, self.weight_h, padding=_same(self.hidden_kernel)), c)

    def update(self, gates: torch.Tensor, c: torch.Tensor | None) -> State:
        """Gate nonlinearities and state update from pre-activations `[B, 4 C_h, H, W]`; `c=None` is zeros."""
        if c is None:
            c = torch.zeros_like(gates[:, : self.hidden_channels], dtype=self.weight_h.dtype)
        if torch.compiler.is_compiling():
            return lstm_pointwise(gates, c, self.w_ci, self.w_cf, self.w_co)
        return LSTMPointwise.apply(gates, c, self.w_ci, self.w_cf, self.w_co)


def _split_on_cpu(x: torch.Tensor) -> bool:
    """Whether W_x * x + W_h * h is cheaper as two convolutions than as one over [x, h] on the CPU.

    Measured with oneDNN (benchmarks/README.md, "Model step"): two are faster for narrow inputs (< 8
    channels, such as raw frames: 1 + 32 channels joint cost more than 32 plus a separate 1) and, in
    training, for inputs that need no gradient (the first layer: the joint backward would compute a
    gradient for x's channels as well). Otherwise the joint convolution is faster.
    """
    return _narrow_on_cpu(x) or (x.device.type == "cpu" and torch.is_grad_enabled() and not x.requires_grad)


def _narrow_on_cpu(x: torch.Tensor) -> bool:
    """An input of fewer than NARROW_INPUT channels on the CPU."""
    return x.device.type == "cpu" and x.shape[1] < NARROW_INPUT


def _conv_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    kernel: tuple[int, int]) -> torch.Tensor:
    """Same-padded convolution as im2col and one batched matmul, `[N, C, H, W] -> [N, O, H, W]`: for 1-4
    input channels on the CPU, forward and weight gradient take 0.55-0.83 of oneDNN's convolution time."""
    n, _, height, width = x.shape
    columns = F.unfold(x, kernel, padding=_same(kernel))  # [N, C kh kw, H W]
    weights = weight.flatten(1).expand(n, -1, -1)  # a batched matmul: broadcasting matmul's backward is 4x slower
    if bias is None:
        return torch.bmm(weights, columns).view(n, -1, height, width)
    return torch.baddbmm(bias[None, :, None].expand(n, -1, 1), weights, columns).view(n, -1, height, width)


def _tanh(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1 into `out`: within 2e-7 of torch.tanh and 4x faster on CPU, where
    torch.tanh (SLEEF, 1 ULP) costs more per element than all of the cell's other gate arithmetic."""
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def _same(kernel: tuple[int, int]) -> tuple[int, int]:
    return kernel[0] // 2, kernel[1] // 2
