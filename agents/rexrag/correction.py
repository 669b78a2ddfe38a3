"""Policy correction of mixed sampling: one pure function per mode, one table (spec §4.2, §4.3).

Probes are drawn from a probe policy μ, not from π_old, so the batch comes from the
mixture q = (1-α)·π_old + α·μ, α being the fraction of probes in the batch. Every mode
takes the same :class:`CorrectionInputs` and returns a :class:`Correction`: the
log-probability the learner puts under π_θ in the PPO ratio, and a weight on each
trajectory's advantage. Modes are looked up in :data:`CORRECTIONS` (as verl's policy
loss registry), so the learner batch never branches on the mode.

Tensors: ``[batch, seq]`` over response positions unless noted. ``old_logprobs``:
log π_old of each response token. ``prompt_mask``: True on PROBE_PROMPT tokens.
``pool_logprobs``: log P_pool(token | earlier prompt tokens) on prompt tokens
(:meth:`agents.rexrag.probes.PromptPool.token_logprobs`), anything elsewhere.
``is_probe``: ``[batch]``. ``prompt_start``: ``[batch]``, the position of a probe's
first prompt token (ignored for originals). ``response_start``: ``[batch]``, where the
response begins when the tensors also hold the question prompt (right-padded whole
sequences, as the learner batch does); 0 when they hold response positions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


def probe_token_logmu(
    old_logprobs: torch.Tensor,
    prompt_mask: torch.Tensor,
    pool_logprobs: torch.Tensor,
    prompt_start: torch.Tensor,
    error_rate: float,
    response_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """log μ per token of a probe, as the official code builds it (spec §4.3 table).

    - before the prompt (the reused prefix, j tokens): π_old · err^(-1/j), so the prefix
      product is π_old(prefix) / P(fail): the prefix is conditioned on failing;
    - the first prompt token: 1 (the official choice; exact when the whole pool shares
      its first token, as the official pool does);
    - later prompt tokens: the pool trie probability;
    - after the prompt: π_old (the continuation is sampled by the policy).
    """
    positions = torch.arange(old_logprobs.shape[-1], device=old_logprobs.device).unsqueeze(0)
    start = prompt_start.unsqueeze(-1)  # [batch, 1]
    prefix = positions < start
    first_prompt_token = positions == start
    offset = 0 if response_start is None else response_start.unsqueeze(-1)
    prefix_length = (start - offset).clamp(min=1).to(old_logprobs.dtype)  # j, response tokens
    log_error = math.log(max(error_rate, 1e-12))
    logmu = torch.where(prefix, old_logprobs - log_error / prefix_length, old_logprobs)
    logmu = torch.where(prompt_mask, pool_logprobs, logmu)
    return torch.where(first_prompt_token & prompt_mask, torch.zeros_like(logmu), logmu)


def mixture_logprobs(
    old_logprobs: torch.Tensor,
    is_probe: torch.Tensor,
    prompt_mask: torch.Tensor,
    pool_logprobs: torch.Tensor,
    prompt_start: torch.Tensor,
    alpha: float,
    error_rate: float,
    response_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """log q = log((1-α)·π_old + α·μ) per token, the official token-level mixture.

    μ = 0 for originals, so their denominator is (1-α)·π_old (spec §7 item 4: their
    ratios start at 1/(1-α)); a probe's μ is :func:`probe_token_logmu`.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha (the probe fraction) must be in [0, 1), got {alpha}")
    from_policy = old_logprobs + math.log(1.0 - alpha)
    if alpha == 0.0:
        return from_policy
    logmu = probe_token_logmu(
        old_logprobs, prompt_mask, pool_logprobs, prompt_start, error_rate, response_start
    )
    from_probe = torch.where(
        is_probe.unsqueeze(-1), logmu + math.log(alpha), torch.full_like(logmu, -math.inf)
    )
    return torch.logaddexp(from_policy, from_probe)


