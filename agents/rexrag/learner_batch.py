"""From sampled trajectories and π_old to the learner's columns (spec §3.3, §4.3, §4.4).

One pure step between rollout and update, in the order of the official trainer:
filter the probes by how natural their prompt is to π_old, compute GRPO advantages over
originals + kept probes, measure α and the originals' error rate, and put the behaviour
probability of the chosen correction mode under every trained token. Then the
``probe_credit`` option decides which tokens carry loss (:mod:`agents.rexrag.credit`),
and the step measures where the credit went, per component, at θ = θ_old.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from agents.rexrag.correction import CORRECTIONS, ORIGINAL_BEHAVIOURS, CorrectionInputs
from agents.rexrag.credit import COMPONENT_NAMES, PROBE_CREDITS, credit_components
from agents.rexrag.losses import ADVANTAGE_BASELINES, masked_mean
from agents.rexrag.probes import select_probes
from agents.rexrag.token_batch import TokenBatch, select_rows

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
    probe_credit: str = "copy",
    original_behaviour: str = "mixture",
    advantage_baseline: str = "group",
    entropy: np.ndarray | None = None,
) -> LearnerBatch:
    """Filter probes, then compute advantages and behaviour log-probs (spec §3.3, §4.3).

    ``old_logprobs`` / ``reference_logprobs``: ``[batch, seq]`` log π_old and log π_ref
    of every token of ``batch`` where ``batch.loss_mask`` (anything elsewhere).
    ``correction`` names a mode of :data:`agents.rexrag.correction.CORRECTIONS`; it gets
    α, the originals' error rate (the official ``err``) and their probe trigger rate.
    ``original_behaviour`` (:data:`~agents.rexrag.correction.ORIGINAL_BEHAVIOURS`) then
    sets the originals' part of it, and ``probe_credit``
    (:data:`~agents.rexrag.credit.PROBE_CREDITS`) which tokens carry loss: rows left
    with none (``group_only``'s probes) still count in their group's advantages but
    leave the learner's columns. ``advantage_baseline``
    (:data:`~agents.rexrag.losses.ADVANTAGE_BASELINES`) normalises the rewards.
    ``entropy`` (``[batch, seq]``, π_old's) adds each
    component's mean entropy to the statistics.
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

    advantages = ADVANTAGE_BASELINES[advantage_baseline](
        rewards, torch.as_tensor(kept_batch.group_ids), is_probe
    )
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
    corrected = ORIGINAL_BEHAVIOURS[original_behaviour](
        CORRECTIONS[correction](correction_inputs), correction_inputs
    )
    behaviour = corrected.behaviour_logprobs
    advantages = advantages * corrected.advantage_weights
    components = credit_components(
        kept_batch.loss_mask, kept_batch.prompt_mask, kept_batch.is_probe, kept_batch.branch_point
    )
    trained_np = PROBE_CREDITS[probe_credit](components)
    trained = torch.as_tensor(trained_np)
    # at θ = θ_old the PPO ratio is π_old / q (what the clip bounds), and each token's
    # gradient weight is that ratio times the trajectory's advantage weight; the push
    # |A·ratio| counts the advantage weight once (``advantages`` already carry it)
    ratio = (old_t - behaviour).exp()
    weights = ratio * corrected.advantage_weights.unsqueeze(-1)
    outside_clip = (ratio < 1.0 - clip_low) | (ratio > 1.0 + clip_high)
    stats = {
        "alpha": alpha,
        "error_rate": error_rate,
        "trigger_rate": trigger_rate,
        "probes_spawned": float(len(probes)),
        "probes_kept": float(len(kept)),
        "importance_weight_mean": float(masked_mean(weights, trained)),
        "importance_weight_max": float(weights[trained].max()) if trained.any() else 0.0,
        "importance_weight_clip_fraction": float(masked_mean(outside_clip.float(), trained)),
        "nonfinite_logprobs": float(nonfinite),
        **component_statistics(
            components,
            trained_np,
            (advantages.unsqueeze(-1) * ratio).abs().numpy(),
            weights.numpy(),
            outside_clip.numpy(),
            None if entropy is None else entropy[rows, :width],
        ),
    }
    reference = np.nan_to_num(reference_logprobs[rows, :width], nan=MIN_LOGPROB)
    columns = {
        "input_ids": kept_batch.input_ids,
        "attention_mask": kept_batch.attention_mask,
        "target_mask": trained_np,
        "loss_mask": trained_np.astype(np.float32),
        "credit_component": components,
        "behaviour_logprobs": behaviour.numpy().astype(np.float32),
        "reference_logprobs": np.maximum(reference, MIN_LOGPROB).astype(np.float32),
        "advantages": advantages.numpy().astype(np.float32),
    }
    columns = select_rows(columns, np.flatnonzero(trained_np.any(-1)))
    kept_accuracy = float(kept_batch.rewards[kept_batch.is_probe].mean()) if len(kept) else None
    return LearnerBatch(rows, kept_batch, columns, stats, kept_accuracy)


def component_statistics(
    components: np.ndarray,
    trained: np.ndarray,
    push: np.ndarray,
    weights: np.ndarray,
    outside_clip: np.ndarray,
    entropy: np.ndarray | None,
) -> dict[str, float]:
    """Per credit component, over its trained tokens at θ = θ_old: ``tokens``, ``share``
    of the batch's Σ|A·w| (``push``: ``[batch, seq]`` |A·w|), mean importance weight,
    the fraction outside the clip range already (``clip_fraction_old``) and π_old's
    mean entropy. A component with no trained token gets NaN (``tokens`` 0), so every
    iteration reports the same columns."""
    total_push = float(push[trained].sum())
    stats = {}
    for code, name in COMPONENT_NAMES.items():
        tokens = trained & (components == code)
        count = int(tokens.sum())
        prefix = f"credit_{name}_"
        stats[prefix + "tokens"] = float(count)
        stats[prefix + "share"] = float(push[tokens].sum()) / total_push if total_push else math.nan
        stats[prefix + "weight_mean"] = float(weights[tokens].mean()) if count else math.nan
        stats[prefix + "clip_fraction_old"] = (
            float(outside_clip[tokens].mean()) if count else math.nan
        )
        stats[prefix + "entropy"] = (
            float(entropy[tokens].mean()) if count and entropy is not None else math.nan
        )
    return stats
