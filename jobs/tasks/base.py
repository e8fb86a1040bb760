"""What every task provides (`Task`), the config it reads (`TaskConfig`), and small helpers they share.

A task knows one kind of dataset: its shard columns, model family and losses, batch -> loss, its
metrics and their names (the same in training's `val_<name>`, evaluation's summaries, reports and
MLflow), its primary metric and direction, baselines, published figures and previews.

Batches are dicts of tensors as stored (uint8 `frames` `[B, T, C, H, W]`, int64 `label`, uint8
`mask`) on the worker's device; `frames / 255` happens here, on that device. KTH classifies whole
clips (cross-entropy, accuracy, confusion matrix). Radar and Moving MNIST forecast: the first
`in_len` frames are the input, the remaining `out_len` the target; radar scores rain rates in mm/h
(dBZ from HKO-7 pixels, Z = 58.53 R^1.56) at the HKO-7 thresholds (event = value >= threshold) on
valid (mask = 1) pixels, Moving MNIST scores [0, 1] intensities (OpenSTL / paper conventions).

The forecast tasks' shared plumbing is `jobs.tasks.forecast.ForecastTask`, the mergeable validation
state `jobs.tasks.evaluator.Evaluator`.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from pipelines.manifest import Manifest

if TYPE_CHECKING:
    from jobs.tasks.evaluator import Evaluator


class TaskConfig(Protocol):
    """What a task reads of a training config (`jobs.training.config.Config` is one; named here so that
    tasks, a lower floor, need not import training): the task name and the data, model and loss sections."""

    task: str
    data: Any
    model: Any
    loss: Any

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...


def mean_over_leads(values: Any) -> float | None:
    """The mean of the finite per-lead values (the paper's averaging); None when there is none."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    return float(finite.mean()) if finite.size else None


def scaled(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


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
    forecasts: bool = False  # frames to forecast: random crops and augmentation apply (`ForecastTask`)
    columns: list[str]

    def __init__(self, cfg: TaskConfig, manifest: Manifest):
        if cfg.loss.name not in self.losses:
            raise ValueError(f"loss.name: {self.name} trains with one of {', '.join(self.losses)}, "
                             f"got {cfg.loss.name!r}")
        self.cfg = cfg
        self.frames_shape = list(manifest.columns["frames"].shape)  # [T, C, H, W]
        if cfg.data.augment and not self.forecasts:
            raise ValueError(f"data.augment: {cfg.data.augment} is for forecast tasks; {self.name} "
                             f"clips can be mirrored with data.hflip")
        if cfg.data.crop and not self.forecasts:
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
