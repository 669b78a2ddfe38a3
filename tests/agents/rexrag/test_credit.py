"""Where a probe's credit goes: components, the probe_credit options, the originals'
behaviour option and the per-component metrics, against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from agents.rexrag.credit import (
    COMPONENT_NAMES,
    PROBE_CREDITS,
    CreditComponent,
    component_means,
    component_sums,
    credit_components,
)
from agents.rexrag.learner_batch import build_learner_batch
from agents.rexrag.rollout_metrics import (
    doubt_openings,
    group_outcomes,
    rollout_metrics,
    self_doubt_rate,
)
from agents.rexrag.token_batch import to_token_batch
from agents.trajectory import Turn
from tests.agents.rexrag.test_learner_batch import COMMON, M, P, Q, sample, trajectory

NONE, ORIGINAL, PREFIX, PROMPT, CONTINUATION = (int(c) for c in CreditComponent)


def linked_sample():
    """:func:`sample` with its probes' parents and branch points: probe 4 copies
    original 0 up to position 4 (a model token and a passage), probe 5 copies original 1
    up to position 3 (one model token)."""
    trajectories = sample()
    for index, t in enumerate(trajectories[:4]):
        t.rollout_id = f"{t.example_id}#{index % 2}"
    for probe, parent, branch in ((4, 0, 4), (5, 1, 3)):
        trajectories[probe].parent_id = trajectories[parent].rollout_id
        trajectories[probe].rollout_id = trajectories[parent].rollout_id + "/probe"
        trajectories[probe].branch_point = branch
    return trajectories


def test_the_components_of_every_token():
    boundary_probe = trajectory("q1", [P, P, M, M, Q, Q, M], 1.0, is_probe=True)
    boundary_probe.branch_point = 3  # position 3: a re-encoded token at the cut
    batch = to_token_batch([*linked_sample(), boundary_probe])
    assert batch.parent_row.tolist() == [-1, -1, -1, -1, 0, 1, -1]
    assert batch.branch_point.tolist() == [2, 2, 1, 1, 4, 3, 3]
    codes = credit_components(
        batch.loss_mask, batch.prompt_mask, batch.is_probe, batch.branch_point
    )
    assert codes[0].tolist() == [NONE, NONE, ORIGINAL, ORIGINAL, NONE, ORIGINAL, NONE]
    assert codes[4].tolist() == [NONE, NONE, PREFIX, NONE, PROMPT, PROMPT, CONTINUATION]
    assert codes[5].tolist() == [NONE, NONE, PREFIX, PROMPT, PROMPT, CONTINUATION, NONE]
    assert codes[6].tolist() == [NONE, NONE, PREFIX, CONTINUATION, PROMPT, PROMPT, CONTINUATION]
    assert (PROBE_CREDITS["copy"](codes) == batch.loss_mask).all()
    masked = PROBE_CREDITS["masked"](codes)
    assert masked[4].tolist() == [False, False, False, False, True, True, True]
    assert (masked[:4] == batch.loss_mask[:4]).all()
    group_only = PROBE_CREDITS["group_only"](codes)
    assert not group_only[4:].any() and (group_only[:4] == batch.loss_mask[:4]).all()


def build(credit: str, correction: str = "none", **options):
    batch = to_token_batch(linked_sample())
    old = np.full(batch.input_ids.shape, math.log(0.5), dtype=np.float32)
    return build_learner_batch(
        batch,
        old,
        old,
        keep_ratio=1.0,
        correction=correction,
        probe_credit=credit,
        **COMMON,
        **options,
    )


# q1 = {0, 0, 1, 0} (originals 0, 1; probes 4 right, 5 wrong): mean 1/4, unbiased std 1/2;
# q2 = {1, 0}: ±1/√2
WRONG_Q1, RIGHT_PROBE, Q2 = -0.5, 1.5, 1 / math.sqrt(2)


def test_copy_and_masked_train_the_probe_under_its_group_advantages():
    copy = build("copy")
    assert copy.columns["advantages"] == pytest.approx(
        [WRONG_Q1, WRONG_Q1, Q2, -Q2, RIGHT_PROBE, WRONG_Q1], rel=1e-5
    )
    assert copy.columns["loss_mask"][4].tolist() == [0, 0, 1, 0, 1, 1, 1]
    masked = build("masked")
    assert masked.columns["advantages"] == pytest.approx(copy.columns["advantages"])
    assert masked.columns["loss_mask"][4].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert masked.columns["loss_mask"][5].tolist() == [0, 0, 0, 1, 1, 1, 0]
    # out of the token count and the KL term too: the learner's mask is this one
    assert masked.columns["target_mask"].sum() == copy.columns["target_mask"].sum() - 2


def test_group_only_probes_turn_their_group_negative_and_leave_the_update():
    group_only = build("group_only")
    # the probes count in q1's statistics (its originals are -1/2, not 0 as in GRPO)...
    assert group_only.columns["advantages"] == pytest.approx(
        [WRONG_Q1, WRONG_Q1, Q2, -Q2], rel=1e-5
    )
    # ...but carry no loss, so their rows leave the learner's columns
    assert len(group_only.columns["input_ids"]) == 4
    assert group_only.stats["probes_kept"] == 2 and group_only.stats["alpha"] == pytest.approx(
        1 / 3
    )


def test_without_probes_the_all_wrong_group_gives_no_signal():
    batch = to_token_batch(linked_sample()[:4])
    old = np.full(batch.input_ids.shape, math.log(0.5), dtype=np.float32)
    grpo = build_learner_batch(batch, old, old, keep_ratio=0.0, correction="none", **COMMON)
    assert grpo.columns["advantages"][:2].tolist() == [0.0, 0.0]


def test_per_component_statistics_at_theta_old_by_hand():
    stats = build("copy").stats
    # tokens: originals 3 + 2 + 2 + 3; prefixes 1 + 1; prompts 2 + 2; continuations 1 + 1
    counts = {name: stats[f"credit_{name}_tokens"] for name in ("original", "prefix", "prompt")}
    assert counts == {"original": 10, "prefix": 2, "prompt": 4}
    assert stats["credit_continuation_tokens"] == 2
    # with correction "none" every weight is 1, so the push of a token is |A|
    original = 5 * 0.5 + 5 * Q2
    prefix = RIGHT_PROBE + 0.5
    total = original + prefix + 2 * prefix + prefix
    assert stats["credit_original_share"] == pytest.approx(original / total, rel=1e-5)
    assert stats["credit_prompt_share"] == pytest.approx(2 * prefix / total, rel=1e-5)
    assert stats["credit_prefix_weight_mean"] == pytest.approx(1.0)
    assert stats["credit_prefix_clip_fraction_old"] == 0.0
    assert math.isnan(stats["credit_prefix_entropy"])  # no entropy given
    masked = build("masked", entropy=np.full((6, 7), 0.25, dtype=np.float32)).stats
    assert masked["credit_prefix_tokens"] == 0 and math.isnan(masked["credit_prefix_weight_mean"])
    assert masked["credit_prefix_share"] == 0.0
    assert masked["credit_prompt_entropy"] == pytest.approx(0.25)


def test_the_official_correction_starts_prompt_tokens_outside_the_clip():
    """The foreign-prompt artefact: under ``rexrag`` a prompt token's weight π_old/q is
    far from 1 when π_old is far from the pool's probability, so it is clipped at θ_old."""
    batch = to_token_batch(linked_sample())
    old = np.full(batch.input_ids.shape, math.log(0.5), dtype=np.float32)
    old[batch.prompt_mask] = -14.0  # a foreign prompt
    stats = build_learner_batch(
        batch, old, old, keep_ratio=1.0, correction="rexrag", probe_credit="copy", **COMMON
    ).stats
    assert stats["credit_prompt_clip_fraction_old"] == 1.0
    assert stats["credit_continuation_clip_fraction_old"] == 0.0


