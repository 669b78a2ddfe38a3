"""CausalLMModule: any Hugging Face causal LM as an RLlib RLModule (new API stack)."""

from __future__ import annotations

from typing import Any

from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from agents.rexrag.logprobs import response_token_logprobs


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

    ``model_config`` keys: ``model`` (required), ``gradient_checkpointing`` (bool),
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
        self.model, self.tokenizer = load_model_and_tokenizer(config["model"])
        if config.get("gradient_checkpointing"):
            self.model.gradient_checkpointing_enable()
        if config.get("lora"):
            self.model = with_lora_adapters(self.model, **config["lora"])

    @property
    def temperature(self) -> float:
        """The rollout temperature the log-probs are measured at."""
        return float((self.model_config or {}).get("temperature", 1.0))

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        entropy = (self.model_config or {}).get("entropy")
        out = response_token_logprobs(
            self.model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["target_mask"],
            entropy,
            self.temperature,
        )
        if entropy is None:
            return {"logprobs": out}
        return {"logprobs": out[0], "entropy": out[1]}
