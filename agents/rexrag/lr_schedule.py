"""The learning-rate schedule of a run: a linear warm-up, then constant (spec §5.1)."""

from __future__ import annotations


def warmup_learning_rate(base_lr: float, iteration: int, warmup_iterations: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_iterations`` iterations, then constant.

    The official run warms up over 286 of its 1005 steps; iteration 0 trains at
    ``base_lr / warmup`` (verl's schedule starts at 0, which wastes one iteration).
    """
    if warmup_iterations <= 0:
        return base_lr
    return base_lr * min(1.0, (iteration + 1) / warmup_iterations)
