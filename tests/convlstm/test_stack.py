"""ConvLSTM stack: layouts, stateful chunking, execution paths, arguments, torch.compile."""
from __future__ import annotations

import pytest
import torch
from torch_threads import single_thread  # noqa: F401 (autouse fixture)

from convlstm.cell import ConvLSTMCell
from convlstm.sa_cell import SAConvLSTMCell
from convlstm.stack import ConvLSTM
from stacks import clip, make_stack

CELLS = pytest.mark.parametrize("cell", [ConvLSTMCell, SAConvLSTMCell], ids=["conv", "sa"])


def test_shapes_outputs_and_states():
    stack = make_stack(return_all_layers=True)
    outputs, states = stack(clip())
    assert [o.shape for o in outputs] == [(2, 5, 4, 7, 6), (2, 5, 3, 7, 6)]
    assert [tuple(t.shape) for s in states for t in s] == [(2, 4, 7, 6)] * 2 + [(2, 3, 7, 6)] * 2
    torch.testing.assert_close(outputs[-1][:, -1], states[-1][0])
    last_only, all_states = make_stack()(clip())
    assert len(last_only) == 1 and len(all_states) == 2
    torch.testing.assert_close(last_only[0], outputs[-1])


@CELLS
def test_batch_first_and_time_first_agree(cell):
    x = clip()
    (batch_first,), states_b = make_stack(batch_first=True, cell_factory=cell)(x)
    (time_first,), states_t = make_stack(batch_first=False, cell_factory=cell)(x.transpose(0, 1))
    torch.testing.assert_close(time_first.transpose(0, 1), batch_first, atol=1e-6, rtol=0)
    torch.testing.assert_close(states_t, states_b, atol=1e-6, rtol=0)


@CELLS
@pytest.mark.parametrize("hoist_input", [False, True])
def test_stateful_chunks_equal_one_pass(hoist_input, cell):
    stack = make_stack(hoist_input=hoist_input, cell_factory=cell)
    x = clip(steps=6)
    (whole,), whole_states = stack(x)
    (first,), states = stack(x[:, :2])
    (second,), states = stack(x[:, 2:5], states)
    (third,), end_states = stack(x[:, 5:], states)
    torch.testing.assert_close(torch.cat([first, second, third], dim=1), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(end_states, whole_states, atol=1e-6, rtol=0)


@CELLS
@pytest.mark.parametrize("kernels", [(3, None), (5, 1)], ids=["joint", "split"])
def test_execution_paths_agree_with_gradients(kernels, cell):
    """Hoisted vs per-step input convolution, channels_last vs NCHW: same values and gradients."""
    x = clip()
    results = []
    for hoist_input in (False, True):
        for channels_last in (False, True):
            stack = make_stack(input_kernel_size=kernels[0], hidden_kernel_size=kernels[1],
                               hoist_input=hoist_input, channels_last=channels_last, cell_factory=cell)
            xg = x.clone().requires_grad_()
            (out,), _ = stack(xg)
            out.square().sum().backward()
            results.append((out.detach(), xg.grad, [p.grad for p in stack.parameters()]))
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], atol=1e-5, rtol=1e-5)


def test_per_layer_kernels_and_channels():
    stack = ConvLSTM(3, [8, 4, 2], input_kernel_size=[5, (3, 5), 1], hidden_kernel_size=[(1, 3), 3, 1])
    assert len(stack.cells) == 3
    assert [c.weight_x.shape[1:] for c in stack.cells] == [(3, 5, 5), (8, 3, 5), (4, 1, 1)]
    assert [c.weight_h.shape[1:] for c in stack.cells] == [(8, 1, 3), (4, 3, 3), (2, 1, 1)]
    assert len(ConvLSTM(1, 4, 3, num_layers=3).cells) == 3
    assert [c.hidden_channels for c in ConvLSTM(1, (4, 2), (3, 5)).cells] == [4, 2]  # a tuple kernel is one pair
    (out,), _ = stack(clip(channels=3))
    assert out.shape == (2, 5, 2, 7, 6)


