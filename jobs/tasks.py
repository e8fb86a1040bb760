"""Per-task training logic: which shard columns to read, batch -> loss, validation scores, figures.

Batches are dicts of tensors as stored (uint8 `frames` `[B, T, C, H, W]`, int64 `label`, uint8
`mask`) on the worker's device; `frames / 255` happens here, on that device. KTH classifies whole
clips (cross-entropy, accuracy, confusion matrix). Radar and Moving MNIST forecast: the first
`in_len` frames are the input, the remaining `out_len` the target; radar scores rain rates in mm/h
(dBZ from HKO-7 pixels, Z = 58.53 R^1.56) at the HKO-7 thresholds (event = value >= threshold) on
valid (mask = 1) pixels, Moving MNIST scores [0, 1] intensities (OpenSTL / paper conventions).
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from jobs import plots
from jobs.config import Config


FORECAST_LOSSES = ("bce", "mse", "mae", "balanced_mse", "balanced_mae")


def get_task(cfg: Config, manifest: dict) -> "Task":
    """The task object for `cfg.task`; ValueError when the dataset is another task's."""
    if manifest.get("task") != cfg.task:
        raise ValueError(f"--data holds a {manifest.get('task')!r} dataset, not {cfg.task!r}")
    return {"kth": ClassificationTask, "radar": RadarTask, "mnist": MnistTask}[cfg.task](cfg, manifest)


