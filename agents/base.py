"""The agent interfaces: anything that turns observations into action text can play.

Two shapes, both small:
- :class:`Agent` acts in one environment, one turn at a time (scripted agents, an
  agent behind an HTTP API);
- :class:`BatchAgent` plays many environments at once (an LLM that samples all active
  trajectories in one batched call). :class:`SequentialAgents` makes any ``Agent`` a
  ``BatchAgent``, so evaluation code only needs the batched shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym

from agents.trajectory import Trajectory


@runtime_checkable
class Agent(Protocol):
    """An agent for ``rexrag_env/SearchQA-v0``.

    ``reset`` receives the prompt and the reset info of a new episode; ``act`` receives
    the latest observation (the prompt on the first turn) and the last info, and
    returns the next turn of agent text.
    """

    def reset(self, prompt: str, info: dict[str, Any]) -> None: ...

    def act(self, observation: str, info: dict[str, Any]) -> str: ...


@runtime_checkable
class BatchAgent(Protocol):
    """An agent that plays one episode in each of several environments at once."""

    def play(
        self, envs: Sequence[gym.Env], options: Sequence[dict[str, Any] | None]
    ) -> list[Trajectory]:
        """Reset ``envs[i]`` with ``options[i]`` and play it to the end; one trajectory each."""
        ...


def run_episode(
    env: gym.Env, agent: Agent, *, seed: int | None = None, options: dict[str, Any] | None = None
) -> Trajectory:
    """Play one episode of ``env`` with ``agent`` until it terminates or is truncated."""
    observation, info = env.reset(seed=seed, options=options)
    trajectory = Trajectory.start(observation, info)
    agent.reset(observation, info)
    while not trajectory.finished:
        action = agent.act(observation, info)
        observation, _, terminated, truncated, info = env.step(action)
        trajectory.record_step(action, observation, terminated, truncated, info)
    return trajectory


class SequentialAgents:
    """A :class:`BatchAgent` made of one-at-a-time agents: a fresh agent per episode."""

    def __init__(self, make_agent: Callable[[], Agent]):
        self.make_agent = make_agent

    def play(
        self, envs: Sequence[gym.Env], options: Sequence[dict[str, Any] | None]
    ) -> list[Trajectory]:
        return [
            run_episode(env, self.make_agent(), options=option)
            for env, option in zip(envs, options, strict=True)
        ]
