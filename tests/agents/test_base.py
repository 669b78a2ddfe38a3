"""Every shipped agent conforms to the agent protocols."""

from agents.base import Agent, BatchAgent, SequentialAgents, run_episode
from agents.llm_agent import LLMAgent
from agents.openai_agent import OpenAIChatAgent
from agents.scripted import NoSearchAgent, OracleAgent, SearchOnceAgent
from rexrag_env import SearchQAEnv


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


def test_sequential_agents_play_like_run_episode(bm25_retriever):
    envs = [SearchQAEnv(dataset="bamboogle", retriever=bm25_retriever) for _ in range(3)]
    options = [{"index": i} for i in range(3)]
    played = SequentialAgents(NoSearchAgent).play(envs, options)
    single = [run_episode(envs[0], NoSearchAgent(), options=option) for option in options]
    assert [t.to_record() for t in played] == [t.to_record() for t in single]
    assert all(t.num_turns == 1 and t.num_searches == 0 for t in played)
