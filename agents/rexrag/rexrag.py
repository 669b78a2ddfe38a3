"""RexRag: the REX-RAG algorithm on RLlib's new API stack (DESIGN.md "data flow").

One ``training_step``: every EnvRunner samples its questions' groups (originals and
probes); the learner recomputes π_old and π_ref over all tokens; the probe filter,
GRPO advantages and the behaviour probabilities of the chosen correction are computed
(:func:`build_learner_batch`); the LearnerGroup takes one optimizer step per
mini-batch; the new weights go back to the EnvRunners. With ``probes=False`` this
is plain GRPO (Search-R1).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import COMPONENT_LEARNER_GROUP, DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from agents.llm.seeding import stream_seed
from agents.rexrag.config import RexRagConfig
from agents.rexrag.env_runner import RolloutResult
from agents.rexrag.learner_batch import build_learner_batch
from agents.rexrag.probes import update_keep_ratio
from agents.rexrag.rollout_metrics import rollout_metrics
from agents.rexrag.token_batch import TokenBatch, select_rows, to_token_batch
from rexrag_env.datasets import load_qa_dataset

#: Where RexRag's per-iteration metrics live in ``Algorithm.train()``'s result.
METRICS_KEY = "rexrag"
_STATE_KEY = "rexrag_state"
#: The streams of an iteration, below ``stream_seed(seed, iteration)``.
QUESTION_DRAW, ROLLOUT, MINIBATCH_ORDER = 0, 1, 2


class RolloutFailedError(RuntimeError):
    """An EnvRunner could not sample (e.g. its retriever is down): the iteration fails."""


class RexRag(Algorithm):
    """REX-RAG (or GRPO with ``probes=False``) over :class:`RexRagEnvRunner` workers."""

    @classmethod
    def get_default_config(cls) -> RexRagConfig:
        return RexRagConfig(cls)

    def setup(self, config: RexRagConfig) -> None:
        super().setup(config)
        self.keep_ratio = config.keep_ratio
        self.questions = load_qa_dataset(config.question_source())

    # -- one iteration ---------------------------------------------------------------

    def training_step(self) -> None:
        config: RexRagConfig = self.config
        iteration = self.iteration
        seed = stream_seed(config.seed or 0, iteration)
        seconds: dict[str, float] = {}

        start = time.perf_counter()
        rollouts = self._sample(seed)
        seconds["rollout"] = time.perf_counter() - start
        trajectories = [t for rollout in rollouts for t in rollout.trajectories]
        for name in ("generation", "retrieval", "probing"):  # runners work in parallel
            seconds[name] = float(np.mean([r.seconds.get(name, 0.0) for r in rollouts]))

        lr = self._for_each_learner(lambda learner, i=iteration: learner.start_iteration(i))[0]
        batch = to_token_batch(trajectories)
        start = time.perf_counter()
        scores = self._score(batch)
        seconds["scoring"] = time.perf_counter() - start

        prepared = build_learner_batch(
            batch,
            scores["old_logprobs"],
            scores["reference_logprobs"],
            keep_ratio=self.keep_ratio if config.probes else 0.0,
            keep_multiple_of=config.keep_multiple_of,
            correction=config.correction,
            sequence_weight_cap=config.sequence_weight_cap,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
        )
        start = time.perf_counter()
        learner_stats = self._update(
            prepared.columns, stream_seed(seed, MINIBATCH_ORDER), len(trajectories)
        )
        seconds["learning"] = time.perf_counter() - start
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group, inference_only=True
        )

        keep_ratio_used = self.keep_ratio
        self.keep_ratio = self._next_keep_ratio(prepared.kept_probe_accuracy)
        kept_probes = [trajectories[i] for i in prepared.rows if trajectories[i].is_probe]
        metrics = rollout_metrics(trajectories, kept_probes)
        trained_tokens = float(prepared.columns["loss_mask"].sum())
        metrics.update(prepared.stats)
        metrics.update(learner_stats)
        metrics.update(
            {
                "keep_ratio": keep_ratio_used,
                "learning_rate": lr,
                "trained_tokens": trained_tokens,
                "rollout_tokens_per_s": metrics["sampled_tokens"] / max(seconds["rollout"], 1e-9),
                "learner_tokens_per_s": trained_tokens / max(seconds["learning"], 1e-9),
                "logprob_mismatch": _rollout_learner_mismatch(batch, scores["old_logprobs"]),
                "entropy": float(scores["entropy"][batch.loss_mask].mean()),
                **{f"seconds_{name}": value for name, value in seconds.items()},
            }
        )
        self.metrics.log_dict(metrics, key=METRICS_KEY, reduce="mean", window=1)
        self.metrics.log_value(
            NUM_ENV_STEPS_SAMPLED_LIFETIME, len(trajectories), reduce="lifetime_sum"
        )

    def _next_keep_ratio(self, kept_probe_accuracy: float | None) -> float:
        """The EWMA step of the keep ratio (spec §3.3). An iteration that kept no probe
        counts as accuracy 0, as the official trainer does (``keep_ratio_when_none_kept
        = "decay"``), or leaves the ratio alone (``"hold"``)."""
        config: RexRagConfig = self.config
        if not config.probes:
            return self.keep_ratio
        if kept_probe_accuracy is None:
            if config.keep_ratio_when_none_kept == "hold":
                return self.keep_ratio
            kept_probe_accuracy = 0.0
        return update_keep_ratio(self.keep_ratio, kept_probe_accuracy, config.keep_ratio_decay)

    def _sample(self, seed: int) -> list[RolloutResult]:
        """Draw the iteration's questions and split them over the healthy EnvRunners
        (``seed``: the iteration's).

        A runner that dies mid-sample loses its share for this iteration (RLlib
        restarts it); a runner's sampling error fails the iteration.
        """
        count = min(self.config.questions_per_iteration, len(self.questions))
        questions = random.Random(stream_seed(seed, QUESTION_DRAW)).sample(self.questions, count)
        seed = stream_seed(seed, ROLLOUT)
        if self.env_runner_group.num_remote_env_runners() == 0:
            rollouts = [self.env_runner.sample(questions=questions, seed=seed)]
        else:
            workers = self.env_runner_group.healthy_worker_ids()
            shards = {w: questions[i :: len(workers)] for i, w in enumerate(workers)}
            rollouts = self.env_runner_group.foreach_env_runner(
                lambda runner: runner.sample(questions=shards[runner.worker_index], seed=seed),
                local_env_runner=False,
                remote_worker_ids=workers,
            )
        failures = [r for r in rollouts if r.error]
        if failures:
            raise RolloutFailedError(
                "; ".join(
                    f"EnvRunner {r.worker_index} failed to sample: {r.error}" for r in failures
                )
            )
        if not any(r.trajectories for r in rollouts):
            raise RolloutFailedError(
                "no EnvRunner returned trajectories (all rollout workers are down?)"
            )
        return rollouts

    def _for_each_learner(self, func) -> list[Any]:
        return [result.get() for result in self.learner_group.foreach_learner(func)]

    def _score(self, batch: TokenBatch) -> dict[str, np.ndarray]:
        """log π_old, log π_ref and the entropy at every trained token; each learner
        scores its share of the rows."""
        columns = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "target_mask": batch.loss_mask,
        }
        shards = np.array_split(np.arange(len(batch)), max(1, self.config.num_learners))
        scores: dict[str, np.ndarray] = {}
        for rows, shard in self._for_each_learner(
            lambda learner: learner.score_shard(columns, shards)
        ):
            for name, values in shard.items():
                scores.setdefault(name, np.zeros(batch.input_ids.shape, dtype=np.float32))
                scores[name][rows, : values.shape[1]] = values
        return scores

    def _update(self, columns: dict[str, np.ndarray], seed: int, sampled: int) -> dict[str, float]:
        """One optimizer step per mini-batch of ``minibatch_size`` trajectories (shuffled,
        one epoch, as the official ``ppo_epochs=1``); returns the token-weighted means of
        the learner's statistics over the mini-batches."""
        rows = len(columns["advantages"])
        order = np.random.default_rng(seed).permutation(rows)
        num_minibatches = max(1, math.ceil(rows / max(1, self.config.minibatch_size)))
        lifetime = self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME, default=0) + sampled
        totals: dict[str, float] = {}
        weights = 0.0
        for minibatch in np.array_split(order, num_minibatches):
            selected = select_rows(columns, minibatch)
            results = self.learner_group.update(
                batch=MultiAgentBatch(
                    {DEFAULT_MODULE_ID: SampleBatch(selected)}, env_steps=len(minibatch)
                ),
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime},
            )
            weight = float(selected["loss_mask"].sum())
            for name, value in _learner_values(results).items():
                totals[name] = totals.get(name, 0.0) + weight * value
            weights += weight
        return {name: value / max(weights, 1.0) for name, value in totals.items()}

    # -- fault tolerance and checkpoints ---------------------------------------------

    def export_policy(self, directory: str | Path) -> None:
        """Save the current policy as a Hugging Face model + tokenizer (``from_pretrained``)."""
        path = str(Path(directory).resolve())
        self._for_each_learner(lambda learner: learner.save_policy(path))

    def restore_env_runners(self, env_runner_group) -> list[int]:
        """Bring restarted EnvRunners back with the learner's current weights.

        RLlib's default copies a driver-side EnvRunner's state; RexRag keeps the policy
        only on the learners and the remote runners, so it syncs from the learners.
        """
        restored = env_runner_group.probe_unhealthy_env_runners()
        if restored:
            self._counters["total_num_restored_workers"] += len(restored)
            env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                to_worker_indices=restored,
                inference_only=True,
                timeout_seconds=None,
            )
        return restored

    def get_checkpointable_components(self) -> list[tuple[str, Any]]:
        """Only the LearnerGroup (weights, optimizer): EnvRunners hold nothing to save."""
        return [(COMPONENT_LEARNER_GROUP, self.learner_group)]

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[_STATE_KEY] = {"keep_ratio": self.keep_ratio}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if _STATE_KEY in state:
            self.keep_ratio = state[_STATE_KEY]["keep_ratio"]


