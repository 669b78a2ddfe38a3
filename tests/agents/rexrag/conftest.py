"""The sanity task and its warm-started tiny policy (``agents.rexrag.sanity_task``),
built once per test session, and a small Ray cluster per module."""

from __future__ import annotations

import pytest
import ray

from agents.llm.models import load_model_and_tokenizer
from agents.rexrag.config import RexRagConfig
from agents.rexrag.sanity_task import warm_start, write_capital_questions


@pytest.fixture(scope="session")
def capital_task(tmp_path_factory):
    return write_capital_questions(tmp_path_factory.mktemp("task") / "capitals.jsonl")


@pytest.fixture(scope="session")
def answering_model_dir(tiny_model_dir, capital_task, bm25_retriever, tmp_path_factory):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    warm_start(model, tokenizer, capital_task, bm25_retriever)
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