def sequence_log_weights(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    is_probe: torch.Tensor,
    prompt_mask: torch.Tensor,
    pool_logprobs: torch.Tensor,
    alpha: float,
    error_rate: float,
    cap: float = 2.0,
    log_fail_given_prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[batch]`` log of the truncated trajectory weight min(w, cap) (spec §4.2).

    w(τ) = π_θ(τ) / ((1-α)·π_old(τ) + α·μ(τ)), with μ(τ) = π_old(prefix) · P(fail |
    prefix) / P(fail) · P_pool(prompt) · π_old(continuation) for a probe and μ = 0 for an
    original. P(fail | prefix) (``log_fail_given_prefix``, ``[batch]``) is what makes μ a
    normalised distribution, and the weight exactly unbiased (tested by enumeration);
    an LLM cannot compute it, so by default it is taken as 1, as the official token-
    level μ does. Sums run over ``response_mask`` tokens; info and feedback tokens are
    the environment's and cancel between numerator and denominator, so the mask should
    keep only trained tokens (MODEL and PROBE_PROMPT).
    """
    mask = response_mask.to(logprobs.dtype)
    log_policy = (logprobs * mask).sum(-1)
    log_old = (old_logprobs * mask).sum(-1)
    policy_part = log_old + math.log(1.0 - alpha)
    if alpha > 0.0:
        not_prompt = mask * (~prompt_mask).to(mask.dtype)
        log_mu = (
            (old_logprobs * not_prompt).sum(-1)
            - math.log(max(error_rate, 1e-12))
            + (pool_logprobs * prompt_mask.to(mask.dtype)).sum(-1)
        )
        if log_fail_given_prefix is not None:
            log_mu = log_mu + log_fail_given_prefix
        probe_part = torch.where(
            is_probe, log_mu + math.log(alpha), torch.full_like(log_mu, -math.inf)
        )
        log_q = torch.logaddexp(policy_part, probe_part)
    else:
        log_q = policy_part
    return torch.clamp(log_policy - log_q, max=math.log(cap))


@dataclass(frozen=True)
class CorrectionInputs:
    """What every correction mode reads; tensors as in the module docstring.

    Attributes:
        old_logprobs: ``[batch, seq]`` log π_old at every trained token.
        loss_mask: ``[batch, seq]`` the trained tokens (MODEL and PROBE_PROMPT).
        is_probe: ``[batch]``.
        prompt_mask, pool_logprobs: ``[batch, seq]``, the probe prompt and its pool
            log-probs.
        prompt_start, response_start: ``[batch]`` positions (see module docstring).
        alpha: the fraction of probes in the batch after filtering.
        error_rate: 1 - accuracy of the originals (the official ``err``).
        trigger_rate: the fraction of originals that could spawn a probe (answered
            wrongly in a search-enabled turn; before the ``probe_prob`` coin): the
            estimate of P(trigger) that normalises the sequence-level μ.
        sequence_weight_cap: the truncation of the sequence-level weight.
    """

    old_logprobs: torch.Tensor
    loss_mask: torch.Tensor
    is_probe: torch.Tensor
    prompt_mask: torch.Tensor
    pool_logprobs: torch.Tensor
    prompt_start: torch.Tensor
    response_start: torch.Tensor | None
    alpha: float
    error_rate: float
    trigger_rate: float
    sequence_weight_cap: float = 2.0


@dataclass(frozen=True)
class Correction:
    """A mode's answer: ``behaviour_logprobs`` ``[batch, seq]`` go under π_θ in the PPO
    ratio; ``advantage_weights`` ``[batch]`` multiply each trajectory's advantage."""

    behaviour_logprobs: torch.Tensor
    advantage_weights: torch.Tensor


def rexrag_correction(inputs: CorrectionInputs) -> Correction:
    """The official token-level mixture under the ratio (spec §4.3)."""
    behaviour = mixture_logprobs(
        inputs.old_logprobs,
        inputs.is_probe,
        inputs.prompt_mask,
        inputs.pool_logprobs,
        inputs.prompt_start,
        inputs.alpha,
        inputs.error_rate,
        inputs.response_start,
    )
    return Correction(behaviour, torch.ones_like(inputs.is_probe, dtype=behaviour.dtype))


def no_correction(inputs: CorrectionInputs) -> Correction:
    """π_old under the ratio for every token: probes trained as if on-policy (the
    paper's ablation; plain GRPO when there are no probes)."""
    old = inputs.old_logprobs
    return Correction(old, torch.ones_like(inputs.is_probe, dtype=old.dtype))


def sequence_correction(inputs: CorrectionInputs) -> Correction:
    """PPO on π_old with each advantage scaled by min(π_old(τ)/q(τ), cap), the
    trajectory-level multiple-importance weight at θ = θ_old (PPO's clip then bounds
    how far θ moves).

    Unbiased (tested by enumeration) when μ(τ) is the true probe distribution: its
    normaliser is P(trigger), estimated here by ``trigger_rate`` (not the official
    1 - accuracy, which also counts wrong answers that cannot spawn a probe); α is
    fixed rather than the realised fraction after filtering; μ is evaluated on every
    trajectory by content; and P(fail | prefix) is known. An LLM cannot compute the
    last, so it is taken as 1 (the official choice): the bias that remains is
    measured in ``tests/agents/rexrag/test_unbiasedness.py``.
    """
    old = inputs.old_logprobs
    log_weights = sequence_log_weights(
        old,
        old,
        inputs.loss_mask,
        inputs.is_probe,
        inputs.prompt_mask,
        inputs.pool_logprobs,
        inputs.alpha,
        inputs.trigger_rate,
        inputs.sequence_weight_cap,
    )
    return Correction(old, log_weights.exp())


#: The correction modes (``RexRagConfig.correction``), one signature each.
CORRECTIONS: dict[str, Callable[[CorrectionInputs], Correction]] = {
    "rexrag": rexrag_correction,
    "none": no_correction,
    "sequence": sequence_correction,
}
CORRECTION_MODES = tuple(CORRECTIONS)


def originals_under_mixture(correction: Correction, inputs: CorrectionInputs) -> Correction:
    """The mode's own treatment of originals (official): under ``rexrag`` their
    behaviour probability is (1-α)·π_old, so their ratios start at 1/(1-α)."""
    return correction


def originals_under_policy(correction: Correction, inputs: CorrectionInputs) -> Correction:
    """Originals as plain GRPO treats them, whatever the mode does to probes: π_old
    under the ratio (ratio 1 at θ_old, PPO's trust region centred where it was sampled)
    and advantage weight 1. Probes keep the mode's mixture."""
    probe = inputs.is_probe
    weights = correction.advantage_weights
    return Correction(
        torch.where(probe.unsqueeze(-1), correction.behaviour_logprobs, inputs.old_logprobs),
        torch.where(probe, weights, torch.ones_like(weights)),
    )


#: The ``original_behaviour`` options (``RexRagConfig``): what an original's PPO
#: denominator and advantage weight are, applied to a correction mode's answer.
ORIGINAL_BEHAVIOURS: dict[str, Callable[[Correction, CorrectionInputs], Correction]] = {
    "mixture": originals_under_mixture,
    "policy": originals_under_policy,
}
