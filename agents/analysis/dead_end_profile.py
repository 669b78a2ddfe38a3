"""The dead-end profile of a preset's starting policy (``rexrag profile --config NAME``).

Whether REX-RAG can help depends on the policy it starts from: if the policy already
goes on after the first hop now and then, GRPO finds the way without probes; if it
never does, only a probe can show it; and a probe only teaches if its prompt is text
the policy could have written. This module measures those quantities as the trainer
sees them: the preset's own sampler (:class:`~agents.rexrag.mixed_sampling.MixedSampler`:
groups of ``group_size`` originals at the rollout temperature, then probes of the wrong
ones with the preset's trigger and ``probe_prob``), on its own training questions.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from agents.analysis.paired_stats import Interval, proportion_interval
from agents.rexrag import RexRagConfig
from agents.rexrag.logprobs import response_token_logprobs
from agents.rexrag.rollout_metrics import doubt_openings, doubts
from agents.rexrag.token_batch import to_token_batch
from agents.trajectory import Trajectory

#: Rollouts scored per forward pass when measuring the probes' prompts.
SCORING_BATCH = 32


@dataclass(frozen=True)
class DeadEndProfile:
    """What :func:`dead_end_profile` measured (rates are fractions)."""

    preset: str
    policy: str
    dataset: str
    group_size: int
    passes: int
    multi_hop_rollouts: int
    #: multi-hop rollouts that search again after their first search
    continue_rate: Interval
    #: accuracy of those
    right_given_continue: Interval | None
    #: accuracy of the originals by number of hops
    accuracy_by_hops: dict[int, Interval]
    #: multi-hop questions whose estimated P(right) is below 1/group_size: where a group
    #: of originals most likely holds no right answer for GRPO to learn from
    hopeless_question_share: float
    multi_hop_questions: int
    #: mean log π_old per token of the probes' inserted prompts
    prompt_logprob_per_token: float
    prompt_tokens: int
    self_doubt_rate: Interval
    #: multi-hop groups all of whose originals are wrong (GRPO learns nothing from them)
    dead_end_group_rate: float
    #: multi-hop groups most of whose originals give one and the same wrong answer
    same_wrong_group_rate: float
    #: multi-hop groups all of whose originals are wrong and a probe of which is right
    rescued_group_rate: Interval
    probes: int
    probe_accuracy: float

    def rows(self) -> list[tuple[str, str]]:
        """The profile as (quantity, value) rows, the table ``rexrag profile`` prints."""

        def rate(interval: Interval | None) -> str:
            if interval is None:
                return "- (no rollout)"
            return f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}] (n={interval.n})"

        rows = [
            ("policy", self.policy),
            ("questions", f"{self.dataset}: {self.multi_hop_questions} multi-hop"),
            (
                "sampling",
                f"{self.passes} pass(es) of groups of {self.group_size}, "
                f"{self.multi_hop_rollouts} multi-hop rollouts",
            ),
            ("continue after hop 1 (multi-hop)", rate(self.continue_rate)),
            ("P(right | continue)", rate(self.right_given_continue)),
        ]
        rows += [
            (f"accuracy, {hops}-hop", rate(interval))
            for hops, interval in sorted(self.accuracy_by_hops.items())
        ]
        rows += [
            (
                f"multi-hop questions with P(right) < 1/{self.group_size}",
                f"{self.hopeless_question_share:.3f}",
            ),
            (
                "log pi_old per prompt token",
                f"{self.prompt_logprob_per_token:.2f} ({self.prompt_tokens} tokens)",
            ),
            ("self-doubt rate (originals)", rate(self.self_doubt_rate)),
            ("dead-end groups (all originals wrong)", f"{self.dead_end_group_rate:.3f}"),
            (
                "same wrong answer in most of a group (multi-hop)",
                f"{self.same_wrong_group_rate:.3f}",
            ),
            ("rescued groups (multi-hop, one probing pass)", rate(self.rescued_group_rate)),
            ("probes spawned (accuracy)", f"{self.probes} ({self.probe_accuracy:.3f})"),
        ]
        return rows

    def table(self) -> str:
        """A Markdown table of :meth:`rows`, headed by the preset's name."""
        lines = [f"| {self.preset} | |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        return "\n".join(lines)


def dead_end_profile(
    config: RexRagConfig,
    *,
    preset: str = "",
    passes: int = 2,
    limit: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> DeadEndProfile:
    """Profile ``config``'s starting policy (``config.llm``) on its training questions.

    Each of ``passes`` samples every question (the first ``limit``) once through the
    preset's mixed sampler: ``group_size`` originals, then probes of the wrong ones
    (always on, whatever ``config.probes`` says: the profile asks what probing would
    find). ``passes · group_size`` rollouts per question estimate its P(right).
    """
    from agents.llm.hf import HFGenerator
    from agents.llm.models import resolve_model
    from agents.rexrag.mixed_sampling import MixedSampler
    from rexrag_env.datasets import load_qa_dataset
    from rexrag_env.retrieval.factory import make_retriever

    questions = load_qa_dataset(config.dataset)[:limit]
    if not any(hops_of(q) >= 2 for q in questions):
        raise ValueError(
            f"{config.dataset!r} has no multi-hop questions (metadata num_hops): the "
            "profile is for SynthWiki-like splits"
        )
    retriever = make_retriever(config.retriever)
    policy = resolve_model(config.llm)
    generator = HFGenerator.from_pretrained(str(policy))
    pool = config.prompt_pool()
    sampler = MixedSampler.for_run(config, generator, retriever, probes=True)
    samples: list[list[Trajectory]] = []
    for index in range(passes):
        sampler.reseed(seed * 1_000_003 + index)
        samples.append(sampler.sample(questions).trajectories)
        log(f"pass {index + 1}/{passes}: {len(samples[-1])} trajectories")
    hops = {q.id: hops_of(q) for q in questions}
    originals = [t for sample in samples for t in sample if not t.is_probe]
    probes = [t for sample in samples for t in sample if t.is_probe]
    multi_hop = [t for t in originals if hops[t.example_id] >= 2]
    continued = [t for t in multi_hop if t.num_searches >= 2]
    log_per_token, prompt_tokens = prompt_logprob_per_token(
        generator.model, probes, config.temperature
    )
    per_question = defaultdict(list)
    for t in multi_hop:
        per_question[t.example_id].append(t.correct)
    counts = group_counts(samples, hops)
    openings = doubt_openings(pool)
    return DeadEndProfile(
        preset=preset,
        policy=str(config.llm),
        dataset=config.dataset,
        group_size=config.group_size,
        passes=passes,
        multi_hop_rollouts=len(multi_hop),
        continue_rate=proportion_interval(len(continued), len(multi_hop)),
        right_given_continue=(
            proportion_interval(sum(t.correct for t in continued), len(continued))
            if continued
            else None
        ),
        accuracy_by_hops={
            count: proportion_interval(
                sum(t.correct for t in originals if hops[t.example_id] == count),
                sum(hops[t.example_id] == count for t in originals),
            )
            for count in sorted(set(hops.values()))
        },
        hopeless_question_share=float(
            np.mean([np.mean(right) < 1 / config.group_size for right in per_question.values()])
        ),
        multi_hop_questions=len(per_question),
        prompt_logprob_per_token=log_per_token,
        prompt_tokens=prompt_tokens,
        self_doubt_rate=proportion_interval(
            sum(doubts(t, openings) for t in originals), len(originals)
        ),
        dead_end_group_rate=counts["dead_end"] / counts["groups"],
        same_wrong_group_rate=counts["same_wrong"] / counts["groups"],
        rescued_group_rate=proportion_interval(counts["rescued"], counts["groups"]),
        probes=len(probes),
        probe_accuracy=float(np.mean([t.correct for t in probes])) if probes else math.nan,
    )


def hops_of(question) -> int:
    """A question's evidence-chain length (SynthWiki's ``metadata["num_hops"]``; 0 if none)."""
    return int(question.metadata.get("num_hops", 0))


def group_counts(samples: Sequence[Sequence[Trajectory]], hops: dict[str, int]) -> dict[str, int]:
    """Counts over the multi-hop groups of every pass (a pass's question is one group):
    ``groups``; ``dead_end``: all originals wrong; ``same_wrong``: more than half of the
    originals give one and the same wrong answer (the confident dead end); ``rescued``:
    all originals wrong and a probe right."""
    counts = dict.fromkeys(("groups", "dead_end", "same_wrong", "rescued"), 0)
    for sample in samples:
        members: dict[str, list[Trajectory]] = defaultdict(list)
        for t in sample:
            if hops[t.example_id] >= 2:
                members[t.example_id].append(t)
        for group in members.values():
            originals = [t for t in group if not t.is_probe]
            wrong = Counter((t.answer or "").strip().lower() for t in originals if not t.correct)
            dead = not any(t.correct for t in originals)
            counts["groups"] += 1
            counts["dead_end"] += dead
            counts["same_wrong"] += bool(wrong) and wrong.most_common(1)[0][1] > len(originals) / 2
            counts["rescued"] += dead and any(t.correct for t in group if t.is_probe)
    return counts


@torch.no_grad()
def prompt_logprob_per_token(
    model, probes: Sequence[Trajectory], temperature: float
) -> tuple[float, int]:
    """(mean log π of the probes' PROBE_PROMPT tokens under ``model`` at the rollout
    ``temperature``, how many tokens): how natural the inserted prompts are to the
    policy, as the learner scores them (NaN with no probes)."""
    if not probes:
        return math.nan, 0
    total, count = 0.0, 0
    for start in range(0, len(probes), SCORING_BATCH):
        batch = to_token_batch(probes[start : start + SCORING_BATCH])
        logprobs = response_token_logprobs(
            model,
            torch.as_tensor(batch.input_ids),
            torch.as_tensor(batch.attention_mask),
            torch.as_tensor(batch.prompt_mask),
            temperature=temperature if temperature > 0 else 1.0,
        )
        total += float(logprobs[torch.as_tensor(batch.prompt_mask)].sum())
        count += int(batch.prompt_mask.sum())
    return total / count, count
