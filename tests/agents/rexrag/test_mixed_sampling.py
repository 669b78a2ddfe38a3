"""Mixed sampling: probes of wrong originals, with the official and the dead-end triggers."""

import pytest
from transformers import AutoTokenizer

from agents.llm_agent import LLMAgent
from agents.rexrag.mixed_sampling import MixedSampler
from agents.rexrag.probes import default_exploratory_prompts
from agents.trajectory import Component
from rexrag_env import SearchQAEnv
from rexrag_env.datasets import QAExample
from tests.helpers import ScriptedGenerator

RUSH = QAExample("rush", "Which band was Neil Peart the drummer of", ("Rush",))
WHO = QAExample("who", "Which band was Roger Daltrey the singer of", ("The Who",))


@pytest.fixture
def sampler_for(tiny_model_dir, bm25_retriever):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def build(turns, **options):
        agent = LLMAgent(ScriptedGenerator(tokenizer, turns))
        make_env = lambda: SearchQAEnv(dataset=[RUSH], retriever=bm25_retriever, max_turns=2)  # noqa: E731
        return MixedSampler(
            agent, make_env, default_exploratory_prompts(), group_size=3, seed=0, **options
        )

    return build


def test_every_wrong_original_is_probed_at_probability_one(sampler_for):
    # originals all answer "The Who": right for WHO, wrong for RUSH; probes answer "Rush"
    sampler = sampler_for(["<answer> The Who </answer>", "<answer> Rush </answer>"], probe_prob=1.0)
    trajectories = sampler.sample([RUSH, WHO])
    originals, probes = trajectories[:6], trajectories[6:]
    assert [t.example_id for t in originals] == ["rush"] * 3 + ["who"] * 3
    assert [t.reward for t in originals] == [0.0] * 3 + [1.0] * 3
    assert len(probes) == 3 and all(p.is_probe and p.example_id == "rush" for p in probes)
    assert all(p.reward == 1.0 and p.finished for p in probes)
    assert all(Component.PROBE_PROMPT in p.components for p in probes)


def test_probe_probability_zero_and_probes_off(sampler_for):
    assert len(sampler_for(["<answer> x </answer>"], probe_prob=0.0).sample([RUSH])) == 3
    assert (
        len(sampler_for(["<answer> x </answer>"], probe_prob=1.0, probes=False).sample([RUSH])) == 3
    )


def test_dead_end_trigger_probes_only_all_wrong_groups(sampler_for):
    turns = ["<answer> The Who </answer>", "<answer> Rush </answer>"]
    sampler = sampler_for(turns, probe_prob=1.0, probe_trigger="dead_end_group")
    probes = [t for t in sampler.sample([RUSH, WHO]) if t.is_probe]
    assert {p.example_id for p in probes} == {"rush"}  # WHO's group has correct originals


def test_answers_in_the_final_turn_are_not_probed(sampler_for):
    turns = [
        "bad",
        "bad",
        "<answer> wrong </answer>",
    ]  # 2 search turns wasted, answer in the final one
    assert not any(t.is_probe for t in sampler_for(turns, probe_prob=1.0).sample([RUSH]))
