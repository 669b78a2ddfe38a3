"""What a user must see of each iteration's rollouts (DESIGN.md "metrics"), as pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.trajectory import Component, Trajectory


def dead_end_fraction(trajectories: Sequence[Trajectory]) -> float:
    """Fraction of questions none of whose ``trajectories`` is correct (spec §3.3's
    ``INFO/num_leq_threshold`` as a fraction): pass originals only for "before
    probing", originals plus kept probes for "after"."""
    solved: dict[str, bool] = {}
    for t in trajectories:
        solved[t.example_id] = solved.get(t.example_id, False) or t.correct
    return float(np.mean([not s for s in solved.values()])) if solved else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def rollout_metrics(
    trajectories: Sequence[Trajectory], kept_probes: Sequence[Trajectory]
) -> dict[str, float]:
    """Accuracy, dead ends, probing and behaviour statistics of one iteration's sample.

    ``trajectories``: every sampled trajectory (originals and all spawned probes);
    ``kept_probes``: the probes the filter kept for the update.
    """
    originals = [t for t in trajectories if not t.is_probe]
    probes = [t for t in trajectories if t.is_probe]
    turns = sum(t.num_turns for t in trajectories)
    return {
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
