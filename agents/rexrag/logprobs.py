"""Per-token log-probabilities of given ids under a causal LM, computed only where needed.

A full ``log_softmax`` over ``[batch, seq, vocab]`` is the largest tensor of an LLM
update (SmolLM2's 49k vocabulary × 4k tokens × a mini-batch). The learner needs
log-probs only at response positions, so the LM head runs on the hidden states of
those positions alone, and the log-prob is ``logit[token] - logsumexp(logits)``
without materialising a second vocabulary-sized tensor.
"""

from __future__ import annotations

import torch
from torch import nn


def response_token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    entropy: str | None = None,
    temperature: float = 1.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log π(input_ids[b, t] | input_ids[b, :t]) where ``target_mask[b, t]``, else 0.

    ``input_ids``, ``attention_mask``, ``target_mask``: ``[batch, seq]`` (right padding;
    position 0 is never a target, it has no context). Returns ``[batch, seq]``.
    ``entropy="metric"`` (no gradient) or ``"loss"`` (with gradient) also returns the
    policy entropy at each target position, ``[batch, seq]``: it costs one more
    vocabulary-sized tensor, so only an entropy bonus pays for its gradient.
    ``temperature``: π is the model's distribution at the rollout temperature (logits
    divided by it, as verl does), the distribution the rollout sampled from, so π_old,
    π_θ and π_ref are all measured where the samples came from.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = model.get_decoder()(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    ).last_hidden_state  # [batch, seq, hidden]
    targets = target_mask.bool().clone()
    targets[:, 0] = False
    batch_index, position = targets.nonzero(as_tuple=True)  # [n_targets] each
    logits = model.get_output_embeddings()(hidden[batch_index, position - 1]).float()  # [n, vocab]
    if temperature != 1.0:
        logits = logits / temperature
    chosen = logits.gather(-1, input_ids[batch_index, position].unsqueeze(-1)).squeeze(-1)
    logprobs = torch.zeros(input_ids.shape, dtype=logits.dtype, device=logits.device)
    log_normaliser = torch.logsumexp(logits, dim=-1)  # [n]
    logprobs[batch_index, position] = chosen - log_normaliser
    if entropy is None:
        return logprobs
    with torch.set_grad_enabled(entropy == "loss" and torch.is_grad_enabled()):
        target_entropy = log_normaliser - (torch.softmax(logits, -1) * logits).sum(-1)
    entropies = torch.zeros_like(logprobs)
    entropies[batch_index, position] = target_entropy
    return logprobs, entropies


class TokenScorer(nn.Module):
    """:func:`response_token_logprobs` of ``model`` as a module's ``forward``.

    FSDP2 gathers a sharded group's parameters in its module's forward hooks; the
    learner shards this module as the root, so its hooks gather the embeddings, final
    norm and LM head around the whole computation (which calls the decoder and the
    head directly, not the model's own ``forward``).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        target_mask: torch.Tensor,
        entropy: str | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return response_token_logprobs(
            self.model, input_ids, attention_mask, target_mask, entropy, temperature
        )
