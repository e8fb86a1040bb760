"""Tutorial checkpoints: converted models compute the same outputs and gradients (1e-5)."""
from __future__ import annotations

import pytest
import torch
from torch_threads import single_thread  # noqa: F401 (autouse fixture)
from tutorial_reference import ConvLSTM as TutorialConvLSTM
from tutorial_reference import ConvLSTMKTH, tutorial_config

from convlstm.interop import classifier_from_tutorial, stack_from_tutorial, to_tutorial_state_dict
from convlstm.stack import ConvLSTM

TOL = dict(atol=1e-5, rtol=1e-5)


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in module.named_parameters()}


def as_tutorial_grads(model) -> dict[str, torch.Tensor]:
    """Our parameter gradients in the tutorial's layout (same conversion as the weights)."""
    with torch.no_grad():
        saved = {name: p.detach().clone() for name, p in model.named_parameters()}
        for p in model.parameters():
            p.copy_(p.grad)
        out = to_tutorial_state_dict(model)
        for name, p in model.named_parameters():
            p.copy_(saved[name])
    return out


def test_stack_outputs_and_gradients_match_tutorial():
    torch.manual_seed(0)
    tutorial = TutorialConvLSTM(3, [5, 4], [(3, 3), (5, 5)], 2, batch_first=False, return_all_layers=True)
    ours = stack_from_tutorial(tutorial.state_dict(), batch_first=False, return_all_layers=True)
    assert [c.hidden_channels for c in ours.cells] == [5, 4] and ours.cells[1].input_kernel == (5, 5)
    x = torch.rand(4, 2, 3, 9, 7)  # [T, B, C, H, W]
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_t, states_t = tutorial(x_t)
    out_o, states_o = ours(x_o)
    # the tutorial returns batch-first outputs even for time-first input
    torch.testing.assert_close([o.transpose(0, 1) for o in out_o], out_t, **TOL)
    torch.testing.assert_close([tuple(s) for s in states_o], [tuple(s) for s in states_t], **TOL)
    ramp = torch.linspace(-1, 1, x.shape[-1])  # a loss touching every output and the last cell state
    loss_t = sum((o * ramp).sum() for o in out_t) + states_t[-1][1].sum()
    loss_o = sum((o.transpose(0, 1) * ramp).sum() for o in out_o) + states_o[-1][1].sum()
    loss_t.backward()
    loss_o.backward()
    torch.testing.assert_close(x_o.grad, x_t.grad, **TOL)
    torch.testing.assert_close(as_tutorial_grads(ours), grads(tutorial), **TOL)


@pytest.mark.parametrize("height, width, hidden", [(12, 16, [4, 3]), (60, 80, [32, 32])], ids=["small", "kth"])
def test_classifier_logits_and_gradients_match_tutorial(height, width, hidden):
    torch.manual_seed(0)
    tutorial = ConvLSTMKTH(tutorial_config(out_channels=hidden, height=height, width=width))
    ours = classifier_from_tutorial(tutorial.state_dict(), height=height, width=width)
    x = torch.rand(2, 3, 1, height, width)
    labels = torch.tensor([1, 4])
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss_t, logits_t = tutorial(x_t, labels)
    logits_o = ours(x_o)
    torch.testing.assert_close(logits_o, logits_t, **TOL)
    torch.nn.functional.cross_entropy(logits_o, labels).backward()
    loss_t.backward()
    torch.testing.assert_close(x_o.grad, x_t.grad, **TOL)
    torch.testing.assert_close(as_tutorial_grads(ours), grads(tutorial), **TOL)


def test_round_trip_to_tutorial_state_dict():
    torch.manual_seed(0)
    tutorial = ConvLSTMKTH(tutorial_config(out_channels=[3, 2], height=8, width=10, num_classes=4))
    ours = classifier_from_tutorial(tutorial.state_dict(), height=8, width=10)
    torch.manual_seed(1)
    fresh = ConvLSTMKTH(tutorial_config(out_channels=[3, 2], height=8, width=10, num_classes=4))
    fresh.load_state_dict(to_tutorial_state_dict(ours))
    torch.testing.assert_close(fresh.state_dict(), tutorial.state_dict(), atol=0, rtol=0)


def test_conversion_errors():
    tutorial = ConvLSTMKTH(tutorial_config(height=8, width=10))
    with pytest.raises(ValueError, match="height/width"):
        classifier_from_tutorial(tutorial.state_dict(), height=16, width=10)
    with pytest.raises(ValueError, match="cell_list.0.conv.weight"):
        stack_from_tutorial({"conv.weight": torch.zeros(4, 2, 3, 3)})
    with pytest.raises(ValueError, match="model"):
        to_tutorial_state_dict(ConvLSTM(1, 4, 3, peephole=True))
