"""What a user must see of each iteration's rollouts (DESIGN.md "metrics"), as pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.trajectory import Component, Trajectory
from rexrag_env.protocol import THINK_OPEN


def solved_questions(trajectories: Sequence[Trajectory]) -> dict[str, bool]:
    """Per question of ``trajectories`` (in order of appearance), whether any of them is
    correct: the group-level outcome dead ends and rescues are defined by."""
    solved: dict[str, bool] = {}
    for t in trajectories:
        solved[t.example_id] = solved.get(t.example_id, False) or t.correct
    return solved


def dead_end_fraction(trajectories: Sequence[Trajectory]) -> float:
    """Fraction of questions none of whose ``trajectories`` is correct (spec §3.3's
    ``INFO/num_leq_threshold`` as a fraction): pass originals only for "before
    probing", originals plus kept probes for "after"."""
    solved = solved_questions(trajectories)
    return float(np.mean([not s for s in solved.values()])) if solved else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


#: Words of an exploratory prompt's opening that mark a doubt in a policy's own text.
DOUBT_OPENING_WORDS = 4


def doubt_openings(prompts: Sequence[str], words: int = DOUBT_OPENING_WORDS) -> list[str]:
    """The first ``words`` words of each exploratory prompt after its ``<think>``
    ("Wait, I may have", "Let me double-check: perhaps", …): the phrases by which a
    policy's own text shows a doubt (the pool is also what the SynthWiki warm starts
    doubt with)."""
    openings = {" ".join(p.removeprefix(THINK_OPEN).split()[:words]) for p in prompts}
    return sorted(opening for opening in openings if opening)


def doubts(original: Trajectory, openings: Sequence[str]) -> bool:
    """Whether an original's own text (its actions) contains a doubt's opening."""
    return any(opening in turn.action for turn in original.turns for opening in openings)


def self_doubt_rate(originals: Sequence[Trajectory], openings: Sequence[str]) -> float:
    """The share of ``originals`` that :func:`doubts`: how often the policy doubts
    without a probe's prompt."""
    return _mean([doubts(t, openings) for t in originals])


def group_outcomes(
    originals: Sequence[Trajectory], kept_probes: Sequence[Trajectory]
) -> dict[str, float]:
    """``rescued_groups``: questions whose originals are all wrong and that a right kept
    probe rescues (the groups where a probe turns the originals' advantages negative);
    ``right_probes_in_solved_groups``: right kept probes of questions an original had
    already answered (their credit only competes with the right originals')."""
    solved = solved_questions(originals)
    rescued = {t.example_id for t in kept_probes if t.correct and not solved.get(t.example_id)}
    return {
        "rescued_groups": float(len(rescued)),
        "right_probes_in_solved_groups": float(
            sum(t.correct and solved.get(t.example_id, False) for t in kept_probes)
        ),
    }


def rollout_metrics(
    trajectories: Sequence[Trajectory],
    kept_probes: Sequence[Trajectory],
    openings: Sequence[str] = (),
) -> dict[str, float]:
    """Accuracy, dead ends, probing and behaviour statistics of one iteration's sample.

    ``trajectories``: every sampled trajectory (originals and all spawned probes);
    ``kept_probes``: the probes the filter kept for the update; ``openings``: the doubt
    phrases of :func:`self_doubt_rate` (:func:`doubt_openings` of the pool).
    """
    originals = [t for t in trajectories if not t.is_probe]
    probes = [t for t in trajectories if t.is_probe]
    turns = sum(t.num_turns for t in trajectories)
    return {
        **group_outcomes(originals, kept_probes),
        "self_doubt_rate": self_doubt_rate(originals, openings),
        "accuracy_original": _mean([t.correct for t in originals]),
        "accuracy_probe": _mean([t.correct for t in probes]),
        "accuracy_probe_kept": _mean([t.correct for t in kept_probes]),
        "dead_end_fraction_before_probing": dead_end_fraction(originals),
        "dead_end_fraction_after_probing": dead_end_fraction([*originals, *kept_probes]),
        "num_questions": float(len({t.example_id for t in originals})),
        "num_trajectories": float(len(trajectories)),
        "searches_per_trajectory": _mean([t.num_searches for t in trajectories]),
        "turns_per_trajectory": _mean([t.num_turns for t in trajectories]),
        "invalid_action_rate": sum(t.invalid_actions for t in trajectories) / max(turns, 1),
        "response_length": _mean([len(t.token_ids) - t.prompt_length for t in trajectories]),
        "sampled_tokens": float(
            sum(c == Component.MODEL for t in trajectories for c in t.components)
        ),
    }


def env_steps_sampled(trajectories: Sequence[Trajectory]) -> int:
    """Environment steps (turns) the policy played: every turn of an original, and a
    probe's turns after its exploratory prompt (the turns before are its original's).
    RLlib's ``num_env_steps_sampled`` counts these."""
    steps = 0
    for trajectory in trajectories:
        kinds = [turn.action_type for turn in trajectory.turns]
        start = kinds.index("probe_prompt") + 1 if "probe_prompt" in kinds else 0
        steps += len(kinds) - start
    return steps


def episode_stats(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """RLlib's standard episode keys over the originals (the policy's own episodes;
    probes are continued from them): return (the env's reward: EM for ``SearchQAEnv``)
    and length in turns."""
    originals = [t for t in trajectories if not t.is_probe]
    return {
        "episode_return_mean": _mean([t.reward for t in originals]),
        "episode_len_mean": _mean([t.num_turns for t in originals]),
    }
