"""RexRagEnvRunner: the rollout worker as an RLlib EnvRunner (local, or one Ray actor each).

It holds the policy module (the same ``CausalLMModule`` the learner trains, so weight
sync is RLlib's own ``set_state``), a generation backend over that module's model,
one ``SearchQAVectorEnv`` and a :class:`MixedSampler`. ``sample()`` returns token
trajectories of originals and probes; the algorithm turns them into learner batches.
"""

from __future__ import annotations

import functools
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from agents.llm.backends import load_generator
from agents.llm.hf import HFGenerator
from agents.llm.seeding import stream_seed
from agents.rexrag.mixed_sampling import MixedSampler
from agents.trajectory import Trajectory
from rexrag_env.datasets import QAExample, load_qa_dataset
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.spaces import UnicodeText


def worker_seed(seed: int, worker_index: int) -> int:
    """EnvRunner ``worker_index``'s stream below a run's (or an iteration's) seed: runners
    never share one."""
    return stream_seed(seed, worker_index)


@dataclass
class RolloutResult:
    """What one EnvRunner returns per iteration.

    A failure inside sampling (a retriever that is down, a broken dataset row) or in
    building the runner's retriever (an index path missing on its node) comes back as
    ``error`` instead of killing the actor, so the algorithm can fail the iteration with
    the worker's message; an actor that dies is RLlib's to restart.
    """

    trajectories: list[Trajectory] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # MixedSample's, and sampling
    worker_index: int = 0
    error: str | None = None


