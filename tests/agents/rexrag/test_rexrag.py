"""The whole algorithm on CPU with a tiny policy: local and Ray EnvRunners, probes,
weight sync, checkpoints, faults (issue 4's integration tests)."""

from __future__ import annotations

import importlib.util
import math
import os
import time

import numpy as np
import pytest
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from transformers import AutoModelForCausalLM

from agents.rexrag import RexRagConfig
from agents.rexrag.probes import PromptPool
from agents.rexrag.rexrag import METRICS_KEY, POLICY_DIR, RexRag, RolloutFailedError
from agents.trajectory import Component
from tests.agents.conftest import tiny_config

# a Ray cluster per module, whole RexRag iterations, checkpoints and restores
pytestmark = pytest.mark.slow


def learner_weights(algo) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone()
        for k, v in algo.learner_group._learner.module[DEFAULT_MODULE_ID].model.state_dict().items()
    }


def test_probes_are_labelled_and_share_their_group(answering_model_dir, capital_task):
    from agents.rexrag.env_runner import RexRagEnvRunner
    from agents.rexrag.token_batch import to_token_batch

    config = tiny_config(answering_model_dir, capital_task)
    runner = RexRagEnvRunner(config=config)
    result = runner.sample(seed=0)
    assert result.error is None
    originals = [t for t in result.trajectories if not t.is_probe]
    probes = [t for t in result.trajectories if t.is_probe]
    assert len(originals) == 4 * 3 and probes
    # probe_prob = 1: every original that answered wrongly in a search-enabled turn
    # spawns exactly one probe
    eligible = [
        t
        for t in originals
        if t.reward == 0 and t.turns[-1].action_type == "answer" and t.num_turns <= config.max_turns
    ]
    assert len(probes) == len(eligible) == sum(t.probe_eligible for t in originals)
    group_ids = to_token_batch(result.trajectories).group_ids
    index = {id(t): i for i, t in enumerate(result.trajectories)}
    tokenizer = runner.sampler.agent.tokenizer
    pool = PromptPool(
        [tokenizer.encode(p, add_special_tokens=False) for p in runner.sampler.prompts]
    )
    for probe in probes:
        labels = probe.components
        start = labels.index(Component.PROBE_PROMPT)
        length = labels.count(Component.PROBE_PROMPT)
        assert all(c == Component.PROBE_PROMPT for c in labels[start : start + length])
        prompt_ids = probe.token_ids[start : start + length]
        assert probe.sampling_logprobs[start : start + length] == pytest.approx(
            pool.token_logprobs(prompt_ids)
        )
        parents = [t for t in eligible if t.token_ids[:start] == probe.token_ids[:start]]
        assert parents  # the probe continues one of the failed originals
        siblings = {group_ids[index[id(t)]] for t in originals if t.example_id == probe.example_id}
        assert siblings == {group_ids[index[id(probe)]]} == {group_ids[index[id(parents[0])]]}
        assert Component.MODEL in labels[start + length :]  # the policy continued
    # each probe names its parent, and the batch links them through any selection
    batch = to_token_batch(result.trajectories)
    for row in np.flatnonzero(batch.is_probe):
        probe, parent = result.trajectories[row], result.trajectories[batch.parent_row[row]]
        assert parent in eligible and probe.parent_id == parent.rollout_id
        branch = probe.branch_point
        assert probe.token_ids[:branch] == parent.token_ids[:branch]
        assert batch.branch_point[row] == branch <= start_of_prompt(probe)
    rows = np.flatnonzero(batch.is_probe | (np.arange(len(batch)) % 2 == 0))
    selected = batch.select(rows[::-1])
    for new_row, old_row in enumerate(rows[::-1]):
        parent = batch.parent_row[old_row]
        moved = np.flatnonzero(rows[::-1] == parent)
        expected = int(moved[0]) if parent >= 0 and len(moved) else -1
        assert selected.parent_row[new_row] == expected


def start_of_prompt(probe) -> int:
    return probe.components.index(Component.PROBE_PROMPT)


@pytest.fixture(scope="module")
def local_algo(answering_model_dir, capital_task, ray_cluster):
    algo = tiny_config(answering_model_dir, capital_task).build_algo()
    yield algo
    algo.stop()


