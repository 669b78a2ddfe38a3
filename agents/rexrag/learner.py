"""RexRagLearner: the PPO-clipped, policy-corrected loss on token batches (spec §4.3, §4.4)."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.torch_utils import clip_gradients

from agents.llm.models import save_pretrained_weights
from agents.rexrag.credit import SUM_SUFFIX, component_sums
from agents.rexrag.logprobs import response_token_logprobs
from agents.rexrag.losses import clipped_surrogate, clipped_tokens, low_var_kl, masked_mean
from agents.rexrag.lr_schedule import warmup_learning_rate
from agents.rexrag.micro_batches import micro_batches, placeholder_rows
from agents.rexrag.sharding import (
    clip_global_norm,
    gathered_optimizer_state,
    gathered_state_dict,
    is_sharded,
    load_full_optimizer_state,
    max_over_ranks,
    shard_model,
    sum_over_ranks,
)
from agents.rexrag.token_batch import select_rows


@dataclass
class PolicyExport:
    """What ``save_pretrained`` needs of a policy, sent from a learner to the driver."""

    config: Any
    weights: dict[str, torch.Tensor]
    dtype: torch.dtype
    tokenizer: Any

    def save(self, directory: str | Path) -> None:
        """Write a ``from_pretrained`` directory (weights in ``dtype``, tokenizer)."""
        save_pretrained_weights(self.config, self.weights, self.dtype, directory)
        self.tokenizer.save_pretrained(str(directory))


class RexRagLearner(TorchLearner):
    """Computes the loss of one module from a token batch; the algorithm prepares the rest.

    Batch columns, all ``[batch, seq]`` unless noted:
    ``input_ids``, ``attention_mask``; ``target_mask`` (positions whose log-probs the
    module computes); ``loss_mask`` (MODEL and PROBE_PROMPT tokens: INFO and FEEDBACK
    tokens are never trained); ``behaviour_logprobs`` (log q, the PPO denominator of
    the chosen correction mode); ``reference_logprobs`` (frozen reference policy);
    ``advantages`` (``[batch]``, GRPO); optionally ``credit_component``
    (:mod:`agents.rexrag.credit` codes), which adds per-component sums of the update's
    clipping and KL to the statistics.

    One ``update`` is one optimizer step over a mini-batch. The mini-batch is split
    into micro-batches of at most ``max_tokens_per_micro_batch`` padded tokens whose
    gradients accumulate, each weighted by its share of the mini-batch's trained
    tokens, so the loss is the exact token mean whatever the micro-batch size.
    The frozen reference policy (for the KL term) is a copy of the initial weights.

    **The RLlib seam.** RLlib's public Learner hooks cannot express a reference policy
    sharded beside the policy, token-budget micro-batches with exact token-mean
    gradients, or FSDP2 optimizer state, so this class overrides six private hooks of
    ``TorchLearner``/``Learner`` (``_make_module``, ``_make_modules_ddp_if_necessary``,
    ``_uncompiled_update``, ``_get_clip_function``, ``_get_optimizer_state``,
    ``_set_optimizer_state``) and reads eight private names (``_device``, ``_module``,
    ``_params``, ``_named_optimizers``, ``_optimizer_parameters``,
    ``_optimizer_name_to_module``, ``_weights_seq_no``, ``_set_optimizer_lr``). They are
    why ``ray[rllib]`` is pinned to 2.60.x (setup.cfg);
    ``tests/agents/rexrag/test_rllib_seam.py`` names each one that a new RLlib removes.
    """

    @property
    def policy(self):
        """The CausalLMModule itself (unwrapped from DDP when there are several learners)."""
        return self.module[DEFAULT_MODULE_ID].unwrapped()

    @property
    def sharded(self) -> bool:
        return self.config.learner_sharding == "fsdp"

    @property
    def rank(self) -> int:
        return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    def _make_module(self):
        """The policy, the frozen reference beside it and, with ``learner_sharding =
        "fsdp"``, both sharded: before the optimizer is built on the parameters."""
        module = super()._make_module()
        policy = module[DEFAULT_MODULE_ID]
        dtype = policy.compute_dtype
        # With LoRA the reference is the base model with the adapters disabled: no copy.
        self.reference_model = (
            None
            if policy.uses_lora
            else copy.deepcopy(policy.model).to(dtype).eval().requires_grad_(False)
        )
        if self.reference_model is None:
            self._reference_scorer = _without_adapters(policy)
        else:
            self._reference_scorer = functools.partial(
                response_token_logprobs, self.reference_model
            )
        if self.sharded:
            if not torch.distributed.is_initialized():
                raise RuntimeError(
                    "learner_sharding='fsdp' needs remote learners (num_learners >= 1)"
                )
            options = {
                "compute_dtype": dtype,
                "cpu_offload": self.config.learner_cpu_offload,
                "device_type": self._device.type,
            }
            policy.score_through(shard_model(policy.model, **options))
            self._reference_scorer = shard_model(self.reference_model, **options)
        return module

    def _make_modules_ddp_if_necessary(self) -> None:
        if not self.sharded:  # sharded modules synchronise their own gradients
            super()._make_modules_ddp_if_necessary()

    def _precision(self):
        """Autocast to the run's ``dtype`` (FSDP's mixed precision does it when sharded)."""
        dtype = self.policy.compute_dtype
        if self.sharded or dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self._device.type, dtype=dtype)

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

    def policy_export(self) -> PolicyExport | None:
        """The policy as a Hugging Face model in ``dtype``: the full weights (a sharded
        policy is gathered: every learner must call this), its config and the tokenizer
        as loaded. Rank 0 returns it, the others None; the driver writes it, so an
        export lands on the driver's node whichever node trains."""
        module = self.policy
        model = module.model
        if module.uses_lora:  # a plain model for from_pretrained: adapters merged in a copy
            model = copy.deepcopy(model).merge_and_unload()
        if is_sharded(model):
            weights = gathered_state_dict(model, module.compute_dtype)
        else:
            weights = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        if self.rank != 0:
            return None
        return PolicyExport(model.config, weights, module.compute_dtype, module.tokenizer)

    def score_shard(
        self, columns: dict[str, np.ndarray], shards: list[np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Score this learner's rows (``shards[rank]``): several learners split the pass."""
        rows = shards[self.rank]
        return rows, self.score_tokens({name: value[rows] for name, value in columns.items()})

    def _micro_batches(self, attention_mask: torch.Tensor) -> list[tuple[slice, int] | None]:
        """This learner's micro-batches ``(rows, width)``. Sharded, padded with ``None``
        (a placeholder that trains nothing) to the largest count of any learner: every
        forward pass gathers each layer from all learners, so all run the same number."""
        chunks: list[tuple[slice, int] | None] = list(
            micro_batches(attention_mask, self.config.max_tokens_per_micro_batch)
        )
        if self.sharded:
            chunks += [None] * (max_over_ranks(len(chunks)) - len(chunks))
        return chunks

    @torch.no_grad()
    def score_tokens(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """log π_old and log π_ref of every ``target_mask`` token (spec §3.3, §4.3: recomputed
        by the learner before the update, for probe-prompt tokens the rollout never
        scored and for the filter), and π_old's entropy there (the iteration's entropy
        metric, computed here where the logits exist anyway). ``[batch, seq]`` float32."""
        module = self.policy
        tensors = {k: torch.tensor(v, device=self._device) for k, v in columns.items()}
        old = torch.zeros(tensors["input_ids"].shape, dtype=torch.float32)
        reference, entropy = torch.zeros_like(old), torch.zeros_like(old)
        was_training = module.model.training
        module.model.eval()
        for chunk in self._micro_batches(tensors["attention_mask"]):
            micro = placeholder_rows(tensors) if chunk is None else select_rows(tensors, chunk[0])
            width = None if chunk is None else chunk[1]
            ids, attention, targets = (
                micro[key][:, :width] for key in ("input_ids", "attention_mask", "target_mask")
            )
            with self._precision():
                scored, entropies = module.token_logprobs(ids, attention, targets, "metric")
                referenced = self._reference_scorer(
                    ids, attention, targets, None, module.temperature
                )
            if chunk is not None:
                rows = chunk[0]
                old[rows, :width], entropy[rows, :width] = scored.float().cpu(), entropies.cpu()
                reference[rows, :width] = referenced.float().cpu()
        module.model.train(was_training)
        if self.sharded:
            # FSDP2 keeps a root's parameters gathered after a forward with no backward;
            # the reference only ever scores, so it would hold them whole (its embeddings)
            # through the update
            self._reference_scorer.reshard()
        return {
            "old_logprobs": old.numpy(),
            "reference_logprobs": reference.numpy(),
            "entropy": entropy.numpy(),
        }

    def _uncompiled_update(self, batch: dict, **kwargs):
        columns = batch[DEFAULT_MODULE_ID]
        for optimizer in self._optimizer_parameters:
            optimizer.zero_grad(set_to_none=True)
        local_tokens = float(columns["loss_mask"].sum())
        # Each learner's gradient is averaged over the learners (DDP, FSDP): weighting a
        # micro-batch by learners · tokens / all learners' tokens makes the step the exact
        # token mean of the whole mini-batch, however it was split.
        learners = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        gradient_scale = learners / max(sum_over_ranks(local_tokens), 1.0)
        fwd_out, loss_sum, stats = {}, 0.0, {}
        chunks = self._micro_batches(columns["attention_mask"])
        real_chunks = sum(chunk is not None for chunk in chunks)
        wrapper = self.module[DEFAULT_MODULE_ID]
        for index, chunk in enumerate(chunks):
            micro = placeholder_rows(columns) if chunk is None else select_rows(columns, chunk[0])
            # Under DDP only the last backward all-reduces: ranks may differ in micro-batches.
            last = index == len(chunks) - 1
            sync = (
                contextlib.nullcontext()
                if last or not hasattr(wrapper, "no_sync")
                else wrapper.no_sync()
            )
            tokens = float(micro["loss_mask"].sum()) if chunk is not None else 0.0
            with sync:
                with self._precision():
                    fwd_out = self.module.forward_train({DEFAULT_MODULE_ID: micro})
                    loss = self.compute_losses(fwd_out=fwd_out, batch={DEFAULT_MODULE_ID: micro})[
                        DEFAULT_MODULE_ID
                    ]
                (loss * (tokens * gradient_scale)).backward()
            if chunk is None:
                continue
            # Statistics weighted alike: their mean over learners is the token mean.
            share = tokens * gradient_scale
            loss_sum = loss_sum + loss.detach() * share
            for name, value in self.loss_stats.items():  # token-weighted means over micro-batches
                if name == "ratio_max":
                    stats[name] = max(stats.get(name, 0.0), value)
                else:
                    summed = name == "nonfinite_losses" or name.endswith(SUM_SUFFIX)
                    stats[name] = stats.get(name, 0.0) + (1.0 if summed else share) * value
        gradients = {pid: p.grad for pid, p in self._params.items() if p.grad is not None}
        nothing_finite = stats.get("nonfinite_losses", 0.0) == real_chunks
        # A step on all-zero gradients would still move the weights (AdamW's momentum and
        # weight decay): skip it, unless several learners must step together.
        if not (nothing_finite and not torch.distributed.is_initialized()):
            self.apply_gradients(self.postprocess_gradients(gradients))
        self.metrics.log_dict(stats, key=DEFAULT_MODULE_ID, window=1)
        return fwd_out, {DEFAULT_MODULE_ID: loss_sum}, {}

    @staticmethod
    def _get_clip_function():
        """RLlib's clipping, with the global norm taken over sharded gradients too."""
        return _clip_gradients

    def _get_optimizer_state(self) -> dict:
        if not self.sharded:
            return super()._get_optimizer_state()
        return {
            name: {
                "module_id": self._optimizer_name_to_module[name],
                "state": gathered_optimizer_state(self.policy, optimizer),
            }
            for name, optimizer in self._named_optimizers.items()
        }

    def _set_optimizer_state(self, state: dict) -> None:
        if not self.sharded:
            super()._set_optimizer_state(state)
            return
        for name, entry in state.items():
            load_full_optimizer_state(self.policy, self._named_optimizers[name], entry["state"])

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
        token_kl = low_var_kl(logprobs, batch["reference_logprobs"])
        kl = masked_mean(token_kl, mask)
        total = policy_loss + config.kl_coeff * kl
        metrics = {"policy_loss": policy_loss.item(), "kl": kl.item()}
        if "credit_component" in batch:  # where the update's clipping and drift fall
            binding = clipped_tokens(
                logprobs,
                batch["behaviour_logprobs"],
                batch["advantages"],
                config.clip_low,
                config.clip_high,
            )
            per_token = {"clip_fraction_update": binding.float(), "kl": token_kl}
            metrics.update(component_sums(per_token, mask, batch["credit_component"]))
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


def _without_adapters(policy) -> Callable[..., torch.Tensor]:
    """The LoRA policy's base model (adapters disabled) as a reference scorer."""

    def score(*args, **kwargs) -> torch.Tensor:
        with policy.model.disable_adapter():
            return response_token_logprobs(policy.model, *args, **kwargs)

    return score


def _clip_gradients(gradients: dict, *, grad_clip: float, grad_clip_by: str):
    if grad_clip_by == "global_norm":
        return clip_global_norm(gradients, grad_clip)
    return clip_gradients(gradients, grad_clip=grad_clip, grad_clip_by=grad_clip_by)
