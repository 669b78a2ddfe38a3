"""Micro-batches by padded tokens: memory follows tokens, not a row count (no Ray here).

The learner and the SFT split a mini-batch into consecutive row ranges whose padded
size fits a token budget and accumulate their gradients, each weighted by its share of
the trained tokens, so the step is the same token mean whatever the budget.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def micro_batches(attention_mask: torch.Tensor, max_tokens: int) -> Iterator[tuple[slice, int]]:
    """Consecutive row ranges whose padded size (rows × longest row) fits ``max_tokens``.

    Yields ``(rows, width)``; a row longer than ``max_tokens`` gets a micro-batch alone.
    Like verl's dynamic batch size: memory follows tokens, not a fixed row count.
    """
    lengths = attention_mask.sum(-1).tolist()
    start, width = 0, 0
    for row, length in enumerate(lengths):
        grown = max(width, int(length))
        if row > start and grown * (row - start + 1) > max_tokens:
            yield slice(start, row), width
            start, grown = row, int(length)
        width = grown
    if start < len(lengths):
        yield slice(start, len(lengths)), width


def placeholder_rows(columns: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One two-token row with one target, zeros elsewhere, shaped like ``columns``: the
    micro-batch a sharded learner runs (and scales by 0) when it has fewer than the
    others, so that every learner runs the same forward passes."""
    rows = {
        name: torch.zeros(
            (1, 2) if value.dim() == 2 else (1,), dtype=value.dtype, device=value.device
        )
        for name, value in columns.items()
    }
    rows["attention_mask"][:] = 1
    for name in ("target_mask", "loss_mask"):
        if name in rows:
            rows[name][0, 1] = 1
    return rows
