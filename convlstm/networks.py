"""Networks built from ConvLSTM stacks: the paper's encoder-forecaster and FC-LSTM, a clip classifier.

All take frames `[B, T, C, H, W]` in [0, 1] (batch first) and keep their constructor arguments in
`self.config`, so `convlstm.factory.model_spec` can store how to rebuild them. `cell="sa"` builds
EncoderForecaster and ConvLSTMClassifier from self-attention ConvLSTM cells (`convlstm.sa_cell`);
`self.config` records `cell` only when it is not the default "conv", so specs of ConvLSTM models
stay what they were (training compares specs to resume from a checkpoint); likewise `motion`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from convlstm.cell import ConvLSTMCell, kernel_pair
from convlstm.motion import LeadSmoothing, advect, motion_field
from convlstm.sa_cell import SAConvLSTMCell
from convlstm.stack import ConvLSTM, Kernel

OUTPUT_ACTIVATIONS = ("sigmoid", None)
CELLS: dict[str, type[ConvLSTMCell]] = {"conv": ConvLSTMCell, "sa": SAConvLSTMCell}
MOTIONS = (None, "advection")


def space_to_depth(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`[B, T, C, H, W] -> [B, T, P*P*C, H/P, W/P]` (non-overlapping P x P patches become channels)."""
    if x.shape[-2] % patch_size or x.shape[-1] % patch_size:
        raise ValueError(f"frame size {tuple(x.shape[-2:])} is not divisible by patch_size={patch_size}")
    return F.pixel_unshuffle(x.flatten(0, 1), patch_size).unflatten(0, x.shape[:2])