def _learner_values(results) -> dict[str, float]:
    """The module's scalar statistics from ``LearnerGroup.update``'s result (mean over learners)."""
    values: dict[str, list[float]] = {}
    for result in results:
        for name, value in result.get(DEFAULT_MODULE_ID, {}).items():
            value = value.peek() if hasattr(value, "peek") else value
            if isinstance(value, (int, float, np.floating)) and name in _LEARNER_METRICS:
                values.setdefault(name, []).append(float(value))
    return {name: float(np.mean(v)) for name, v in values.items()}


_LEARNER_METRICS = (
    "policy_loss",
    "kl",
    "ratio_mean",
    "ratio_max",
    "clip_fraction",
    "nonfinite_losses",
    "gradients_default_optimizer_global_norm",
)


def _rollout_learner_mismatch(batch: TokenBatch, old_logprobs: np.ndarray) -> float:
    """Mean |log π_rollout - log π_old| over the MODEL tokens the sampler scored: 0 up to
    float error when the sampler and the learner agree (a large value means a
    tokenisation, temperature or weight-sync bug)."""
    model_tokens = batch.loss_mask & ~batch.prompt_mask & batch.sampler_scored
    if not model_tokens.any():
        return 0.0
    return float(np.abs(batch.sampling_logprobs - old_logprobs)[model_tokens].mean())
