"""CausalLMModule: any Hugging Face causal LM as an RLlib RLModule (new API stack)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from agents.rexrag.logprobs import response_token_logprobs
from agents.rexrag.sharding import gathered_state_dict, is_sharded, load_full_state_dict

#: Precisions a run computes in (``RexRagConfig.dtype``). float16 is left out: it
#: needs loss scaling, which the official bfloat16 recipe does not use.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def with_lora_adapters(model, r: int, alpha: float, target_modules: str | list[str]):
    """``model`` with trainable LoRA adapters and every base weight frozen (peft)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("LoRA needs peft: pip install 'rexrag[lora]'") from error
    adapters = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, adapters)


class CausalLMModule(TorchRLModule):
    """The policy: a causal LM loaded by alias, hub name or path (``model_config["model"]``).

    RLlib owns it like any module (weights, optimizer, checkpoints, syncing to
    EnvRunners); the forward pass returns the per-token log-probs of the given ids at
    the target positions, which is all the learner's loss needs (token-level PPO has
    no value head in GRPO).

    ``model_config`` keys: ``model`` (required), ``dtype`` (a :data:`DTYPES` name: the
    precision of an inference-only copy and of the weights it is sent; a trained
    module keeps float32 master weights and computes in ``dtype`` under the learner's
    autocast or FSDP mixed precision), ``gradient_checkpointing`` (bool),
    ``lora`` (``{"r", "alpha", "target_modules"}``: train LoRA adapters only, with peft),
    ``entropy`` (None, ``"metric"`` or ``"loss"``: also return the per-token entropy,
    with a gradient only for ``"loss"``), ``temperature`` (the rollout's; log-probs are
    those of the model at this temperature, default 1).
    Batch keys: ``input_ids``, ``attention_mask``, ``target_mask`` (``[batch, seq]``).
    """

    def setup(self) -> None:
        from agents.llm.models import load_model_and_tokenizer

        config = self.model_config or {}
        if "model" not in config:
            raise ValueError('CausalLMModule needs model_config={"model": NAME_OR_PATH}')
        dtype = self.compute_dtype if self.inference_only else torch.float32
        self.model, self.tokenizer = load_model_and_tokenizer(config["model"], dtype=dtype)
        if config.get("gradient_checkpointing"):
            # non-reentrant: the variant that composes with FSDP2's hooks
            self.model.gradient_checkpointing_enable({"use_reentrant": False})
        if config.get("lora"):
            self.model = with_lora_adapters(self.model, **config["lora"])
        self.score_through(functools.partial(response_token_logprobs, self.model))

    def score_through(self, scorer: Callable[..., Any]) -> None:
        """Compute log-probs with ``scorer`` (``response_token_logprobs``' signature
        without the model): the learner routes them through its sharded
        :class:`~agents.rexrag.logprobs.TokenScorer`."""
        # a plain attribute, not a submodule: the scorer wraps this module's own model,
        # and registering it would list every weight twice in the state dict
        object.__setattr__(self, "_scorer", scorer)

    def token_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        target_mask: torch.Tensor,
        entropy: str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """:func:`response_token_logprobs` of the policy at the rollout temperature."""
        return self._scorer(input_ids, attention_mask, target_mask, entropy, self.temperature)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The precision the policy runs in (``model_config["dtype"]``, float32 default)."""
        return DTYPES[(self.model_config or {}).get("dtype", "float32")]

    @property
    def temperature(self) -> float:
        """The rollout temperature the log-probs are measured at."""
        return float((self.model_config or {}).get("temperature", 1.0))

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        entropy = (self.model_config or {}).get("entropy")
        out = self.token_logprobs(
            batch["input_ids"], batch["attention_mask"], batch["target_mask"], entropy
        )
        if entropy is None:
            return {"logprobs": out}
        return {"logprobs": out[0], "entropy": out[1]}

    def get_state(self, components=None, *, not_components=None, inference_only=False, **kw):
        """The weights. Sharded: gathered one parameter at a time onto rank 0's CPU (every
        learner must call it; the others get ``{}``). ``inference_only`` (the weight sync
        to EnvRunners): in ``dtype``, the precision the runners compute in, so a
        bfloat16 run sends half the bytes."""
        dtype = self.compute_dtype if inference_only else None
        if is_sharded(self):
            return gathered_state_dict(self, dtype)
        if dtype is None or dtype == torch.float32:
            return super().get_state(
                components, not_components=not_components, inference_only=inference_only, **kw
            )
        return {k: v.detach().to("cpu", dtype) for k, v in self.state_dict().items()}

    def set_state(self, state) -> None:
        """Load full weights (arrays or tensors); a sharded module keeps its own shard."""
        if is_sharded(self):
            load_full_state_dict(self, state)
        else:
            super().set_state(state)
