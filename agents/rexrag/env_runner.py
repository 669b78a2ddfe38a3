"""RexRagEnvRunner: the rollout worker as an RLlib EnvRunner (local, or one Ray actor each).

It holds the policy module (the same ``CausalLMModule`` the learner trains, so weight
sync is RLlib's own ``set_state``), a generation backend over that module's model,
many ``SearchQAEnv`` instances and a :class:`MixedSampler`. ``sample()`` returns token
trajectories of originals and probes; the algorithm turns them into learner batches.
"""

from __future__ import annotations

import random
from typing import Any

from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO

from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator
from agents.llm_agent import LLMAgent
from agents.rexrag.mixed_sampling import MixedSampler
from agents.trajectory import Trajectory
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.env import SearchQAEnv
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.spaces import UnicodeText


class RexRagEnvRunner(EnvRunner):
    """Samples REX-RAG groups (originals + probes) with the current policy."""

    def __init__(self, *, config, **kwargs):
        super().__init__(config=config, **kwargs)
        spec = config.get_default_rl_module_spec()
        spec.observation_space = spec.action_space = UnicodeText()
        spec.inference_only = True
        self.module = spec.build()
        generator = HFGenerator(self.module.model, self.module.tokenizer)
        seed = (config.seed or 0) + 1000 * (self.worker_index or 0)
        sampling = SamplingParams(
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens_per_turn,
            seed=seed,
        )
        agent = LLMAgent(generator, sampling, max_observation_tokens=config.max_observation_tokens)
        retriever = make_retriever(config.retriever)
        self.questions = load_qa_dataset(config.dataset)
        self.sampler = MixedSampler(
            agent,
            lambda: SearchQAEnv(
                dataset=self.questions,
                retriever=retriever,
                max_turns=config.max_turns,
                topk=config.topk,
            ),
            config.prompt_pool(),
            config.group_size,
            config.probe_prob,
            config.probe_trigger,
            probes=config.probes,
            seed=seed,
        )
        self._rng = random.Random(seed)
        self._weights_seq_no = 0

    def sample(self, *, num_questions: int | None = None, **kwargs) -> list[Trajectory]:
        """Draw questions (without replacement within a call) and sample their groups."""
        count = num_questions or max(
            1, self.config.questions_per_iteration // max(1, self.config.num_env_runners)
        )
        return self.sampler.sample(
            self._rng.sample(self.questions, min(count, len(self.questions)))
        )

    def get_spaces(self) -> dict[str, Any]:
        spaces = (UnicodeText(), UnicodeText())
        return {"__env__": spaces, DEFAULT_MODULE_ID: spaces}

    def assert_healthy(self) -> None:
        if self.module is None or not self.questions:
            raise RuntimeError("RexRagEnvRunner has no policy module or no questions")

    def get_metrics(self) -> dict[str, Any]:
        return {}

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        return {COMPONENT_RL_MODULE: self.module.get_state(), WEIGHTS_SEQ_NO: self._weights_seq_no}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take new policy weights (RLlib's ``sync_weights``); stale ones are ignored."""
        if COMPONENT_RL_MODULE not in state:
            return
        sequence = state.get(WEIGHTS_SEQ_NO, 0)
        if sequence == 0 or sequence > self._weights_seq_no:
            weights = state[COMPONENT_RL_MODULE]
            if isinstance(weights, dict) and DEFAULT_MODULE_ID in weights:
                weights = weights[DEFAULT_MODULE_ID]
            self.module.set_state(weights)
            self._weights_seq_no = max(self._weights_seq_no, sequence)

    def stop(self) -> None:
        self.sampler = None
