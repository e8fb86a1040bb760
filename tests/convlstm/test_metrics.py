"""Streaming metrics: hand-computed values, masks, merging and state round trips."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convlstm.metrics import (
    CategoricalScores,
    ClassificationScores,
    CorrelationScore,
    RainfallErrors,
    VideoScores,
    balancing_weights,
    ssim_map,
)
from convlstm.units import scaled_pixel_to_rainrate


def assert_scores_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        if key == "class_names":
            assert actual[key] == expected[key]
        else:
            np.testing.assert_allclose(actual[key], expected[key], rtol=1e-9, atol=1e-12, err_msg=key)


# pred/target [B=1, T=2, C=1, 2, 2]: lead 1 is the hand-counted case, lead 2 is all zeros (no events).
PRED = np.array([[[[[0.2, 1.0], [3.0, 0.5]]], [[[0.0, 0.0], [0.0, 0.0]]]]])
TARGET = np.array([[[[[0.5, 0.0], [3.0, 2.0]]], [[[0.0, 0.0], [0.0, 0.0]]]]])


@pytest.mark.parametrize("event, expected", [
    # per threshold (0.5, 2.0), lead 1: hits, misses, false alarms, correct negatives
    ("ge", [(2, 1, 1, 0), (1, 1, 0, 2)]),
    ("gt", [(1, 1, 1, 1), (1, 0, 0, 3)]),
])
def test_contingency_counts_by_hand(event, expected):
    scores = CategoricalScores([0.5, 2.0], lead_times=2, event=event)
    scores.update(PRED, TARGET)
    result = scores.compute()
    for i, (h, m, f, c) in enumerate(expected):
        assert result["hits"][i].tolist() == [h, 0]
        assert result["misses"][i].tolist() == [m, 0]
        assert result["false_alarms"][i].tolist() == [f, 0]
        assert result["correct_negatives"][i].tolist() == [c, 4]


def test_skill_scores_by_hand_and_nan_without_events():
    scores = CategoricalScores([0.5, 2.0], lead_times=2)
    scores.update(PRED, TARGET)
    result = scores.compute()
    # >= 0.5, lead 1: H=2 M=1 F=1 C=0
    assert result["csi"][0, 0] == pytest.approx(2 / 4)
    assert result["far"][0, 0] == pytest.approx(1 / 3)
    assert result["pod"][0, 0] == pytest.approx(2 / 3)
    assert result["hss"][0, 0] == pytest.approx(2 * (2 * 0 - 1 * 1) / (3 * 1 + 3 * 1))
    # >= 2.0, lead 1: H=1 M=1 F=0 C=2 -> HSS = 2(2 - 0) / (2*3 + 1*2) = 0.5
    assert result["hss"][1, 0] == pytest.approx(0.5)
    assert result["far"][1, 0] == 0.0
    # lead 2 has no events at all: every ratio is 0/0
    for name in ("csi", "far", "pod", "hss"):
        assert np.isnan(result[name][:, 1]).all()
    # overall from summed counts: >= 0.5 gives H=2 M=1 F=1 C=4
    assert result["csi_overall"][0] == pytest.approx(0.5)
    assert result["hss_overall"][0] == pytest.approx(2 * (2 * 4 - 1 * 1) / (3 * 5 + 3 * 5))


def test_correlation_on_known_pairs():
    # frame (0, lead 1): P = 2T -> 1; frame (1, lead 1): P = [1, 0], T = [1, 1] -> 1 / sqrt(2); lead 2: P = T
    pred = np.array([[[[[1.0, 2.0]]], [[[3.0, 1.0]]]], [[[[1.0, 0.0]]], [[[3.0, 1.0]]]]])
    target = np.array([[[[[0.5, 1.0]]], [[[3.0, 1.0]]]], [[[[1.0, 1.0]]], [[[3.0, 1.0]]]]])
    score = CorrelationScore(lead_times=2)
    score.update(pred, target)
    result = score.compute()
    lead1 = (2.5 / math.sqrt(5 * 1.25 + 1e-9) + 1 / math.sqrt(2 + 1e-9)) / 2
    assert result["correlation"] == pytest.approx([lead1, 1.0])
    assert result["correlation_overall"] == pytest.approx((2 * lead1 + 2) / 4)


def test_rainfall_errors_by_hand():
    # one 1x2 frame per lead, pixels in HKO-7 [0, 1] scale; lead 2 is perfect
    pred_pixels = np.array([0.5, 0.8, 0.3, 0.9]).reshape(1, 2, 1, 1, 2)
    target_pixels = np.array([0.6, 0.8, 0.3, 0.9]).reshape(1, 2, 1, 1, 2)
    pred, target = scaled_pixel_to_rainrate(pred_pixels), scaled_pixel_to_rainrate(target_pixels)
    errors = RainfallErrors(lead_times=2)
    errors.update(pred, target)
    result = errors.compute()
    diff = float(pred[0, 0, 0, 0, 0]) - float(target[0, 0, 0, 0, 0])
    assert result["mse"] == pytest.approx([diff**2 / 2, 0.0])
    assert result["mae"] == pytest.approx([abs(diff) / 2, 0.0])
    assert result["mse_overall"] == pytest.approx(diff**2 / 4)
    # target pixel 0.6 is 8.3 mm/h -> weight 5; B-MSE sums the frame's weighted pixel errors
    assert float(target[0, 0, 0, 0, 0]) == pytest.approx(8.286, abs=1e-3)
    assert result["b_mse"] == pytest.approx([5 * 0.1**2, 0.0], abs=1e-6)
    assert result["b_mae"] == pytest.approx([5 * 0.1, 0.0], abs=1e-5)
    assert result["b_mae_overall"] == pytest.approx(5 * 0.1 / 2, abs=1e-5)


def test_balancing_weights_bins_are_closed_below():
    rain = np.array([0.0, 1.99, 2.0, 4.9, 5.0, 10.0, 29.9, 30.0, 200.0])
    assert balancing_weights(rain).tolist() == [1, 1, 2, 2, 5, 10, 10, 30, 30]


def test_video_scores_by_hand():
    pred = np.zeros((1, 2, 1, 2, 2))
    target = np.full((1, 2, 1, 2, 2), 0.5)
    target[0, 1] = 1.0
    pred[0, 1] = 0.0  # clipped to 1e-7 for the cross-entropy
    scores = VideoScores(lead_times=2)
    scores.update(pred, target)
    result = scores.compute()
    assert result["mse"] == pytest.approx([4 * 0.25, 4 * 1.0])
    assert result["mae"] == pytest.approx([4 * 0.5, 4 * 1.0])
    assert result["psnr"] == pytest.approx([10 * math.log10(1 / 0.25), 0.0])
    assert np.isnan(result["ssim"]).all()  # 2x2 frames are smaller than the 11x11 window
    bce_lead1 = 4 * -(0.5 * math.log(1e-7) + 0.5 * math.log(1 - 1e-7))
    bce_lead2 = 4 * -math.log(1e-7)
    assert result["cross_entropy"] == pytest.approx([bce_lead1, bce_lead2])
    assert result["cross_entropy_sequence"] == pytest.approx(bce_lead1 + bce_lead2)


def test_cross_entropy_of_a_coin_flip():
    scores = VideoScores(lead_times=3)
    scores.update(np.full((2, 3, 1, 4, 4), 0.5), np.random.default_rng(0).integers(0, 2, (2, 3, 1, 4, 4)))
    assert scores.compute()["cross_entropy_sequence"] == pytest.approx(3 * 16 * math.log(2))


def test_identical_frames_score_perfectly():
    frames = np.random.default_rng(1).random((2, 2, 3, 16, 16))
    scores = VideoScores(lead_times=2)
    scores.update(frames, frames)
    result = scores.compute()
    assert result["ssim"] == pytest.approx([1.0, 1.0])
    assert result["psnr"] == pytest.approx([100.0, 100.0])
    assert result["mse_overall"] == 0.0


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004, written out window by window."""
    offsets = np.arange(11) - 5
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mu_a, mu_b = (g * a).sum(), (g * b).sum()
            var_a, var_b = (g * (a - mu_a) ** 2).sum(), (g * (b - mu_b) ** 2).sum()
            cov = (g * (a - mu_a) * (b - mu_b)).sum()
            values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_windowed_reference():
    rng = np.random.default_rng(2)
    x = rng.random((15, 14))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    expected = _reference_ssim(x, y)
    assert 0.2 < expected < 0.95
    assert float(ssim_map(x, y).mean()) == pytest.approx(expected, rel=1e-9)
    scores = VideoScores(lead_times=1)
    scores.update(x[None, None, None], y[None, None, None])
    assert scores.compute()["ssim_overall"] == pytest.approx(expected, rel=1e-9)


