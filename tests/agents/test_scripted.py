import gymnasium as gym

import rexrag_env
from agents.base import Agent, run_episode
from agents.scripted import OracleAgent, PassageReaderAgent, SearchOnceAgent
from rexrag_env.retrieval.base import Passage


def test_agents_follow_the_protocol():
    assert isinstance(SearchOnceAgent(), Agent)
    assert isinstance(OracleAgent(), Agent)


def test_oracle_answers_every_question_correctly(bm25_retriever):
    env = gym.make(rexrag_env.SEARCH_QA_ENV_ID, dataset="musique", retriever=bm25_retriever)
    results = [run_episode(env, OracleAgent(), options={"index": i}) for i in range(20)]
    assert all(r.reward == 1.0 and r.num_turns == 2 and not r.truncated for r in results)


def test_search_once_is_an_honest_baseline(bm25_retriever):
    env = gym.make(rexrag_env.SEARCH_QA_ENV_ID, dataset="hotpotqa", retriever=bm25_retriever)
    agent = SearchOnceAgent()
    results = [run_episode(env, agent, options={"index": i}) for i in range(50)]
    assert all(r.num_turns == 2 and r.num_searches == 1 for r in results)
    assert all(r.answer for r in results)  # always extracts something
    em = sum(r.reward for r in results) / len(results)
    assert 0.0 <= em < 0.5  # a title-extraction rule cannot solve multi-hop QA


class _Shelf:
    """A retriever over a few fixed passages: the ones whose title the query names,
    else the first ``k``."""

    def __init__(self, passages):
        self.passages = passages
        self.queries = []

    def search(self, queries, k):
        self.queries += list(queries)
        return [
            [p for p in self.passages if p.title in query][:k] or self.passages[:k]
            for query in queries
        ]


_SHELF = [
    Passage("1", '"Neil Peart"\nNeil Peart was the drummer of the Canadian band RUSH until 2015.'),
    Passage("2", "Counterparts\nCounterparts is an album released in 1993."),
    Passage("3", '"Modern Drummer"\nModern Drummer is a magazine with a hall of fame.'),
]


def _read(question, answers, titles=()):
    env = gym.make(
        rexrag_env.SEARCH_QA_ENV_ID,
        dataset=[{"question": question, "golden_answers": answers, "supporting_titles": titles}],
        retriever=_Shelf(_SHELF),
        topk=1,
    )
    return run_episode(env, PassageReaderAgent(), options={"index": 0})


def test_the_passage_reader_answers_with_the_span_as_the_passage_writes_it():
    first = _read("Who drummed for Neil Peart's band?", ["Rush"])
    assert [t.action_type for t in first.turns] == ["search", "answer"] and first.correct
    assert first.answer == "RUSH"  # as written, not the gold string
    # it names the passage and the span, and quotes nothing more of it
    thought = '<think>Doc 1 ("Neil Peart") gives the answer: RUSH.</think>'
    assert first.turns[1].action.startswith(thought)
    # not in the first passages: it searches the supporting title not yet seen
    question = "Which magazine has the hall of the drummer of Counterparts?"
    second = _read(question, ["magazine"], ["Counterparts", "Modern Drummer"])
    assert [t.action_type for t in second.turns] == ["search", "search", "answer"]
    assert second.turns[1].action.endswith("<search> Modern Drummer </search>") and second.correct
    # a word inside another word is not a match, and with nothing left it answers unknown
    lost = _read("Who drummed?", ["Peart was the drum"], ["Neil Peart"])
    assert lost.answer == "unknown" and not lost.correct
    assert _read("Was Neil Peart a drummer?", ["yes"]).answer == "yes"
