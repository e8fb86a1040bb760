"""`convlstm.metrics.spatial.FractionsSkillScore` against a direct implementation of Roberts & Lean (2008),
written here with explicit neighbourhood loops; merging equals scoring everything at once."""
from __future__ import annotations

import numpy as np
import pytest

from convlstm.metrics.spatial import FractionsSkillScore


def reference_fss(pred, target, valid, threshold, size):
    """FSS per lead: fractions by explicit size x size sums (zero outside the frame) over each frame;
    sums over valid pixels of every frame of a lead, then 1 - MSE / reference."""
    batch, leads, channels, height, width = pred.shape
    r = size // 2
    out = []
    for t in range(leads):
        num = den = 0.0
        for b in range(batch):
            for c in range(channels):
                f = (pred[b, t, c] >= threshold) & valid[b, t, c]
                o = (target[b, t, c] >= threshold) & valid[b, t, c]
                for i in range(height):
                    for j in range(width):
                        if not valid[b, t, c, i, j]:
                            continue
                        rows, cols = slice(max(i - r, 0), i + r + 1), slice(max(j - r, 0), j + r + 1)
                        pf, po = f[rows, cols].sum() / size**2, o[rows, cols].sum() / size**2
                        num += (pf - po) ** 2
                        den += pf**2 + po**2
        out.append(1.0 - num / den if den else np.nan)
    return np.array(out)


def fields(seed=0, shape=(2, 3, 1, 12, 10)):
    rng = np.random.default_rng(seed)
    target = rng.gamma(0.6, 2.0, shape)
    pred = np.clip(target + rng.normal(0, 1.5, shape), 0, None)
    valid = rng.random(shape) > 0.15
    return pred, target, valid


def test_fss_matches_the_direct_reference_per_threshold_scale_and_lead():
    pred, target, valid = fields()
    thresholds, scales = (0.5, 1.0, 5.0), (1, 3, 7)
    acc = FractionsSkillScore(thresholds, scales, lead_times=3)
    acc.update(pred, target, valid)
    result = acc.compute()
    assert result["fss"].shape == (3, 3, 3) and result["fss_overall"].shape == (3, 3)
    for i, threshold in enumerate(thresholds):
        for j, size in enumerate(scales):
            np.testing.assert_allclose(result["fss"][i, j], reference_fss(pred, target, valid, threshold, size),
                                       rtol=1e-12)
    assert np.all(np.diff(result["fss_overall"][0]) > 0)  # larger neighbourhoods forgive displacement


def test_merged_batches_equal_one_update_and_perfect_forecasts_score_one():
    pred, target, valid = fields(seed=1)
    whole = FractionsSkillScore((1.0, 2.0), (1, 5), 3)
    whole.update(pred, target, valid)
    first, second = FractionsSkillScore((1.0, 2.0), (1, 5), 3), FractionsSkillScore((1.0, 2.0), (1, 5), 3)
    first.update(pred[:1], target[:1], valid[:1])
    second.update(pred[1:], target[1:], valid[1:])
    merged = FractionsSkillScore((1.0, 2.0), (1, 5), 3).load_state(first.state()).merge(second)
    for key, value in whole.compute().items():
        np.testing.assert_allclose(merged.compute()[key], value, rtol=1e-12)
    perfect = FractionsSkillScore((1.0,), (1, 5), 3)
    perfect.update(target, target, valid)
    assert np.all(perfect.compute()["fss"] == 1.0)
    empty = FractionsSkillScore((1e9,), (3,), 3)
    empty.update(pred, target, valid)
    assert np.all(np.isnan(empty.compute()["fss"]))


def test_bad_configuration_names_the_parameter():
    with pytest.raises(ValueError, match="scales"):
        FractionsSkillScore((1.0,), (2,), 3)
    with pytest.raises(ValueError, match="thresholds"):
        FractionsSkillScore((), (1,), 3)
    with pytest.raises(ValueError, match="other must be"):
        FractionsSkillScore((1.0,), (1,), 3).merge(FractionsSkillScore((1.0,), (3,), 3))
