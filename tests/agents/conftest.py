"""The algorithm tests' config helper and a small Ray cluster per module."""

from __future__ import annotations

import pytest
import ray

from agents.rexrag import RexRagConfig


def tiny_config(model_dir, task, **overrides) -> RexRagConfig:
    """The tiny-cpu preset on the capital task, sized for a test, with the official
    ``probe_credit = copy``: these tests check that every part of a probe trains (the
    default ``group_only`` trains none of it; tests/agents/rexrag/test_credit.py)."""
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
            "probe_credit": "copy",
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with two CPUs (two EnvRunner actors), shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
