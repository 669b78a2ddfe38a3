"""SynthWiki: determinism, disjoint splits, answerability by evidence chains, twins."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.vector import AutoresetMode

import rexrag_env
from agents.base import SequentialAgents, run_episode
from agents.scripted import EvidenceChainAgent
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.synthwiki import SPLITS, generate_synthwiki, synthwiki_dir


def test_same_seed_same_files_other_seed_other_world(tmp_path, monkeypatch):
    assert generate_synthwiki(0) == generate_synthwiki(0)
    assert generate_synthwiki(0).passages != generate_synthwiki(1).passages
    first = synthwiki_dir(0)
    monkeypatch.setenv("REXRAG_CACHE_DIR", str(tmp_path))  # a second machine
    second = synthwiki_dir(0)
    assert first != second
    for name in ("corpus.jsonl", *(f"{split}.jsonl" for split in SPLITS)):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_splits_are_disjoint_and_cover_one_to_three_hops():
    wiki = generate_synthwiki(0)
    texts = {split: {q["question"] for q in wiki.questions[split]} for split in SPLITS}
    assert all(texts.values())
    assert not (texts["train"] & texts["validation"] or texts["train"] & texts["test"])
    assert not texts["validation"] & texts["test"]
    for split in SPLITS:
        assert {q["num_hops"] for q in wiki.questions[split]} == {1, 2, 3}
    ids = [q["id"] for split in SPLITS for q in wiki.questions[split]]
    assert len(ids) == len(set(ids))


def test_every_question_is_answerable_by_following_its_evidence_chain():
    for split in SPLITS:
        env = gym.make(rexrag_env.SYNTHWIKI_ENV_ID, split=split)
        examples = env.unwrapped.examples
        results = [
            run_episode(env, EvidenceChainAgent(), options={"index": i})
            for i in range(len(examples))
        ]
        failed = [r.question for r in results if r.reward != 1.0]
        assert not failed, failed[:5]
        assert all(
            r.num_searches == len(e.metadata["hops"])
            for r, e in zip(results, examples, strict=True)
        )


def test_the_vector_entry_point_plays_a_split():
    envs = gym.make_vec(
        rexrag_env.SYNTHWIKI_ENV_ID,
        num_envs=3,
        split="validation",
        autoreset_mode=AutoresetMode.DISABLED,
    )
    assert isinstance(envs, rexrag_env.SearchQAVectorEnv)
    played = SequentialAgents(EvidenceChainAgent).play(envs, [{"index": i} for i in range(3)])
    assert [t.reward for t in played] == [1.0] * 3
    with pytest.raises(TypeError, match="split='test' for its questions"):
        gym.make_vec(rexrag_env.SYNTHWIKI_ENV_ID, split="test", dataset="hotpotqa")


def test_near_duplicate_twins_are_retrieved_together():
    """A search for a person with a twin finds both: the raw material of dead ends."""
    wiki = generate_synthwiki(0)
    titles = [passage["contents"].split("\n")[0].strip('"') for passage in wiki.passages]
    title_set = set(titles)

    def one_letter_apart(a, b):
        return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1

    twins = [
        (a, b) for a in titles for b in titles if a < b and " " in a and one_letter_apart(a, b)
    ]
    assert len(twins) >= 20 and all(b in title_set for _, b in twins)
    retriever = make_retriever("synthwiki")
    found_both = 0
    for a, b in twins[:20]:
        top = {p.title for p in retriever.search([a], 3)[0]}
        found_both += {a, b} <= top
    assert found_both >= 15


def test_names_resolve_for_datasets_and_retrievers():
    assert len(load_qa_dataset("synthwiki/test")) == len(generate_synthwiki(0).questions["test"])
    passages = make_retriever("synthwiki").search(["Institute"], 3)[0]
    assert len(passages) == 3
