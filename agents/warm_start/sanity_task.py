"""A sanity task and a warm-started tiny policy for it, for tests and benchmarks.

The task: "What is the capital of <invented country>?", gold answer always "Paris" —
a contextual bandit wearing the search protocol. The policy: a tiny model after a short
SFT on scripted demonstrations that search once, then answer one of four cities at
random. It follows the tag protocol, calls the retriever and is right about a quarter
of the time, so wrong answers spawn probes, groups have reward variance and RL has
something to learn within seconds on a CPU. (The real dead-end testbed is SynthWiki.)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from agents.warm_start.sft import collect_demonstrations, supervised_finetune
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.env import SearchQAEnv
from rexrag_env.retrieval.base import Retriever

CITIES = ("Paris", "Rome", "Lima", "Oslo")
COUNTRIES = tuple(
    f"{stem}{ending}"
    for stem in ("Zor", "Vel", "Mar", "Quon", "Tal", "Ib")
    for ending in ("bia", "ania", "ostan")
)


class GuessingAgent:
    """The scripted demonstrator: one search, then a uniformly random city."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.searched = False

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        self.searched = False

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if not self.searched:
            self.searched = True
            return "<think> I need to look this up. </think>\n<search> capital city </search>"
        city = self.rng.choice(CITIES)
        return f"<think> I will go with {city}. </think>\n<answer> {city} </answer>"


def write_capital_questions(path: str | Path) -> Path:
    """Write the task's questions as a dataset file (JSONL) and return its path."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        for index, country in enumerate(COUNTRIES):
            record = {
                "id": f"capital-{index}",
                "question": f"What is the capital of {country}?",
                "golden_answers": ["Paris"],
            }
            handle.write(json.dumps(record) + "\n")
    return path


def warm_start(
    model,
    tokenizer,
    dataset: str | Path,
    retriever: Retriever,
    *,
    demonstrations_per_question: int = 4,
    steps: int = 200,
    seed: int = 0,
) -> list[float]:
    """SFT ``model`` in place on the demonstrator's episodes; returns the step losses."""
    env = SearchQAEnv(dataset=load_qa_dataset(dataset), retriever=retriever, max_turns=2)
    demonstrations = collect_demonstrations(
        env,
        GuessingAgent,
        tokenizer,
        repeats=demonstrations_per_question,
        seed=seed,
        max_observation_tokens=200,
    )
    return supervised_finetune(model, demonstrations, steps=steps, lr=3e-3, batch_size=8, seed=seed)


QUESTIONS_FILE = "capitals.jsonl"


def sanity_policy_path(seed: int = 0) -> Path:
    """The warm-started tiny policy, built once into the rexrag cache (~30 s on 2 cores).

    The directory is a ``save_pretrained`` model that also holds the task's questions
    as ``capitals.jsonl``.
    """
    from agents.llm.models import load_model_and_tokenizer
    from agents.llm.tiny import TINY_VERSION, tiny_model_path
    from rexrag_env.cache import build_once, cache_dir
    from rexrag_env.embedded import embedded_retriever
    from rexrag_env.retrieval.bm25 import RANKING_VERSION

    def build(directory: Path) -> None:
        model, tokenizer = load_model_and_tokenizer(str(tiny_model_path(seed)))
        dataset = write_capital_questions(directory / QUESTIONS_FILE)
        warm_start(model, tokenizer, dataset, embedded_retriever("bm25"), seed=seed)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    return build_once(
        cache_dir() / "models" / f"tiny-sanity-{seed}-v1-{TINY_VERSION}-{RANKING_VERSION}", build
    )


def sanity_questions_path(seed: int = 0) -> Path:
    """The sanity task's questions (the ``tiny-sanity`` dataset name)."""
    return sanity_policy_path(seed) / QUESTIONS_FILE
