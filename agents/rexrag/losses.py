"""GRPO advantages, the clipped surrogate and the KL estimator (spec §4.4), as pure functions.

Shapes: ``[batch]`` per trajectory, ``[batch, seq]`` per response token. ``mask`` is a
float or bool ``[batch, seq]`` tensor that keeps the trained tokens (MODEL and
PROBE_PROMPT labels); everything else contributes nothing.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the tokens ``mask`` keeps ("token-mean" aggregation); 0 if none."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def grpo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Group-normalised advantages ``(R - mean_g) / (std_g + eps)`` (spec §4.4).

    ``rewards``, ``group_ids``: ``[batch]``. The standard deviation is the unbiased one
    (N-1), as ``torch.std`` in the official code; a group of one gets mean 0 and std 1,
    so its advantage is its reward. Probes share their question's group id, so they
    are normalised together with the originals.
    """
    advantages = torch.empty_like(rewards, dtype=torch.float32)
    for group in torch.unique(group_ids):
        members = group_ids == group
        group_rewards = rewards[members].float()
        if group_rewards.numel() == 1:
            mean, std = torch.zeros(()), torch.ones(())
        else:
            mean, std = group_rewards.mean(), group_rewards.std()
        advantages[members] = (group_rewards - mean) / (std + eps)
    return advantages


def uniform_groups_on_the_batch(
    rewards: torch.Tensor, group_ids: torch.Tensor, is_probe: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO's advantages, except that a group whose rewards all tie (all wrong or all
    right: no signal within it) is normalised by the batch's originals instead:
    ``(R - mean_batch) / (std_batch + eps)``. An all-wrong group's originals are then
    pushed down (and an all-right group's up) without any probe: the baseline a probe's
    right answer gives its group under ``probe_credit = group_only``, had by other means
    (issue "When does REX-RAG help?": is a probe needed at all?). ``is_probe``:
    ``[batch]``; the batch statistics are over originals only, so probes do not set them.
    """
    advantages = grpo_advantages(rewards, group_ids, eps)
    originals = rewards[~is_probe].float()
    if originals.numel() < 2:
        return advantages
    mean, std = originals.mean(), originals.std()
    for group in torch.unique(group_ids):
        members = group_ids == group
        if torch.all(rewards[members] == rewards[members][0]):
            advantages[members] = (rewards[members].float() - mean) / (std + eps)
    return advantages


def within_groups(
    rewards: torch.Tensor, group_ids: torch.Tensor, is_probe: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """The official GRPO advantages (:func:`grpo_advantages`): a tied group gets 0."""
    return grpo_advantages(rewards, group_ids, eps)


#: The ``advantage_baseline`` options (``RexRagConfig``), one signature each.
ADVANTAGE_BASELINES = {
    "group": within_groups,
    "group_or_batch": uniform_groups_on_the_batch,
}


def clipped_surrogate(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped objective with an arbitrary behaviour probability in the denominator.

    ``logprobs`` (current policy) and ``behaviour_logprobs`` (log q of spec §4.3, or
    π_old for plain PPO/GRPO): ``[batch, seq]``; ``advantages``: ``[batch]``, broadcast
    over tokens. Per token ``max(-A r, -A clip(r, 1-ε_low, 1+ε_high))`` with
    ``r = exp(logprobs - behaviour_logprobs)``, token-mean over ``mask``.
    Returns the loss and statistics (ratio mean/max, clip fraction) over the mask.
    """
    ratio = torch.exp(logprobs - behaviour_logprobs)  # [batch, seq]
    advantage = advantages.unsqueeze(-1)  # [batch, 1]
    unclipped = -advantage * ratio
    clipped = -advantage * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    kept = mask.bool()
    binding = clipped_tokens(logprobs, behaviour_logprobs, advantages, clip_low, clip_high)
    stats = {
        "ratio_mean": masked_mean(ratio.detach(), mask),
        "ratio_max": ratio.detach()[kept].max() if kept.any() else torch.zeros(()),
        "clip_fraction": masked_mean(binding.float(), mask),
    }
    return loss, stats


def clipped_tokens(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> torch.Tensor:
    """``[batch, seq]`` True where :func:`clipped_surrogate`'s clip binds (the token gives
    no gradient): its ``clip_fraction`` is the masked mean of this."""
    ratio = torch.exp(logprobs - behaviour_logprobs).detach()
    advantage = advantages.unsqueeze(-1)
    return -advantage * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) > -advantage * ratio


def low_var_kl(logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π_θ || π_ref): ``e^{ref-logp} - (ref-logp) - 1`` (spec §4.4).

    Non-negative and unbiased for samples from π_θ. As in the official code the log
    ratio is clamped to [-20, 20] and the result to [-10, 10], so one token with a
    vanishing reference probability cannot blow up the loss.
    """
    log_ratio = torch.clamp(reference_logprobs - logprobs, -20.0, 20.0)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)