def test_originals_under_policy_keep_ratio_one_and_probes_keep_the_mixture():
    mixture = build("copy", correction="rexrag")
    policy = build("copy", correction="rexrag", original_behaviour="policy")
    old = math.log(0.5)
    originals = policy.columns["loss_mask"][:4].astype(bool)
    assert np.allclose(policy.columns["behaviour_logprobs"][:4][originals], old)
    assert np.allclose(
        mixture.columns["behaviour_logprobs"][:4][originals], old + math.log(1 - 1 / 3)
    )
    assert np.allclose(
        policy.columns["behaviour_logprobs"][4:], mixture.columns["behaviour_logprobs"][4:]
    )
    sequence = build("copy", correction="sequence")
    on_policy = build("copy", correction="sequence", original_behaviour="policy")
    # the sequence mode scales originals' advantages by 1/(1-α); "policy" does not
    assert sequence.columns["advantages"][:4] == pytest.approx(
        1.5 * on_policy.columns["advantages"][:4], rel=1e-5
    )
    assert on_policy.columns["advantages"][4:] == pytest.approx(sequence.columns["advantages"][4:])


def test_learner_side_component_sums_add_up_to_means():
    components = torch.tensor([[ORIGINAL, PREFIX, PROMPT, NONE], [ORIGINAL, ORIGINAL, NONE, NONE]])
    mask = components != NONE
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.3, 0.5, 9.0, 9.0]])
    first = component_sums({"kl": kl}, mask, components)
    second = component_sums({"kl": kl[:1]}, mask[:1], components[:1])
    totals = {name: first[name] + second[name] for name in first}
    means = component_means(totals, ("kl",))
    assert means["credit_original_kl"] == pytest.approx((0.1 + 0.3 + 0.5 + 0.1) / 4)
    assert means["credit_prompt_kl"] == pytest.approx(0.3)
    assert math.isnan(means["credit_continuation_kl"])


