"""Champion/challenger promotion by a paired test over the same held-out windows.

Both models are scored window by window on one split (`jobs.evaluation.evaluate.score_model(...,
per_window=metric)`); `d_i` is the challenger's improvement on window i in the metric's direction
(challenger - champion when higher is better, champion - challenger otherwise). The challenger is
promoted only when at least `min_windows` windows have a score for both, the mean improvement exceeds
`margin`, and the one-sided p-value of "no improvement" is below `1 - confidence`:
- `bootstrap`: the fraction of `samples` resampled means of `d` (windows drawn with replacement,
  seeded) that are `<= margin`, as (k + 1) / (samples + 1);
- `sign`: the binomial tail P(X >= wins) for X ~ Bin(wins + losses, 1/2), ties dropped (ignores
  `margin` in the p-value; the mean must still exceed it).
Windows overlap in time, so neighbours are not independent: the p-value is optimistic for strongly
overlapping windows, which is one more reason for `min_windows`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

TestName = Literal["bootstrap", "sign"]


@dataclass(frozen=True)
class Decision:
    """`promote`, a one-line `reason`, the p-value (None when not tested), `n` paired windows and the
    mean per-window `gain` (metric unit; positive = the challenger is better)."""

    promote: bool
    reason: str
    p_value: float | None = None
    n: int = 0
    gain: float | None = None


@dataclass(frozen=True)
class PromotionRule:
    """The paired test (module docstring): `test`, `confidence`, `min_windows` scored by both, the
    `margin` the mean gain must exceed, and the bootstrap's `samples` and `seed`."""

    test: TestName = "bootstrap"
    confidence: float = 0.95
    min_windows: int = 10
    margin: float = 0.0
    samples: int = 10000
    seed: int = 0


def paired_test(reference: Sequence[float | None], candidate: Sequence[float | None], higher_is_better: bool,
                rule: PromotionRule = PromotionRule(), against: str = "champion") -> Decision:
    """Whether `candidate` beats `reference` on the same windows (scores in the same order; None or
    non-finite = undefined, that window is left out). `against` names the reference in the reason."""
    test, confidence, min_windows, margin = rule.test, rule.confidence, rule.min_windows, rule.margin
    if len(reference) != len(candidate):
        raise ValueError(f"paired scores differ in length ({len(reference)} vs {len(candidate)} windows)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pairs = [(r, c) for r, c in zip(reference, candidate) if _finite(r) and _finite(c)]
    n = len(pairs)
    if n < min_windows:
        return Decision(False, f"not promoted: {n} window(s) scored by both, fewer than min_windows "
                               f"{min_windows}", None, n, None)
    ref, cand = np.array(pairs, dtype=np.float64).T
    d = cand - ref if higher_is_better else ref - cand
    gain = float(d.mean())
    p = _bootstrap_p(d, margin, rule.samples, rule.seed) if test == "bootstrap" else _sign_p(d)
    stats = f"p = {p:.3g}, n = {n}"
    if gain > margin and p < 1.0 - confidence:
        return Decision(True, f"beats {against} by {gain:.4g} per window ({stats})", p, n, gain)
    what = "no significant difference" if against == "champion" else f"does not beat {against} significantly"
    return Decision(False, f"not promoted: {what} ({stats})", p, n, gain)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _bootstrap_p(d: np.ndarray, margin: float, samples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(samples, len(d)))].mean(axis=1)
    return float((np.count_nonzero(means <= margin) + 1) / (samples + 1))


def _sign_p(d: np.ndarray) -> float:
    wins, losses = int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))
    trials = wins + losses
    if trials == 0:
        return 1.0
    return float(sum(math.comb(trials, k) for k in range(wins, trials + 1)) / 2 ** trials)
