"""A small task and a tiny policy that plays it, for the algorithm's integration tests.

The task: "What is the capital of <invented country>?", gold answer always "Paris".
The policy: the tiny Qwen2 after a short SFT on scripted demonstrations that search
once, then answer one of four cities at random. So it follows the tag protocol,
searches (the retriever is really called) and is right about a quarter of the time:
wrong answers spawn probes, groups have reward variance, and RL has something to learn.
"""

from __future__ import annotations

import json
import random

import pytest
import ray

from agents.base import run_episode
from agents.llm.models import load_model_and_tokenizer
from agents.rexrag.config import RexRagConfig
from agents.rexrag.sft import supervised_finetune, tokenize_demonstration
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.env import SearchQAEnv

CITIES = ("Paris", "Rome", "Lima", "Oslo")
COUNTRIES = [
    f"{a}{b}" for a in ("Zor", "Vel", "Mar", "Quon", "Tal", "Ib") for b in ("bia", "ania", "ostan")
]


class GuessingAgent:
    """Searches for the capital once, then answers a random city (a scripted demonstrator)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def reset(self, prompt, info):
        self.question, self.searched = info["question"], False

    def act(self, observation, info):
        if not self.searched:
            self.searched = True
            return "<think> I need to look this up. </think>\n<search> capital city </search>"
        city = self.rng.choice(CITIES)
        return f"<think> I will go with {city}. </think>\n<answer> {city} </answer>"


@pytest.fixture(scope="session")
def capital_task(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "capitals.jsonl"
    with path.open("w") as handle:
        for i, country in enumerate(COUNTRIES):
            question = f"What is the capital of {country}?"
            record = {"id": f"capital-{i}", "question": question, "golden_answers": ["Paris"]}
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="session")
def answering_model_dir(tiny_model_dir, capital_task, bm25_retriever, tmp_path_factory):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    env = SearchQAEnv(dataset=load_qa_dataset(capital_task), retriever=bm25_retriever, max_turns=2)
    rng = random.Random(0)
    demonstrations = [
        tokenize_demonstration(
            run_episode(env, GuessingAgent(rng), options={"example": example}), tokenizer, 200
        )
        for example in env.examples
        for _ in range(4)
    ]
    supervised_finetune(model, demonstrations, steps=200, lr=3e-3, batch_size=8)
    directory = tmp_path_factory.mktemp("answering-model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_config(model_dir, task, **overrides) -> RexRagConfig:
    """The tiny-cpu preset on the capital task, sized for a test."""
    return RexRagConfig.from_yaml(
        "tiny-cpu",
        {
            "llm": str(model_dir),
            "dataset": str(task),
            "questions_per_iteration": 4,
            "group_size": 3,
            "max_new_tokens_per_turn": 24,
            "probe_prob": 1.0,
            "keep_ratio": 1.0,
            "seed": 0,
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with two CPUs (two EnvRunner actors), shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
