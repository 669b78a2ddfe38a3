"""From sampled trajectories and π_old to the learner's columns (spec §3.3, §4.3, §4.4).

One pure step between rollout and update, in the order of the official trainer:
filter the probes by how natural their prompt is to π_old, compute GRPO advantages over
originals + kept probes, measure α and the originals' error rate, and put the behaviour
probability of the chosen correction mode under every trained token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agents.rexrag.correction import CORRECTIONS, CorrectionInputs
from agents.rexrag.losses import grpo_advantages, masked_mean
from agents.rexrag.probes import select_probes
from agents.rexrag.token_batch import TokenBatch

#: log-probabilities are clamped to this floor before use, so a token the policy
#: (or the pool) gives probability 0 cannot make a weight or a loss infinite.
MIN_LOGPROB = -50.0


@dataclass
class LearnerBatch:
    """The kept trajectories, their learner columns and what the step measured."""

    rows: np.ndarray  # [kept] indices into the input batch: all originals, then kept probes
    batch: TokenBatch  # those rows
    columns: dict[str, np.ndarray]  # what RexRagLearner reads
    stats: dict[str, float]
    kept_probe_accuracy: float | None  # None when no probe was kept


def probe_prompt_scores(batch: TokenBatch, old_logprobs: np.ndarray) -> np.ndarray:
    """``[batch]`` mean π_old log-prob over each row's PROBE_PROMPT tokens (-inf if none)."""
    mask = batch.prompt_mask
    counts = mask.sum(-1)
    sums = np.where(mask, old_logprobs, 0.0).sum(-1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)


def build_learner_batch(
    batch: TokenBatch,
    old_logprobs: np.ndarray,
    reference_logprobs: np.ndarray,
    *,
    keep_ratio: float,
    keep_multiple_of: int,
    correction: str,
    sequence_weight_cap: float,
    clip_low: float,
    clip_high: float,
) -> LearnerBatch:
    """Filter probes, then compute advantages and behaviour log-probs (spec §3.3, §4.3).

    ``old_logprobs`` / ``reference_logprobs``: ``[batch, seq]`` log π_old and log π_ref
    of every token of ``batch`` where ``batch.loss_mask`` (anything elsewhere).
    ``correction`` names a mode of :data:`agents.rexrag.correction.CORRECTIONS`; it gets
    α, the originals' error rate (the official ``err``) and their probe trigger rate.
    """
    old = np.maximum(np.nan_to_num(old_logprobs, nan=MIN_LOGPROB), MIN_LOGPROB)
    nonfinite = int((~np.isfinite(old_logprobs) & batch.loss_mask).sum())
    originals = np.flatnonzero(~batch.is_probe)
    probes = np.flatnonzero(batch.is_probe)
    scores = probe_prompt_scores(batch, old)[probes]
    kept = probes[select_probes(scores.tolist(), len(originals), keep_ratio, keep_multiple_of)]
    rows = np.concatenate([originals, kept])
    kept_batch = batch.select(rows)
    width = kept_batch.input_ids.shape[1]
    old_t = torch.as_tensor(old[rows, :width])
    mask = torch.as_tensor(kept_batch.loss_mask)
    is_probe = torch.as_tensor(kept_batch.is_probe)
    prompt_mask = torch.as_tensor(kept_batch.prompt_mask)
    pool = torch.as_tensor(np.maximum(kept_batch.sampling_logprobs, MIN_LOGPROB))
    rewards = torch.as_tensor(kept_batch.rewards)

    advantages = grpo_advantages(rewards, torch.as_tensor(kept_batch.group_ids))
    alpha = len(kept) / len(rows)
    original_accuracy = float(rewards[~is_probe].mean()) if len(originals) else 0.0
    error_rate = 1.0 - original_accuracy
    trigger_rate = float(batch.probe_eligible[originals].mean()) if len(originals) else 0.0
    correction_inputs = CorrectionInputs(
        old_logprobs=old_t,
        loss_mask=mask,
        is_probe=is_probe,
        prompt_mask=prompt_mask,
        pool_logprobs=pool,
        prompt_start=torch.as_tensor(kept_batch.prompt_start),
        response_start=torch.as_tensor(kept_batch.response_start),
        alpha=alpha,
        error_rate=error_rate,
        trigger_rate=trigger_rate,
        sequence_weight_cap=sequence_weight_cap,
    )
    corrected = CORRECTIONS[correction](correction_inputs)
    behaviour = corrected.behaviour_logprobs
    advantages = advantages * corrected.advantage_weights
    # the weight each token's gradient gets at θ = θ_old: π_old / q, times the
    # trajectory's advantage weight
    weights = (old_t - behaviour).exp() * corrected.advantage_weights.unsqueeze(-1)
    outside_clip = (weights < 1.0 - clip_low) | (weights > 1.0 + clip_high)
    trained = mask.bool()
    stats = {
        "alpha": alpha,
        "error_rate": error_rate,
        "trigger_rate": trigger_rate,
        "probes_spawned": float(len(probes)),
        "probes_kept": float(len(kept)),
        "importance_weight_mean": float(masked_mean(weights, mask)),
        "importance_weight_max": float(weights[trained].max()) if trained.any() else 0.0,
        "importance_weight_clip_fraction": float(masked_mean(outside_clip.float(), mask)),
        "nonfinite_logprobs": float(nonfinite),
    }
    reference = np.nan_to_num(reference_logprobs[rows, :width], nan=MIN_LOGPROB)
    columns = {
        "input_ids": kept_batch.input_ids,
        "attention_mask": kept_batch.attention_mask,
        "target_mask": kept_batch.loss_mask,
        "loss_mask": kept_batch.loss_mask.astype(np.float32),
        "behaviour_logprobs": behaviour.numpy().astype(np.float32),
        "reference_logprobs": np.maximum(reference, MIN_LOGPROB).astype(np.float32),
        "advantages": advantages.numpy().astype(np.float32),
    }
    kept_accuracy = float(kept_batch.rewards[kept_batch.is_probe].mean()) if len(kept) else None
    return LearnerBatch(rows, kept_batch, columns, stats, kept_accuracy)
