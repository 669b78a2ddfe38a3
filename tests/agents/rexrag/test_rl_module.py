import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from agents.rexrag.logprobs import response_token_logprobs
from agents.rexrag.rl_module import CausalLMModule
from rexrag_env.spaces import UnicodeText


def build(model_config):
    spec = RLModuleSpec(
        module_class=CausalLMModule,
        observation_space=UnicodeText(),
        action_space=UnicodeText(),
        model_config=model_config,
    )
    return spec.build()


def test_module_wraps_a_causal_lm_loaded_by_path(tiny_model_dir):
    module = build({"model": str(tiny_model_dir)})
    ids = torch.randint(0, module.model.config.vocab_size, (2, 10))
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones(2, 10),
        "target_mask": torch.zeros(2, 10, dtype=torch.bool),
    }
    batch["target_mask"][:, 6:] = True
    out = module.forward_train(batch)
    expected = response_token_logprobs(
        module.model, ids, batch["attention_mask"], batch["target_mask"]
    )
    assert torch.allclose(out["logprobs"], expected)
    assert out["logprobs"].requires_grad
    state = module.get_state()
    assert any("embed_tokens" in key for key in state)  # RLlib sees the LM weights


def test_missing_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="model_config"):
        build({})
