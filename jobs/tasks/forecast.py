"""Forecast tasks (radar, Moving MNIST): `[B, in_len, C, H, W]` inputs -> `[B, out_len, C, H, W]`
forecasts in [0, 1]; losses, augmentation, per-lead video scores, preview figures and GIFs."""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from convlstm import losses
from convlstm.augment import random_crop, random_dihedral
from convlstm.metrics.video import VideoScores
from jobs import plots
from jobs.images import side_by_side_gif
from jobs.tasks.base import Task, TaskConfig, mean_over_leads, scaled
from jobs.tasks.evaluator import Evaluator
from pipelines.manifest import Manifest

FORECAST_LOSSES = ("bce", "mse", "mae", "balanced_mse", "balanced_mae")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


class ForecastTask(Task):
    """Radar / Moving MNIST: `[B, in_len, C, H, W]` -> `[B, out_len, C, H, W]` in [0, 1]."""

    model_family = "encoder_forecaster"
    losses = FORECAST_LOSSES
    baselines = ("persistence", "optical-flow")
    forecasts = True
    cmap = "gray"

    def __init__(self, cfg: TaskConfig, manifest: Manifest):
        super().__init__(cfg, manifest)
        window = self.frames_shape[0]
        self.in_len = cfg.data.in_len or manifest.params.get("in_len") or window // 2
        if not 2 <= self.in_len < window:
            # One input frame leaves the encoder's state-to-state weights without a gradient (DDP fails).
            raise ValueError(f"data.in_len: needs >= 2 input frames and at least one target frame of the "
                             f"{window}-frame windows, got {self.in_len}")
        self.out_len = window - self.in_len
        self.input_shape = [self.in_len, *self.frames_shape[1:]]
        self.output_shape = [self.out_len, *self.frames_shape[1:]]
        self.has_mask = "mask" in manifest.columns
        self.columns = ["frames", "mask"] if self.has_mask else ["frames"]
        if cfg.data.augment == "dihedral" and not cfg.data.crop and self.frames_shape[2] != self.frames_shape[3]:
            raise ValueError(f"data.augment: dihedral needs square frames, this dataset's are "
                             f"{self.frames_shape[2]}x{self.frames_shape[3]}")
        if cfg.data.crop:
            if cfg.model.name != "encoder_forecaster":
                raise ValueError(f"data.crop: needs a convolutional model (encoder_forecaster), {cfg.model.name} "
                                 f"is built for one frame size")
            # deferred: convlstm.networks loads OpenCV ~4 s; the module's other users skip it
            from convlstm.networks import EncoderForecaster

            height, width = self.frames_shape[2:]
            patch = cfg.model.params.get("patch_size", inspect.signature(EncoderForecaster).parameters["patch_size"].default)
            if cfg.data.crop > min(height, width) or cfg.data.crop % patch:
                raise ValueError(f"data.crop: {cfg.data.crop} must fit the dataset's {height}x{width} frames and be "
                                 f"divisible by model.params.patch_size ({patch})")
        self.logits = cfg.model.params.get("output_activation", "sigmoid") is None
        if (cfg.loss.name == "bce") != self.logits:
            raise ValueError("model.params.output_activation: the bce loss takes logits (null), the other "
                             "losses [0, 1] frames (sigmoid)")

        self._loss_fn = {"bce": losses.bce_loss, "mse": losses.mse_loss, "mae": losses.mae_loss,
                         "balanced_mse": losses.balanced_mse, "balanced_mae": losses.balanced_mae,
                         "rainfall_mse": losses.rainfall_mse}[cfg.loss.name]

    def data_params(self) -> dict[str, Any]:
        _, channels, height, width = self.frames_shape
        return {"in_channels": channels, "out_frames": self.out_len, "frame_size": channels * height * width}

    def inputs_targets(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows `[N, T, C, H, W]` in [0, 1] -> (model inputs, target frames)."""
        return frames[:, :self.in_len], frames[:, self.in_len:]

    def _split(self, batch):
        x = scaled(batch["frames"])
        mask = batch["mask"][:, self.in_len:].float() if self.has_mask else None
        return x[:, :self.in_len], x[:, self.in_len:], mask

    def probabilities(self, output: torch.Tensor, raw: bool = True) -> torch.Tensor:
        """Model output -> forecast frames in [0, 1] (sigmoid of logits for `bce` models); `raw=False`:
        `output` already is frames in [0, 1] (a baseline's forecast)."""
        return torch.sigmoid(output) if raw and self.logits else output

    @classmethod
    def protocol(cls, manifest, split, in_len=None, out_len=None):
        return {**super().protocol(manifest, split), "in_len": in_len, "out_len": out_len}

    @classmethod
    def pooling_fields(cls, manifest):
        """Also the input and forecast lengths the dataset was cut with."""
        params = manifest.params
        return {**super().pooling_fields(manifest), "params": {k: params.get(k) for k in ("in_len", "out_len")}}

    def loss(self, model, batch, train):
        inputs, target, mask = self._split(self._augmented(batch) if train else batch)
        return self._criterion(model(inputs).float(), target, mask)

    def _augmented(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`data.crop`, then `data.augment`: one random crop and one random symmetry of the square per
        window, frames and mask alike."""
        if not (self.cfg.data.crop or self.cfg.data.augment == "dihedral"):
            return batch

        names = [c for c in self.columns if c in batch]
        tensors = [batch[c] for c in names]
        if self.cfg.data.crop:
            tensors = random_crop(*tensors, size=self.cfg.data.crop)
        if self.cfg.data.augment == "dihedral":
            tensors = random_dihedral(*tensors)
        return {**batch, **dict(zip(names, tensors))}

    def forward(self, model, batch):
        inputs, target, mask = self._split(batch)
        output = model(inputs).float()
        return output, self._criterion(output, target, mask)

    def _criterion(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.loss.name == "bce":
            return self._loss_fn(output, target, mask)
        return self._loss_fn(self.probabilities(output), target, mask)

    # Per-lead metrics of `convlstm.metrics.VideoScores` reported by the default evaluator (summary: the
    # mean over lead times); a task with other scores overrides evaluator/score/summarize (radar).
    video_metrics: tuple[str, ...] = ("mse", "mae")

    def evaluator(self) -> Evaluator:
        return Evaluator(self, {"video": VideoScores(self.out_len)})

    def score(self, accumulators, output, batch, raw=True):
        _, target, _ = self._split(batch)
        accumulators["video"].update(self.probabilities(output, raw).clamp(0, 1), target)

    def summarize(self, accumulators):
        video = accumulators["video"].compute()
        per_lead = {name: video[name] for name in self.video_metrics}
        return {"summary": {k: mean_over_leads(v) for k, v in per_lead.items()}, "per_lead": per_lead}

    def preview(self, batch, output):
        frames = batch["frames"][0].cpu()
        preview = {"input": frames[:self.in_len], "target": frames[self.in_len:],
                   "forecast": _to_uint8(self.probabilities(output[0]))}
        if self.has_mask:
            preview["mask"] = batch["mask"][0, self.in_len:].cpu()
        return preview

    def figures(self, evaluation, preview, folder):
        rows = {k: preview[k].float().numpy() / 255.0 for k in ("input", "target", "forecast")}
        return [plots.frame_strip(rows, folder / "frames.png", title="validation window: input / target / forecast",
                                  cmap=self.cmap)]

    def epoch_previews(self, evaluation, preview, folder):
        """`forecast.gif`: the preview window, truth beside forecast (the input frames first, on both sides)."""
        if not preview:
            return []
        mask = preview["mask"].numpy() if "mask" in preview else None
        truth = [*self.preview_rgb(preview["input"].numpy()), *self.preview_rgb(preview["target"].numpy(), mask)]
        forecast = [*self.preview_rgb(preview["input"].numpy()), *self.preview_rgb(preview["forecast"].numpy(), mask)]
        labels = [f"input {t - self.in_len + 1}" for t in range(self.in_len)]
        labels += [self.lead_label(lead) for lead in range(1, len(truth) - self.in_len + 1)]
        return [side_by_side_gif(folder / "forecast.gif", truth, forecast, labels, ("truth", "forecast"))]

    def preview_rgb(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """uint8 frames `[T, C, H, W]` -> RGB `[T, H, W, 3]` for previews (grey; radar colours rain rates)."""
        grey = np.asarray(frames, dtype=np.uint8)[:, 0]
        return np.repeat(grey[..., None], 3, axis=-1)

    def lead_label(self, lead: int) -> str:
        return f"+{lead}"
