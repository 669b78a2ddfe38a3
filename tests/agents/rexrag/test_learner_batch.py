"""Trajectories → padded arrays → the learner's corrected columns, against hand-computed values."""

import math

import numpy as np
import pytest

from agents.rexrag.learner_batch import build_learner_batch, probe_prompt_scores
from agents.rexrag.rollout_metrics import (
    dead_end_fraction,
    env_steps_sampled,
    episode_stats,
    rollout_metrics,
)
from agents.rexrag.token_batch import to_token_batch
from agents.trajectory import Component, Trajectory, Turn
from rexrag_env.reward import zero_scores

P, M, N, Q = Component.PROMPT, Component.MODEL, Component.INFO, Component.PROBE_PROMPT  # N: info


def trajectory(example_id, labels, reward, is_probe=False, turns=1, em=None):
    """``em`` (default: ``reward``) is the answer's exact match, what "correct" means."""
    labels = [int(c) for c in labels]
    return Trajectory(
        example_id=example_id,
        question="q",
        golden_answers=["a"],
        data_source="t",
        token_ids=list(range(10, 10 + len(labels))),
        components=labels,
        sampling_logprobs=[-0.5 if c == Q else 0.0 for c in labels],
        prompt_length=labels.index(int(M)),
        turns=[Turn("<answer> x </answer>", "", "answer")] * turns,
        reward=reward,
        scores={**zero_scores(), "em": reward if em is None else em},
        is_probe=is_probe,
    )


def sample():
    """q1: two wrong originals and two probes (one right); q2: one right, one wrong."""
    return [
        trajectory("q1", [P, P, M, M, N, M], 0.0),
        trajectory("q1", [P, P, M, M], 0.0),
        trajectory("q2", [P, M, M], 1.0),
        trajectory("q2", [P, M, M, M], 0.0),
        trajectory("q1", [P, P, M, N, Q, Q, M], 1.0, is_probe=True),
        trajectory("q1", [P, P, M, Q, Q, M], 0.0, is_probe=True),
    ]


def test_token_batch_layout():
    batch = to_token_batch(sample())
    assert batch.input_ids.shape == (6, 7)
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert batch.loss_mask[0].tolist() == [False, False, True, True, False, True, False]
    assert batch.loss_mask[4].tolist() == [False, False, True, False, True, True, True]
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 0, 0]
    assert batch.prompt_start.tolist() == [6, 4, 3, 4, 4, 3]
    assert batch.response_start.tolist() == [2, 2, 1, 1, 2, 2]
    assert batch.sampling_logprobs[4, 4:6].tolist() == [-0.5, -0.5]  # the pool's log-probs
    assert batch.select([2]).input_ids.shape == (1, 3)  # trimmed to its longest row
    with pytest.raises(ValueError, match="token ids"):
        to_token_batch([Trajectory("x", "q", ["a"], "t")])


COMMON = {"keep_multiple_of": 1, "sequence_weight_cap": 2.0, "clip_low": 0.2, "clip_high": 0.2}


def old_logprobs(batch):
    old = np.full(batch.input_ids.shape, math.log(0.5), dtype=np.float32)
    old[4, 4:6] = -1.0  # probe 1's prompt: mean -1 (more natural)
    old[5, 3:5] = -3.0  # probe 2's prompt: mean -3
    return old


def test_filter_advantages_and_rexrag_correction_by_hand():
    batch = to_token_batch(sample())
    old = old_logprobs(batch)
    assert probe_prompt_scores(batch, old)[4:].tolist() == [-1.0, -3.0]
    result = build_learner_batch(batch, old, old, keep_ratio=0.25, correction="rexrag", **COMMON)
    assert result.rows.tolist() == [0, 1, 2, 3, 4]  # K = int(4 · 0.25) = 1: the natural probe
    assert result.kept_probe_accuracy == 1.0
    # q1 = {0, 0, 1}: mean 1/3, unbiased std 1/√3; q2 = {1, 0}: mean 1/2, std 1/√2
    a = 1 / math.sqrt(3)
    expected = [-a, -a, 1 / math.sqrt(2), -1 / math.sqrt(2), 2 * a]
    assert result.columns["advantages"] == pytest.approx(expected, rel=1e-4)
    stats = result.stats
    assert (stats["alpha"], stats["error_rate"]) == pytest.approx((0.2, 0.75))
    assert (stats["probes_spawned"], stats["probes_kept"]) == (2, 1)
    behaviour = result.columns["behaviour_logprobs"]
    # originals: q = (1-α)·π_old
    assert behaviour[0, 2] == pytest.approx(math.log(0.8 * 0.5))
    # the probe (response starts at 2, prompt at 4, so j = 2 prefix tokens):
    # prefix token 2: q = 0.8·0.5 + 0.2·0.5·0.75^(-1/2); first prompt token: 0.8·e^-1 + 0.2·1;
    # second prompt token: 0.8·e^-1 + 0.2·e^-0.5 (pool); continuation: q = π_old
    assert behaviour[4, 2] == pytest.approx(math.log(0.4 + 0.1 / math.sqrt(0.75)), rel=1e-5)
    assert behaviour[4, 4] == pytest.approx(math.log(0.8 * math.exp(-1) + 0.2), rel=1e-5)
    assert behaviour[4, 5] == pytest.approx(
        math.log(0.8 * math.exp(-1) + 0.2 * math.exp(-0.5)), rel=1e-5
    )
    assert behaviour[4, 6] == pytest.approx(math.log(0.5), rel=1e-5)
    assert stats["importance_weight_max"] == pytest.approx(1.25)  # originals: 1/(1-α)


