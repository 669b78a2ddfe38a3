"""The rollout worker as a local RLlib EnvRunner with the tiny model."""

import pytest
import torch
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from agents.rexrag import RexRagConfig
from agents.rexrag.env_runner import RexRagEnvRunner
from agents.trajectory import Component
from tests.helpers import needs_vllm


def make_runner(tiny_model_dir, **overrides):
    config = RexRagConfig.from_yaml(
        "tiny-cpu",
        {
            "llm": str(tiny_model_dir),
            "dataset": "musique",
            "questions_per_iteration": 2,
            "group_size": 2,
            "max_new_tokens_per_turn": 8,
            "max_turns": 1,
            **overrides,
        },
    )
    return RexRagEnvRunner(config=config)


def test_sample_returns_labelled_groups(tiny_model_dir, bm25_retriever):
    runner = make_runner(tiny_model_dir)
    runner.assert_healthy()
    result = runner.sample()
    assert result.error is None and result.seconds["generation"] > 0
    trajectories = result.trajectories
    originals = [t for t in trajectories if not t.is_probe]
    assert len(originals) == 4 and len({t.example_id for t in originals}) == 2
    for trajectory in trajectories:
        assert trajectory.finished
        assert trajectory.components[0] == Component.PROMPT
        assert (
            len(trajectory.token_ids)
            == len(trajectory.components)
            == len(trajectory.sampling_logprobs)
        )


def test_weights_sync_reaches_the_generator(tiny_model_dir, bm25_retriever):
    runner = make_runner(tiny_model_dir)
    state = runner.get_state()[COMPONENT_RL_MODULE]
    new = {
        k: v + 1.0 if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()
    }
    runner.set_state({COMPONENT_RL_MODULE: new, WEIGHTS_SEQ_NO: 3})
    embedding = runner.sampler.agent.generator.model.get_input_embeddings().weight
    assert torch.allclose(embedding, torch.as_tensor(new["model.model.embed_tokens.weight"]))
    assert runner.get_state()[WEIGHTS_SEQ_NO] == 3
    runner.set_state({COMPONENT_RL_MODULE: state, WEIGHTS_SEQ_NO: 2})  # stale: ignored
    assert runner.get_state()[WEIGHTS_SEQ_NO] == 3


def test_a_runner_behind_the_learner_refuses_to_sample(tiny_model_dir, bm25_retriever):
    runner = make_runner(tiny_model_dir)
    assert runner.sample(seed=1, weights_seq_no=0).error is None
    stale = runner.sample(seed=1, weights_seq_no=1)
    assert not stale.trajectories
    assert "stale weights" in stale.error and "version 0, the learner is at 1" in stale.error
    state = runner.get_state()[COMPONENT_RL_MODULE]
    runner.set_state({COMPONENT_RL_MODULE: state, WEIGHTS_SEQ_NO: 1})
    assert runner.sample(seed=1, weights_seq_no=1).error is None
    assert COMPONENT_RL_MODULE not in runner.get_state(not_components=[COMPONENT_RL_MODULE])


def test_same_seed_same_sample_and_errors_come_back_as_data(tiny_model_dir, bm25_retriever):
    runner = make_runner(tiny_model_dir)
    first, again = runner.sample(seed=5), runner.sample(seed=5)
    assert [t.token_ids for t in first.trajectories] == [t.token_ids for t in again.trajectories]
    assert [t.token_ids for t in runner.sample(seed=6).trajectories] != [
        t.token_ids for t in first.trajectories
    ]
    runner.sampler.make_envs = None  # the runner's own machinery breaks mid-sample
    runner.sampler._envs = None
    broken = runner.sample(seed=5)
    assert broken.error and "TypeError" in broken.error and not broken.trajectories


@pytest.mark.parametrize(
    "backend", ["hf", pytest.param("vllm", marks=[needs_vllm, pytest.mark.slow])]
)
def test_the_originals_of_a_group_differ_at_temperature_one(tiny_model_dir, backend):
    """A seed shared by every request of a call would make the group_size identical
    prompts sample identical tokens, and every GRPO advantage 0."""
    runner = make_runner(
        tiny_model_dir,
        backend=backend,
        questions_per_iteration=3,
        group_size=5,
        max_new_tokens_per_turn=12,
        temperature=1.0,
        probes=False,
    )
    originals = runner.sample(seed=3).trajectories
    assert len(originals) == 15
    for start in range(0, 15, 5):
        group = originals[start : start + 5]
        assert len({t.example_id for t in group}) == 1
        responses = {tuple(t.token_ids[t.prompt_length :]) for t in group}
        assert len(responses) > 1, group[0].example_id


@needs_vllm
@pytest.mark.slow
def test_stop_ends_a_vllm_engines_processes(tiny_model_dir):
    """vLLM ends its engine's processes only when the engine is collected, which a
    stopped algorithm may long escape; a driver training run after run kept them all."""
    import psutil

    def running_engines() -> list:
        children = psutil.Process().children(recursive=True)
        return [p for p in children if "VLLM" in p.name() and p.status() != psutil.STATUS_ZOMBIE]

    runner = make_runner(tiny_model_dir, backend="vllm")
    assert running_engines()
    runner.stop()
    assert not running_engines()
