"""LLMAgent: one generation backend driving many environments, token in / token out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agents.base import start_episodes, step_episodes
from agents.llm.base import Generator, SamplingParams
from agents.llm.seeding import stream_seed
from agents.trajectory import Component, Trajectory, observation_component
from rexrag_env.protocol import DEFAULT_MAX_OBSERVATION_TOKENS
from rexrag_env.vector import SearchQAVectorEnv


def prompt_token_ids(
    tokenizer, prompt: str, messages: list[dict[str, str]], use_chat_template: bool = True
) -> list[int]:
    """The prompt's token ids: ``messages`` through the chat template (with the
    assistant generation marker), or the plain ``prompt`` text encoded."""
    if use_chat_template:
        return list(
            tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
    return tokenizer.encode(prompt, add_special_tokens=False)


class ChatTemplateMissingError(ValueError):
    """The tokenizer has no chat template but the agent was asked to use one."""


class LLMAgent:
    """Plays many episodes at once in a ``SearchQAVectorEnv`` with one :class:`Generator`.

    Each turn makes one batched ``generate`` call over all active trajectories and one
    ``step`` of the vector env, which parses their actions and answers all their
    searches in one retriever call; then the observation tokens are appended.
    Finished trajectories leave the batch (their envs sit the following steps out).
    The chat template is applied once, to the prompt; sampled ids are appended exactly
    as sampled and never re-encoded, and every token gets a :class:`Component` label
    (DESIGN.md principle 1): MODEL for sampled tokens, INFO for ``<information>``
    blocks, FEEDBACK for the invalid-action notice.

    Args:
        generator: the sampling backend (HF, vLLM, …).
        sampling: per-turn sampling parameters (default: greedy, 500 tokens, stop after
            an action).
        max_observation_tokens: observations are cut to this many tokens.
        use_chat_template: wrap the prompt with the tokenizer's chat template (as the
            official code always does, base models included).
    """

    def __init__(
        self,
        generator: Generator,
        sampling: SamplingParams | None = None,
        max_observation_tokens: int = DEFAULT_MAX_OBSERVATION_TOKENS,
        use_chat_template: bool = True,
    ):
        tokenizer = generator.tokenizer
        if use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateMissingError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template: "
                "use a model with one, set tokenizer.chat_template, or pass use_chat_template=False"
            )
        self.generator = generator
        self.tokenizer = tokenizer
        self.sampling = sampling or SamplingParams(temperature=0.0)
        self.max_observation_tokens = max_observation_tokens
        self.use_chat_template = use_chat_template
        self._generate_calls = 0
        #: wall seconds spent sampling and stepping the envs, which is the batched
        #: retriever call (accumulating)
        self.seconds = {"generation": 0.0, "retrieval": 0.0}

    def reseed(self, seed: int) -> None:
        """Make the following episodes a function of ``seed`` (and the weights) alone.

        Batched ``generate`` call k then samples with ``stream_seed(seed, k)``, so no
        two calls share a random stream (nor do calls under another ``seed``).
        """
        self.sampling = replace(self.sampling, seed=seed)
        self._generate_calls = 0

    def prompt_ids(self, prompt: str, reset_info: dict[str, Any]) -> list[int]:
        """Token ids of the prompt, chat template applied when configured."""
        return prompt_token_ids(
            self.tokenizer, prompt, reset_info["messages"], self.use_chat_template
        )

    def observation_ids(self, observation: str) -> list[int]:
        return self.tokenizer.encode(observation, add_special_tokens=False)[
            : self.max_observation_tokens
        ]

    def play(
        self, envs: SearchQAVectorEnv, options: Sequence[dict[str, Any] | None]
    ) -> list[Trajectory]:
        """Reset env ``i`` of ``envs`` with ``options[i]`` and play every episode to its end."""
        trajectories = []
        for prompt, info in start_episodes(envs, options):
            trajectory = Trajectory.start(prompt, info)
            trajectory.extend(self.prompt_ids(prompt, info), Component.PROMPT)
            trajectory.prompt_length = len(trajectory.token_ids)
            trajectories.append(trajectory)
        self.continue_trajectories(envs, trajectories)
        return trajectories

    def continue_trajectories(
        self, envs: SearchQAVectorEnv, trajectories: Sequence[Trajectory]
    ) -> None:
        """Run every unfinished ``trajectories[i]`` in env ``i`` of ``envs`` until it ends,
        one batched turn at a time.

        Also the entry point for trajectories that do not start at the prompt (a probe
        resumes from a copied prefix in an env reset at the probe's turn).
        """
        active = [i for i, trajectory in enumerate(trajectories) if not trajectory.finished]
        while active:
            params = self.sampling
            if params.seed is not None:
                params = replace(params, seed=stream_seed(params.seed, self._generate_calls))
            self._generate_calls += 1
            start = time.perf_counter()
            generations = self.generator.generate(
                [trajectories[i].token_ids for i in active], params
            )
            self.seconds["generation"] += time.perf_counter() - start
            start = time.perf_counter()
            results = step_episodes(
                envs, {i: g.text for i, g in zip(active, generations, strict=True)}
            )
            self.seconds["retrieval"] += time.perf_counter() - start
            for i, generation in zip(active, generations, strict=True):
                trajectory = trajectories[i]
                trajectory.extend(generation.token_ids, Component.MODEL, generation.logprobs)
                observation, reward, terminated, truncated, info = results[i]
                label = observation_component(info["action_type"])
                observation_ids = self.observation_ids(observation) if observation else []
                trajectory.extend(observation_ids, label)
                if len(observation_ids) == self.max_observation_tokens:  # what the model saw
                    observation = self.tokenizer.decode(observation_ids)
                trajectory.record_step(
                    generation.text, observation, reward, terminated, truncated, info
                )
            active = [i for i in active if not trajectories[i].finished]
