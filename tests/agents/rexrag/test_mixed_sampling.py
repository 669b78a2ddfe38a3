"""Mixed sampling: probes of wrong originals, with the official and the dead-end triggers."""

import math

import pytest
from gymnasium.vector import AutoresetMode
from transformers import AutoTokenizer

from agents.llm_agent import LLMAgent
from agents.rexrag.mixed_sampling import MixedSampler
from agents.rexrag.probes import default_exploratory_prompts
from agents.trajectory import Component
from rexrag_env import SearchQAVectorEnv
from rexrag_env.datasets import QAExample
from tests.helpers import ScriptedGenerator

RUSH = QAExample("rush", "Which band was Neil Peart the drummer of", ("Rush",))
WHO = QAExample("who", "Which band was Roger Daltrey the singer of", ("The Who",))


@pytest.fixture
def sampler_for(tiny_model_dir, bm25_retriever):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def build(turns, **options):
        agent = LLMAgent(ScriptedGenerator(tokenizer, turns))

        def make_envs(num_envs, questions):
            return SearchQAVectorEnv(
                num_envs,
                dataset=questions,
                retriever=bm25_retriever,
                max_turns=2,
                autoreset_mode=AutoresetMode.DISABLED,
            )

        return MixedSampler(
            agent,
            make_envs,
            default_exploratory_prompts(),
            group_size=3,
            max_turns=2,
            seed=0,
            **options,
        )

    return build


def test_every_wrong_original_is_probed_at_probability_one(sampler_for):
    # originals all answer "The Who": right for WHO, wrong for RUSH; probes answer "Rush"
    sampler = sampler_for(["<answer> The Who </answer>", "<answer> Rush </answer>"], probe_prob=1.0)
    sample = sampler.sample([RUSH, WHO])
    trajectories = sample.trajectories
    originals, probes = trajectories[:6], trajectories[6:]
    # the sampler reports where its time went
    assert sample.seconds.keys() == {"generation", "retrieval", "probing"}
    assert all(seconds > 0 for seconds in sample.seconds.values())
    assert [t.example_id for t in originals] == ["rush"] * 3 + ["who"] * 3
    assert [t.reward for t in originals] == [0.0] * 3 + [1.0] * 3
    assert len(probes) == 3 and all(p.is_probe and p.example_id == "rush" for p in probes)
    assert all(p.reward == 1.0 and p.finished for p in probes)
    assert all(Component.PROBE_PROMPT in p.components for p in probes)


def test_probe_probability_zero_and_probes_off(sampler_for):
    originals = sampler_for(["<answer> x </answer>"], probe_prob=0.0).sample([RUSH]).trajectories
    assert len(originals) == 3
    # eligible (wrong, in a search-enabled turn) though the coin spawned nothing
    assert all(t.probe_eligible for t in originals)
    assert (
        len(
            sampler_for(["<answer> x </answer>"], probe_prob=1.0, probes=False)
            .sample([RUSH])
            .trajectories
        )
        == 3
    )


MIXED = ["<answer> The Who </answer>", "<answer> Rush </answer>", "<answer> The Who </answer>"]


@pytest.mark.parametrize(("trigger", "probed"), [("wrong_answer", 5), ("dead_end_group", 3)])
def test_the_dead_end_trigger_probes_only_groups_whose_originals_all_failed(
    sampler_for, trigger, probed
):
    # RUSH: wrong, right, wrong (not a dead end); WHO: wrong three times (a dead end)
    turns = [[*MIXED, *["<answer> Rush </answer>"] * 3], "<answer> x </answer>"]
    sampler = sampler_for(turns, probe_prob=1.0, probe_trigger=trigger)
    trajectories = sampler.sample([RUSH, WHO]).trajectories
    originals = trajectories[:6]
    assert [t.reward for t in originals] == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    probes = [t for t in trajectories if t.is_probe]
    assert len(probes) == probed
    assert sum(t.probe_eligible for t in originals) == probed
    if trigger == "dead_end_group":
        assert {p.example_id for p in probes} == {"who"}


def test_answers_in_the_final_turn_are_not_probed(sampler_for):
    turns = [
        "bad",
        "bad",
        "<answer> wrong </answer>",
    ]  # 2 search turns wasted, answer in the final one
    originals = sampler_for(turns, probe_prob=1.0).sample([RUSH]).trajectories
    assert not any(t.is_probe or t.probe_eligible for t in originals)


def test_an_answer_in_the_last_search_turn_is_probed_into_the_final_turn(sampler_for):
    """max_turns = 2: the answer of turn 2 is probed; its probe gets one more turn, the
    final one, where a search is not run and the episode ends."""
    turns = ["<search> Neil Peart </search>", "<answer> The Who </answer>"]
    turns.append("<search> Rush drummer </search>")  # the probe's turn
    trajectories = sampler_for(turns, probe_prob=1.0).sample([RUSH]).trajectories
    originals, probes = trajectories[:3], trajectories[3:]
    assert all(t.num_turns == 2 and t.num_searches == 1 for t in originals)
    assert len(probes) == 3
    for probe in probes:
        assert probe.num_turns == 3  # search, probe prompt, the final turn
        assert probe.truncated and probe.num_searches == 1  # the final turn's search not run
        after_prompt = probe.components[probe.components.index(Component.PROBE_PROMPT) :]
        assert Component.INFO not in after_prompt


def test_the_spawn_rate_is_probe_prob(sampler_for):
    """Every original answers wrongly; 20/101 of them spawn a probe (binomial bound)."""
    p, questions = 20 / 101, [RUSH] * 200
    sampler = sampler_for(["<answer> x </answer>", "<answer> y </answer>"], probe_prob=p)
    trajectories = sampler.sample(questions).trajectories
    originals = len(questions) * 3
    spawned = sum(t.is_probe for t in trajectories)
    assert len(trajectories) == originals + spawned
    sigma = math.sqrt(originals * p * (1 - p))  # 600 draws: mean 118.8, sigma 9.8
    assert abs(spawned - originals * p) < 4 * sigma