def test_rescued_groups_right_probes_in_solved_groups_and_self_doubt():
    trajectories = linked_sample()
    originals, probes = trajectories[:4], trajectories[4:]
    right_in_q2 = trajectory("q2", [P, M, Q, M], 1.0, is_probe=True)
    outcomes = group_outcomes(originals, [probes[0], probes[1], right_in_q2])
    assert outcomes == {"rescued_groups": 1.0, "right_probes_in_solved_groups": 1.0}
    openings = doubt_openings(
        ["<think> Wait, I may have missed it.", "<think> Let me double-check: perhaps not."]
    )
    assert openings == ["Let me double-check: perhaps", "Wait, I may have"]
    originals[0].turns = [Turn("<think>x</think><think> Wait, I may have erred", "", "search")]
    assert self_doubt_rate(originals, openings) == 0.25
    metrics = rollout_metrics(trajectories, [probes[0]], openings)
    assert metrics["self_doubt_rate"] == 0.25 and metrics["rescued_groups"] == 1.0


def test_unknown_options_are_refused_by_name():
    from agents.rexrag import RexRagConfig

    config = RexRagConfig().training(
        probe_credit="tree", original_behaviour="mu", advantage_baseline="global"
    )
    with pytest.raises(ValueError, match="probe_credit must be one of") as error:
        config.check_settings()
    assert "original_behaviour must be one of ('mixture', 'policy')" in str(error.value)
    assert "advantage_baseline must be one of ('group', 'group_or_batch')" in str(error.value)


def test_under_sequence_the_ratio_starts_at_one_and_each_push_counts_its_weight_once():
    """``sequence`` scales advantages by a trajectory weight and leaves the ratio at 1: no
    token starts outside the clip, and a component's share of the push is its share of
    Σ|A| over the learner's own advantages (the weight counted once, not squared)."""
    trajectories = linked_sample()
    for parent in trajectories[:2]:  # the probes' parents met the trigger
        parent.probe_eligible = True
    batch = to_token_batch(trajectories)
    old = np.full(batch.input_ids.shape, math.log(0.5), dtype=np.float32)
    prepared = build_learner_batch(
        batch, old, old, keep_ratio=1.0, correction="sequence", probe_credit="copy", **COMMON
    )
    columns, stats = prepared.columns, prepared.stats
    weights = columns["advantages"] / build("copy").columns["advantages"]
    assert weights.min() < 0.9 and weights.max() > 1.1  # originals and probes weighted apart
    push = np.abs(columns["advantages"])[:, None] * columns["loss_mask"]
    for code, name in COMPONENT_NAMES.items():
        share = push[columns["credit_component"] == code].sum() / push.sum()
        assert stats[f"credit_{name}_share"] == pytest.approx(share, rel=1e-5), name
        if stats[f"credit_{name}_tokens"]:
            assert stats[f"credit_{name}_clip_fraction_old"] == 0.0, name
    assert stats["importance_weight_clip_fraction"] == 0.0
