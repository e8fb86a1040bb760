"""Self-Attention ConvLSTM (Lin et al., AAAI 2020): a ConvLSTM cell followed by a self-attention memory.

One step. First the ConvLSTM equations (`convlstm/cell.py`) turn X_t, the previous output Ĥ_{t-1}
and C_{t-1} into H_t, C_t. Then the self-attention memory (SAM) reads H_t and its own memory
M_{t-1} (same shape as H_t) and produces the cell's output Ĥ_t and M_t:

    Q_h = W_q H_t,   K_h = W_k H_t,   V_h = W_v H_t,   K_m = W_mk M_{t-1},   V_m = W_mv M_{t-1}
    Z_h = softmax(Q_h K_h^T) V_h          Z_m = softmax(Q_h K_m^T) V_m
    Z   = W_z [Z_h; Z_m]
    i'  = σ(W_zi Z + W_hi H_t + b_i)
    g'  = tanh(W_zg Z + W_hg H_t + b_g)
    o'  = σ(W_zo Z + W_ho H_t + b_o)
    M_t = (1 - i') ∘ M_{t-1} + i' ∘ g'
    Ĥ_t = o' ∘ M_t

Every W is a 1x1 convolution. In the attention lines a map `[C, H, W]` is read as N = H*W
positions (rows) of C features: Q_h, K_h, K_m are `[N, C~]`, V_h, V_m `[N, C]`, and the softmax
runs over the N key positions of each query row, so every position attends to all positions of
H_t and of M_{t-1}. C~ is `attention_channels` (default C; this module takes no value for it from
the paper). The three gates are one 1x1 convolution over [Z, H_t] (2C -> 3C, order i', g', o').
Conventions here, each a choice where the equations allow one:
- No 1/sqrt(C~) scale in the softmax, as in the paper's equations (`scaled_dot_product_attention`
  is called with `scale=1.0`; its default would divide by sqrt(C~)).
- Z has C channels (W_z: 2C -> C), like H_t; some reimplementations keep 2C.
- No bias on W_q, W_k, W_v, W_mk, W_mv, W_z (the equations show none). They would add almost
  nothing: a key bias shifts each softmax row by a constant; value and W_z biases come out of the
  row-normalised attention as constants, which the gate biases b_i, b_g, b_o already provide.
- Initialisation like the ConvLSTM cell: uniform ±1/sqrt(fan_in) (PyTorch's Conv2d default).
- State `(h, c, m)` = (Ĥ_t, C_t, M_t), zeros when None. The ConvLSTM part sees Ĥ_{t-1} as its
  hidden state, so `SAConvLSTMCell` drops into `convlstm.stack.ConvLSTM(cell_factory=...)`
  unchanged: stateful chunks, batch- or time-first, input-less forecasting stacks.

Cost. Two N x N attentions per cell and step, O(N^2 (C~ + C)) time per sample. N counts the
positions of the map the cell sees (after any space-to-depth patching): 64x64 frames with 4x4
patches (Moving MNIST) give a 16x16 map, N = 256 and 65,536 scores (256 KiB in float32) per
attention per sample; a 64x64 map gives N = 4096 and 4096^2 = 16.8 M scores (64 MiB); 100x100
gives N = 10^4 and 10^8 scores (381 MiB). The math backend of `scaled_dot_product_attention`
materialises those matrices and keeps the softmax for the backward pass: times 2 attentions,
batch, steps and layers (64x64 map, batch 8, 20 steps, 4 layers: about 80 GiB). The fused
backends it picks where they apply (flash attention on CPU in torch 2.x, measured; flash /
memory-efficient on CUDA) work in tiles and keep O(N) per query for the backward pass, so memory
grows linearly with N and time quadratically (benchmarks/README.md, "Self-attention ConvLSTM").
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from convlstm.cell import ConvLSTMCell, State


class SelfAttentionMemory(nn.Module):
    """The SAM module: `(h, m) -> (h_hat, m_new)`, all `[B, C, H, W]` (module docstring's equations).

    Weights: `hidden_qkv` is W_q, W_k, W_v stacked `[2 C~ + C, C, 1, 1]`; `memory_kv` is W_mk, W_mv
    `[C~ + C, C, 1, 1]`; `fuse` is W_z `[C, 2 C, 1, 1]` over [Z_h, Z_m]; `gates` `[3 C, 2 C, 1, 1]`
    (rows i', g', o'; columns Z then H_t) with bias `[3 C]`.
    """

    def __init__(self, channels: int, attention_channels: int | None = None):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        attention_channels = channels if attention_channels is None else attention_channels
        if attention_channels < 1:
            raise ValueError(f"attention_channels must be >= 1, got {attention_channels}")
        self.channels = channels
        self.attention_channels = attention_channels
        self.hidden_qkv = nn.Conv2d(channels, 2 * attention_channels + channels, 1, bias=False)
        self.memory_kv = nn.Conv2d(channels, attention_channels + channels, 1, bias=False)
        self.fuse = nn.Conv2d(2 * channels, channels, 1, bias=False)
        self.gates = nn.Conv2d(2 * channels, 3 * channels, 1)

    def forward(self, h: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, height, width = h.shape
        a = self.attention_channels
        # [B, C', H, W] -> [B, N, C'] (positions as rows; a view when the map is channels_last)
        q, k_h, v_h = self.hidden_qkv(h).flatten(2).transpose(1, 2).split((a, a, channels), dim=-1)
        k_m, v_m = self.memory_kv(m).flatten(2).transpose(1, 2).split((a, channels), dim=-1)
        # Both attentions in one call, as two heads that share the query: [B, 2, N, C] = (Z_h, Z_m).
        z = F.scaled_dot_product_attention(q.unsqueeze(1).expand(-1, 2, -1, -1), torch.stack((k_h, k_m), dim=1),
                                           torch.stack((v_h, v_m), dim=1), scale=1.0)
        # [B, 2, N, C] -> [B, 2C, H, W] with channels [Z_h, Z_m] (channels_last strides)
        z = z.transpose(1, 2).reshape(batch, height, width, 2 * channels).permute(0, 3, 1, 2)
        i, g, o = self.gates(torch.cat((self.fuse(z), h), dim=1)).chunk(3, dim=1)
        i = torch.sigmoid(i)
        m_new = (1 - i) * m + i * torch.tanh(g)
        return torch.sigmoid(o) * m_new, m_new


class SAConvLSTMCell(ConvLSTMCell):
    """SA-ConvLSTM cell on `[B, C, H, W]` maps: `ConvLSTMCell` (same arguments, peepholes optional)
    followed by `SelfAttentionMemory(hidden_channels, attention_channels)` in `self.sam`.

    State `(h, c, m)`, each `[B, C_h, H, W]`: h is the SAM output Ĥ (what the stack passes up and
    returns), c the ConvLSTM cell state, m the SAM memory. Use it in a stack with
    `ConvLSTM(..., cell_factory=SAConvLSTMCell)` (or `functools.partial(SAConvLSTMCell,
    attention_channels=...)`).
    """

    state_size = 3

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        input_kernel_size: int | tuple[int, int] = 3,
        hidden_kernel_size: int | tuple[int, int] | None = None,
        bias: bool = True,
        peephole: bool = False,
        attention_channels: int | None = None,
    ):
        super().__init__(in_channels, hidden_channels, input_kernel_size, hidden_kernel_size, bias, peephole)
        self.sam = SelfAttentionMemory(hidden_channels, attention_channels)

    def forward(self, x: torch.Tensor | None, state: State | None = None) -> State:
        """One step: `x` `[B, C_in, H, W]` (None when in_channels=0), `state` `(h, c, m)` or None (zeros).

        Returns `(h, c, m)`, each `[B, C_h, H, W]`.
        """
        return self._attend(super().forward(x, None if state is None else state[:2]), state)

    def step(self, x_gates: torch.Tensor, state: State | None) -> State:
        """One step from a precomputed input term `x_gates = project_input(x_t)`; `state=None` is zeros."""
        return self._attend(super().step(x_gates, None if state is None else state[:2]), state)

    def _attend(self, h_c: tuple[torch.Tensor, torch.Tensor], state: State | None) -> State:
        h, c = h_c
        m = torch.zeros_like(h, dtype=c.dtype) if state is None else state[2]
        h_hat, m = self.sam(h, m)
        return h_hat, c, m
