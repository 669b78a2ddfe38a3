"""The intervals that decide the GRPO vs REX-RAG comparison (benchmarks/dead_ends.py)."""

import math

import pytest

from agents.analysis.paired_stats import Interval, mean_interval, paired_difference


def test_mean_interval_is_the_student_t_interval():
    # mean 2, sample std 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321
    interval = mean_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert not interval.excludes_zero()
    assert mean_interval([1.0, 2.0, 3.0], confidence=0.5).half_width < interval.half_width
    with pytest.raises(ValueError, match="2 or more"):
        mean_interval([1.0])


def test_pairing_by_seed_removes_what_the_seeds_share():
    # the seeds move both settings by a lot, the setting adds 0.02 to each
    grpo = [0.30, 0.45, 0.60, 0.38]
    rexrag = [value + 0.02 for value in grpo]
    paired = paired_difference(rexrag, grpo)
    assert paired.mean == pytest.approx(0.02) and paired.half_width == pytest.approx(0.0)
    assert paired.excludes_zero()
    unpaired = mean_interval(rexrag).mean - mean_interval(grpo).mean
    assert unpaired == pytest.approx(0.02)  # same mean, but the spread of each is ~0.13
    assert mean_interval(grpo).half_width > 0.1
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([0.1, 0.2], [0.1])


def test_interval_format():
    assert Interval(0.021, -0.004, 0.046, 5).format(scale=100) == "+2.1 [-0.4, +4.6]"
    assert Interval(0.5, 0.25, 0.75, 5).format(digits=2, signed=False) == "0.50 [0.25, 0.75]"


def test_the_wilson_interval_of_a_rate():
    from agents.analysis.paired_stats import proportion_interval

    none = proportion_interval(0, 500)
    assert none.mean == 0.0 and none.low == 0.0
    assert none.high == pytest.approx(1.96**2 / (500 + 1.96**2), rel=1e-3)  # 0.0076
    half = proportion_interval(5, 10)
    assert (half.low, half.high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert proportion_interval(10, 10).high == 1.0
    with pytest.raises(ValueError, match="successes"):
        proportion_interval(3, 2)
