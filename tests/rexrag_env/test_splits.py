"""The train split and held-out sets of the shipped benchmarks (rexrag_env/splits.py)."""

from __future__ import annotations

import gymnasium as gym
import pytest

import rexrag_env
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.embedded import EMBEDDED_DATASETS
from rexrag_env.splits import (
    HELD_OUT_PER_TRAIN_BENCHMARK,
    HELD_OUT_SPLITS,
    TRAIN_SPLIT,
    split_path,
    split_records,
)


def test_training_questions_are_never_held_out_and_every_question_is_somewhere():
    train = load_qa_dataset(TRAIN_SPLIT)
    train_ids = {(e.data_source, e.id) for e in train}
    assert {e.data_source for e in train} == {"nq", "hotpotqa"}
    for benchmark, name in zip(EMBEDDED_DATASETS, HELD_OUT_SPLITS, strict=True):
        held_out = load_qa_dataset(name)
        shipped = load_qa_dataset(benchmark)
        assert {e.data_source for e in held_out} == {benchmark}
        assert not train_ids & {(benchmark, e.id) for e in held_out}
        in_train = [e for e in shipped if (benchmark, e.id) in train_ids]
        assert len(held_out) + len(in_train) == len(shipped)
        if benchmark in ("nq", "hotpotqa"):
            assert len(held_out) == HELD_OUT_PER_TRAIN_BENCHMARK
        # shuffled: the first questions of a held-out set are a sample, not the file's head
        assert [e.id for e in held_out[:20]] != [e.id for e in shipped[:20]]
        assert sorted(e.id for e in held_out) == sorted(e.id for e in shipped if e not in in_train)
    # the multi-hop records keep what the shipped ones carry (demonstrators read it)
    assert any(e.metadata.get("supporting_titles") for e in train)


def test_the_split_is_the_same_on_every_call_and_names_resolve_everywhere():
    assert split_records() == split_records()
    assert split_path("heldout/nq").name == "nq.jsonl"  # results are named after it
    env = gym.make(rexrag_env.SEARCH_QA_ENV_ID, dataset=TRAIN_SPLIT, retriever="bm25")
    _, info = env.reset(options={"index": 0})
    assert info["question"] == load_qa_dataset(TRAIN_SPLIT)[0].question
    with pytest.raises(ValueError, match="split must be one of"):
        split_path("heldout/squad")
