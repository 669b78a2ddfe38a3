"""LLMAgent token bookkeeping: labels line up exactly with what the environment saw."""

import pytest

import rexrag_env
from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator
from agents.llm_agent import ChatTemplateMissingError, LLMAgent
from agents.trajectory import Component
from tests.helpers import ScriptedGenerator

QUESTION = {
    "id": "q",
    "question": "Which band was Neil Peart the drummer of",
    "golden_answers": ["Rush"],
}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return HFGenerator.from_pretrained(str(tiny_model_dir))


def make_envs(retriever, count, **kwargs):
    return [
        rexrag_env.SearchQAEnv(dataset=[QUESTION], retriever=retriever, **kwargs)
        for _ in range(count)
    ]


def segments(trajectory):
    """Consecutive runs of one label: [(label, [ids])]."""
    runs = []
    for token, label in zip(trajectory.token_ids, trajectory.components, strict=True):
        if runs and runs[-1][0] == label:
            runs[-1][1].append(token)
        else:
            runs.append((label, [token]))
    return runs


def test_search_answer_episode_labels(tiny, bm25_retriever):
    turns = [
        "<think>look up</think><search> Neil Peart </search>",
        "bad turn",
        "<answer> Rush </answer>",
    ]
    agent = LLMAgent(ScriptedGenerator(tiny.tokenizer, turns))
    (trajectory,) = agent.play(make_envs(bm25_retriever, 1), [None])
    labels = [label for label, _ in segments(trajectory)]
    assert labels == [
        Component.PROMPT,
        Component.MODEL,
        Component.INFO,
        Component.MODEL,
        Component.FEEDBACK,
        Component.MODEL,
    ]
    model_runs = [ids for label, ids in segments(trajectory) if label == Component.MODEL]
    assert [tiny.tokenizer.decode(ids) for ids in model_runs] == [
        t.action for t in trajectory.turns
    ]
    info = trajectory.tokens_of(Component.INFO)
    assert tiny.tokenizer.decode(info) == trajectory.turns[0].observation
    assert trajectory.turns[0].observation.startswith("\n\n<information>Doc 1(Title: ")
    assert (
        tiny.tokenizer.decode(trajectory.tokens_of(Component.FEEDBACK))
        == "\nMy action is invalid. "
    )
    assert (
        trajectory.reward == 1.0
        and trajectory.num_searches == 1
        and trajectory.invalid_actions == 1
    )
    prompt = trajectory.token_ids[: trajectory.prompt_length]
    assert prompt == tiny.tokenizer.apply_chat_template(
        [{"role": "user", "content": trajectory.prompt}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    sampled = [
        lp
        for lp, c in zip(trajectory.sampling_logprobs, trajectory.components, strict=True)
        if c == Component.MODEL
    ]
    assert sampled == [-0.5] * len(sampled)
    assert all(
        lp == 0.0
        for lp, c in zip(trajectory.sampling_logprobs, trajectory.components, strict=True)
        if c != Component.MODEL
    )


def test_finished_trajectories_leave_the_batch(tiny, bm25_retriever):
    generator = ScriptedGenerator(
        tiny.tokenizer, ["<search> Rush </search>", "<answer> Rush </answer>"]
    )
    envs = make_envs(bm25_retriever, 3)
    agent = LLMAgent(generator)
    trajectories = agent.play(envs, [None, None, None])
    assert generator.calls == [3, 3] and all(t.finished for t in trajectories)


def test_observations_are_cut_to_the_token_limit(tiny, bm25_retriever):
    generator = ScriptedGenerator(
        tiny.tokenizer, ["<search> Rush band </search>", "<answer> x </answer>"]
    )
    agent = LLMAgent(generator, max_observation_tokens=7)
    (trajectory,) = agent.play(make_envs(bm25_retriever, 1), [None])
    info = trajectory.tokens_of(Component.INFO)
    assert len(info) == 7 and tiny.tokenizer.decode(info) == trajectory.turns[0].observation


def test_real_tiny_model_rollout_is_consistent(tiny, bm25_retriever):
    agent = LLMAgent(tiny, SamplingParams(temperature=1.0, max_new_tokens=24, seed=0))
    trajectories = agent.play(make_envs(bm25_retriever, 4, max_turns=2), [None] * 4)
    for trajectory in trajectories:
        assert trajectory.finished and 1 <= trajectory.num_turns <= 3
        assert (
            len(trajectory.token_ids)
            == len(trajectory.components)
            == len(trajectory.sampling_logprobs)
        )
        model_runs = [ids for label, ids in segments(trajectory) if label == Component.MODEL]
        assert [tiny.tokenizer.decode(ids) for ids in model_runs] == [
            t.action for t in trajectory.turns
        ]
        assert all(
            lp < 0
            for lp, c in zip(trajectory.sampling_logprobs, trajectory.components, strict=True)
            if c == Component.MODEL
        )


def test_tokenizer_without_chat_template_is_a_clear_error(tiny):
    class NoTemplate:
        chat_template = None
        name_or_path = "my-model"

    generator = ScriptedGenerator(NoTemplate(), [])
    with pytest.raises(ChatTemplateMissingError, match=r"my-model.*use_chat_template=False"):
        LLMAgent(generator)
    LLMAgent(generator, use_chat_template=False)  # raw prompts are allowed on request


def test_one_retriever_call_per_turn_for_all_envs(tiny):
    from rexrag_env.retrieval.base import Passage

    class CountingRetriever:
        def __init__(self):
            self.calls = []

        def search(self, queries, k):
            self.calls.append(len(queries))
            return [[Passage(str(i), "T\nx") for i in range(k)] for _ in queries]

    retriever = CountingRetriever()
    generator = ScriptedGenerator(
        tiny.tokenizer, ["<search> a </search>", "<search> b </search>", "<answer> Rush </answer>"]
    )
    envs = make_envs(retriever, 5)
    trajectories = LLMAgent(generator).play(envs, [None] * 5)
    assert retriever.calls == [5, 5]  # two search turns, each one batched call
    assert all(t.num_searches == 2 and t.reward == 1.0 for t in trajectories)
