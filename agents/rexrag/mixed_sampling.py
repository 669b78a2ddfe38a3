"""Mixed sampling (spec §3.2): original rollouts of each question, plus probes of wrong ones.

This is the rollout worker's algorithmic core, free of Ray: the EnvRunner wraps it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from agents.base import start_episodes
from agents.llm.seeding import stream_seed
from agents.llm_agent import LLMAgent
from agents.rexrag.probes import PromptPool, make_probe
from agents.trajectory import Trajectory
from rexrag_env.datasets import QAExample
from rexrag_env.vector import SearchQAVectorEnv

#: The streams below a sample's seed (see :func:`agents.llm.seeding.stream_seed`).
PROBE_DRAWS, GENERATION = 0, 1


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
        make_envs: builds a ``SearchQAVectorEnv`` of ``n`` envs with
            ``AutoresetMode.DISABLED`` (dataset-independent: questions come per reset).
        prompts: the exploratory prompt pool (text).
        group_size, probe_prob, probe_trigger: spec §5.1 knobs (see ``RexRagConfig``).
        seed: seeds the probe draws (spawn coin and prompt choice) and the agent's
            sampling, as :meth:`reseed`.
    """

    def __init__(
        self,
        agent: LLMAgent,
        make_envs: Callable[[int], SearchQAVectorEnv],
        prompts: Sequence[str],
        group_size: int,
        probe_prob: float,
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
        self.probe_trigger = probe_trigger
        self.probes = probes
        self.rng = random.Random()
        if seed is not None:
            self.reseed(seed)
        self._envs: SearchQAVectorEnv | None = None
        self.probe_seconds = 0.0  # wall time of the last sample's probe phase

    def reseed(self, seed: int) -> None:
        """Seed the probe draws and the agent's sampling (two streams below ``seed``):
        one seed fixes a whole sample."""
        self.rng = random.Random(stream_seed(seed, PROBE_DRAWS))
        self.agent.reseed(stream_seed(seed, GENERATION))

    def _vector_env(self, count: int) -> SearchQAVectorEnv:
        """A vector env of at least ``count`` envs (rebuilt larger when a sample needs it;
        every episode starts from a full reset, so which instance plays it is moot)."""
        if self._envs is None or self._envs.num_envs < count:
            self._envs = self.make_envs(count)
        return self._envs

    def sample(self, questions: Sequence[QAExample]) -> list[Trajectory]:
        """Originals (``group_size`` per question, in question order, the k-th of a group
        named ``question#k``), then the probes (each naming its parent)."""
        options = [{"example": q} for q in questions for _ in range(self.group_size)]
        originals = self.agent.play(self._vector_env(len(options)), options)
        for index, original in enumerate(originals):
            original.rollout_id = f"{original.example_id}#{index % self.group_size}"
        self.probe_seconds = 0.0
        if not self.probes:
            return originals
        start = time.perf_counter()
        parents = [t for t in originals if self._should_probe(t, originals)]
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
        envs = self._vector_env(len(probes))
        start_episodes(
            envs,
            [
                {
                    "example": next(q for q in questions if q.id == parent.example_id),
                    "turn": parent.num_turns,
                    "num_searches": parent.num_searches,
                }
                for parent in parents
            ],
        )
        self.agent.continue_trajectories(envs, probes)
        self.probe_seconds = time.perf_counter() - start
        return originals + probes

    def _should_probe(self, trajectory: Trajectory, originals: Sequence[Trajectory]) -> bool:
        """Whether ``trajectory`` spawns a probe: it meets the trigger (marked
        ``probe_eligible``: the correction's trigger rate counts these), then wins the
        ``probe_prob`` coin."""
        trajectory.probe_eligible = self._meets_trigger(trajectory, originals)
        return trajectory.probe_eligible and self.rng.random() < self.probe_prob

    def _meets_trigger(self, trajectory: Trajectory, originals: Sequence[Trajectory]) -> bool:
        answered_in_search_turn = (
            trajectory.turns
            and trajectory.turns[-1].action_type == "answer"
            and not trajectory.truncated
            and trajectory.num_turns <= self._envs.max_turns
        )
        if not answered_in_search_turn or trajectory.correct:
            return False
        if self.probe_trigger == "dead_end_group":
            group = [t for t in originals if t.example_id == trajectory.example_id]
            return not any(t.correct for t in group)
        return True