def depth_to_space(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of `space_to_depth`: `[B, T, P*P*C, h, w] -> [B, T, C, h*P, w*P]`."""
    return F.pixel_shuffle(x.flatten(0, 1), patch_size).unflatten(0, x.shape[:2])


def _check_activation(output_activation: str | None) -> None:
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")


def _cell_factory(cell: str) -> type[ConvLSTMCell]:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    return CELLS[cell]


def _check_frames(x: torch.Tensor, channels: int) -> None:
    if x.dim() != 5 or x.shape[2] != channels:
        raise ValueError(f"x must be [B, T, {channels}, H, W], got {tuple(x.shape)}")


class EncoderForecaster(nn.Module):
    """Shi et al. 2015, Figure 3: J input frames -> K predicted frames `[B, K, C, H, W]`.

    Frames are cut into P x P patches (space-to-depth), encoded by a ConvLSTM stack, whose final
    states initialise a forecasting stack of the same shape that takes no input (its first layer
    has in_channels=0; higher layers read the layer below). A 1x1 convolution over all forecasting
    layers' hidden states gives P*P*C channels per patch, which depth-to-space turns back into
    frames; `output_activation="sigmoid"` gives [0, 1] pixels, None gives logits (for
    `convlstm.losses.bce_loss`). Paper notation ConvLSTM(K)-k-N-...: `input_kernel_size=K`,
    `hidden_kernel_size=k`, `hidden_channels=[N, ...]`. `cell="sa"`: both stacks of SA-ConvLSTM
    cells (Lin et al. 2020), attention over the (H/P) * (W/P) patch positions.

    `motion="advection"` (motion-aware): the window's motion field (`convlstm.motion.motion_field`, the
    optical-flow baseline's) advects the last input frame to every lead (`convlstm.motion.advect`); the
    forecasting stack reads these K advected frames as its input, and the head's output is a correction
    added to them, clamped to [0, 1] pixels (so `output_activation` must be "sigmoid"). The head starts
    at zero, so the untrained model forecasts exactly the optical-flow baseline. `smoothing=[s1, ...]`
    (pixels; motion models only) adds a learned lead-dependent smoothing of the advected rain above
    `smoothing_threshold` mm/h (`convlstm.motion.LeadSmoothing`, also zero at the start) to the forecast.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: Sequence[int] = (128, 64, 64),
        input_kernel_size: Kernel = 5,
        hidden_kernel_size: Kernel = 5,
        patch_size: int = 4,
        peephole: bool = True,
        out_frames: int = 10,
        output_activation: str | None = "sigmoid",
        cell: str = "conv",
        motion: str | None = None,
        smoothing: Sequence[float] | None = None,
        smoothing_threshold: float = 2.0,
    ):
        super().__init__()
        _check_activation(output_activation)
        cell_factory = _cell_factory(cell)
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
        if motion and output_activation != "sigmoid":
            raise ValueError(f"motion={motion!r} corrects [0, 1] pixels: output_activation must be 'sigmoid', "
                             f"got {output_activation!r}")
        if smoothing and not motion:
            raise ValueError("smoothing smooths the advection forecast: it needs motion='advection'")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if out_frames < 1:
            raise ValueError(f"out_frames must be >= 1, got {out_frames}")
        hidden = list(hidden_channels)
        self.config = dict(in_channels=in_channels, hidden_channels=hidden, input_kernel_size=input_kernel_size,
                           hidden_kernel_size=hidden_kernel_size, patch_size=patch_size, peephole=peephole,
                           out_frames=out_frames, output_activation=output_activation)
        if cell != "conv":
            self.config["cell"] = cell
        if motion:
            self.config["motion"] = motion
        if smoothing:
            self.config.update(smoothing=[float(s) for s in smoothing], smoothing_threshold=float(smoothing_threshold))
        self.motion = motion
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.out_frames = out_frames
        self.output_activation = output_activation
        patch_channels = in_channels * patch_size**2
        # One kernel for all layers: normalise to a pair so a JSON-stored [kh, kw] is not read per layer.
        kernels = (kernel_pair(input_kernel_size, "input_kernel_size"),
                   kernel_pair(hidden_kernel_size, "hidden_kernel_size"))
        self.encoder = ConvLSTM(patch_channels, hidden, *kernels, peephole=peephole, cell_factory=cell_factory)
        self.forecaster = ConvLSTM(patch_channels if motion else 0, hidden, *kernels, peephole=peephole,
                                   return_all_layers=True, cell_factory=cell_factory)
        self.head = nn.Conv2d(sum(hidden), patch_channels, kernel_size=1)
        self.smoothing = LeadSmoothing(out_frames, smoothing, smoothing_threshold) if smoothing else None
        if motion:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[B, J, C, H, W]` with H, W divisible by `patch_size` -> `[B, K, C, H, W]`."""
        _check_frames(x, self.in_channels)
        _, states = self.encoder(space_to_depth(x, self.patch_size))
        if self.motion:
            advected = advect(x[:, -1], motion_field(x), self.out_frames)  # [B, K, C, H, W]
            outputs, _ = self.forecaster(space_to_depth(advected, self.patch_size), states)
        else:
            outputs, _ = self.forecaster(None, states, steps=self.out_frames)
        hidden = torch.cat(outputs, dim=2)  # [B, K, sum(C_h), H/P, W/P]
        y = depth_to_space(self.head(hidden.flatten(0, 1)).unflatten(0, hidden.shape[:2]), self.patch_size)
        if self.motion:
            if self.smoothing is not None:
                y = y + self.smoothing(advected)
            return (advected + y).clamp(0.0, 1.0)
        return torch.sigmoid(y) if self.output_activation == "sigmoid" else y


class FCLSTM(nn.Module):
    """The paper's FC-LSTM baseline: encoder and predictor LSTM stacks on flattened frames.

    An FC-LSTM is a ConvLSTM on a 1x1 grid with 1x1 kernels (the paper's own remark), so both
    stacks are `ConvLSTM`s over `[B, T, frame_size, 1, 1]`; peephole weights are one per unit and
    gate. The predictor takes no input and starts from the encoder's final states; a linear layer
    maps its last layer's hidden state to the pixels. `x` `[B, J, C, H, W]` with C*H*W == frame_size.
    """

    def __init__(
        self,
        frame_size: int = 64 * 64,
        hidden_sizes: Sequence[int] = (2048, 2048),
        out_frames: int = 10,
        peephole: bool = True,
        output_activation: str | None = "sigmoid",
    ):
        super().__init__()
        _check_activation(output_activation)
        if out_frames < 1:
            raise ValueError(f"out_frames must be >= 1, got {out_frames}")
        hidden = list(hidden_sizes)
        self.config = dict(frame_size=frame_size, hidden_sizes=hidden, out_frames=out_frames, peephole=peephole,
                           output_activation=output_activation)
        self.frame_size = frame_size
        self.out_frames = out_frames
        self.output_activation = output_activation
        self.encoder = ConvLSTM(frame_size, hidden, 1, peephole=peephole)
        self.predictor = ConvLSTM(0, hidden, 1, peephole=peephole)
        self.head = nn.Linear(hidden[-1], frame_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[B, J, C, H, W]` -> `[B, K, C, H, W]`."""
        if x.dim() != 5 or math.prod(x.shape[2:]) != self.frame_size:
            raise ValueError(f"x must be [B, T, C, H, W] with C*H*W = frame_size={self.frame_size}, "
                             f"got {tuple(x.shape)}")
        _, states = self.encoder(x.flatten(2)[..., None, None])
        (hidden,), _ = self.predictor(None, states, steps=self.out_frames)
        y = self.head(hidden.flatten(2)).unflatten(2, x.shape[2:])
        return torch.sigmoid(y) if self.output_activation == "sigmoid" else y


class ConvLSTMClassifier(nn.Module):
    """The KTH tutorial's clip classifier: ConvLSTM over the clip, last layer's final hidden state,
    MaxPool2d(5, stride 2, padding 2), flatten, linear to class logits `[B, num_classes]`.
    `cell="sa"` uses SA-ConvLSTM cells (attention over all height * width positions).
    """

    def __init__(
        self,
        in_channels: int = 1,
        height: int = 60,
        width: int = 80,
        hidden_channels: Sequence[int] = (32, 32),
        kernel_size: Kernel = 3,
        num_classes: int = 6,
        peephole: bool = False,
        cell: str = "conv",
    ):
        super().__init__()
        cell_factory = _cell_factory(cell)
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be >= 1, got {height}x{width}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        hidden = list(hidden_channels)
        self.config = dict(in_channels=in_channels, height=height, width=width, hidden_channels=hidden,
                           kernel_size=kernel_size, num_classes=num_classes, peephole=peephole)
        if cell != "conv":
            self.config["cell"] = cell
        self.in_channels = in_channels
        self.frame_shape = (height, width)
        self.convlstm = ConvLSTM(in_channels, hidden, kernel_pair(kernel_size, "kernel_size"), peephole=peephole,
                                 cell_factory=cell_factory)
        self.pool = nn.MaxPool2d(kernel_size=5, stride=2, padding=2)
        pooled = ((height + 1) // 2) * ((width + 1) // 2)
        self.head = nn.Linear(hidden[-1] * pooled, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[B, T, C, height, width]` -> logits `[B, num_classes]`."""
        _check_frames(x, self.in_channels)
        if tuple(x.shape[-2:]) != self.frame_shape:
            raise ValueError(f"x frames must be {self.frame_shape} (height, width), got {tuple(x.shape[-2:])}")
        _, states = self.convlstm(x)
        return self.head(self.pool(states[-1][0]).flatten(1))
