"""LLMAgent: one generation backend driving many environments, token in / token out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import gymnasium as gym

from agents.llm.base import Generator, SamplingParams
from agents.llm.seeding import stream_seed
from agents.trajectory import Component, Trajectory, observation_component
from rexrag_env.protocol import DEFAULT_MAX_OBSERVATION_TOKENS, ActionType, parse_action
from rexrag_env.retrieval.prefetch import PrefetchingRetriever


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
    """Plays many ``SearchQAEnv`` episodes at once with one :class:`Generator`.

    Each turn makes one batched ``generate`` call over all active trajectories and one
    batched retriever call for all their queries (the environments' retrievers are
    wrapped in a :class:`PrefetchingRetriever`, shared per retriever), then steps the
    environments and appends the observation tokens.
    Finished trajectories leave the batch. The chat template is applied once, to the
    prompt; sampled ids are appended exactly as sampled and never re-encoded, and every
    token gets a :class:`Component` label (DESIGN.md principle 1): MODEL for sampled
    tokens, INFO for ``<information>`` blocks, FEEDBACK for the invalid-action notice.

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
        self._prefetchers: dict[int, PrefetchingRetriever] = {}
        self._generate_calls = 0
        #: wall seconds spent sampling and in the batched retriever calls (accumulating)
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
        self, envs: Sequence[gym.Env], options: Sequence[dict[str, Any] | None]
    ) -> list[Trajectory]:
        trajectories = []
        for env, option in zip(envs, options, strict=True):
            prompt, info = env.reset(options=option)
            trajectory = Trajectory.start(prompt, info)
            trajectory.extend(self.prompt_ids(prompt, info), Component.PROMPT)
            trajectory.prompt_length = len(trajectory.token_ids)
            trajectories.append(trajectory)
        self.continue_trajectories(envs, trajectories)
        return trajectories

    def continue_trajectories(
        self, envs: Sequence[gym.Env], trajectories: Sequence[Trajectory]
    ) -> None:
        """Run every unfinished trajectory in its env until it ends, one batched turn at a time.

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
            self._prefetch_searches([envs[i] for i in active], [g.text for g in generations])
            self.seconds["retrieval"] += time.perf_counter() - start
            still_active = []
            for i, generation in zip(active, generations, strict=True):
                trajectory = trajectories[i]
                trajectory.extend(generation.token_ids, Component.MODEL, generation.logprobs)
                observation, _, terminated, truncated, info = envs[i].step(generation.text)
                label = observation_component(info["action_type"])
                observation_ids = self.observation_ids(observation) if observation else []
                trajectory.extend(observation_ids, label)
                if len(observation_ids) == self.max_observation_tokens:  # what the model saw
                    observation = self.tokenizer.decode(observation_ids)
                trajectory.record_step(generation.text, observation, terminated, truncated, info)
                if not trajectory.finished:
                    still_active.append(i)
            active = still_active

    def _prefetch_searches(self, envs: Sequence[gym.Env], actions: Sequence[str]) -> None:
        """One retriever call per distinct retriever for all of this turn's searches."""
        batches: dict[tuple[int, int], tuple[PrefetchingRetriever, int, list[str]]] = {}
        for env, action in zip(envs, actions, strict=True):
            env = env.unwrapped
            if not isinstance(env.retriever, PrefetchingRetriever):
                shared = self._prefetchers.setdefault(
                    id(env.retriever), PrefetchingRetriever(env.retriever)
                )
                env.retriever = shared
            parsed = parse_action(action)
            if parsed.type is ActionType.SEARCH and env.search_enabled:
                key = (id(env.retriever), env.topk)
                batches.setdefault(key, (env.retriever, env.topk, []))[2].append(parsed.content)
        for retriever, topk, queries in batches.values():
            retriever.prefetch(queries, topk)