def test_classification_on_known_confusion_matrix():
    target = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    scores = ClassificationScores(3, class_names=["a", "b", "c"])
    scores.update(torch.nn.functional.one_hot(torch.from_numpy(pred), 3).float(), torch.from_numpy(target))
    result = scores.compute()
    assert result["confusion_matrix"].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["precision"] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert result["recall"] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert result["f1"] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert result["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert result["class_names"] == ["a", "b", "c"]
    by_index = ClassificationScores(3, class_names=["a", "b", "c"])
    by_index.update(pred, target)
    assert_scores_equal(by_index.compute(), result)


def test_class_without_samples_or_predictions_is_nan():
    scores = ClassificationScores(3)
    scores.update(np.array([0, 1]), np.array([0, 0]))
    result = scores.compute()
    assert np.isnan(result["recall"][1]) and result["precision"][1] == 0.0
    assert np.isnan(result["f1"][2])
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def _forecast_batch(seed: int, shape=(4, 3, 2, 12, 24)):
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    pred = np.clip(target + 0.3 * rng.standard_normal(shape), 0, 1)
    return pred, target


ACCUMULATORS = {
    "categorical": lambda: CategoricalScores([0.2, 0.5, 0.8], lead_times=3),
    "correlation": lambda: CorrelationScore(lead_times=3),
    "rainfall": lambda: RainfallErrors(lead_times=3),
    "video": lambda: VideoScores(lead_times=3),
}


@pytest.mark.parametrize("name", sorted(ACCUMULATORS))
def test_merge_and_summed_state_equal_one_pass(name):
    make = ACCUMULATORS[name]
    pred, target = _forecast_batch(3)
    if name == "rainfall":
        pred, target = 40 * pred, 40 * target
    whole, first, second = make(), make(), make()
    whole.update(pred, target)
    first.update(pred[:1], target[:1])
    second.update(pred[1:], target[1:])
    summed = {key: first.state()[key] + second.state()[key] for key in first.state()}
    assert_scores_equal(make().load_state(summed).compute(), whole.compute())
    assert_scores_equal(first.merge(second).compute(), whole.compute())


def test_classification_merge_and_state_round_trip():
    rng = np.random.default_rng(4)
    logits, target = rng.standard_normal((10, 4)), rng.integers(0, 4, 10)
    whole, first, second = ClassificationScores(4), ClassificationScores(4), ClassificationScores(4)
    whole.update(logits, target)
    first.update(logits[:3], target[:3])
    second.update(logits[3:], target[3:])
    assert_scores_equal(first.merge(second).compute(), whole.compute())
    shipped = {key: torch.from_numpy(value) for key, value in whole.state().items()}
    assert_scores_equal(ClassificationScores(4).load_state(shipped).compute(), whole.compute())


@pytest.mark.parametrize("name", sorted(ACCUMULATORS))
def test_masked_pixels_are_ignored(name):
    """Scoring with the right half masked (and garbage there) equals scoring the left half alone."""
    make = ACCUMULATORS[name]
    pred, target = _forecast_batch(5)
    mask = np.zeros((4, 3, 1, 12, 24), dtype=np.uint8)
    mask[..., :12] = 1
    pred[..., 12:], target[..., 12:] = 1e6, -1e6
    masked, cropped = make(), make()
    masked.update(pred, target, mask)
    cropped.update(pred[..., :12], target[..., :12])
    assert_scores_equal(masked.compute(), cropped.compute())


def test_fully_masked_frames_are_left_out_of_frame_averages():
    pred, target = _forecast_batch(6, shape=(2, 3, 1, 12, 12))
    mask = np.ones_like(pred)
    mask[1] = 0
    for make in (ACCUMULATORS["correlation"], ACCUMULATORS["video"]):
        masked, first_only = make(), make()
        masked.update(pred, target, torch.from_numpy(mask))
        first_only.update(pred[:1], target[:1])
        assert_scores_equal(masked.compute(), first_only.compute())


def test_torch_and_numpy_inputs_agree():
    pred, target = _forecast_batch(7)
    from_numpy, from_torch = VideoScores(3), VideoScores(3)
    from_numpy.update(pred, target)
    from_torch.update(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    np.testing.assert_allclose(from_torch.compute()["mse"], from_numpy.compute()["mse"], rtol=1e-5)


def test_bad_arguments_raise_value_errors_naming_them():
    scores = CategoricalScores([0.5], lead_times=2)
    with pytest.raises(ValueError, match="pred"):
        scores.update(np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="target"):
        scores.update(np.zeros((1, 2, 1, 4, 4)), np.zeros((1, 2, 1, 4, 5)))
    with pytest.raises(ValueError, match="lead times"):
        scores.update(np.zeros((1, 3, 1, 4, 4)), np.zeros((1, 3, 1, 4, 4)))
    with pytest.raises(ValueError, match="mask"):
        scores.update(np.zeros((1, 2, 1, 4, 4)), np.zeros((1, 2, 1, 4, 4)), np.ones((1, 2, 1, 3, 4)))
    with pytest.raises(ValueError, match="event"):
        CategoricalScores([0.5], lead_times=2, event="lt")
    with pytest.raises(ValueError, match="thresholds"):
        CategoricalScores([], lead_times=2)
    with pytest.raises(ValueError, match="lead_times"):
        RainfallErrors(lead_times=0)
    with pytest.raises(ValueError, match="other"):
        scores.merge(CategoricalScores([0.5], lead_times=2, event="gt"))
    with pytest.raises(ValueError, match="state"):
        scores.load_state({"hits": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="target"):
        ClassificationScores(3).update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(ValueError, match="class_names"):
        ClassificationScores(3, class_names=["a"])
