"""Sharded learners (FSDP2 over gloo, two learner processes) and precision: the same
step as one learner, the state gathered for checkpoints, syncs and the export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from agents.rexrag.rexrag import METRICS_KEY
from tests.agents.conftest import tiny_config

#: Metrics that only depend on the rollouts and the update's math, not on the layout.
COMPARED = ("accuracy_original", "probes_kept", "policy_loss", "kl", "trained_tokens")


def exported_weights(algo, directory) -> dict[str, torch.Tensor]:
    algo.export_policy(directory)
    return load_file(str(directory / "model.safetensors"))


def train_and_export(config, directory, iterations=1):
    algo = config.build_algo()
    try:
        metrics = [algo.train()[METRICS_KEY] for _ in range(iterations)]
        return metrics, exported_weights(algo, directory)
    finally:
        algo.stop()


@pytest.fixture(scope="module")
def one_learner_run(answering_model_dir, capital_task, ray_cluster, tmp_path_factory):
    """The reference: one local learner, a 4-row mini-batch in 2-row micro-batches."""
    config = tiny_config(answering_model_dir, capital_task, **SETTINGS)
    return train_and_export(config, tmp_path_factory.mktemp("one"))


#: Rows of unequal length: learners get unequal token counts and micro-batch counts.
SETTINGS = {"minibatch_size": 5, "max_tokens_per_micro_batch": 200}


@pytest.mark.parametrize("sharding", ["fsdp", "ddp"])
def test_two_learners_take_the_exact_token_mean_step_of_one(
    sharding, one_learner_run, answering_model_dir, capital_task, tmp_path
):
    """Two learners (FSDP2 shards or DDP replicas) split every mini-batch with unequal
    token counts; the step is still the token mean over the whole mini-batch, so the
    trained weights equal one learner's (up to float32 summation order)."""
    config = tiny_config(
        answering_model_dir,
        capital_task,
        num_learners=2,
        learner_sharding=sharding,
        **SETTINGS,
    )
    metrics, weights = train_and_export(config, tmp_path)
    expected_metrics, expected = one_learner_run
    for name in COMPARED:
        assert metrics[0][name] == pytest.approx(expected_metrics[0][name], rel=1e-4), name
    assert weights.keys() == expected.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_sharded_checkpoint_resumes_exactly_and_exports_bf16(
    answering_model_dir, capital_task, ray_cluster, tmp_path
):
    """FSDP state (weights and AdamW moments) is gathered into the checkpoint and
    resharded on restore: the resumed run's second iteration equals the uninterrupted
    one. The bfloat16 export is half the size and loads with ``from_pretrained``."""
    config = tiny_config(
        answering_model_dir,
        capital_task,
        num_learners=2,
        learner_sharding="fsdp",
        dtype="bfloat16",
        **SETTINGS,
    )
    uninterrupted, expected = train_and_export(config, tmp_path / "uninterrupted", 2)

    first = config.build_algo()
    try:
        first.train()
        first.save_to_path(str(tmp_path / "checkpoint"))
    finally:
        first.stop()
    resumed = config.build_algo()
    try:
        resumed.restore_from_path(str(tmp_path / "checkpoint"))
        metrics = resumed.train()[METRICS_KEY]
        weights = exported_weights(resumed, tmp_path / "resumed")
    finally:
        resumed.stop()
    for name in COMPARED:
        assert metrics[name] == pytest.approx(uninterrupted[1][name], rel=1e-4, abs=1e-6), name
    for name, value in weights.items():
        assert value.dtype == torch.bfloat16
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
    saved = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16" and saved["architectures"] == ["Qwen2ForCausalLM"]
    tokenizer = json.loads((tmp_path / "resumed" / "tokenizer_config.json").read_text())
    assert tokenizer.get("padding_side", "right") == "right"  # saved as loaded


def test_sharding_settings_are_checked(answering_model_dir, capital_task):
    def problems(**settings):
        with pytest.raises(ValueError) as error:
            tiny_config(answering_model_dir, capital_task, **settings).validate()
        return str(error.value)

    assert "num_learners >= 1" in problems(learner_sharding="fsdp", num_learners=0)
    assert "lora_rank=0" in problems(learner_sharding="fsdp", num_learners=2, lora_rank=4)
    assert "needs learner_sharding='fsdp'" in problems(learner_cpu_offload=True)
    assert "dtype must be one of" in problems(dtype="float16")
    assert "learner_sharding must be one of" in problems(learner_sharding="zero3")
