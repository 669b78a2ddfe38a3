"""Mixed sampling (spec §3.2): original rollouts of each question, plus probes of wrong ones.

This is the rollout worker's algorithmic core, free of Ray: the EnvRunner wraps it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.base import start_episodes
from agents.llm.base import Generator
from agents.llm.seeding import stream_seed
from agents.llm_agent import LLMAgent
from agents.rexrag.probes import PromptPool, make_probe
from agents.trajectory import Trajectory
from rexrag_env.datasets import QAExample
from rexrag_env.vector import SearchQAVectorEnv

#: The streams below a sample's seed (see :func:`agents.llm.seeding.stream_seed`).
PROBE_DRAWS, GENERATION = 0, 1


@dataclass
class MixedSample:
    """What one :meth:`MixedSampler.sample` returns: the trajectories and where its wall
    time went (``generation`` and ``retrieval``: the agent's, over both phases;
    ``probing``: the whole probe phase)."""

    trajectories: list[Trajectory]
    seconds: dict[str, float]


class MixedSampler:
    """Samples ``group_size`` originals per question, then probes of the wrong ones.

    Trigger ``"wrong_answer"`` (the official code): every original that answered
    wrongly in a search-enabled turn spawns a probe with probability ``probe_prob``.
    Trigger ``"dead_end_group"``: the same, but only in groups whose originals all
    failed (the paper's notion of a dead end). A probe resumes its question at the turn
    after the replaced answer, with the same policy; probes are not probed again.
    Probes are generated after all originals finish; the distribution is the same as
    spawning them mid-batch, at the cost of one more batched phase. Both phases play
    in one vector env: the probes in its first envs, each reset at its probe's turn.

    Args:
        agent: the LLMAgent (generator + sampling settings) that plays every episode.
        make_envs: ``make_envs(n, questions)`` builds a ``SearchQAVectorEnv`` of ``n``
            envs over ``questions`` with ``AutoresetMode.DISABLED`` (every episode
            starts from a reset that names its question).
        prompts: the exploratory prompt pool (text).
        group_size, probe_prob, probe_trigger, probes, max_turns: the run's fields of
            those names (:class:`~agents.rexrag.settings.RexRagSettings`); ``max_turns``
            tells a search-enabled turn from the final one.
        seed: seeds the probe draws (spawn coin and prompt choice) and the agent's
            sampling, as :meth:`reseed`.
    """

    def __init__(
        self,
        agent: LLMAgent,
        make_envs: Callable[[int, Sequence[QAExample]], SearchQAVectorEnv],
        prompts: Sequence[str],
        *,
        group_size: int,
        probe_prob: float,
        max_turns: int,
        probe_trigger: str = "wrong_answer",
        probes: bool = True,
        seed: int | None = None,
    ):
        self.agent = agent
        self.make_envs = make_envs
        self.prompts = list(prompts)
        self.prompt_ids = [
            agent.tokenizer.encode(p, add_special_tokens=False) for p in self.prompts
        ]
        self.pool = PromptPool(self.prompt_ids)
        self.group_size = group_size
        self.probe_prob = probe_prob
        self.max_turns = max_turns
        self.probe_trigger = probe_trigger
        self.probes = probes
        self.rng = random.Random()
        if seed is not None:
            self.reseed(seed)
        self._envs: SearchQAVectorEnv | None = None

    @classmethod
    def for_run(
        cls,
        config: Any,
        generator: Generator,
        retriever: Any,
        *,
        probes: bool | None = None,
        seed: int | None = None,
    ) -> MixedSampler:
        """The sampler a run's EnvRunner uses: ``config``'s (a
        :class:`~agents.rexrag.rexrag.RexRagConfig`'s) agent, envs, pool and knobs over
        ``generator`` and ``retriever`` (``probes`` overrides the run's)."""
        return cls(
            config.make_agent(generator),
            lambda count, questions: config.make_vector_env(count, questions, retriever),
            config.prompt_pool(),
            group_size=config.group_size,
            probe_prob=config.probe_prob,
            max_turns=config.max_turns,
            probe_trigger=config.probe_trigger,
            probes=config.probes if probes is None else probes,
            seed=seed,
        )

    def reseed(self, seed: int) -> None:
        """Seed the probe draws and the agent's sampling (two streams below ``seed``):
        one seed fixes a whole sample."""
        self.rng = random.Random(stream_seed(seed, PROBE_DRAWS))
        self.agent.reseed(stream_seed(seed, GENERATION))

    def _vector_env(self, count: int, questions: Sequence[QAExample]) -> SearchQAVectorEnv:
        """A vector env of at least ``count`` envs (rebuilt larger when a sample needs it;
        every episode starts from a reset naming its question, so which instance plays
        it, and which questions the env was built over, are moot)."""
        if self._envs is None or self._envs.num_envs < count:
            self._envs = self.make_envs(count, questions)
        return self._envs

    def sample(self, questions: Sequence[QAExample]) -> MixedSample:
        """Originals (``group_size`` per question, in question order, the k-th of a group
        named ``question#k``), then the probes (each naming its parent)."""
        self.agent.seconds = dict.fromkeys(self.agent.seconds, 0.0)
        options = [{"example": q} for q in questions for _ in range(self.group_size)]
        originals = self.agent.play(self._vector_env(len(options), questions), options)
        for index, original in enumerate(originals):
            original.rollout_id = f"{original.example_id}#{index % self.group_size}"
        if not self.probes:
            return MixedSample(originals, {**self.agent.seconds, "probing": 0.0})
        start = time.perf_counter()
        solved = {t.example_id for t in originals if t.correct}
        parents = [t for t in originals if self._should_probe(t, solved)]
        probes = []
        for parent in parents:
            index = self.rng.randrange(len(self.prompts))
            probes.append(
                make_probe(
                    parent,
                    self.prompts[index],
                    self.prompt_ids[index],
                    self.agent.tokenizer,
                    self.pool.token_logprobs(self.prompt_ids[index]),
                )
            )
        envs = self._vector_env(len(probes), questions)
        by_id = {q.id: q for q in questions}
        start_episodes(
            envs,
            [
                {
                    "example": by_id[parent.example_id],
                    "turn": parent.num_turns,
                    "num_searches": parent.num_searches,
                }
                for parent in parents
            ],
        )
        self.agent.continue_trajectories(envs, probes)
        probing = time.perf_counter() - start
        return MixedSample(originals + probes, {**self.agent.seconds, "probing": probing})

    def _should_probe(self, trajectory: Trajectory, solved: set[str]) -> bool:
        """Whether ``trajectory`` spawns a probe: it meets the trigger (marked
        ``probe_eligible``: the correction's trigger rate counts these), then wins the
        ``probe_prob`` coin. ``solved``: the questions some original answered right."""
        trajectory.probe_eligible = self._meets_trigger(trajectory, solved)
        return trajectory.probe_eligible and self.rng.random() < self.probe_prob

    def _meets_trigger(self, trajectory: Trajectory, solved: set[str]) -> bool:
        answered_in_search_turn = (
            trajectory.turns
            and trajectory.turns[-1].action_type == "answer"
            and not trajectory.truncated
            and trajectory.num_turns <= self.max_turns
        )
        if not answered_in_search_turn or trajectory.correct:
            return False
        if self.probe_trigger == "dead_end_group":
            return trajectory.example_id not in solved
        return True