def test_input_less_stack_runs_from_a_state():
    forecaster = make_stack(in_channels=0)
    state = [(torch.randn(2, c, 5, 4), torch.randn(2, c, 5, 4)) for c in (4, 3)]
    (out,), states = forecaster(None, state, steps=3)
    assert out.shape == (2, 3, 3, 5, 4) and len(states) == 2
    assert forecaster.cells[0].weight_x is None and forecaster.cells[1].weight_x is not None


@pytest.mark.parametrize("kwargs, name", [
    (dict(hidden_channels=[4, 3], input_kernel_size=[3, 3, 3]), "input_kernel_size"),
    (dict(hidden_channels=[4, 3], hidden_kernel_size=[1]), "hidden_kernel_size"),
    (dict(hidden_channels=[4, 3], num_layers=3), "hidden_channels"),
    (dict(hidden_channels=4, input_kernel_size=2), "input_kernel_size"),
    (dict(hidden_channels=4, num_layers=0), "num_layers"),
])
def test_bad_constructor_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ConvLSTM(2, **kwargs)


def test_bad_forward_arguments_raise():
    stack = make_stack()
    with pytest.raises(ValueError, match="5-D"):
        stack(torch.rand(2, 2, 7, 6))
    with pytest.raises(ValueError, match="in_channels"):
        stack(clip(channels=3))
    with pytest.raises(ValueError, match="state"):
        stack(clip(), [(torch.zeros(2, 4, 7, 6),) * 2])
    with pytest.raises(ValueError, match=r"state\[1\]"):
        stack(clip(), [(torch.zeros(2, 4, 7, 6),) * 2, (torch.zeros(2, 4, 7, 6),) * 2])
    with pytest.raises(ValueError, match="steps"):
        stack(clip(), steps=3)
    with pytest.raises(ValueError, match="in_channels=0"):
        make_stack(in_channels=0)(None, steps=2)


@pytest.mark.integration  # torch.compile (seconds of compilation)
def test_compiles_without_graph_breaks():
    stack = make_stack()
    x = clip(steps=3)
    compiled = torch.compile(stack, backend="aot_eager", fullgraph=True)
    (out,), _ = compiled(x)
    (want,), _ = stack(x)
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
    out.sum().backward()
    assert all(p.grad is not None for p in stack.parameters())


def test_automatic_cpu_choices_follow_the_instruction_set(monkeypatch):
    """channels_last only on Intel with AVX-512 (and not when oneDNN is capped below it); no hoisting."""
    import convlstm.stack as stack_module

    def choices(vendor, flags, capability="AVX512", **env):
        monkeypatch.setattr(stack_module, "_cpu_vendor_and_flags", lambda: (vendor, frozenset(flags)))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        for name in stack_module.ONEDNN_ISA_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        stack_module._DECIDED.clear()
        return stack_module.cpu_execution_choices()

    try:
        assert choices("GenuineIntel", {"avx2", "avx512f", "amx_tile"}) == {"channels_last": True, "hoist_input": False}
        assert choices("GenuineIntel", {"avx2", "avx512f"})["channels_last"]
        assert not choices("GenuineIntel", {"avx2"}, "AVX2")["channels_last"]
        assert not choices("GenuineIntel", {"avx2", "avx512f"}, "AVX2")["channels_last"]  # ATEN_CPU_CAPABILITY=avx2
        assert not choices("GenuineIntel", {"avx2", "avx512f"}, ONEDNN_MAX_CPU_ISA="AVX2")["channels_last"]
        assert choices("GenuineIntel", {"avx2", "avx512f"}, ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX")["channels_last"]
        assert not choices("AuthenticAMD", {"avx2", "avx512f"})["channels_last"]
        assert not choices("AuthenticAMD", {"avx2"}, "AVX2")["channels_last"]
        assert not choices("", set(), "DEFAULT")["channels_last"]  # no /proc/cpuinfo (macOS, ARM, ...)
    finally:
        stack_module._DECIDED.clear()
