"""What every task provides, and the plumbing they share (`Task`, `Evaluator`, `ForecastTask`).

A task knows one kind of dataset: its shard columns, model family and losses, batch -> loss, its
metrics and their names (the same in training's `val_<name>`, evaluation's summaries, reports and
MLflow), its primary metric and direction, baselines, published figures and previews.

Batches are dicts of tensors as stored (uint8 `frames` `[B, T, C, H, W]`, int64 `label`, uint8
`mask`) on the worker's device; `frames / 255` happens here, on that device. KTH classifies whole
clips (cross-entropy, accuracy, confusion matrix). Radar and Moving MNIST forecast: the first
`in_len` frames are the input, the remaining `out_len` the target; radar scores rain rates in mm/h
(dBZ from HKO-7 pixels, Z = 58.53 R^1.56) at the HKO-7 thresholds (event = value >= threshold) on
valid (mask = 1) pixels, Moving MNIST scores [0, 1] intensities (OpenSTL / paper conventions).
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw

from convlstm import losses
from convlstm.augment import random_crop, random_dihedral
from convlstm.metrics.video import VideoScores
from jobs import plots
from jobs.images import write_gif
from jobs.jsonable import to_jsonable
from pipelines.manifest import Manifest



class TaskConfig(Protocol):
    """What a task reads of a training config (`jobs.training.config.Config` is one; named here so that
    tasks, a lower floor, need not import training): the task name and the data, model and loss sections."""

    task: str
    data: Any
    model: Any
    loss: Any

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...

FORECAST_LOSSES = ("bce", "mse", "mae", "balanced_mse", "balanced_mae")


def mean_over_leads(values: Any) -> float | None:
    """The mean of the finite per-lead values (the paper's averaging); None when there is none."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    return float(finite.mean()) if finite.size else None


class Task:
    """One kind of dataset and what training, evaluation and reports do with it.

    Class attributes (the task's identity; subclasses set them):
    `name` (the manifest's `task`), `model_family` (the default `convlstm.factory` name),
    `losses` (accepted `loss.name`s), `primary_metric` and `higher_is_better` (ranks models; a
    summary name), `lower_is_better` (summary names where smaller wins), `baselines` (default
    no-training methods for `evaluate`; () = none apply), `table_metrics` (evaluation.md columns),
    `published` (papers' tables, each with the `protocol` it needs), `cmap` (previews).
    """

    name: str = ""
    model_family: str = ""
    losses: tuple[str, ...] = ()
    primary_metric: str = "loss"
    higher_is_better: bool = False
    lower_is_better: frozenset[str] = frozenset()
    baselines: tuple[str, ...] = ()
    table_metrics: tuple[str, ...] = ()
    published: tuple[dict, ...] = ()
    columns: list[str]

    def __init__(self, cfg: TaskConfig, manifest: Manifest):
        if cfg.loss.name not in self.losses:
            raise ValueError(f"loss.name: {self.name} trains with one of {', '.join(self.losses)}, "
                             f"got {cfg.loss.name!r}")
        self.cfg = cfg
        self.frames_shape = list(manifest.columns["frames"].shape)  # [T, C, H, W]
        if cfg.data.augment and not isinstance(self, ForecastTask):
            raise ValueError(f"data.augment: {cfg.data.augment} is for forecast tasks; {self.name} "
                             f"clips can be mirrored with data.hflip")
        if cfg.data.crop and not isinstance(self, ForecastTask):
            raise ValueError(f"data.crop: random crops are for forecast tasks; {self.name} models are "
                             f"built for the dataset's frame size")

    @classmethod
    def metric_higher_is_better(cls, metric: str) -> bool:
        """Whether a larger value of `metric` is better: the one definition every ranking asks (checkpoint
        selection, early stopping, retention, promotion, reports). Accepts summary names (`rainfall_mse`,
        `csi_ge_0.5`) with a `val_`/`test_`/`train_` prefix, and the prefixed names of pooled datasets and
        baselines (`val_<dataset>_<metric>`, `test_<baseline>_<metric>`): the metric is the name's end."""
        name = metric
        for prefix in ("val_", "test_", "train_"):
            name = name.removeprefix(prefix)
        base = name.split("_ge_")[0]
        return not any(base == lower or base.endswith(f"_{lower}") for lower in cls.lower_is_better | {"loss"})

    @classmethod
    def monitor_mode(cls, monitor: str) -> str:
        """`min` or `max`: how checkpoints are ranked by `monitor` (Ray Train's checkpoint_score_order)."""
        return "max" if cls.metric_higher_is_better(monitor) else "min"

    @classmethod
    def protocol(cls, manifest: Manifest, split: str, in_len: int | None = None, out_len: int | None = None) -> dict:
        """What decides comparability with published figures: frame counts, grid, split protocol."""
        frames = manifest.columns["frames"].shape
        return {"height": frames[-2], "width": frames[-1]}

    @classmethod
    def data_mismatches(cls, trained: Manifest, data: Manifest) -> list[str]:
        """How the dataset manifest `data` differs from the model's training manifest `trained` in what
        makes a model's scores meaningless (frame size and channels here; tasks add their own)."""
        old, new = trained.columns["frames"].shape[1:], data.columns["frames"].shape[1:]
        return [] if old == new else [f"frames are {new} (C, H, W), the model was trained on {old}"]

    @classmethod
    def pooling_fields(cls, manifest: Manifest) -> dict[str, Any]:
        """What must be equal for datasets to be pooled in one training run (`convlstm train --data A,B`):
        the task and every column's shape, dtype, unit and encoding; tasks add what else decides the
        model's inputs, outputs or units. Compared key by key (`schema.frames.shape`), first difference
        refused (`jobs.training.datasets`)."""
        return {"task": manifest.task, "schema": manifest.column_specs()}

    @classmethod
    def published_figures(cls, protocol: dict) -> list[dict]:
        """Published tables whose protocol (frame counts, grid) equals `protocol`; [] when none match."""
        return [table for table in cls.published
                if all(protocol.get(key) == value for key, value in table["protocol"].items())]

    @staticmethod
    def batch_rows(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["frames"].shape[0])

    def example_input(self, preview: dict[str, torch.Tensor]) -> np.ndarray:
        """A float32 `[1, T_in, C, H, W]` model input in [0, 1] from the preview window."""
        return (preview["input"].float().numpy() / 255.0)[None]

    # --- the dataset behind the task, for scheduled retraining (`jobs.ops.retrain`)

    @classmethod
    def new_sources(cls, src: str, manifest: Manifest, prepare: dict[str, Any], fmt: str | None,
                    known: set[str]) -> list[str]:
        """Names of the sources under `src` that are not in `known` (the dataset's decoded and rejected ones)."""
        raise NotImplementedError(f"task {cls.name} has no incremental data source")

    @classmethod
    def extend_dataset(cls, src: str, data: str, manifest: Manifest, prepare: dict[str, Any], fmt: str | None,
                       address: str | None) -> dict:
        """Add the new sources under `src` to the dataset at `data`, built with the manifest's
        `params` plus `prepare`; returns the new manifest."""
        raise NotImplementedError(f"task {cls.name} has no incremental data source")

    def data_params(self) -> dict[str, Any]:
        """Model arguments the data decides (channels, frame size, classes, forecast length)."""
        raise NotImplementedError

    def with_data_params(self) -> TaskConfig:
        """The config with every `data_params` key that `model.params` leaves out filled in from the
        manifest (tiny configs rely on this); explicit values are kept and checked by `check_model`."""
        # deferred: convlstm.factory loads OpenCV ~4 s; the module's other users skip it
        from convlstm.factory import MODELS

        accepted = inspect.signature(MODELS[self.cfg.model.name]).parameters if self.cfg.model.name in MODELS else {}
        filled = {k: v for k, v in self.data_params().items() if k in accepted and k not in self.cfg.model.params}
        model = self.cfg.model.model_copy(update={"params": {**self.cfg.model.params, **filled}})
        return self.cfg.model_copy(update={"model": model})

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

    def inputs_targets(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Windows `[N, T, C, H, W]` in [0, 1] -> (model inputs, target frames or None when the task
        has no frames to forecast; baselines need targets)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        """Training loss of one batch (`train` enables augmentation)."""
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluation pass: (raw model output, loss) of one batch, no augmentation."""
        raise NotImplementedError

    def score(self, accumulators: dict[str, Any], output: torch.Tensor, batch: dict[str, torch.Tensor],
              raw: bool = True) -> None:
        """Add one batch's `output` against its targets to `accumulators` (`evaluator()`'s). `raw`: the
        model's own output (logits for `bce` models); False: forecast frames in [0, 1] (baselines)."""
        raise NotImplementedError

    def summarize(self, accumulators: dict[str, Any]) -> dict[str, dict]:
        """{"summary": {metric name: value}, "per_lead": {metric name: per-lead array}} of filled
        accumulators: the one definition of the task's metrics and their names."""
        raise NotImplementedError

    def preview(self, batch: dict[str, torch.Tensor], output: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def figures(self, evaluation: dict, preview: dict[str, torch.Tensor], folder: Path) -> list[Path]:
        raise NotImplementedError

    def epoch_previews(self, evaluation: dict, preview: dict[str, torch.Tensor], folder: Path) -> list[Path]:
        """Cheap files showing one epoch's validation (rank 0 logs them under `previews/epoch_NNNN/`);
        none by default."""
        return []


def scaled(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


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

    def merge(self, other: "Evaluator") -> "Evaluator":
        """Add `other`'s sums and counts to this one's (as if this one had read `other`'s windows too)."""
        theirs = other.state()
        self.load_state({key: value + theirs[key] for key, value in self.state().items()})
        return self

    def compute(self) -> tuple[dict[str, float], dict[str, Any]]:
        """(`val_*` scalars for metrics and checkpoint ranking, the full JSON-able evaluation)."""
        results = {name: acc.compute() for name, acc in self.accumulators.items()}
        loss = self.loss_sum / self.rows if self.rows else float("nan")
        summary = self.task.summarize(self.accumulators)["summary"]
        scalars = {"val_loss": loss, **{f"val_{k}": (math.nan if v is None else float(v)) for k, v in summary.items()
                                        if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}}
        return scalars, to_jsonable({"loss": loss, "windows": self.rows, **results})


class ForecastTask(Task):
    """Radar / Moving MNIST: `[B, in_len, C, H, W]` -> `[B, out_len, C, H, W]` in [0, 1]."""

    model_family = "encoder_forecaster"
    losses = FORECAST_LOSSES
    baselines = ("persistence", "optical-flow")
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


def side_by_side_gif(path: Path, left: list[np.ndarray], right: list[np.ndarray], labels: list[str],
                     titles: tuple[str, str], min_size: int = 160) -> Path:
    """A looping GIF of RGB frames `[H, W, 3]`: `left[t]` beside `right[t]`, upscaled (nearest) to at least
    `min_size` pixels, a caption row with `titles` and `labels[t]` above."""
    height, width = left[0].shape[:2]
    scale = max(1, -(-min_size // max(1, min(height, width))))
    gap, caption = 6, 16
    frames = []
    for a, b, label in zip(left, right, labels):
        canvas = Image.new("RGB", (2 * width * scale + gap, height * scale + caption), (255, 255, 255))
        for i, image in enumerate((a, b)):
            tile = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
                (width * scale, height * scale), Image.NEAREST)
            canvas.paste(tile, (i * (width * scale + gap), caption))
        draw = ImageDraw.Draw(canvas)
        for i, title in enumerate(titles):
            draw.text((i * (width * scale + gap) + 3, 2), f"{title} {label}", fill=(0, 0, 0))
        frames.append(np.asarray(canvas))
    return write_gif(path, frames, duration_ms=600)