def test_one_local_iteration_trains_on_probes_and_syncs_weights(local_algo):
    before = learner_weights(local_algo)
    result = local_algo.train()
    metrics = result[METRICS_KEY]
    # RLlib's standard keys, which Tune's and RLlib's defaults read
    assert result["env_runners"]["episode_return_mean"] == metrics["accuracy_original"]
    assert result["env_runners"]["episode_len_mean"] >= 1
    assert result["num_env_steps_sampled_lifetime"] >= 4 * 3  # turns of 4 questions × 3
    assert metrics["probes_spawned"] > 0 and metrics["probes_kept"] > 0
    assert 0 < metrics["alpha"] < 1
    assert metrics["num_questions"] == 4
    for name, value in metrics.items():
        assert math.isfinite(value), name
    assert metrics["logprob_mismatch"] < 1e-3  # sampler and learner score tokens alike
    after = learner_weights(local_algo)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    runner_state = local_algo.env_runner.module.model.state_dict()
    assert all(torch.equal(runner_state[k], after[k]) for k in after)


def test_no_generate_call_of_two_iterations_reuses_a_random_stream(local_algo):
    """Call k+1 of iteration i and call k of iteration i+1 sampled from one stream when
    seeds were ``seed + iteration + call``; every call now draws from its own."""
    generator = local_algo.env_runner.sampler.agent.generator
    seeds: list[list[int]] = []
    generate = generator.generate

    def recording(prompts, params):
        seeds[-1].append(params.seed)
        return generate(prompts, params)

    generator.generate = recording
    try:
        for _ in range(2):
            seeds.append([])
            local_algo.train()
    finally:
        del generator.generate
    first, second = seeds
    assert len(first) >= 2 and len(second) >= 2  # several turns, and a probe phase
    assert None not in first
    assert len(set(first + second)) == len(first) + len(second)


def test_plain_grpo_without_probes(answering_model_dir, capital_task, ray_cluster):
    algo = tiny_config(answering_model_dir, capital_task, probes=False).build_algo()
    try:
        metrics = algo.train()[METRICS_KEY]
    finally:
        algo.stop()
    assert metrics["probes_spawned"] == 0 and metrics["alpha"] == 0
    assert metrics["importance_weight_mean"] == pytest.approx(1.0)
    assert metrics["dead_end_fraction_before_probing"] == metrics["dead_end_fraction_after_probing"]


@pytest.mark.parametrize(("when_none_kept", "factor"), [("decay", 0.9), ("hold", 1.0)])
def test_an_iteration_that_keeps_no_probe_decays_the_keep_ratio(
    answering_model_dir, capital_task, ray_cluster, when_none_kept, factor
):
    """Official: accuracy 0 enters the EWMA when nothing was kept (ρ ← 0.9ρ)."""
    config = tiny_config(
        answering_model_dir,
        capital_task,
        probe_prob=0.0,
        keep_ratio=0.5,
        keep_ratio_when_none_kept=when_none_kept,
    )
    algo = config.build_algo()
    try:
        metrics = [algo.train()[METRICS_KEY] for _ in range(2)]
    finally:
        algo.stop()
    assert [m["probes_kept"] for m in metrics] == [0, 0]
    assert [m["keep_ratio"] for m in metrics] == pytest.approx([0.5, 0.5 * factor])
    assert algo.keep_ratio == pytest.approx(0.5 * factor**2)


def test_a_probe_filter_that_can_never_keep_a_probe_is_refused(
    answering_model_dir, capital_task, ray_cluster
):
    """2 questions × 3 rollouts × ρ 1.0 = 6 originals' worth < 8: K would round to 0."""
    config = tiny_config(
        answering_model_dir, capital_task, questions_per_iteration=2, keep_multiple_of=8
    )
    with pytest.raises(ValueError, match="keep_multiple_of") as refused:
        config.build_algo()
    assert "questions_per_iteration" in str(refused.value) and "keep_ratio" in str(refused.value)
    tiny_config(answering_model_dir, capital_task, questions_per_iteration=2).validate()


def test_the_learner_scores_at_the_rollout_temperature(
    answering_model_dir, capital_task, ray_cluster
):
    """π_old at T = 1 under samples drawn at T = 0.7 would be off by far more."""
    algo = tiny_config(answering_model_dir, capital_task, temperature=0.7).build_algo()
    try:
        metrics = algo.train()[METRICS_KEY]
    finally:
        algo.stop()
    assert metrics["probes_kept"] > 0
    assert metrics["logprob_mismatch"] < 1e-4


