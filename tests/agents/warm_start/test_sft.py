"""Supervised warm start on scripted demonstrations (token trajectories, MODEL tokens trained)."""

import random

import pytest

from agents.base import run_episode
from agents.llm.models import load_model_and_tokenizer
from agents.trajectory import Component
from agents.warm_start.sanity_task import GuessingAgent
from agents.warm_start.sft import supervised_finetune, tokenize_demonstration
from rexrag_env.env import SearchQAEnv


def test_demonstrations_are_labelled_and_sft_reduces_their_loss(tiny_model_dir, bm25_retriever):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    env = SearchQAEnv(dataset="musique", retriever=bm25_retriever, max_turns=2)
    text = run_episode(env, GuessingAgent(random.Random(0)), options={"index": 0})
    demo = tokenize_demonstration(text, tokenizer, max_observation_tokens=50)
    assert demo.components[: demo.prompt_length] == [Component.PROMPT] * demo.prompt_length
    assert tokenizer.decode(demo.tokens_of(Component.MODEL)) == "".join(
        turn.action for turn in text.turns
    )
    assert len(demo.tokens_of(Component.INFO)) == 50  # the search result, cut like a rollout's
    losses = supervised_finetune(model, [demo] * 4, steps=15, lr=3e-3, batch_size=4)
    assert losses[-1] < 0.5 * losses[0]


def test_micro_batches_bound_memory_not_the_result(tiny_model_dir, bm25_retriever):
    """Rows of different lengths, one pass or one row per pass: the same token-mean loss
    at every step, so the same updates (each micro-batch weighted by its share of the
    tokens; a plain mean of micro-batch means would weigh the short row up)."""
    env = SearchQAEnv(dataset="musique", retriever=bm25_retriever, max_turns=2)
    _, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    demos = [
        tokenize_demonstration(
            run_episode(env, GuessingAgent(random.Random(i)), options={"index": i}),
            tokenizer,
            max_observation_tokens=20 + 40 * i,
        )
        for i in range(3)
    ]
    assert len({len(demo.token_ids) for demo in demos}) == 3
    losses = []
    for budget in (10_000, 1):  # all rows in one pass; one row per pass
        model, _ = load_model_and_tokenizer(str(tiny_model_dir))
        losses.append(
            supervised_finetune(
                model, demos, steps=3, batch_size=3, max_tokens_per_micro_batch=budget
            )
        )
    whole, split = losses
    assert split == pytest.approx(whole, rel=1e-5) and whole[2] != pytest.approx(whole[0])
