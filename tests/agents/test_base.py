"""Every shipped agent conforms to the agent protocols."""

import pytest
from gymnasium.vector import AutoresetMode

from agents.base import Agent, BatchAgent, SequentialAgents, run_episode
from agents.llm_agent import LLMAgent
from agents.openai_agent import OpenAIChatAgent
from agents.scripted import NoSearchAgent, OracleAgent, SearchOnceAgent
from rexrag_env import SearchQAEnv, SearchQAVectorEnv
from tests.helpers import CountingRetriever


def test_protocol_conformance(tiny_model_dir):
    from agents.llm.hf import HFGenerator

    for agent in (
        NoSearchAgent(),
        SearchOnceAgent(),
        OracleAgent(),
        OpenAIChatAgent("http://127.0.0.1:1/v1", "m"),
    ):
        assert isinstance(agent, Agent)
    for batch_agent in (
        SequentialAgents(OracleAgent),
        LLMAgent(HFGenerator.from_pretrained(str(tiny_model_dir))),
    ):
        assert isinstance(batch_agent, BatchAgent)


@pytest.mark.parametrize("make_agent", [NoSearchAgent, SearchOnceAgent])
def test_sequential_agents_play_like_run_episode(bm25_retriever, make_agent):
    """Each agent sees what run_episode shows it; the envs step (and search) together."""
    retriever = CountingRetriever(bm25_retriever)
    envs = SearchQAVectorEnv(
        4, "bamboogle", retriever, max_turns=2, autoreset_mode=AutoresetMode.DISABLED
    )
    options = [{"index": i} for i in range(3)]  # one env left over
    played = SequentialAgents(make_agent).play(envs, options)
    batched_calls, retriever.calls = retriever.batch_sizes, []
    env = SearchQAEnv(dataset="bamboogle", retriever=retriever, max_turns=2)
    single = [run_episode(env, make_agent(), options=option) for option in options]
    assert [t.to_record() for t in played] == [t.to_record() for t in single]
    searches = sum(t.num_searches for t in played)
    assert batched_calls == ([searches] if searches else [])  # one call for all searches
    assert retriever.batch_sizes == [1] * searches


def test_batch_agents_need_autoreset_disabled(bm25_retriever):
    envs = SearchQAVectorEnv(2, "bamboogle", bm25_retriever)  # NEXT_STEP: episodes restart
    with pytest.raises(ValueError, match=r"autoreset_mode=AutoresetMode\.DISABLED"):
        SequentialAgents(NoSearchAgent).play(envs, [None])
