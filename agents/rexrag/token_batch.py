"""Token trajectories → padded arrays, the only form the learner sees (DESIGN.md principle 2).

Every row is one whole trajectory (question prompt, then the response: model turns,
observations, an exploratory prompt for probes), right-padded to the longest row.
Per-token columns are ``[batch, seq]``; per-trajectory columns are ``[batch]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.trajectory import Component, Trajectory

TRAINED_COMPONENTS = (int(Component.MODEL), int(Component.PROBE_PROMPT))


@dataclass
class TokenBatch:
    """A batch of trajectories as arrays.

    Attributes:
        input_ids: ``[batch, seq]`` token ids, 0 on padding.
        attention_mask: ``[batch, seq]`` 1 on real tokens.
        loss_mask: ``[batch, seq]`` True on MODEL and PROBE_PROMPT tokens, the trained
            ones (spec §1.3): INFO, FEEDBACK, the question prompt and padding are not.
        prompt_mask: ``[batch, seq]`` True on PROBE_PROMPT tokens.
        sampling_logprobs: ``[batch, seq]`` the rollout's log-probs (MODEL tokens) and
            the pool's (PROBE_PROMPT tokens), 0 elsewhere and where the sampler gave none.
        sampler_scored: ``[batch, seq]`` False on a probe's re-encoded boundary tokens
            (:func:`agents.rexrag.probes.make_probe`), which are trained but were never
            sampled, so they have no sampling log-prob; True elsewhere.
        rewards: ``[batch]`` exact match of the final answer.
        group_ids: ``[batch]`` one id per question of the iteration; probes share it.
        is_probe: ``[batch]``.
        probe_eligible: ``[batch]`` originals that met the probe trigger (whether or
            not the ``probe_prob`` coin then spawned a probe).
        response_start: ``[batch]`` index of the first response token (prompt length).
        prompt_start: ``[batch]`` index of a probe's first PROBE_PROMPT token (the row
            length for originals).
        parent_row: ``[batch]`` a probe's parent's row in this batch; -1 for originals
            and for a probe whose parent is not in the batch.
        branch_point: ``[batch]`` a probe's first token of its own (the tokens from
            ``response_start`` up to it are its parent's, as sampled); ``response_start``
            for originals, all of whose response is their own.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    loss_mask: np.ndarray
    prompt_mask: np.ndarray
    sampling_logprobs: np.ndarray
    sampler_scored: np.ndarray
    rewards: np.ndarray
    group_ids: np.ndarray
    is_probe: np.ndarray
    probe_eligible: np.ndarray
    response_start: np.ndarray
    prompt_start: np.ndarray
    parent_row: np.ndarray
    branch_point: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)

    def select(self, rows: Sequence[int] | np.ndarray) -> TokenBatch:
        """The batch restricted to ``rows`` (in that order), trimmed to its longest row;
        a probe's ``parent_row`` follows its parent to its new row (-1 if not selected)."""
        rows = np.asarray(rows, dtype=np.int64)
        selected = TokenBatch(**select_rows(vars(self), rows))
        new_row = np.full(len(self), -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        has_parent = selected.parent_row >= 0
        selected.parent_row = np.where(has_parent, new_row[selected.parent_row], -1)
        return selected


def select_rows(columns: dict[str, Any], rows) -> dict[str, Any]:
    """``columns`` (NumPy arrays or torch tensors, ``[batch, seq]`` or ``[batch]``, one of
    them ``attention_mask``) restricted to ``rows`` (indices or a slice), with the
    per-token columns cut to the longest selected row: right padding nobody needs."""
    lengths = columns["attention_mask"][rows].sum(-1)
    width = int(lengths.max()) if len(lengths) else 0
    return {
        name: (value[rows, :width] if value.ndim == 2 else value[rows])
        for name, value in columns.items()
    }


def group_ids_by_question(trajectories: Sequence[Trajectory]) -> np.ndarray:
    """``[batch]`` integer group ids: equal for trajectories of the same question."""
    index: dict[str, int] = {}
    return np.array(
        [index.setdefault(t.example_id, len(index)) for t in trajectories], dtype=np.int64
    )


def to_token_batch(trajectories: Sequence[Trajectory]) -> TokenBatch:
    """Pad token trajectories into a :class:`TokenBatch` (groups by question id)."""
    if not trajectories:
        raise ValueError("no trajectories to batch")
    for t in trajectories:
        if not t.token_ids or len(t.token_ids) != len(t.components):
            raise ValueError(
                f"trajectory of question {t.example_id!r} has no token ids or mismatched "
                "component labels: only token agents (LLMAgent) produce trainable data"
            )
    rows, width = len(trajectories), max(len(t.token_ids) for t in trajectories)
    input_ids = np.zeros((rows, width), dtype=np.int64)
    components = np.full((rows, width), int(Component.PAD), dtype=np.int64)
    sampling_logprobs = np.zeros((rows, width), dtype=np.float32)
    for row, t in enumerate(trajectories):
        length = len(t.token_ids)
        input_ids[row, :length] = t.token_ids
        components[row, :length] = t.components
        sampling_logprobs[row, :length] = t.sampling_logprobs
    sampler_scored = np.isfinite(sampling_logprobs)
    sampling_logprobs = np.where(sampler_scored, sampling_logprobs, 0.0).astype(np.float32)
    prompt_mask = components == Component.PROBE_PROMPT
    lengths = np.array([len(t.token_ids) for t in trajectories], dtype=np.int64)
    first_prompt_token = np.where(prompt_mask.any(-1), prompt_mask.argmax(-1), lengths)
    response_start = np.array([t.prompt_length for t in trajectories], dtype=np.int64)
    return TokenBatch(
        input_ids=input_ids,
        attention_mask=(components != Component.PAD).astype(np.int64),
        loss_mask=np.isin(components, TRAINED_COMPONENTS),
        prompt_mask=prompt_mask,
        sampling_logprobs=sampling_logprobs,
        sampler_scored=sampler_scored,
        rewards=np.array([t.reward for t in trajectories], dtype=np.float32),
        group_ids=group_ids_by_question(trajectories),
        is_probe=np.array([t.is_probe for t in trajectories], dtype=bool),
        probe_eligible=np.array([t.probe_eligible for t in trajectories], dtype=bool),
        response_start=response_start,
        prompt_start=first_prompt_token.astype(np.int64),
        parent_row=parent_rows(trajectories),
        branch_point=np.array(
            [
                t.branch_point if t.is_probe and t.branch_point is not None else start
                for t, start in zip(trajectories, response_start, strict=True)
            ],
            dtype=np.int64,
        ),
    )


def parent_rows(trajectories: Sequence[Trajectory]) -> np.ndarray:
    """``[batch]`` the row of each probe's parent (by ``rollout_id``), -1 for originals
    and for probes whose parent is not among ``trajectories``."""
    row_of = {t.rollout_id: row for row, t in enumerate(trajectories) if t.rollout_id}
    return np.array(
        [row_of.get(t.parent_id, -1) if t.parent_id else -1 for t in trajectories],
        dtype=np.int64,
    )
