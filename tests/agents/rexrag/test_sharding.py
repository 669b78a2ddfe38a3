"""Sharded learners (FSDP2 over gloo, two learner processes) and precision: the same
step as one learner, the state gathered for checkpoints, syncs and the export."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from agents.rexrag.rexrag import METRICS_KEY
from tests.agents.conftest import tiny_config

# DDP and FSDP learners on a Ray cluster (and the warm-started sanity policy they train)
pytestmark = pytest.mark.slow

#: Metrics that only depend on the rollouts and the update's math, not on the layout.
COMPARED = ("accuracy_original", "probes_kept", "policy_loss", "kl", "trained_tokens")


def exported_weights(algo, directory) -> dict[str, torch.Tensor]:
    algo.export_policy(directory)
    return load_file(str(directory / "model.safetensors"))


def reference_shards_only(learner) -> bool:
    """Whether the learner's reference policy holds only its shards: FSDP2 leaves a
    root's parameters gathered after a forward with no backward, and the reference only
    ever scores, so unless it is resharded it holds its embeddings whole through the
    update (0.6 GiB a GPU at 3B in bfloat16, which ``rexrag plan`` does not count)."""
    from torch.distributed.tensor import DTensor

    return all(isinstance(p, DTensor) for p in learner._reference_scorer.parameters())


def train_and_export(config, directory, iterations=1):
    algo = config.build_algo()
    try:
        metrics = [algo.train()[METRICS_KEY] for _ in range(iterations)]
        if config.learner_sharding == "fsdp":
            resharded = [r.get() for r in algo.learner_group.foreach_learner(reference_shards_only)]
            assert resharded == [True] * config.num_learners
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


@pytest.mark.parametrize(
    "layout",
    [
        {"learner_sharding": "ddp"},
        {"learner_sharding": "fsdp"},
        {"learner_sharding": "fsdp", "learner_cpu_offload": True},
    ],
    ids=["ddp", "fsdp", "fsdp-offload"],
)
def test_two_learners_take_the_exact_token_mean_step_of_one(
    layout, one_learner_run, answering_model_dir, capital_task, tmp_path
):
    """Two learners (FSDP2 shards, offloaded or not, or DDP replicas) split every
    mini-batch with unequal token counts and micro-batch counts; the step is still the
    token mean over the whole mini-batch, so the trained weights equal one learner's
    (up to float32 summation order)."""
    config = tiny_config(answering_model_dir, capital_task, num_learners=2, **layout, **SETTINGS)
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


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_fsdp_learners_on_two_gpus_in_bfloat16(
    answering_model_dir, capital_task, ray_cluster, tmp_path
):
    """FSDP over NCCL: two GPU learners gather layers in bfloat16; the step is finite and
    the EnvRunner samples with the weights they synced."""
    config = tiny_config(
        answering_model_dir,
        capital_task,
        num_learners=2,
        num_gpus_per_learner=1,
        learner_sharding="fsdp",
        dtype="bfloat16",
        **SETTINGS,
    )
    metrics, weights = train_and_export(config, tmp_path, iterations=2)
    assert all(math.isfinite(m["policy_loss"]) for m in metrics)
    assert metrics[1]["logprob_mismatch"] < 0.05  # bfloat16 on both sides
    assert all(value.dtype == torch.bfloat16 for value in weights.values())


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


def _gather_on_two_ranks(rank: int, model_dir: str, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from agents.llm.models import load_model_and_tokenizer
    from agents.rexrag.sharding import gathered_state_dict, load_full_state_dict, shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, _ = load_model_and_tokenizer(model_dir)
        scorer = shard_model(
            model, compute_dtype=torch.float32, cpu_offload=False, device_type="cpu"
        )
        gathered = gathered_state_dict(scorer.model, torch.bfloat16)
        full = {
            k: torch.full_like(v, 0.5)
            for k, v in load_model_and_tokenizer(model_dir)[0].state_dict().items()
        }
        load_full_state_dict(scorer.model, full)
        reloaded = gathered_state_dict(scorer.model)
        torch.save((gathered, reloaded), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_state_is_full_on_rank_zero_with_tied_weights_once(answering_model_dir, tmp_path):
    """Two gloo ranks shard the tiny model (tied embeddings): rank 0 gathers the full
    weights, cast as asked, the tied pair as one tensor; rank 1 gets nothing; full
    weights loaded into the shards come back out."""
    import socket

    import torch.multiprocessing as mp

    from agents.llm.models import load_model_and_tokenizer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    workers = [
        context.Process(
            target=_gather_on_two_ranks, args=(rank, str(answering_model_dir), port, tmp_path)
        )
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert [worker.exitcode for worker in workers] == [0, 0]
    gathered, reloaded = torch.load(tmp_path / "rank0.pt")
    assert torch.load(tmp_path / "rank1.pt") == ({}, {})
    expected = load_model_and_tokenizer(answering_model_dir)[0].state_dict()
    assert gathered.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(gathered[name], value.to(torch.bfloat16)), name
        assert torch.equal(reloaded[name], torch.full_like(value, 0.5)), name
    assert gathered["lm_head.weight"] is gathered["model.embed_tokens.weight"]
