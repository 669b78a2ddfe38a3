"""Confidence intervals for comparing training settings over seeds.

A setting's result varies with the seed far more than the settings differ, so two
settings are compared seed by seed: run ``i`` of both starts from the same warm start
and, with the same seed, draws the same questions in the same order. The difference per
seed then cancels what the seed decides, and its Student-t interval over the seeds says
whether the settings differ (it excludes 0) or how closely they agree (its width).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided confidence interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def format(self, scale: float = 1.0, digits: int = 1, signed: bool = True) -> str:
        """``"+2.1 [-0.4, +4.6]"`` (a difference; ``signed=False``: ``"2.1 [-0.4, 4.6]"``)
        with every number times ``scale``."""
        spec = f"{'+' if signed else ''}.{digits}f"
        mean, low, high = (
            format(scale * value, spec) for value in (self.mean, self.low, self.high)
        )
        return f"{mean} [{low}, {high}]"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The Student-t interval of the mean of ``values`` (2 or more)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"an interval needs 2 or more values (seeds), got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """The interval of the mean of ``a[i] - b[i]``: two settings' results paired by seed."""
    if len(a) != len(b):
        raise ValueError(
            f"paired results need one value per seed on both sides: {len(a)} != {len(b)}"
        )
    return mean_interval([x - y for x, y in zip(a, b, strict=True)], confidence)


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval of a proportion ``successes / n``: unlike the normal
    approximation it stays inside [0, 1] and is honest at rates near 0, e.g. "continues
    after the first hop in at most 2% of rollouts" from 0 or 3 of 500 (``n``: 1 or more)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n >= 1, got {successes}/{n}")
    z = stats.norm.ppf((1 + confidence) / 2)
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exactly 0 (1) with no successes (failures), where the formula leaves float dust
    low = 0.0 if successes == 0 else float(centre - half)
    high = 1.0 if successes == n else float(centre + half)
    return Interval(rate, low, high, n)
