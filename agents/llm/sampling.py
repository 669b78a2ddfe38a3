"""Next-token sampling with exact log-probabilities (pure functions on tensors)."""

from __future__ import annotations

import torch


def sampling_logprobs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Log-probabilities of the distribution actually sampled from.

    ``logits``: ``[batch, vocab]``. Temperature scales the logits; top-p keeps the
    smallest set of most likely tokens whose mass reaches ``top_p`` and renormalises.
    Greedy decoding (``temperature == 0``) reports the plain model distribution
    (temperature 1), the convention of vLLM and of the PPO ratio. Returns ``[batch,
    vocab]`` with ``-inf`` outside the nucleus.
    """
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    if temperature == 0 or top_p >= 1.0:
        return logprobs
    sorted_logprobs, order = torch.sort(logprobs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_logprobs.exp(), dim=-1) - sorted_logprobs.exp()
    outside = mass_before >= top_p  # the most likely token always stays (its mass_before is 0)
    sorted_logprobs = sorted_logprobs.masked_fill(outside, float("-inf"))
    nucleus = torch.full_like(logprobs, float("-inf")).scatter(-1, order, sorted_logprobs)
    return torch.log_softmax(nucleus, dim=-1)


def sample_next_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row; returns ``(token_ids [batch], logprobs [batch])``."""
    logprobs = sampling_logprobs(logits, temperature, top_p)
    if temperature == 0:
        token_ids = torch.argmax(logprobs, dim=-1)
    else:
        token_ids = torch.multinomial(logprobs.exp(), num_samples=1, generator=generator).squeeze(
            -1
        )
    return token_ids, logprobs.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
