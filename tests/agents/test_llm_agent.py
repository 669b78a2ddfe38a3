"""LLMAgent token bookkeeping: labels line up exactly with what the environment saw."""

from dataclasses import replace

import pytest
from gymnasium.vector import AutoresetMode

import rexrag_env
import rexrag_env.vector
from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator
from agents.llm.seeding import stream_seed
from agents.llm_agent import ChatTemplateMissingError, LLMAgent
from agents.trajectory import Component, Trajectory, observation_component
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.protocol import parse_action
from tests.helpers import CountingRetriever, ScriptedGenerator

QUESTION = {
    "id": "q",
    "question": "Which band was Neil Peart the drummer of",
    "golden_answers": ["Rush"],
}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return HFGenerator.from_pretrained(str(tiny_model_dir))


def make_envs(retriever, count, dataset=(QUESTION,), **kwargs):
    return rexrag_env.SearchQAVectorEnv(
        count,
        dataset=dataset,
        retriever=retriever,
        autoreset_mode=AutoresetMode.DISABLED,
        **kwargs,
    )


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


def test_one_retriever_call_per_turn_for_all_envs(tiny, monkeypatch):
    retriever = CountingRetriever()
    parsed = []
    monkeypatch.setattr(
        rexrag_env.vector, "parse_action", lambda text: parsed.append(text) or parse_action(text)
    )
    generator = ScriptedGenerator(
        tiny.tokenizer, ["<search> a </search>", "<search> b </search>", "<answer> Rush </answer>"]
    )
    trajectories = LLMAgent(generator).play(make_envs(retriever, 5), [None] * 5)
    assert retriever.batch_sizes == [5, 5]  # two search turns, each one batched call
    assert len(parsed) == 15  # every action parsed once, by the vector env
    assert all(t.num_searches == 2 and t.reward == 1.0 for t in trajectories)


def test_a_batch_smaller_than_the_vector_env_leaves_the_other_envs_alone(tiny):
    retriever = CountingRetriever()
    envs = make_envs(retriever, 4)
    generator = ScriptedGenerator(
        tiny.tokenizer,
        [["<search> a </search>", "<answer> Rush </answer>"], "<answer> x </answer>"],
    )
    first, second = LLMAgent(generator).play(envs, [None, None])
    assert retriever.batch_sizes == [1] and generator.calls == [2, 1]
    assert (first.num_turns, first.reward, second.num_turns, second.reward) == (2, 0.0, 1, 1.0)
    with pytest.raises(ValueError, match="3 episodes do not fit in 2 envs"):
        LLMAgent(generator).play(make_envs(retriever, 2), [None] * 3)
    with pytest.raises(ValueError, match="DISABLED"):
        LLMAgent(generator).play(rexrag_env.SearchQAVectorEnv(1, [QUESTION], retriever), [None])


def play_env_by_env(agent, envs, options):
    """The reference: LLMAgent's turn loop before the vector env (batched generation,
    then each ``SearchQAEnv`` stepped on its own, one retriever call per search)."""
    trajectories = []
    for env, option in zip(envs, options, strict=True):
        prompt, info = env.reset(options=option)
        trajectory = Trajectory.start(prompt, info)
        trajectory.extend(agent.prompt_ids(prompt, info), Component.PROMPT)
        trajectory.prompt_length = len(trajectory.token_ids)
        trajectories.append(trajectory)
    active, calls = list(range(len(envs))), 0
    while active:
        params = replace(agent.sampling, seed=stream_seed(agent.sampling.seed, calls))
        calls += 1
        prompts = [trajectories[i].token_ids for i in active]
        for i, generation in zip(active, agent.generator.generate(prompts, params), strict=True):
            trajectory = trajectories[i]
            trajectory.extend(generation.token_ids, Component.MODEL, generation.logprobs)
            observation, reward, terminated, truncated, info = envs[i].step(generation.text)
            observation_ids = agent.observation_ids(observation) if observation else []
            trajectory.extend(observation_ids, observation_component(info["action_type"]))
            if len(observation_ids) == agent.max_observation_tokens:
                observation = agent.tokenizer.decode(observation_ids)
            trajectory.record_step(
                generation.text, observation, reward, terminated, truncated, info
            )
        active = [i for i in active if not trajectories[i].finished]
    return trajectories


@pytest.mark.slow  # builds the warm-started sanity policy (~30 s)
def test_the_vector_env_plays_token_for_token_as_one_env_at_a_time(
    answering_model_dir, capital_task, bm25_retriever
):
    """The warm-started sanity policy at temperature 1: same seed, same trajectories as
    the env-by-env reference, with one retriever call per turn instead of one per search."""
    questions = load_qa_dataset(capital_task)
    options = [{"index": i % len(questions)} for i in range(12)]
    agent = LLMAgent(
        HFGenerator.from_pretrained(str(answering_model_dir)),
        SamplingParams(temperature=1.0, max_new_tokens=24),
        max_observation_tokens=64,
    )
    retriever = CountingRetriever(bm25_retriever)
    agent.reseed(5)
    played = agent.play(make_envs(retriever, 12, dataset=questions, max_turns=2), options)
    vector_calls, retriever.calls = retriever.batch_sizes, []
    agent.reseed(5)
    singles = [
        rexrag_env.SearchQAEnv(dataset=questions, retriever=retriever, max_turns=2) for _ in options
    ]
    reference = play_env_by_env(agent, singles, options)
    for mine, theirs in zip(played, reference, strict=True):
        assert mine.token_ids == theirs.token_ids and mine.components == theirs.components
        assert mine.sampling_logprobs == theirs.sampling_logprobs
        assert mine.to_record() == theirs.to_record()
    # one call per turn that has searches, with all of that turn's searches
    searches_per_turn = [
        sum(len(t.turns) > turn and t.turns[turn].doc_ids != [] for t in played)
        for turn in range(3)
    ]
    assert vector_calls == [n for n in searches_per_turn if n] and sum(vector_calls) > 1
    assert retriever.batch_sizes == [1] * sum(vector_calls)  # the reference: one call per search
    kinds = {turn.action_type for t in played for turn in t.turns}
    assert {"search", "answer"} <= kinds  # the episodes exercised retrieval and endings
