"""Moving MNIST: `[B, in_len, 1, 64, 64]` -> `[B, out_len, 1, 64, 64]` intensities in [0, 1].

Scores (OpenSTL / paper conventions): per-frame MSE/MAE sums, SSIM, PSNR (means over lead times)
and the paper's cross-entropy summed over the predicted frames (the primary metric).
"""
from __future__ import annotations

from pathlib import Path

from jobs.tasks.forecast import ForecastTask
from jobs.tasks.plugins import register
from pipelines.driver import Publish
from pipelines.manifest import Manifest
from pipelines.mnist import MnistOptions
from pipelines.mnist import plan
from pipelines.mnist import prepare_mnist

SHI_TABLE1 = {
    "source": "Shi et al. 2015, Table 1 (Moving MNIST, 10 -> 10 frames at 64x64; cross-entropy summed over frames)",
    "protocol": {"in_len": 10, "out_len": 10, "height": 64, "width": 64, "digits": 2},
    "header": ("model", "cross_entropy"),
    "rows": (
        ("FC-LSTM-2048-2048", 4832.49),
        ("ConvLSTM(5x5)-5x5-256", 3887.94),
        ("ConvLSTM(5x5)-5x5-128-5x5-128", 3733.56),
        ("ConvLSTM(5x5)-5x5-128-5x5-64-5x5-64", 3670.85),
        ("ConvLSTM(9x9)-1x1-128-1x1-128", 4782.84),
        ("ConvLSTM(9x9)-1x1-128-1x1-64-1x1-64", 4231.50),
    ),
}
OPENSTL_MNIST = {
    "source": "OpenSTL benchmark (Moving MNIST, 10 -> 10 frames at 64x64; MSE/MAE per-frame sums on [0, 1])",
    "protocol": {"in_len": 10, "out_len": 10, "height": 64, "width": 64, "digits": 2},
    "header": ("model", "mse", "mae", "ssim", "psnr"),
    "rows": (
        ("ConvLSTM-S, 200 epochs", 29.80, 90.64, 0.9288, 22.10),
        ("ConvLSTM-S, 2000 epochs", 22.41, None, 0.9480, None),
        ("PredRNN++", 14.07, None, 0.9698, None),
    ),
}


@register
class MnistTask(ForecastTask):
    name = "mnist"
    primary_metric = "cross_entropy"
    lower_is_better = frozenset({"mse", "mae", "cross_entropy"})
    table_metrics = ("cross_entropy", "mse", "mae", "ssim", "psnr")
    video_metrics = table_metrics
    published = (SHI_TABLE1, OPENSTL_MNIST)

    @classmethod
    def protocol(cls, manifest, split, in_len=None, out_len=None):
        return {**super().protocol(manifest, split, in_len, out_len), "digits": manifest.params.get("digits")}

    @classmethod
    def new_sources(cls, src, manifest, prepare, fmt, known):
        """Chunks that larger `prepare.counts` add (sequence i depends only on (seed, split, i))."""
        if not Path(src).is_file():
            raise FileNotFoundError(f"--src {src}: no such MNIST file")
        return [source.name for source in plan(src, cls.options(manifest, prepare)) if source.name not in known]

    @classmethod
    def extend_dataset(cls, src, data, manifest, prepare, fmt, address):
        # Moving MNIST has no incremental mode: regenerating with the larger counts reproduces the
        # old windows and adds the new ones.
        return prepare_mnist(src, data, cls.options(manifest, prepare),
                             publish=Publish(overwrite=True, address=address, progress=False))

    @staticmethod
    def options(manifest: Manifest, prepare: dict):
        return MnistOptions.from_params(manifest.params, **prepare)

    def summarize(self, accumulators):
        """Video scores per lead; the summary's cross-entropy is the paper's, summed over the predicted frames."""
        result = super().summarize(accumulators)
        result["summary"]["cross_entropy"] = accumulators["video"].compute()["cross_entropy_sequence"]
        return result
