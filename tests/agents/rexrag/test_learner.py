"""One real RLlib Learner update on a token batch with the tiny model."""

import math

import numpy as np
import pytest
import torch
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from transformers import AutoModelForCausalLM

from agents.rexrag import RexRagConfig
from agents.rexrag.learner import RexRagLearner
from agents.rexrag.lr_schedule import warmup_learning_rate
from agents.rexrag.micro_batches import micro_batches
from agents.rexrag.rexrag import _LEARNER_METRICS, _learner_values
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
    reference = {k: v.detach().clone() for k, v in learner.reference_model.state_dict().items()}
    results = learner.update(batch=batch)
    results = learner.update(batch=batch)
    after = module.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the statistics the algorithm reads (the same reader), all of them, all finite
    values = _learner_values([results])
    assert set(values) == set(_LEARNER_METRICS)
    assert all(math.isfinite(v) for v in values.values())
    assert values["kl"] > 0 and values["nonfinite_losses"] == 0
    # full fine-tuning: the reference policy of the KL term stays the initial weights
    frozen = learner.reference_model.state_dict()
    assert all(torch.equal(reference[k], frozen[k]) for k in reference)
    assert all(torch.equal(reference[k], before[k]) for k in reference)
    assert not any(p.requires_grad for p in learner.reference_model.parameters())


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


def test_micro_batches_fit_the_token_budget():
    attention = torch.tensor([[1] * 3 + [0] * 3, [1] * 6, [1] * 2 + [0] * 4, [1] * 5 + [0]])
    assert list(micro_batches(attention, 12)) == [(slice(0, 2), 6), (slice(2, 4), 5)]
    assert list(micro_batches(attention, 4)) == [
        (slice(0, 1), 3),
        (slice(1, 2), 6),  # longer than the budget: alone
        (slice(2, 3), 2),
        (slice(3, 4), 5),
    ]


def test_warmup_learning_rate():
    assert warmup_learning_rate(1e-6, 0, 286) == pytest.approx(1e-6 / 286)
    assert warmup_learning_rate(1e-6, 285, 286) == pytest.approx(1e-6)
    assert warmup_learning_rate(1e-6, 999, 286) == pytest.approx(1e-6)
    assert warmup_learning_rate(1e-6, 0, 0) == 1e-6


def build_learner(tiny_model_dir, **settings):
    settings = {"llm": str(tiny_model_dir), "lr": 1e-2, "lr_warmup_steps": 0, **settings}
    config = RexRagConfig().training(**settings)
    return config.build_learner(spaces={"default_policy": (UnicodeText(), UnicodeText())})


def update_gradients(learner, columns):
    """The (clipped) gradient the update applied; AdamW would hide differences in it."""
    learner.update(batch=MultiAgentBatch({"default_policy": SampleBatch(columns)}, env_steps=4))
    return {
        name: p.grad.clone()
        for name, p in learner.module["default_policy"].model.named_parameters()
    }


def test_gradient_accumulation_equals_one_big_batch(tiny_model_dir):
    """Micro-batches change memory, not math: the token-mean loss is exact."""
    columns = token_batch(vocab_size=1000, seed=2)
    columns["loss_mask"][0, 4:8] = 0.0  # uneven token counts across rows
    columns["attention_mask"][3, 10:] = 0
    whole = update_gradients(build_learner(tiny_model_dir), dict(columns))
    pieces = update_gradients(
        build_learner(tiny_model_dir, max_tokens_per_micro_batch=12), dict(columns)
    )
    for name, value in whole.items():
        assert torch.allclose(value, pieces[name], rtol=1e-4, atol=1e-7), name


def test_nonfinite_loss_is_skipped_and_counted(tiny_model_dir):
    learner = build_learner(tiny_model_dir)
    module = learner.module["default_policy"]
    before = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    columns = token_batch(module.model.config.vocab_size, seed=3)
    columns["behaviour_logprobs"][:, 4:8] = -np.inf  # ratios overflow
    results = learner.update(
        batch=MultiAgentBatch({"default_policy": SampleBatch(columns)}, env_steps=4)
    )
    after = module.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert results["default_policy"]["nonfinite_losses"] == 1.0


def test_scoring_and_learning_rate_per_iteration(tiny_model_dir):
    learner = build_learner(tiny_model_dir, lr_warmup_steps=4)
    columns = token_batch(1000, seed=4)
    scores = learner.score_tokens(
        {k: columns[k] for k in ("input_ids", "attention_mask", "target_mask")}
    )
    assert np.array_equal(scores["old_logprobs"], scores["reference_logprobs"])  # not trained yet
    assert (scores["entropy"][:, 4:] > 0).all() and (scores["entropy"][:, :4] == 0).all()
    assert (scores["old_logprobs"][:, 4:] < 0).all() and (scores["old_logprobs"][:, :4] == 0).all()
    assert learner.start_iteration(1) == pytest.approx(1e-2 / 2)
    optimizer = next(iter(learner._named_optimizers.values()))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 2)
    assert isinstance(optimizer, torch.optim.AdamW)


def test_lora_trains_adapters_only_against_the_base_model_as_reference(tiny_model_dir, tmp_path):
    learner = build_learner(tiny_model_dir, lora_rank=4)
    model = learner.module["default_policy"].model
    base = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" not in k}
    columns = token_batch(1000, seed=5)
    for _ in range(2):
        learner.update(batch=MultiAgentBatch({"default_policy": SampleBatch(columns)}, env_steps=4))
    after = model.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)  # base weights frozen
    scored = {k: columns[k] for k in ("input_ids", "attention_mask", "target_mask")}
    scores = learner.score_tokens(scored)
    assert not np.allclose(scores["old_logprobs"], scores["reference_logprobs"])
    plain = build_learner(tiny_model_dir).score_tokens(scored)
    assert np.allclose(scores["reference_logprobs"], plain["old_logprobs"], atol=1e-5)
    learner.policy_export().save(tmp_path / "policy")  # adapters merged: a plain HF model
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_entropy_bonus_is_a_loss_term_when_its_coefficient_is_positive(tiny_model_dir):
    columns = token_batch(1000, seed=6)

    def gradient(coefficient):
        learner = build_learner(tiny_model_dir, entropy_coeff=coefficient)
        results = learner.update(
            batch=MultiAgentBatch({"default_policy": SampleBatch(columns)}, env_steps=4)
        )
        embedding = learner.module["default_policy"].model.get_input_embeddings().weight
        return results["default_policy"], embedding.grad.clone()

    without, plain_gradient = gradient(0.0)
    with_bonus, bonus_gradient = gradient(0.5)
    assert "entropy" not in without and with_bonus["entropy"] > 0
    assert not torch.allclose(plain_gradient, bonus_gradient)
