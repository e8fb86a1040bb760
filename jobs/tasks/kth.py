"""KTH action classification: a clip `[B, T, C, H, W]` -> logits `[B, classes]`.

Cross-entropy; accuracy and macro F1 (the primary metric is accuracy); no forecast baselines.
Published figure: the PyTorch tutorial's validation accuracy on its person split.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convlstm.metrics.classification import ClassificationScores
from jobs import plots
from jobs.tasks.base import Task, scaled
from jobs.tasks.evaluator import Evaluator
from jobs.tasks.plugins import register
from pipelines.driver import Publish
from pipelines.kth import KthOptions
from pipelines.kth import plan
from pipelines.kth import prepare_kth
from pipelines.manifest import Manifest

KTH_TUTORIAL = {
    "source": "KTH action classification, the PyTorch tutorial's ConvLSTM classifier "
              "(validation accuracy on the tutorial split, 15-frame grey clips at 60x80)",
    "protocol": {"seq_len": 15, "channels": 1, "height": 60, "width": 80, "person_split": "tutorial", "split": "val"},
    "header": ("model", "accuracy"),
    "rows": (("tutorial ConvLSTM classifier, epoch 1", 0.518), ("tutorial ConvLSTM classifier, epoch 30", 0.655)),
}


@register
class KthTask(Task):
    """KTH: clips labelled by action (CATEGORIES order), classified whole."""

    name = "kth"
    model_family = "classifier"
    losses = ("cross_entropy",)
    primary_metric = "accuracy"
    higher_is_better = True
    published = (KTH_TUTORIAL,)
    columns = ["frames", "label"]

    def __init__(self, cfg, manifest: Manifest):
        super().__init__(cfg, manifest)
        self.class_names = list(manifest.columns["label"].classes)
        self.input_shape = self.frames_shape
        self.output_shape = [len(self.class_names)]

    @classmethod
    def protocol(cls, manifest, split, in_len=None, out_len=None):
        frames = manifest.columns["frames"].shape
        return {"seq_len": frames[0], "channels": frames[1], **super().protocol(manifest, split),
                "person_split": manifest.params.get("split"), "split": split}

    @classmethod
    def new_sources(cls, src, manifest, prepare, fmt, known):
        with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
            planned = [source.name for source in plan(src, cls.options(manifest, prepare, Path(tmp)))[0]]
        return [name for name in planned if name not in known]

    @classmethod
    def extend_dataset(cls, src, data, manifest, prepare, fmt, address):
        with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
            options = cls.options(manifest, prepare, Path(tmp))
            return prepare_kth(src, data, options, publish=Publish(incremental=True, address=address, progress=False))

    @staticmethod
    def options(manifest: Manifest, prepare: dict[str, Any], workdir: Path):
        return KthOptions.from_manifest(manifest, workdir, **prepare)

    def data_params(self) -> dict[str, Any]:
        _, channels, height, width = self.frames_shape
        return {"in_channels": channels, "height": height, "width": width, "num_classes": len(self.class_names)}

    def _inputs(self, batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        x = scaled(batch["frames"])
        if train and self.cfg.data.hflip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
        return x

    def loss(self, model, batch, train):
        return F.cross_entropy(model(self._inputs(batch, train)).float(), batch["label"])

    def forward(self, model, batch):
        logits = model(self._inputs(batch, False)).float()
        return logits, F.cross_entropy(logits, batch["label"])

    def inputs_targets(self, frames: np.ndarray) -> tuple[np.ndarray, None]:
        return frames, None

    def evaluator(self) -> Evaluator:
        return Evaluator(self, {"classification": ClassificationScores(len(self.class_names), self.class_names)})

    def score(self, accumulators, output, batch, raw=True):
        accumulators["classification"].update(output, batch["label"])

    def summarize(self, accumulators):
        scores = accumulators["classification"].compute()
        summary = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "classes": scores["class_names"]}
        summary.update({k: scores[k] for k in ("precision", "recall", "f1", "support", "confusion_matrix")})
        return {"summary": summary, "per_lead": {}}

    def preview(self, batch, output):
        return {"input": batch["frames"][0].cpu()}

    def figures(self, evaluation, preview, folder):
        scores = evaluation["classification"]
        return [plots.confusion_matrix(np.array(scores["confusion_matrix"]), scores["class_names"],
                                       folder / "confusion_matrix.png", title="validation confusion matrix")]

    def epoch_previews(self, evaluation, preview, folder):
        """This epoch's validation confusion matrix (`confusion_matrix.png`)."""
        return self.figures(evaluation, preview, folder)
