"""Supervised warm start: maximise the likelihood of demonstration trajectories' model tokens.

RL from a policy that never emits ``<answer>`` gets no reward signal, so small policies
start from a few demonstrations (as R1-style pipelines start from an SFT checkpoint).
Demonstrations are token trajectories like any rollout (the env's observations are in
them, labelled INFO/FEEDBACK), and only MODEL tokens are trained, exactly as the RL
learner masks them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.base import run_episode
from agents.llm_agent import prompt_token_ids
from agents.rexrag.logprobs import response_token_logprobs
from agents.rexrag.losses import masked_mean
from agents.rexrag.micro_batches import micro_batches
from agents.rexrag.token_batch import to_token_batch
from agents.trajectory import Component, Trajectory, observation_component
from rexrag_env.protocol import DEFAULT_MAX_OBSERVATION_TOKENS, make_prompt_messages

#: Padded tokens per forward/backward pass of an SFT step (the step's gradient
#: accumulates over its micro-batches). Activation memory follows it: SmolLM2-135M
#: training on 8 demonstrations of up to 1,800 tokens in one pass was killed for memory
#: at 22 GiB here.
DEFAULT_MAX_TOKENS_PER_MICRO_BATCH = 4096


def supervised_finetune(
    model,
    demonstrations: Sequence[Trajectory],
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    max_tokens_per_micro_batch: int = DEFAULT_MAX_TOKENS_PER_MICRO_BATCH,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps; returns the loss of each step.

    Each step draws ``batch_size`` demonstrations (seeded, without replacement within a
    pass) and minimises the token-mean negative log-likelihood of their trained tokens.
    The step's rows pass through the model in micro-batches of at most
    ``max_tokens_per_micro_batch`` padded tokens, each weighted by its share of the
    step's trained tokens, so the loss is the same token mean whatever the size.
    ``progress`` shows a progress bar with the running loss.
    """
    if not demonstrations:
        raise ValueError("supervised_finetune needs at least one demonstration")
    batch = to_token_batch(demonstrations)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses = []
    model.train()
    bar = tqdm(total=steps, desc="SFT", unit="step", disable=not progress)
    for _ in range(steps):
        if len(order) < batch_size:
            order.extend(rng.permutation(len(batch)).tolist())
        rows, order = order[:batch_size], order[batch_size:]
        selected = batch.select(rows)
        ids, attention, mask = (
            torch.as_tensor(array, device=device)
            for array in (selected.input_ids, selected.attention_mask, selected.loss_mask)
        )
        trained = mask.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for part, width in micro_batches(attention, max_tokens_per_micro_batch):
            part_mask = mask[part, :width]
            logprobs = response_token_logprobs(
                model, ids[part, :width], attention[part, :width], part_mask
            )
            share = part_mask.sum() / trained
            part_loss = -masked_mean(logprobs, part_mask) * share
            part_loss.backward()
            loss += part_loss.item()
        optimizer.step()
        losses.append(loss)
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
    bar.close()
    model.eval()
    return losses


def tokenize_demonstration(
    trajectory: Trajectory, tokenizer, max_observation_tokens: int = DEFAULT_MAX_OBSERVATION_TOKENS
) -> Trajectory:
    """A text trajectory (any agent's, e.g. a scripted one) as a token demonstration.

    The prompt goes through the chat template as in :class:`~agents.llm_agent.LLMAgent`;
    each action becomes MODEL tokens and each observation INFO (or FEEDBACK for an
    invalid action) tokens, cut to ``max_observation_tokens`` like a rollout's. Unlike
    rollouts, demonstrations are text, so encoding them here is the only option.
    """
    prompt = prompt_token_ids(
        tokenizer, trajectory.prompt, make_prompt_messages(trajectory.question)
    )
    demonstration = replace(trajectory, token_ids=[], components=[], sampling_logprobs=[])
    demonstration.extend(prompt, Component.PROMPT)
    demonstration.prompt_length = len(prompt)
    for turn in trajectory.turns:
        demonstration.extend(
            tokenizer.encode(turn.action, add_special_tokens=False), Component.MODEL
        )
        label = observation_component(turn.action_type)
        observation = tokenizer.encode(turn.observation, add_special_tokens=False)
        demonstration.extend(observation[:max_observation_tokens], label)
    return demonstration


def collect_demonstrations(
    env,
    make_agent: Callable[[random.Random], Any],
    tokenizer,
    *,
    repeats: int = 1,
    seed: int = 0,
    max_observation_tokens: int = DEFAULT_MAX_OBSERVATION_TOKENS,
    edit: Callable[[Trajectory, random.Random], Trajectory] | None = None,
) -> list[Trajectory]:
    """``repeats`` token demonstrations per question of ``env`` (a ``SearchQAEnv``), each
    played by ``make_agent(rng)``, a text agent (e.g. a seeded mix of scripted
    demonstrators), and rewritten by ``edit(trajectory, rng)`` if given; one seeded
    ``rng`` serves all episodes, in question order."""
    rng = random.Random(seed)
    demonstrations = []
    for index in range(len(env.examples)):
        for _ in range(repeats):
            episode = run_episode(env, make_agent(rng), options={"index": index})
            if edit is not None:
                episode = edit(episode, rng)
            demonstrations.append(
                tokenize_demonstration(episode, tokenizer, max_observation_tokens)
            )
    return demonstrations
