"""Radar nowcasting: `[B, in_len, 1, H, W]` HKO-7 pixels -> `[B, out_len, 1, H, W]` in [0, 1].

Scores rain rates in mm/h (dBZ from HKO-7 pixels, Z = 58.53 R^1.56) on valid (mask = 1) pixels:
rainfall MSE/MAE and HKO-7's balanced B-MSE/B-MAE, correlation, and CSI/FAR/POD/HSS at the HKO-7
thresholds with an event when value >= threshold (names `csi_ge_0.5`, ...), and the fractions skill score
at those thresholds and 1 mm/h over 1, 5 and 15 pixel neighbourhoods (`fss_ge_1_s5`). Summaries are means
over lead times of the per-lead scores (the paper's averaging). Primary metric: rainfall MSE.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convlstm.metrics.categorical import CategoricalScores
from convlstm.metrics.continuous import CorrelationScore, RainfallErrors
from convlstm.metrics.spatial import FSS_SCALES, FSS_THRESHOLDS_MMH, FractionsSkillScore
from convlstm.units import HKO7_THRESHOLDS_MMH, scaled_pixel_to_rainrate
from jobs.images import colorize_rainrate
from jobs.tasks.base import mean_over_leads
from jobs.tasks.evaluator import Evaluator
from jobs.tasks.forecast import FORECAST_LOSSES, ForecastTask
from jobs.tasks.plugins import register
from pipelines.driver import Publish
from pipelines.manifest import Manifest

SHI_TABLE2 = {
    "source": "Shi et al. 2015, Table 2 (HKO radar echo, 5 -> 15 frames at 100x100)",
    "protocol": {"in_len": 5, "out_len": 15, "height": 100, "width": 100},
    "header": ("model", "rainfall_mse", "csi_ge_0.5", "far_ge_0.5", "pod_ge_0.5", "correlation"),
    "rows": (
        ("ConvLSTM(3x3)-3x3-64-3x3-64", 1.420, 0.577, 0.195, 0.660, 0.908),
        ("ROVER1", 1.712, 0.516, 0.308, 0.636, 0.843),
        ("ROVER2", 1.684, 0.522, 0.301, 0.642, 0.850),
        ("ROVER3", 1.685, 0.522, 0.301, 0.642, 0.849),
        ("FC-LSTM-2000-2000", 1.865, 0.286, 0.335, 0.351, 0.774),
    ),
}
HKO7_TRAJGRU = {
    "source": "HKO-7 benchmark (Shi et al. 2017), PyTorch TrajGRU reimplementation (5 -> 20 frames at 480x480)",
    "protocol": {"in_len": 5, "out_len": 20, "height": 480, "width": 480},
    "header": ("model", "csi_ge_0.5", "csi_ge_2", "csi_ge_5", "csi_ge_10", "csi_ge_30"),
    "rows": (("TrajGRU", 0.5496, 0.4772, 0.3774, 0.2863, 0.1794),),
}
CATEGORICAL = ("csi", "far", "pod", "hss")


def threshold_name(score: str, threshold: float) -> str:
    """`csi_ge_0.5`: the score at an event threshold in mm/h (event when value >= threshold)."""
    return f"{score}_ge_{threshold:g}"


def fss_name(threshold: float, scale: int) -> str:
    """`fss_ge_1_s5`: FSS at an event threshold in mm/h over scale x scale pixel neighbourhoods."""
    return f"{threshold_name('fss', threshold)}_s{scale}"


@register
class RadarTask(ForecastTask):
    name = "radar"
    primary_metric = "rainfall_mse"
    losses = FORECAST_LOSSES + ("rainfall_mse",)
    lower_is_better = frozenset({"rainfall_mse", "rainfall_mae", "b_mse", "b_mae", "far"})
    table_metrics = ("rainfall_mse", "rainfall_mae", "csi_ge_0.5", "far_ge_0.5", "pod_ge_0.5", "hss_ge_0.5",
                     "correlation")
    published = (SHI_TABLE2, HKO7_TRAJGRU)
    cmap = "viridis"

    @classmethod
    def protocol(cls, manifest, split, in_len=None, out_len=None):
        return {**super().protocol(manifest, split, in_len, out_len), "time_step_s": manifest.time_step_s,
                "thresholds_mmh": list(HKO7_THRESHOLDS_MMH), "fss_thresholds_mmh": list(FSS_THRESHOLDS_MMH),
                "fss_scales_px": list(FSS_SCALES)}

    @classmethod
    def new_sources(cls, src, manifest, prepare, fmt, known):
        """UTC days (`YYYY-MM-DD`) with frames under `src` that the dataset has not seen, by frame time
        (pipelines.radar.seen), whatever the split: new frames of a known day count too."""
        # deferred: pipelines.radar.prepare loads OpenCV ~4 s, h5py ~1.4 s; the module's other users skip it
        from pipelines.radar.prepare import new_days

        return new_days(str(src), manifest, fmt)

    @classmethod
    def extend_dataset(cls, src, data, manifest, prepare, fmt, address):
        # deferred: pipelines.radar.prepare loads OpenCV ~4 s, h5py ~1.4 s; the module's other users skip it
        from pipelines.radar.prepare import RadarOptions, prepare_radar

        params = manifest.params
        return prepare_radar(Path(src), data, fmt or params["format"], RadarOptions.from_params(params, **prepare),
                             publish=Publish(incremental=True, address=address, progress=False))

    @classmethod
    def data_mismatches(cls, trained, data):
        """Also the source format (and its conversion), the source grid and crop, and the time step."""
        problems = super().data_mismatches(trained, data)
        old, new = trained.encoding or {}, data.encoding or {}
        if old.get("source_format") != new.get("source_format"):
            problems.append(f"format {new.get('source_format')}, the model was trained on {old.get('source_format')}")
        keys = ("source_height", "source_width", "crop")
        old_grid, new_grid = ({k: getattr(m.grid, k, None) for k in keys} for m in (trained, data))
        if old_grid != new_grid:
            problems.append(f"source grid {new_grid}, the model was trained on {old_grid}")
        if trained.time_step_s != data.time_step_s:
            problems.append(f"time step {data.time_step_s} s, the model was trained on {trained.time_step_s} s")
        return problems

    @classmethod
    def pooling_fields(cls, manifest):
        """Also the time step and the canonical encoding (HKO-7 pixels, Z-R); archives of other formats,
        grids and crops pool once prepared at the same size (`source_*` may differ)."""
        encoding = manifest.encoding or {}
        return {**super().pooling_fields(manifest), "time_step_s": manifest.time_step_s,
                "encoding": {k: encoding.get(k) for k in ("frames", "mask", "zr")}}

    def __init__(self, cfg, manifest: Manifest):
        super().__init__(cfg, manifest)
        self.time_step_s = manifest.time_step_s

    def preview_rgb(self, frames, mask=None):
        """Rain rates (mm/h) on the nowcast palette; nodata (mask 0) grey."""
        rates = scaled_pixel_to_rainrate(np.asarray(frames, dtype=np.float32)[:, 0] / 255.0)
        valid = None if mask is None else np.asarray(mask)[:, 0]
        return np.stack([colorize_rainrate(r, None if valid is None else valid[t]) for t, r in enumerate(rates)])

    def lead_label(self, lead):
        return f"+{lead * self.time_step_s / 60:g} min" if self.time_step_s else super().lead_label(lead)

    def evaluator(self) -> Evaluator:
        return Evaluator(self, {
            "rainfall": RainfallErrors(self.out_len),
            "categorical": CategoricalScores(HKO7_THRESHOLDS_MMH, self.out_len),
            "correlation": CorrelationScore(self.out_len),
            "fss": FractionsSkillScore(FSS_THRESHOLDS_MMH, FSS_SCALES, self.out_len),
        })

    def score(self, accumulators, output, batch, raw=True):
        _, target, mask = self._split(batch)
        pred_mmh = scaled_pixel_to_rainrate(self.probabilities(output, raw).clamp(0, 1).cpu().numpy())
        target_mmh = scaled_pixel_to_rainrate(target.cpu().numpy())
        mask = mask.cpu().numpy() if mask is not None else None
        for acc in accumulators.values():
            acc.update(pred_mmh, target_mmh, mask)

    def summarize(self, accumulators):
        rainfall, categorical = accumulators["rainfall"].compute(), accumulators["categorical"].compute()
        per_lead = {name if name.startswith("b_") else f"rainfall_{name}": rainfall[name]
                    for name in ("mse", "mae", "b_mse", "b_mae")}
        per_lead["correlation"] = accumulators["correlation"].compute()["correlation"]
        for score in CATEGORICAL:
            for i, threshold in enumerate(categorical["thresholds"]):
                per_lead[threshold_name(score, threshold)] = categorical[score][i]
        fss = accumulators["fss"].compute()
        for i, threshold in enumerate(fss["thresholds"]):
            for j, scale in enumerate(fss["scales"]):
                per_lead[fss_name(threshold, scale)] = fss["fss"][i, j]
        return {"summary": {k: mean_over_leads(v) for k, v in per_lead.items()}, "per_lead": per_lead}
