"""The agent interfaces: anything that turns observations into action text can play.

Two shapes, both small:
- :class:`Agent` acts in one environment, one turn at a time (scripted agents, an
  agent behind an HTTP API);
- :class:`BatchAgent` plays many episodes at once in one
  :class:`~rexrag_env.vector.SearchQAVectorEnv` (an LLM that samples all active
  trajectories in one batched call; the vector env answers all their searches in one
  retriever call). :class:`SequentialAgents` makes any ``Agent`` a ``BatchAgent``, so
  evaluation code only needs the batched shape.

:func:`start_episodes` and :func:`step_episodes` are how a ``BatchAgent`` talks to the
vector env: per-env options in, per-env results out (Gymnasium's batched infos
unbatched into one plain dict per env, as ``SearchQAEnv`` gives them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import DictInfoToList

from agents.trajectory import Trajectory
from rexrag_env.vector import SearchQAVectorEnv

#: One env's ``step`` result: observation, reward, terminated, truncated, info.
StepResult = tuple[str, float, bool, bool, dict[str, Any]]


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
    """An agent that plays one episode in each of several envs of a vector env at once."""

    def play(
        self, envs: SearchQAVectorEnv, options: Sequence[dict[str, Any] | None]
    ) -> list[Trajectory]:
        """Reset env ``i`` of ``envs`` with ``options[i]`` and play it to the end; one
        trajectory each. ``envs`` has ``AutoresetMode.DISABLED`` and at least
        ``len(options)`` envs; the others are left alone."""
        ...


def start_episodes(
    envs: SearchQAVectorEnv, options: Sequence[dict[str, Any] | None]
) -> list[tuple[str, dict[str, Any]]]:
    """Reset the first ``len(options)`` envs of ``envs``, env ``i`` with ``options[i]``
    (``SearchQAEnv.reset`` options, e.g. a probe's resume at a turn); ``(prompt, info)``
    of each. The other envs are left alone, so a batch may be smaller than ``envs``."""
    if envs.autoreset_mode is not AutoresetMode.DISABLED:
        raise ValueError(
            "agents play a SearchQAVectorEnv with autoreset_mode=AutoresetMode.DISABLED (an "
            "episode that ends must stay ended); build one with RexRagConfig.make_vector_env "
            "or SearchQAVectorEnv(..., autoreset_mode=AutoresetMode.DISABLED)"
        )
    if len(options) > envs.num_envs:
        raise ValueError(f"{len(options)} episodes do not fit in {envs.num_envs} envs")
    unused = envs.num_envs - len(options)
    prompts, infos = DictInfoToList(envs).reset(
        options={
            "reset_mask": np.arange(envs.num_envs) < len(options),
            "env_options": [*options, *[None] * unused],
        }
    )
    return [(prompts[i], _plain(infos[i])) for i in range(len(options))]


def step_episodes(envs: SearchQAVectorEnv, actions: Mapping[int, str]) -> dict[int, StepResult]:
    """One ``envs.step``: env ``i`` plays ``actions[i]``, the envs without an action sit
    it out. Returns each acting env's result."""
    batch = [actions.get(i) for i in range(envs.num_envs)]
    observations, rewards, terminations, truncations, infos = DictInfoToList(envs).step(batch)
    return {
        i: (
            observations[i],
            float(rewards[i]),
            bool(terminations[i]),
            bool(truncations[i]),
            _plain(infos[i]),
        )
        for i in actions
    }


def _plain(value: Any) -> Any:
    """NumPy scalars of a batched info back to the Python values ``SearchQAEnv`` gave."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def run_episode(
    env: gym.Env, agent: Agent, *, seed: int | None = None, options: dict[str, Any] | None = None
) -> Trajectory:
    """Play one episode of ``env`` with ``agent`` until it terminates or is truncated."""
    observation, info = env.reset(seed=seed, options=options)
    trajectory = Trajectory.start(observation, info)
    agent.reset(observation, info)
    while not trajectory.finished:
        action = agent.act(observation, info)
        observation, reward, terminated, truncated, info = env.step(action)
        trajectory.record_step(action, observation, reward, terminated, truncated, info)
    return trajectory


class SequentialAgents:
    """A :class:`BatchAgent` made of one-at-a-time agents: a fresh agent per episode.

    Each agent sees its own episode exactly as :func:`run_episode` shows it; the
    episodes step together, so their searches share one retriever call per turn.
    """

    def __init__(self, make_agent: Callable[[], Agent]):
        self.make_agent = make_agent

    def play(
        self, envs: SearchQAVectorEnv, options: Sequence[dict[str, Any] | None]
    ) -> list[Trajectory]:
        started = start_episodes(envs, options)
        agents = [self.make_agent() for _ in started]
        trajectories = [Trajectory.start(prompt, info) for prompt, info in started]
        last = list(started)  # (observation, info) each agent acts on next
        for agent, (prompt, info) in zip(agents, started, strict=True):
            agent.reset(prompt, info)
        active = list(range(len(started)))
        while active:
            actions = {i: agents[i].act(*last[i]) for i in active}
            for i, (observation, reward, terminated, truncated, info) in step_episodes(
                envs, actions
            ).items():
                trajectories[i].record_step(
                    actions[i], observation, reward, terminated, truncated, info
                )
                last[i] = (observation, info)
            active = [i for i in active if not trajectories[i].finished]
        return trajectories
