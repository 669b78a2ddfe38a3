"""RexRagLearner: the PPO-clipped, policy-corrected loss on token batches (spec §4.3, §4.4)."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from agents.rexrag.losses import clipped_surrogate, low_var_kl, masked_mean


class RexRagLearner(TorchLearner):
    """Computes the loss of one module from a token batch; the algorithm prepares the rest.

    Batch columns, all ``[batch, seq]`` unless noted:
    ``input_ids``, ``attention_mask``; ``target_mask`` (positions whose log-probs the
    module computes); ``loss_mask`` (MODEL and PROBE_PROMPT tokens: INFO and FEEDBACK
    tokens are never trained); ``behaviour_logprobs`` (log q, the PPO denominator of
    the chosen correction mode); ``reference_logprobs`` (frozen reference policy);
    ``advantages`` (``[batch]``, GRPO).
    """

    def compute_loss_for_module(
        self, *, module_id: str, config, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        logprobs = fwd_out["logprobs"]
        mask = batch["loss_mask"].to(logprobs.dtype)
        policy_loss, stats = clipped_surrogate(
            logprobs,
            batch["behaviour_logprobs"],
            batch["advantages"],
            mask,
            config.clip_low,
            config.clip_high,
        )
        kl = masked_mean(low_var_kl(logprobs, batch["reference_logprobs"]), mask)
        total = policy_loss + config.kl_coeff * kl
        self.metrics.log_dict(
            {
                "policy_loss": policy_loss.item(),
                "kl": kl.item(),
                **{name: float(value) for name, value in stats.items()},
            },
            key=module_id,
            window=1,
        )
        return total
