"""One real RLlib Learner update on a token batch with the tiny model."""

import numpy as np
import pytest
import torch
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from agents.rexrag.config import RexRagConfig
from agents.rexrag.learner import RexRagLearner
from rexrag_env.spaces import UnicodeText


@pytest.fixture(scope="module")
def learner(tiny_model_dir):
    config = (
        RexRagConfig()
        .training(llm=str(tiny_model_dir), lr=1e-2, kl_coeff=0.1)
        .learners(learner_class=RexRagLearner)
    )
    return config.build_learner(spaces={"default_policy": (UnicodeText(), UnicodeText())})


def token_batch(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (4, 12))
    loss_mask = np.zeros((4, 12), dtype=np.float32)
    loss_mask[:, 4:8] = 1.0  # MODEL tokens
    target_mask = np.zeros((4, 12), dtype=bool)
    target_mask[:, 4:12] = True  # 8-11 play INFO tokens: log-probs computed, never trained
    return {
        "input_ids": ids,
        "attention_mask": np.ones((4, 12), dtype=np.int64),
        "target_mask": target_mask,
        "loss_mask": loss_mask,
        "behaviour_logprobs": np.full((4, 12), -7.0, dtype=np.float32),
        "reference_logprobs": np.full((4, 12), -7.0, dtype=np.float32),
        "advantages": np.array([1.0, -1.0, 0.5, -0.5], dtype=np.float32),
    }


def test_update_changes_weights_and_reports_metrics(learner):
    module = learner.module["default_policy"]
    before = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    columns = token_batch(module.model.config.vocab_size)
    batch = MultiAgentBatch({"default_policy": SampleBatch(columns)}, env_steps=4)
    results = learner.update(batch=batch)
    after = module.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    flat = str(results)
    assert "policy_loss" in flat and "clip_fraction" in flat and "kl" in flat


def test_info_tokens_get_no_gradient(learner):
    """Only loss-mask tokens carry gradient: changing INFO-position targets changes nothing."""
    module = learner.module["default_policy"]
    columns = token_batch(module.model.config.vocab_size, seed=1)
    tensors = {k: torch.as_tensor(v) for k, v in columns.items()}

    def gradient(batch):
        module.model.zero_grad()
        fwd = module.forward_train(batch)
        loss = learner.compute_loss_for_module(
            module_id="default_policy", config=learner.config, batch=batch, fwd_out=fwd
        )
        loss.backward()
        return torch.cat(
            [p.grad.flatten() for p in module.model.parameters() if p.grad is not None]
        )

    baseline = gradient(tensors)
    changed = dict(tensors)
    changed["behaviour_logprobs"] = tensors["behaviour_logprobs"].clone()
    changed["behaviour_logprobs"][:, 8:] = 5.0  # INFO positions: outside the loss mask
    changed["reference_logprobs"] = tensors["reference_logprobs"].clone()
    changed["reference_logprobs"][:, 8:] = 3.0
    assert torch.allclose(gradient(changed), baseline)
    changed["behaviour_logprobs"][:, 5] = 5.0  # a MODEL position: the gradient changes
    assert not torch.allclose(gradient(changed), baseline)