COMPARED = ("accuracy_original", "probes_kept", "policy_loss", "kl", "keep_ratio", "trained_tokens")


def test_checkpoint_restore_continues_like_an_uninterrupted_run(
    answering_model_dir, capital_task, ray_cluster, tmp_path
):
    config = tiny_config(answering_model_dir, capital_task, keep_ratio=0.9)
    uninterrupted = config.build_algo()
    uninterrupted.train()
    expected = uninterrupted.train()[METRICS_KEY]
    uninterrupted.stop()

    first = config.build_algo()
    first.train()
    # the keep ratio moved (ρ ← 0.81 + 0.1·accuracy ≠ 0.9), so only its restore can
    # make iteration 2 train with the same one
    assert first.keep_ratio != pytest.approx(config.keep_ratio)
    first.save_to_path(str(tmp_path / "checkpoint"))
    first.stop()
    resumed = config.build_algo()
    resumed.restore_from_path(str(tmp_path / "checkpoint"))
    assert resumed.iteration == 1
    metrics = resumed.train()[METRICS_KEY]
    resumed.stop()
    for name in COMPARED:
        assert metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    # RLlib's own restore (what Tune does) gives the same run back ...
    restored = Algorithm.from_checkpoint(str(tmp_path / "checkpoint"))
    try:
        assert isinstance(restored, RexRag) and restored.iteration == 1
        assert restored.keep_ratio == pytest.approx(first.keep_ratio)
        assert restored.train()[METRICS_KEY]["policy_loss"] == pytest.approx(
            expected["policy_loss"], rel=1e-4, abs=1e-6
        )
    finally:
        restored.stop()
    # ... and every checkpoint holds the policy as a Hugging Face model
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint" / POLICY_DIR)
    assert policy.config.model_type == "qwen2"


def test_a_checkpoint_on_a_non_local_filesystem_gets_its_policy_too(local_algo, tmp_path):
    """``save_to_path(filesystem=...)`` (cloud storage in practice; here a pyarrow
    filesystem rooted in a temporary directory) copies the export there too."""
    import pyarrow.fs

    storage = pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())
    local_algo.save_to_path("run/checkpoint", filesystem=storage)
    assert (tmp_path / "run" / "checkpoint" / POLICY_DIR / "config.json").is_file()
    assert (tmp_path / "run" / "checkpoint" / "learner_group").is_dir()


def test_two_env_runner_actors_and_a_killed_one_is_restarted(
    answering_model_dir, capital_task, ray_cluster
):
    config = tiny_config(answering_model_dir, capital_task, num_env_runners=2)
    algo = config.build_algo()
    try:
        metrics = algo.train()[METRICS_KEY]
        assert metrics["num_questions"] == 4  # two questions from each runner
        weights = learner_weights(algo)
        synced = algo.env_runner_group.foreach_env_runner(
            lambda runner: runner.module.model.get_input_embeddings().weight.detach().clone(),
            local_env_runner=False,
        )
        key = "model.embed_tokens.weight"
        assert len(synced) == 2 and all(torch.equal(w, weights[key]) for w in synced)

        algo.env_runner_group.foreach_env_runner(
            lambda runner: os._exit(1), remote_worker_ids=[1], local_env_runner=False
        )
        assert algo.env_runner_group.num_healthy_remote_workers() == 1
        # Training goes on: with the healthy runner alone, or with both when Ray has
        # already restarted the dead one and RexRag.restore_env_runners synced it.
        assert algo.train()[METRICS_KEY]["num_questions"] in (2, 4)
        for _ in range(60):
            if algo.env_runner_group.num_healthy_remote_workers() == 2:
                break
            algo.restore_env_runners(algo.env_runner_group)
            time.sleep(1.0)
        assert algo.env_runner_group.num_healthy_remote_workers() == 2
        assert algo._counters["total_num_restored_workers"] == 1
        key = "model.model.embed_tokens.weight"
        weights = learner_weights(algo)
        restarted = algo.env_runner_group.foreach_env_runner(
            lambda runner: torch.as_tensor(runner.module.get_state()[key]),
            remote_worker_ids=[1],
            local_env_runner=False,
        )
        assert torch.equal(restarted[0], weights[key.removeprefix("model.")])
        assert algo.train()[METRICS_KEY]["num_questions"] == 4
    finally:
        algo.stop()


