"""Checkpoints of the popular PyTorch ConvLSTM tutorial (KTH classifier) <-> this library.

The tutorial's cell has one `conv` over cat(X_t, H_{t-1}): weight `[4 C_h, C_in + C_h, kh, kw]`
(gates i, f, o, g, like ours), bias `[4 C_h]`. Splitting that weight along its input channels
gives our `weight_x` (first C_in) and `weight_h` (last C_h); the models then compute the same
function. State-dict keys: stack `cell_list.N.conv.weight|bias`; classifier
`conv_lstm.cell_list.N.conv.weight|bias` and `classifier.1.weight|bias` (Flatten, Linear).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from convlstm.networks import ConvLSTMClassifier
from convlstm.stack import ConvLSTM

_CLASSIFIER_STACK = "conv_lstm."
Cells = list[tuple[torch.Tensor, torch.Tensor | None]]  # per layer: tutorial conv weight, bias


def _tutorial_cells(state_dict: Mapping[str, torch.Tensor], prefix: str) -> Cells:
    cells = []
    while f"{prefix}cell_list.{len(cells)}.conv.weight" in state_dict:
        key = f"{prefix}cell_list.{len(cells)}.conv."
        cells.append((state_dict[key + "weight"], state_dict.get(key + "bias")))
    if not cells:
        raise ValueError(f"state_dict has no tutorial ConvLSTM keys ({prefix}cell_list.0.conv.weight)")
    return cells


def _load_stack(stack: ConvLSTM, cells: Cells) -> None:
    with torch.no_grad():
        for cell, (weight, bias) in zip(stack.cells, cells):
            cell.weight_x.copy_(weight[:, : cell.in_channels])
            cell.weight_h.copy_(weight[:, cell.in_channels :])
            if bias is not None:
                cell.bias.copy_(bias)


def _stack_shape(cells: Cells) -> dict:
    hidden = [weight.shape[0] // 4 for weight, _ in cells]
    return dict(
        in_channels=cells[0][0].shape[1] - hidden[0],
        hidden_channels=hidden,
        input_kernel_size=[tuple(weight.shape[-2:]) for weight, _ in cells],
        bias=cells[0][1] is not None,
    )


def stack_from_tutorial(state_dict: Mapping[str, torch.Tensor], **kwargs) -> ConvLSTM:
    """A `ConvLSTM` computing the same function as the tutorial's `ConvLSTM` with `state_dict`.

    Channels, kernels and bias are read from the weights; `kwargs` go to `ConvLSTM` (note its
    `batch_first=True` default; the tutorial's class defaults to False).
    """
    cells = _tutorial_cells(state_dict, "")
    stack = ConvLSTM(**_stack_shape(cells), **kwargs)
    _load_stack(stack, cells)
    return stack


def classifier_from_tutorial(state_dict: Mapping[str, torch.Tensor], height: int = 60,
                             width: int = 80) -> ConvLSTMClassifier:
    """A `ConvLSTMClassifier` equal to the tutorial's `ConvLSTMKTH` with `state_dict` on `height x width` clips."""
    cells = _tutorial_cells(state_dict, _CLASSIFIER_STACK)
    shape = _stack_shape(cells)
    kernels = set(shape["input_kernel_size"])
    if len(kernels) != 1 or not shape["bias"]:
        raise ValueError("state_dict: the classifier needs one kernel size for all layers and biases")
    head_weight, head_bias = state_dict["classifier.1.weight"], state_dict["classifier.1.bias"]
    kernel = kernels.pop()
    model = ConvLSTMClassifier(shape["in_channels"], height, width, shape["hidden_channels"],
                               kernel[0] if kernel[0] == kernel[1] else kernel, num_classes=head_weight.shape[0])
    if model.head.weight.shape != head_weight.shape:
        raise ValueError(f"height/width {height}x{width} give {model.head.in_features} features but the "
                         f"checkpoint's linear layer takes {head_weight.shape[1]}")
    _load_stack(model.convlstm, cells)
    with torch.no_grad():
        model.head.weight.copy_(head_weight)
        model.head.bias.copy_(head_bias)
    return model


def to_tutorial_state_dict(model: ConvLSTM | ConvLSTMClassifier) -> dict[str, torch.Tensor]:
    """The tutorial's state dict for `model` (stack or classifier): needs equal input/state kernels,
    no peephole, an input on every layer and biases; else ValueError."""
    stack = model.convlstm if isinstance(model, ConvLSTMClassifier) else model
    prefix = _CLASSIFIER_STACK if isinstance(model, ConvLSTMClassifier) else ""
    out = {}
    for n, cell in enumerate(stack.cells):
        if not cell.joint or cell.peephole or cell.bias is None:
            raise ValueError(f"model: layer {n} has no tutorial equivalent (needs an input, equal kernels, "
                             "bias and no peephole)")
        weight = torch.cat((cell.weight_x, cell.weight_h), dim=1).detach().clone()
        out[f"{prefix}cell_list.{n}.conv.weight"] = weight
        out[f"{prefix}cell_list.{n}.conv.bias"] = cell.bias.detach().clone()
    if isinstance(model, ConvLSTMClassifier):
        out["classifier.1.weight"] = model.head.weight.detach().clone()
        out["classifier.1.bias"] = model.head.bias.detach().clone()
    return out