class Task:
    """Shared plumbing; subclasses set `columns` and implement the task-specific parts."""

    columns: list[str]

    def __init__(self, cfg: Config, manifest: dict):
        self.cfg = cfg
        self.frames_shape = list(manifest["schema"]["frames"]["shape"])  # [T, C, H, W]

    @staticmethod
    def batch_rows(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["frames"].shape[0])

    def example_input(self, preview: dict[str, torch.Tensor]) -> np.ndarray:
        """A float32 `[1, T_in, C, H, W]` model input in [0, 1] from the preview window."""
        return (preview["input"].float().numpy() / 255.0)[None]

    def data_params(self) -> dict[str, Any]:
        """Model arguments the data decides (channels, frame size, classes, forecast length)."""
        raise NotImplementedError

    def with_data_params(self) -> Config:
        """The config with every `data_params` key that `model.params` leaves out filled in from the
        manifest (tiny configs rely on this); explicit values are kept and checked by `check_model`."""
        from convlstm.factory import MODELS

        accepted = inspect.signature(MODELS[self.cfg.model.name]).parameters if self.cfg.model.name in MODELS else {}
        filled = {k: v for k, v in self.data_params().items() if k in accepted and k not in self.cfg.model.params}
        model = dataclasses.replace(self.cfg.model, params={**self.cfg.model.params, **filled})
        return dataclasses.replace(self.cfg, model=model)

    def check_model(self, model: torch.nn.Module) -> None:
        """Run `model` on one blank input window; ValueError unless the output has the task's shape."""
        with torch.no_grad():
            output = model(torch.zeros(1, *self.input_shape))
        if list(output.shape[1:]) != self.output_shape:
            raise ValueError(f"it maps [1, {', '.join(map(str, self.input_shape))}] to {list(output.shape)}, "
                             f"the data needs [1, {', '.join(map(str, self.output_shape))}]")

    def metric_names(self) -> list[str]:
        return sorted(self.evaluator().compute()[0])

    def evaluator(self) -> "Evaluator":
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        """Training loss of one batch (`train` enables augmentation)."""
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluation pass: (raw model output, loss) of one batch, no augmentation."""
        raise NotImplementedError

    def score(self, accumulators: dict[str, Any], output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Add one batch's raw model `output` against its targets to `accumulators` (`evaluator()`'s)."""
        raise NotImplementedError

    def scalars(self, results: dict[str, dict]) -> dict[str, float]:
        """The `val_*` scalars from the accumulators' `compute()` results."""
        raise NotImplementedError

    def preview(self, batch: dict[str, torch.Tensor], output: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def figures(self, evaluation: dict, preview: dict[str, torch.Tensor], folder: Path) -> list[Path]:
        raise NotImplementedError


def _scaled(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Evaluator:
    """A mean validation loss plus mergeable accumulators (`convlstm.metrics`). `state()` holds only
    sums and counts (keys `<part>.<array>`), so ranks merge by a SUM all-reduce."""

    def __init__(self, task: Task, accumulators: dict[str, Any]):
        self.task = task
        self.accumulators = accumulators
        self.loss_sum, self.rows = 0.0, 0

    def update(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        output, loss = self.task.forward(model, batch)
        rows = self.task.batch_rows(batch)
        self.loss_sum += float(loss) * rows
        self.rows += rows
        self.task.score(self.accumulators, output, batch)
        return output

    def state(self) -> dict[str, np.ndarray]:
        state = {"loss.sum": np.array([self.loss_sum]), "loss.rows": np.array([float(self.rows)])}
        for name, acc in self.accumulators.items():
            state.update({f"{name}.{k}": v for k, v in acc.state().items()})
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.loss_sum, self.rows = float(state["loss.sum"][0]), int(state["loss.rows"][0])
        for name, acc in self.accumulators.items():
            prefix = f"{name}."
            acc.load_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def compute(self) -> tuple[dict[str, float], dict[str, Any]]:
        """(`val_*` scalars for metrics and checkpoint ranking, the full JSON-able evaluation)."""
        results = {name: acc.compute() for name, acc in self.accumulators.items()}
        loss = self.loss_sum / self.rows if self.rows else float("nan")
        scalars = {"val_loss": loss, **self.task.scalars(results)}
        return scalars, _jsonable({"loss": loss, "windows": self.rows, **results})


class ClassificationTask(Task):
    """KTH: a clip `[B, T, C, H, W]` -> logits `[B, classes]`; cross-entropy, accuracy, macro F1."""

    columns = ["frames", "label"]

    def __init__(self, cfg: Config, manifest: dict):
        super().__init__(cfg, manifest)
        if cfg.loss.name != "cross_entropy":
            raise ValueError(f"loss.name: kth trains with cross_entropy, got {cfg.loss.name!r}")
        self.class_names = list(manifest["schema"]["label"]["classes"])
        self.input_shape = self.frames_shape
        self.output_shape = [len(self.class_names)]

    def data_params(self) -> dict[str, Any]:
        _, channels, height, width = self.frames_shape
        return {"in_channels": channels, "height": height, "width": width, "num_classes": len(self.class_names)}

    def _inputs(self, batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        x = _scaled(batch["frames"])
        if train and self.cfg.data.hflip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
        return x

    def loss(self, model, batch, train):
        return F.cross_entropy(model(self._inputs(batch, train)).float(), batch["label"])

    def forward(self, model, batch):
        logits = model(self._inputs(batch, False)).float()
        return logits, F.cross_entropy(logits, batch["label"])

    def evaluator(self) -> Evaluator:
        from convlstm.metrics import ClassificationScores

        return Evaluator(self, {"classification": ClassificationScores(len(self.class_names), self.class_names)})

    def score(self, accumulators, output, batch):
        accumulators["classification"].update(output, batch["label"])

    def scalars(self, results):
        scores = results["classification"]
        return {"val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"]}

    def preview(self, batch, output):
        return {"input": batch["frames"][0].cpu()}

    def figures(self, evaluation, preview, folder):
        scores = evaluation["classification"]
        return [plots.confusion_matrix(np.array(scores["confusion_matrix"]), scores["class_names"],
                                       folder / "confusion_matrix.png", title="validation confusion matrix")]


class ForecastTask(Task):
    """Radar / Moving MNIST: `[B, in_len, C, H, W]` -> `[B, out_len, C, H, W]` in [0, 1]."""

    def __init__(self, cfg: Config, manifest: dict):
        super().__init__(cfg, manifest)
        window = self.frames_shape[0]
        self.in_len = cfg.data.in_len or manifest["params"].get("in_len") or window // 2
        if not 1 <= self.in_len < window:
            raise ValueError(f"data.in_len: must leave at least one target frame of the {window}-frame "
                             f"windows, got {self.in_len}")
        self.out_len = window - self.in_len
        self.input_shape = [self.in_len, *self.frames_shape[1:]]
        self.output_shape = [self.out_len, *self.frames_shape[1:]]
        self.has_mask = "mask" in manifest["schema"]
        self.columns = ["frames", "mask"] if self.has_mask else ["frames"]
        self.logits = cfg.model.params.get("output_activation", "sigmoid") is None
        if cfg.loss.name not in FORECAST_LOSSES:
            raise ValueError(f"loss.name: {cfg.task} trains with one of {', '.join(FORECAST_LOSSES)}, "
                             f"got {cfg.loss.name!r}")
        if (cfg.loss.name == "bce") != self.logits:
            raise ValueError("model.params.output_activation: the bce loss takes logits (null), the other "
                             "losses [0, 1] frames (sigmoid)")
        from convlstm import losses

        self._loss_fn = {"bce": losses.bce_loss, "mse": losses.mse_loss, "mae": losses.mae_loss,
                         "balanced_mse": losses.balanced_mse, "balanced_mae": losses.balanced_mae}[cfg.loss.name]

    def data_params(self) -> dict[str, Any]:
        _, channels, height, width = self.frames_shape
        return {"in_channels": channels, "out_frames": self.out_len, "frame_size": channels * height * width}

    def _split(self, batch):
        x = _scaled(batch["frames"])
        mask = batch["mask"][:, self.in_len:].float() if self.has_mask else None
        return x[:, :self.in_len], x[:, self.in_len:], mask

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """Model output -> forecast frames in [0, 1] (sigmoid of logits for `bce` models)."""
        return torch.sigmoid(output) if self.logits else output

    def loss(self, model, batch, train):
        inputs, target, mask = self._split(batch)
        return self._criterion(model(inputs).float(), target, mask)

    def forward(self, model, batch):
        inputs, target, mask = self._split(batch)
        output = model(inputs).float()
        return output, self._criterion(output, target, mask)

    def _criterion(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.loss.name == "bce":
            return self._loss_fn(output, target, mask)
        return self._loss_fn(self.probabilities(output), target, mask)

    def preview(self, batch, output):
        frames = batch["frames"][0].cpu()
        return {"input": frames[:self.in_len], "target": frames[self.in_len:],
                "forecast": _to_uint8(self.probabilities(output[0]))}

    def figures(self, evaluation, preview, folder):
        rows = {k: preview[k].float().numpy() / 255.0 for k in ("input", "target", "forecast")}
        return [plots.frame_strip(rows, folder / "frames.png", title="validation window: input / target / forecast",
                                  cmap=self.cmap)]


class RadarTask(ForecastTask):
    cmap = "viridis"

    def evaluator(self) -> Evaluator:
        from convlstm.metrics import HKO7_THRESHOLDS_MMH, CategoricalScores, CorrelationScore, RainfallErrors

        return Evaluator(self, {
            "rainfall": RainfallErrors(self.out_len),
            "categorical": CategoricalScores(HKO7_THRESHOLDS_MMH, self.out_len),
            "correlation": CorrelationScore(self.out_len),
        })

    def score(self, accumulators, output, batch):
        from convlstm.units import scaled_pixel_to_rainrate

        _, target, mask = self._split(batch)
        pred_mmh = scaled_pixel_to_rainrate(self.probabilities(output).clamp(0, 1).cpu().numpy())
        target_mmh = scaled_pixel_to_rainrate(target.cpu().numpy())
        mask = mask.cpu().numpy() if mask is not None else None
        for acc in accumulators.values():
            acc.update(pred_mmh, target_mmh, mask)

    def scalars(self, results):
        rain, cat = results["rainfall"], results["categorical"]
        out = {f"val_rainfall_{k}": float(rain[f"{k}_overall"]) for k in ("mse", "mae", "b_mse", "b_mae")}
        for i, threshold in enumerate(cat["thresholds"]):
            for score in ("csi", "far", "pod"):
                out[f"val_{score}_{threshold:g}"] = float(cat[f"{score}_overall"][i])
        out["val_correlation"] = float(results["correlation"]["correlation_overall"])
        return out


class MnistTask(ForecastTask):
    cmap = "gray"

    def evaluator(self) -> Evaluator:
        from convlstm.metrics import VideoScores

        return Evaluator(self, {"video": VideoScores(self.out_len)})

    def score(self, accumulators, output, batch):
        _, target, _ = self._split(batch)
        accumulators["video"].update(self.probabilities(output).clamp(0, 1), target)

    def scalars(self, results):
        video = results["video"]
        out = {f"val_{k}": float(video[f"{k}_overall"]) for k in ("mse", "mae", "ssim", "psnr")}
        out["val_cross_entropy"] = float(video["cross_entropy_sequence"])
        return out
