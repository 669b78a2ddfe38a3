"""Behaviour probabilities of mixed sampling, per correction mode (spec §4.2, §4.3).

Probes are drawn from a probe policy μ, not from π_old, so the batch comes from the
mixture q = (1-α)·π_old + α·μ, α being the fraction of probes in the batch. The
learner puts q, not π_old, under π_θ in the PPO ratio.

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

import torch

CORRECTION_MODES = ("rexrag", "none", "sequence")


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


def behaviour_logprobs(
    mode: str,
    old_logprobs: torch.Tensor,
    is_probe: torch.Tensor,
    prompt_mask: torch.Tensor,
    pool_logprobs: torch.Tensor,
    prompt_start: torch.Tensor,
    alpha: float,
    error_rate: float,
    response_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """log q per token, the PPO denominator, for the token-level modes.

    - ``"rexrag"``: log((1-α)·π_old + α·μ); μ = 0 for originals, so their denominator
      is (1-α)·π_old (spec §7 item 4: their ratios start at 1/(1-α));
    - ``"none"``: log π_old for every token (probes trained as if on-policy; the
      paper's ablation, and plain GRPO when there are no probes).
    ``"sequence"`` works per trajectory: see :func:`sequence_log_weights`.
    """
    if mode == "none":
        return old_logprobs
    if mode != "rexrag":
        raise ValueError(
            f"token-level behaviour probabilities exist for 'rexrag' and 'none', not {mode!r}"
        )
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
