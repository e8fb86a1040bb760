"""Streaming, mergeable verification metrics for forecasts and classifiers, one module per kind of score
(as pysteps' verification package): `accumulator` (the mergeable state every score builds on, and the
conventions they share), `continuous` (correlation, rainfall MSE/MAE and HKO-7's B-MSE/B-MAE),
`categorical` (contingency table: CSI, FAR, POD, HSS), `spatial` (fractions skill score), `video`
(per-frame MSE/MAE, PSNR, SSIM, cross-entropy on [0, 1] frames), `classification` (confusion matrix).

Every score is importable from here as well as from its module.
"""
from convlstm.metrics.accumulator import Accumulator, PerLeadTime
from convlstm.metrics.categorical import CategoricalScores
from convlstm.metrics.classification import ClassificationScores
from convlstm.metrics.continuous import CORRELATION_EPS, CorrelationScore, RainfallErrors, balancing_weights
from convlstm.metrics.spatial import FSS_SCALES, FSS_THRESHOLDS_MMH, FractionsSkillScore
from convlstm.metrics.video import (BCE_EPS, PSNR_MSE_FLOOR, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, VideoScores,
                                   ssim_map)
from convlstm.units import BALANCING_THRESHOLDS_MMH, BALANCING_WEIGHTS, HKO7_THRESHOLDS_MMH

__all__ = [
    "BALANCING_THRESHOLDS_MMH", "BALANCING_WEIGHTS", "BCE_EPS", "CORRELATION_EPS", "FSS_SCALES", "FSS_THRESHOLDS_MMH",
    "HKO7_THRESHOLDS_MMH", "PSNR_MSE_FLOOR", "SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "Accumulator",
    "CategoricalScores", "ClassificationScores", "CorrelationScore", "FractionsSkillScore", "PerLeadTime",
    "RainfallErrors", "VideoScores", "balancing_weights", "ssim_map",
]
