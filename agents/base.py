"""The agent interface: anything that turns observations into action text can play."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym


@runtime_checkable
class Agent(Protocol):
    """An agent for ``rexrag_env/SearchQA-v0``.

    ``reset`` receives the prompt and the reset info of a new episode; ``act`` receives
    the latest observation (the prompt on the first turn) and the last info, and
    returns the next turn of agent text.
    """

    def reset(self, prompt: str, info: dict[str, Any]) -> None: ...

    def act(self, observation: str, info: dict[str, Any]) -> str: ...


@dataclass
class EpisodeResult:
    """What one episode produced: the return and the last step's info (em, f1, answer, …)."""

    reward: float
    turns: int
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


def run_episode(
    env: gym.Env, agent: Agent, *, seed: int | None = None, options: dict[str, Any] | None = None
) -> EpisodeResult:
    """Play one episode of ``env`` with ``agent`` until it terminates or is truncated."""
    observation, info = env.reset(seed=seed, options=options)
    agent.reset(observation, info)
    total, turns = 0.0, 0
    while True:
        observation, reward, terminated, truncated, info = env.step(agent.act(observation, info))
        total += float(reward)
        turns += 1
        if terminated or truncated:
            return EpisodeResult(total, turns, bool(truncated), info)