def test_a_users_own_registered_env_is_what_the_runners_sample(
    answering_model_dir, capital_task, ray_cluster
):
    """``config.environment("module:ns/Name-v0", env_config)`` with a user's SearchQAEnv
    subclass: a runner process imports the module, builds that env with the user's
    keys, and its reward is the return (probes still follow exact match)."""
    from agents.rexrag.env_runner import RexRagEnvRunner
    from tests.agents.rexrag.user_env import USER_ENV

    config = tiny_config(answering_model_dir, capital_task, num_env_runners=1).environment(
        USER_ENV, env_config={"answer_bonus": 0.25}
    )
    sample = RexRagEnvRunner(config=config).sample(seed=0).trajectories
    answered = [t for t in sample if t.turns[-1].action_type == "answer"]
    assert answered and any(t.is_probe for t in answered)
    assert all(t.reward == t.scores["em"] + 0.25 for t in answered)
    # wrong answers in a search-enabled turn, rewarded 0.25, are still probed
    wrong = [
        t for t in answered if not (t.is_probe or t.correct) and t.num_turns <= config.max_turns
    ]
    assert wrong and all(t.probe_eligible for t in wrong)
    algo = config.build_algo()
    try:
        classes = algo.env_runner_group.foreach_env_runner(
            lambda runner: type(runner.sampler.make_envs(1, runner.dataset).envs[0]).__name__,
            local_env_runner=False,
        )
        assert classes == ["AnswerBonusEnv"]
        result = algo.train()
        accuracy = result[METRICS_KEY]["accuracy_original"]
        assert accuracy < result["env_runners"]["episode_return_mean"] <= accuracy + 0.25
    finally:
        algo.stop()


def test_a_retriever_that_is_down_fails_the_iteration_clearly(
    answering_model_dir, capital_task, ray_cluster, free_port
):
    url = f"http://127.0.0.1:{free_port}"
    algo = tiny_config(answering_model_dir, capital_task, retriever=url).build_algo()
    try:
        with pytest.raises(RolloutFailedError, match=f"127.0.0.1:{free_port}"):
            algo.train()
    finally:
        algo.stop()


def test_tiny_cpu_preset_improves_training_reward_in_20_iterations(
    answering_model_dir, capital_task, ray_cluster
):
    """The tiny-cpu preset, unchanged but for the policy and the task: ~25 s here."""
    config = RexRagConfig.from_yaml(
        "tiny-cpu", {"llm": str(answering_model_dir), "dataset": str(capital_task), "seed": 0}
    )
    algo = config.build_algo()
    try:
        accuracy = [algo.train()[METRICS_KEY]["accuracy_original"] for _ in range(20)]
    finally:
        algo.stop()
    first, last = np.mean(accuracy[:5]), np.mean(accuracy[-5:])
    assert last > first + 0.1, accuracy


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason="needs vllm and a CUDA GPU",
)
def test_one_iteration_with_vllm_rollouts_and_a_gpu_learner(
    answering_model_dir, capital_task, ray_cluster
):
    config = tiny_config(
        answering_model_dir,
        capital_task,
        backend="vllm",
        num_gpus_per_learner=1,
        vllm_gpu_memory_utilization=0.3,
    )
    algo = config.build_algo()
    try:
        before = learner_weights(algo)
        metrics = algo.train()[METRICS_KEY]
        assert metrics["logprob_mismatch"] < 0.05  # vLLM's sampler vs the learner's scores
        assert metrics["probes_spawned"] > 0
        assert any(not torch.equal(v, learner_weights(algo)[k]) for k, v in before.items())
    finally:
        algo.stop()


def test_two_learners_split_scoring_and_train_data_parallel(
    answering_model_dir, capital_task, ray_cluster
):
    config = tiny_config(answering_model_dir, capital_task, num_learners=2, minibatch_size=4)
    algo = config.build_algo()
    try:
        metrics = algo.train()[METRICS_KEY]
        assert metrics["probes_kept"] > 0 and math.isfinite(metrics["policy_loss"])
        assert metrics["logprob_mismatch"] < 1e-3  # both shards scored with the same weights
        weights = algo.learner_group.foreach_learner(
            lambda learner: learner.policy.model.get_input_embeddings().weight.sum().item()
        )
        assert len({result.get() for result in weights}) == 1  # DDP kept the replicas equal
    finally:
        algo.stop()