def test_none_and_sequence_modes_and_no_probes():
    batch = to_token_batch(sample())
    old = old_logprobs(batch)
    none = build_learner_batch(batch, old, old, keep_ratio=1.0, correction="none", **COMMON)
    assert len(none.rows) == 6
    kept_old = old[none.rows]
    mask = none.columns["loss_mask"].astype(bool)
    assert np.allclose(none.columns["behaviour_logprobs"][mask], kept_old[mask])
    sequence = build_learner_batch(batch, old, old, keep_ratio=1.0, correction="sequence", **COMMON)
    plain = none.columns["advantages"]
    scaled = sequence.columns["advantages"]
    # originals are scaled by 1/(1-α) = 1.5 (α = 2/6); probes by π_old(τ)/q(τ) < 1
    assert scaled[:4] == pytest.approx(plain[:4] * 1.5, rel=1e-5)
    assert all(abs(s) < abs(p) for s, p in zip(scaled[4:], plain[4:], strict=True))
    grpo = build_learner_batch(batch, old, old, keep_ratio=0.0, correction="rexrag", **COMMON)
    assert grpo.rows.tolist() == [0, 1, 2, 3] and grpo.stats["alpha"] == 0.0
    assert grpo.kept_probe_accuracy is None


def test_the_sequence_mode_normalises_mu_by_the_observed_trigger_rate():
    """P(trigger) is the share of originals that could spawn a probe (3 of 4 here: the
    wrong ones), not 1 - accuracy: the estimate that makes the sequence weight exact."""
    trajectories = sample()
    for index in (0, 1, 3):
        trajectories[index].probe_eligible = True
    batch = to_token_batch(trajectories)
    old = old_logprobs(batch)
    none = build_learner_batch(batch, old, old, keep_ratio=1.0, correction="none", **COMMON)
    result = build_learner_batch(batch, old, old, keep_ratio=1.0, correction="sequence", **COMMON)
    assert result.stats["trigger_rate"] == 0.75 and result.stats["error_rate"] == 0.75
    trajectories[1].probe_eligible = False  # 2 of 4 could have spawned one
    halved = build_learner_batch(
        to_token_batch(trajectories), old, old, keep_ratio=1.0, correction="sequence", **COMMON
    )
    assert halved.stats["trigger_rate"] == 0.5
    # probe 4 (α = 1/3): π_old(τ) = 0.5·e^-1·e^-1·0.5 over its MODEL and prompt tokens;
    # μ(τ) = π_old(MODEL tokens) / P(trigger) · P_pool(prompt) = 0.25 / t · e^-1
    for stats_of, trigger in ((result, 0.75), (halved, 0.5)):
        policy = 0.25 * math.exp(-2)
        q = (2 / 3) * policy + (1 / 3) * 0.25 * math.exp(-1) / trigger
        expected = none.columns["advantages"][4] * policy / q
        assert stats_of.columns["advantages"][4] == pytest.approx(expected, rel=1e-5)


def test_nonfinite_logprobs_are_clamped_and_counted():
    batch = to_token_batch(sample())
    old = old_logprobs(batch)
    old[0, 2] = -np.inf
    old[1, 3] = np.nan
    result = build_learner_batch(batch, old, old, keep_ratio=1.0, correction="rexrag", **COMMON)
    assert result.stats["nonfinite_logprobs"] == 2
    for column in ("behaviour_logprobs", "reference_logprobs", "advantages"):
        assert np.isfinite(result.columns[column]).all()


def test_rollout_metrics():
    trajectories = sample()
    assert dead_end_fraction(trajectories[:4]) == 0.5  # q1's originals all failed
    metrics = rollout_metrics(trajectories, kept_probes=[trajectories[4]])
    assert metrics["dead_end_fraction_before_probing"] == 0.5
    assert metrics["dead_end_fraction_after_probing"] == 0.0  # the kept probe escaped it
    assert metrics["accuracy_original"] == 0.25 and metrics["accuracy_probe"] == 0.5
    assert metrics["accuracy_probe_kept"] == 1.0
    assert metrics["num_questions"] == 2 and metrics["sampled_tokens"] == 14


def test_accuracy_and_dead_ends_are_exact_match_whatever_the_env_rewards():
    """A user's env may reward a wrong answer (a format bonus): it is still wrong, and
    the return is the env's reward."""
    rewarded_but_wrong = trajectory("q1", [P, M], 0.25, em=0.0)
    right = trajectory("q2", [P, M], 1.25, em=1.0)
    metrics = rollout_metrics([rewarded_but_wrong, right], kept_probes=[])
    assert metrics["accuracy_original"] == 0.5
    assert metrics["dead_end_fraction_before_probing"] == 0.5
    assert episode_stats([rewarded_but_wrong, right])["episode_return_mean"] == 0.75


def test_env_steps_count_the_turns_played_and_episodes_are_the_originals():
    search = Turn("<search> q </search>", "<information>…</information>", "search")
    answer = Turn("<answer> x </answer>", "", "answer")
    original = trajectory("q1", [P, M, M], 0.0)
    original.turns = [search, search, answer]
    probe = trajectory("q1", [P, M, Q, M], 1.0, is_probe=True)
    # the probe copies the original's first two turns, then plays two of its own
    probe.turns = [search, search, Turn("", "<think> doubt", "probe_prompt"), search, answer]
    assert env_steps_sampled([original, probe]) == 3 + 2
    assert episode_stats([original, probe]) == {"episode_return_mean": 0.0, "episode_len_mean": 3}