class RexRagEnvRunner(EnvRunner):
    """Samples REX-RAG groups (originals + probes) with the current policy."""

    def __init__(self, *, config, **kwargs):
        super().__init__(config=config, **kwargs)
        self.module, self.generator = self._make_policy(config)
        seed = worker_seed(config.seed or 0, self.worker_index or 0)
        # A constructor that raises loses its message: RLlib (restart_failed_env_runners)
        # logs it, drops the actor and fails the build with an unrelated IndexError. The
        # runner stays up instead and reports the error from sample().
        self.setup_error: str | None = None
        try:
            retriever = make_retriever(config.retriever)
        except Exception as error:
            retriever, self.setup_error = None, _error_report(error)
        self.sampler = MixedSampler.for_run(config, self.generator, retriever, seed=seed)
        self._rng = random.Random(seed)
        self._weights_seq_no = 0

    @functools.cached_property
    def dataset(self) -> list[QAExample]:
        """The run's questions, loaded only by a standalone runner that draws its own
        (:meth:`sample` without ``questions``): the algorithm sends each iteration's."""
        return load_qa_dataset(self.config.dataset)

    @staticmethod
    def _make_policy(config) -> tuple[Any, Any]:
        """``(module, generator)``: HF generates with the RLlib module's own model (on the
        runner's GPU when it has one); vLLM holds its own copy of the weights and takes
        each sync through ``load_weights``, so the runner keeps no module."""
        if config.backend == "vllm":
            return None, load_generator(config.llm, "vllm", **config.vllm_engine_options())
        spec = config.get_default_rl_module_spec()
        spec.observation_space = spec.action_space = UnicodeText()
        spec.inference_only = True
        module = spec.build()
        if config.num_gpus_per_env_runner > 0 and torch.cuda.is_available():
            module.model.to("cuda")
        return module, HFGenerator(module.model, module.tokenizer)

    def sample(
        self,
        *,
        questions: Sequence[QAExample] | None = None,
        num_questions: int | None = None,
        seed: int | None = None,
        weights_seq_no: int | None = None,
        **kwargs,
    ) -> RolloutResult:
        """Sample the groups (originals and probes) of ``questions``.

        Without ``questions`` (a standalone runner), ``num_questions`` (default:
        ``questions_per_iteration``) are drawn from the dataset without replacement.
        ``seed`` (the algorithm passes one per iteration) fixes the probe draws and the
        sampled tokens given the weights, so a run restored from a checkpoint samples
        what the uninterrupted run would have. ``weights_seq_no`` is the learner's
        weight version: a runner holding older weights (a sync that failed or has not
        arrived) refuses to sample rather than feed the learner off-policy rollouts
        scored as on-policy.
        """
        if self.setup_error is not None:
            return RolloutResult(worker_index=self.worker_index or 0, error=self.setup_error)
        if weights_seq_no is not None and self._weights_seq_no < weights_seq_no:
            return RolloutResult(
                worker_index=self.worker_index or 0,
                error=(
                    f"stale weights: this EnvRunner holds policy version "
                    f"{self._weights_seq_no}, the learner is at {weights_seq_no} (the "
                    "weight sync to this runner failed or has not arrived)"
                ),
            )
        if seed is not None:
            seed = worker_seed(seed, self.worker_index or 0)
            self._rng = random.Random(seed)
            self.sampler.reseed(seed)
        if questions is None:
            count = min(num_questions or self.config.questions_per_iteration, len(self.dataset))
            questions = self._rng.sample(self.dataset, count)
        start = time.perf_counter()
        try:
            sample = self.sampler.sample(questions)
        except Exception as error:  # reported to the driver, see RolloutResult
            return RolloutResult(
                worker_index=self.worker_index or 0,
                error=_error_report(error),
            )
        seconds = {**sample.seconds, "sampling": time.perf_counter() - start}
        return RolloutResult(sample.trajectories, seconds, self.worker_index or 0)

    def release_generation_memory(self) -> None:
        """Put a vLLM engine to sleep while the learners step (``vllm_sleep_level`` > 0;
        otherwise, and for the HF backend, nothing to do). The next weight sync wakes it."""
        sleep = getattr(self.generator, "sleep", None)
        if sleep is not None:
            sleep()

    def get_spaces(self) -> dict[str, Any]:
        spaces = (UnicodeText(), UnicodeText())
        return {"__env__": spaces, DEFAULT_MODULE_ID: spaces}

    def assert_healthy(self) -> None:
        if self.sampler is None:
            raise RuntimeError("RexRagEnvRunner is stopped")

    def get_metrics(self) -> dict[str, Any]:
        return {}

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        """The policy weights (unless ``not_components`` names the RL module) and their
        sequence number; a runner has no other state (its sampling is seeded per call)."""
        state: dict[str, Any] = {WEIGHTS_SEQ_NO: self._weights_seq_no}
        excluded = (
            not_components if isinstance(not_components, (list, tuple, set)) else [not_components]
        )
        if COMPONENT_RL_MODULE not in excluded and self.module is not None:
            state[COMPONENT_RL_MODULE] = self.module.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Take new policy weights (RLlib's ``sync_weights``); stale ones are ignored."""
        if COMPONENT_RL_MODULE not in state:
            return
        sequence = state.get(WEIGHTS_SEQ_NO, 0)
        if sequence == 0 or sequence > self._weights_seq_no:
            weights = state[COMPONENT_RL_MODULE]
            if isinstance(weights, ray.ObjectRef):  # RLlib's broadcast puts weights in the store
                weights = ray.get(weights)
            if isinstance(weights, dict) and DEFAULT_MODULE_ID in weights:
                weights = weights[DEFAULT_MODULE_ID]
            if self.module is not None:
                self.module.set_state(weights)
            else:  # vLLM: module keys are "model." + the HF parameter names
                self.generator.load_weights(
                    {k.removeprefix("model."): torch.as_tensor(v) for k, v in weights.items()}
                )
            self._weights_seq_no = max(self._weights_seq_no, sequence)

    def stop(self) -> None:
        """Stop sampling and a vLLM engine's processes (which outlive the runner object
        until it is collected; the HF backend has nothing outside this process)."""
        self.sampler = None
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()


def _error_report(error: Exception) -> str:
    """An exception as the driver shows it: type, message and the runner's traceback."""
    return f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
