"""Multi-layer ConvLSTM over sequences `[B, T, C, H, W]` (or `[T, B, C, H, W]`), stateful.

Evaluation is layer-major: each layer runs over the whole sequence before the next one starts,
so the input-to-state convolution W_x * X can be hoisted out of the time loop (one convolution
over all B*T frames). Measured on CPU (benchmarks/README.md), a joint per-step convolution over
[X_t, H_{t-1}] is faster when both kernels match, so `hoist_input=None` (auto) hoists on GPUs
and otherwise only when the kernels differ (the cell itself runs W_x * X_t and W_h * H_{t-1} as two
per-step terms for narrow or gradient-free inputs, where that is faster on the CPU; a narrow
input's term is an im2col matmul there).
Activations run channels_last on Intel CPUs with AVX-512, where oneDNN's convolutions run up to 2x faster, and NCHW on other CPUs (AVX2-only, AMD
with AVX-512), where channels_last slows the gate arithmetic more than it speeds the convolutions
(`channels_last=None`, auto; `cpu_execution_choices`, decided once per process from the
instruction set). The first step from a zero state skips the state convolution (W_h * 0 = 0).
These choices change speed, not results.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from convlstm.cell import ConvLSTMCell, State

Kernel = int | tuple[int, int]


ONEDNN_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def _cpu_vendor_and_flags() -> tuple[str, frozenset[str]]:
    """(vendor_id, flags) of the first processor in /proc/cpuinfo; ("", {}) where there is none."""
    vendor, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id":
                    vendor = value.strip()
                elif key == "flags":
                    flags = frozenset(value.split())
                    break
    except OSError:
        pass
    return vendor, flags


def cpu_execution_choices() -> dict[str, bool]:
    """The automatic CPU execution choices of this process, from the instruction set (decided once).

    `channels_last`: only on Intel CPUs with AVX-512 (`avx512f` in /proc/cpuinfo's flags), whose
    full-width 512-bit units run oneDNN's channels-last convolutions fast enough to pay for the slower
    gate arithmetic on channels-last slices (Xeon with AVX-512 and AMX: library train step 1.36-1.48x
    the tutorial's CPU time with it, 1.29-1.36x without). Elsewhere activations stay NCHW: on an
    AVX2-only AMD EPYC the issue measured 0.97x with channels_last and 1.26x without, and on an AMD
    EPYC with AVX-512 (Zen 4 runs 512-bit operations as two 256-bit halves) it cost 6 % of CPU time
    (benchmarks/README.md, "Model step"). AVX-512 must also be what torch's kernels dispatch to
    (`torch.backends.cpu.get_cpu_capability()`, which honours ATEN_CPU_CAPABILITY) and not capped
    away from oneDNN (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA naming an AVX2 or older ISA).

    `hoist_input`: False on every CPU measured; per-step convolutions are faster there, joint over
    [X_t, H_{t-1}] or, for inputs under 8 channels and inputs that need no gradient in training, two
    of them (`convlstm.cell._split_on_cpu`; the narrow input's one as an im2col matmul,
    `convlstm.cell.NARROW_INPUT`). Layers whose input and state kernels differ are hoisted.

    An instruction-set rule rather than a timed trial: a trial on the first batch is at the mercy
    of the load on a shared machine (single steps here vary 2-10x) and would make the layout, and
    so the speed, differ between runs of the same code.
    """
    channels_last, hoist_input = _cpu_choices()
    return {"channels_last": channels_last, "hoist_input": hoist_input}


_DECIDED: dict[str, tuple[bool, bool]] = {}  # the process's choices, once made


@torch.compiler.assume_constant_result  # torch.compile takes the choices as constants, does not trace them
def _cpu_choices() -> tuple[bool, bool]:
    if "cpu" not in _DECIDED:
        _DECIDED["cpu"] = _decide_cpu_choices()
    return _DECIDED["cpu"]


def _decide_cpu_choices() -> tuple[bool, bool]:
    vendor, flags = _cpu_vendor_and_flags()
    avx512 = "avx512f" in flags and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    onednn_cap = next((os.environ[v] for v in ONEDNN_ISA_VARIABLES if os.environ.get(v)), "").lower()
    if onednn_cap and not (onednn_cap.startswith("avx512") or onednn_cap.startswith("avx10") or onednn_cap == "all"
                           or onednn_cap.startswith("amx")):
        avx512 = False
    return avx512 and vendor == "GenuineIntel", False


def per_layer(value, num_layers: int, name: str) -> list:
    """A list (one entry per layer) stays as is if its length fits; anything else is repeated."""
    if not isinstance(value, list):
        return [value] * num_layers
    if len(value) != num_layers:
        raise ValueError(f"{name} has {len(value)} entries but the stack has {num_layers} layers")
    return value


class ConvLSTM(nn.Module):
    """A stack of ConvLSTM cells; layer l > 0 takes layer l-1's hidden sequence as input.

    Kernel sizes are an int, a pair `(kh, kw)`, or a list with one of those per layer;
    `hidden_kernel_size=None` uses the input kernel. `num_layers=None` takes the length of the
    first list argument (1 if none is a list). `in_channels=0` makes an input-less stack (the
    paper's forecaster): call it with `x=None`, a state and `steps`. `hoist_input` and
    `channels_last` override the automatic execution choices (module docstring); None = auto.
    `cell_factory(in_channels, hidden_channels, input_kernel, hidden_kernel, bias=, peephole=)` builds
    each layer's cell: `ConvLSTMCell`, or a subclass with a longer state such as
    `convlstm.sa_cell.SAConvLSTMCell` (state `(h, c, m)`).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int | Sequence[int],
        input_kernel_size: Kernel | list[Kernel] = 3,
        hidden_kernel_size: Kernel | list[Kernel] | None = None,
        num_layers: int | None = None,
        batch_first: bool = True,
        bias: bool = True,
        peephole: bool = False,
        return_all_layers: bool = False,
        hoist_input: bool | None = None,
        channels_last: bool | None = None,
        cell_factory: Callable[..., ConvLSTMCell] = ConvLSTMCell,
    ):
        super().__init__()
        if not isinstance(hidden_channels, int):
            hidden_channels = list(hidden_channels)
        if num_layers is None:
            lists = [v for v in (hidden_channels, input_kernel_size, hidden_kernel_size) if isinstance(v, list)]
            num_layers = len(lists[0]) if lists else 1
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        hidden = per_layer(hidden_channels, num_layers, "hidden_channels")
        input_kernels = per_layer(input_kernel_size, num_layers, "input_kernel_size")
        hidden_kernels = per_layer(hidden_kernel_size, num_layers, "hidden_kernel_size")
        self.in_channels = in_channels
        self.hidden_channels = hidden
        self.batch_first = batch_first
        self.return_all_layers = return_all_layers
        self.hoist_input = hoist_input
        self.channels_last = channels_last
        self.cells = nn.ModuleList(
            cell_factory(c_in, c_h, k_in, k_h, bias=bias, peephole=peephole)
            for c_in, c_h, k_in, k_h in zip([in_channels] + hidden[:-1], hidden, input_kernels, hidden_kernels)
        )

    def forward(
        self,
        x: torch.Tensor | None,
        state: Sequence[State] | None = None,
        steps: int | None = None,
    ) -> tuple[list[torch.Tensor], list[State]]:
        """Run the stack over a sequence.

        x: `[B, T, C_in, H, W]` (batch_first) or `[T, B, C_in, H, W]`; None for an input-less stack,
        which then needs `state` and `steps` (the number of frames to produce).
        state: one `(h, c)` per layer (`(h, c, m)` for SA cells), each `[B, C_h, H, W]`, or None for zeros.
        Returns `(outputs, states)`: outputs are hidden sequences `[B, T, C_h, H, W]` in the input's
        time/batch order (last layer only unless `return_all_layers`); states are the final state
        of every layer, to carry into the next chunk.
        """
        self._check(x, state, steps)
        on_cpu = self.cells[0].weight_h.device.type == "cpu"
        cpu_choices = cpu_execution_choices() if on_cpu else {"channels_last": False, "hoist_input": True}
        channels_last = cpu_choices["channels_last"] if self.channels_last is None else self.channels_last
        layout = torch.channels_last if channels_last else torch.contiguous_format
        time_dim = 1 if self.batch_first else 0
        frames = None if x is None else [f.contiguous(memory_format=layout) for f in x.unbind(time_dim)]
        outputs, states = [], []
        for layer, cell in enumerate(self.cells):
            h_c = None if state is None else tuple(s.contiguous(memory_format=layout) for s in state[layer])
            hoist = (cpu_choices["hoist_input"] or not cell.joint) if self.hoist_input is None else self.hoist_input
            hidden = []
            if frames is None:
                for _ in range(steps):
                    h_c = cell(None, h_c)
                    hidden.append(h_c[0])
            elif hoist:
                for x_gates in cell.project_input(torch.cat(frames)).chunk(len(frames)):
                    h_c = cell.step(x_gates, h_c)
                    hidden.append(h_c[0])
            else:
                for x_t in frames:
                    h_c = cell(x_t, h_c)
                    hidden.append(h_c[0])
            if self.return_all_layers or layer == len(self.cells) - 1:
                outputs.append(torch.stack(hidden, dim=time_dim))
            states.append(h_c)
            frames = hidden
        return outputs, states

    def _check(self, x: torch.Tensor | None, state: Sequence[State] | None, steps: int | None) -> None:
        if self.in_channels == 0:
            if x is not None or state is None or steps is None or steps < 1:
                raise ValueError("an input-less stack (in_channels=0) takes x=None, a state and steps >= 1")
        elif steps is not None:
            raise ValueError("steps is only for input-less stacks (in_channels=0); x sets the length")
        elif x is None or x.dim() != 5:
            raise ValueError(f"x must be a 5-D tensor [B, T, C, H, W], got {None if x is None else tuple(x.shape)}")
        elif x.shape[2] != self.in_channels:
            raise ValueError(f"x has {x.shape[2]} channels (dim 2) but in_channels={self.in_channels}")
        if state is None:
            return
        if len(state) != len(self.cells):
            raise ValueError(f"state has {len(state)} entries but the stack has {len(self.cells)} layers")
        batch, height, width = state[0][0].shape[0], state[0][0].shape[-2], state[0][0].shape[-1]
        if x is not None:
            batch, height, width = x.shape[0 if self.batch_first else 1], x.shape[-2], x.shape[-1]
        for layer, (cell, tensors) in enumerate(zip(self.cells, state)):
            expected = (batch, cell.hidden_channels, height, width)
            if len(tensors) != cell.state_size or any(tuple(t.shape) != expected for t in tensors):
                raise ValueError(f"state[{layer}] must be {cell.state_size} tensors of shape {expected}, "
                                 f"got {[tuple(t.shape) for t in tensors]}")
