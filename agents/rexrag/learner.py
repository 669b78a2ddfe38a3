"""RexRagLearner: the PPO-clipped, policy-corrected loss on token batches (spec §4.3, §4.4)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from agents.rexrag.logprobs import response_token_logprobs
from agents.rexrag.losses import clipped_surrogate, low_var_kl, masked_mean
from agents.rexrag.token_batch import select_rows


def warmup_learning_rate(base_lr: float, iteration: int, warmup_iterations: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_iterations`` iterations, then constant.

    The official run warms up over 286 of its 1005 steps; iteration 0 trains at
    ``base_lr / warmup`` (verl's schedule starts at 0, which wastes one iteration).
    """
    if warmup_iterations <= 0:
        return base_lr
    return base_lr * min(1.0, (iteration + 1) / warmup_iterations)


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


class RexRagLearner(TorchLearner):
    """Computes the loss of one module from a token batch; the algorithm prepares the rest.

    Batch columns, all ``[batch, seq]`` unless noted:
    ``input_ids``, ``attention_mask``; ``target_mask`` (positions whose log-probs the
    module computes); ``loss_mask`` (MODEL and PROBE_PROMPT tokens: INFO and FEEDBACK
    tokens are never trained); ``behaviour_logprobs`` (log q, the PPO denominator of
    the chosen correction mode); ``reference_logprobs`` (frozen reference policy);
    ``advantages`` (``[batch]``, GRPO).

    One ``update`` is one optimizer step over a mini-batch. The mini-batch is split
    into micro-batches of at most ``max_tokens_per_micro_batch`` padded tokens whose
    gradients accumulate, each weighted by its share of the mini-batch's trained
    tokens, so the loss is the exact token mean whatever the micro-batch size.
    The frozen reference policy (for the KL term) is a copy of the initial weights.
    """

    @property
    def policy(self):
        """The CausalLMModule itself (unwrapped from DDP when there are several learners)."""
        return self.module[DEFAULT_MODULE_ID].unwrapped()

    def build(self) -> None:
        super().build()
        module = self.policy
        # With LoRA the reference is the base model with the adapters disabled: no copy.
        self.reference_model = (
            None if module.uses_lora else copy.deepcopy(module.model).eval().requires_grad_(False)
        )

    def _reference_logprobs(self, ids, attention, targets) -> torch.Tensor:
        module = self.policy
        temperature = module.temperature
        if self.reference_model is not None:
            return response_token_logprobs(
                self.reference_model, ids, attention, targets, temperature=temperature
            )
        with module.model.disable_adapter():
            return response_token_logprobs(
                module.model, ids, attention, targets, temperature=temperature
            )

    def configure_optimizers_for_module(self, module_id: str, config=None) -> None:
        """AdamW (β 0.9/0.999, weight decay) as the official run; lr set per iteration."""
        module = self._module[module_id]
        params = self.get_parameters(module)
        optimizer = torch.optim.AdamW(
            params,
            lr=warmup_learning_rate(config.lr, 0, config.lr_warmup_steps),
            betas=(0.9, 0.999),
            weight_decay=config.weight_decay,
        )
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params)

    def start_iteration(self, iteration: int) -> float:
        """Set the learning rate of training iteration ``iteration`` (0-based); returns it."""
        lr = warmup_learning_rate(self.config.lr, iteration, self.config.lr_warmup_steps)
        for optimizer in self._named_optimizers.values():
            self._set_optimizer_lr(optimizer, lr)
        return lr

    def weights_seq_no(self) -> int:
        """How many updates the policy has had (RLlib counts one per ``update``): the
        version EnvRunners must have synced before they sample."""
        return self._weights_seq_no

    def save_policy(self, directory: str) -> None:
        """Write the policy with ``save_pretrained`` (model and tokenizer); rank 0 only."""
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        module = self.policy
        model = module.model
        if module.uses_lora:  # a plain model for from_pretrained: adapters merged in a copy
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(directory)
        module.tokenizer.save_pretrained(directory)

    def score_shard(
        self, columns: dict[str, np.ndarray], shards: list[np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Score this learner's rows (``shards[rank]``): several learners split the pass."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        rows = shards[rank]
        return rows, self.score_tokens({name: value[rows] for name, value in columns.items()})

    @torch.no_grad()
    def score_tokens(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """log π_old and log π_ref of every ``target_mask`` token (spec §3.3: recomputed
        by the learner before the update, for probe-prompt tokens the rollout never
        scored and for the filter), and π_old's entropy there (the iteration's entropy
        metric, computed here where the logits exist anyway). ``[batch, seq]`` float32."""
        module = self.policy
        tensors = {k: torch.tensor(v, device=self._device) for k, v in columns.items()}
        old = torch.zeros(tensors["input_ids"].shape, dtype=torch.float32)
        reference, entropy = torch.zeros_like(old), torch.zeros_like(old)
        was_training = module.model.training
        module.model.eval()
        budget = self.config.max_tokens_per_micro_batch
        for rows, width in micro_batches(tensors["attention_mask"], budget):
            ids, attention, targets = (
                tensors[key][rows, :width] for key in ("input_ids", "attention_mask", "target_mask")
            )
            scored, entropies = response_token_logprobs(
                module.model, ids, attention, targets, "metric", module.temperature
            )
            old[rows, :width], entropy[rows, :width] = scored.cpu(), entropies.cpu()
            reference[rows, :width] = self._reference_logprobs(ids, attention, targets).cpu()
        module.model.train(was_training)
        return {
            "old_logprobs": old.numpy(),
            "reference_logprobs": reference.numpy(),
            "entropy": entropy.numpy(),
        }

    def _uncompiled_update(self, batch: dict, **kwargs):
        columns = batch[DEFAULT_MODULE_ID]
        for optimizer in self._optimizer_parameters:
            optimizer.zero_grad(set_to_none=True)
        total_tokens = columns["loss_mask"].sum().clamp(min=1.0)
        fwd_out, loss_sum, stats = {}, 0.0, {}
        chunks = list(
            micro_batches(columns["attention_mask"], self.config.max_tokens_per_micro_batch)
        )
        wrapper = self.module[DEFAULT_MODULE_ID]
        for index, (rows, _) in enumerate(chunks):
            micro = select_rows(columns, rows)
            # Under DDP only the last backward all-reduces: ranks may differ in micro-batches.
            last = index == len(chunks) - 1
            sync = (
                contextlib.nullcontext()
                if last or not hasattr(wrapper, "no_sync")
                else wrapper.no_sync()
            )
            with sync:
                fwd_out = self.module.forward_train({DEFAULT_MODULE_ID: micro})
                loss = self.compute_losses(fwd_out=fwd_out, batch={DEFAULT_MODULE_ID: micro})[
                    DEFAULT_MODULE_ID
                ]
                share = micro["loss_mask"].sum() / total_tokens
                (loss * share).backward()
            loss_sum = loss_sum + loss.detach() * share
            for name, value in self.loss_stats.items():  # token-weighted means over micro-batches
                if name == "ratio_max":
                    stats[name] = max(stats.get(name, 0.0), value)
                else:
                    weight = 1.0 if name == "nonfinite_losses" else float(share)
                    stats[name] = stats.get(name, 0.0) + weight * value
        gradients = {pid: p.grad for pid, p in self._params.items() if p.grad is not None}
        nothing_finite = stats.get("nonfinite_losses", 0.0) == len(chunks)
        # A step on all-zero gradients would still move the weights (AdamW's momentum and
        # weight decay): skip it, unless DDP replicas must step together.
        if not (nothing_finite and not torch.distributed.is_initialized()):
            self.apply_gradients(self.postprocess_gradients(gradients))
        self.metrics.log_dict(stats, key=DEFAULT_MODULE_ID, window=1)
        return fwd_out, {DEFAULT_MODULE_ID: loss_sum}, {}

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
        metrics = {"policy_loss": policy_loss.item(), "kl": kl.item()}
        if "entropy" in fwd_out:
            entropy = masked_mean(fwd_out["entropy"], mask)
            total = total - config.entropy_coeff * entropy
            metrics["entropy"] = entropy.item()
        # A non-finite loss (an overflowing ratio, a corrupted batch) would poison the
        # weights through AdamW's moments: skip this micro-batch and count it instead.
        finite = bool(torch.isfinite(total))
        metrics["nonfinite_losses"] = float(not finite)
        if not finite:
            # a zero that still has a graph: every DDP rank must run backward
            total = (torch.nan_to_num(logprobs) * 0.0).sum()
        self.loss_stats = {**metrics, **{name: float(value) for name, value in stats.items()}}
        return total
