"""The pure math of the learner against hand-computed values (spec §4.4)."""

import math

import pytest
import torch

from agents.rexrag.losses import clipped_surrogate, grpo_advantages, low_var_kl, masked_mean


def test_grpo_advantages_groups_of_different_sizes():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    groups = torch.tensor([7, 7, 7, 7, 3, 9, 9, 9])
    advantages = grpo_advantages(rewards, groups)
    # group 7: mean 0.5, unbiased std sqrt(1/3) -> ±0.5/0.57735 = ±0.8660
    assert advantages[:4].tolist() == pytest.approx([0.8660, -0.8660, -0.8660, 0.8660], abs=1e-3)
    assert advantages[4].item() == pytest.approx(1.0, abs=1e-5)  # a group of one: mean 0, std 1
    assert advantages[5:].tolist() == [0.0, 0.0, 0.0]  # all-equal rewards carry no signal


def test_clipped_surrogate_hand_computed():
    # three tokens: ratio 1.5 (A=+1, clipped at 1.2), ratio 0.5 (A=+1, not clipped),
    # ratio 0.5 (A=-1, clipped at 0.8); a fourth token is masked out
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 0.5, 100.0]]))
    behaviour = torch.zeros(1, 4)
    per_token_advantage_rows = torch.tensor([1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    loss, stats = clipped_surrogate(logprobs, behaviour, per_token_advantage_rows, mask)
    assert loss.item() == pytest.approx((-1.2 + -0.5) / 2)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["ratio_max"].item() == pytest.approx(1.5)
    negative, _ = clipped_surrogate(
        logprobs[:, 2:3], behaviour[:, :1], torch.tensor([-1.0]), torch.ones(1, 1)
    )
    assert negative.item() == pytest.approx(0.8)


def test_the_loss_is_a_token_mean_not_a_sequence_mean():
    """Rows of 1 and 3 trained tokens, ratio 1, advantages +1 and -1: the token mean is
    -(1·1 - 1·3)/4 = 0.5 (the long wrong row weighs 3×); a sequence mean would be 0."""
    logprobs = torch.zeros(2, 4)
    mask = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    loss, _ = clipped_surrogate(logprobs, logprobs, torch.tensor([1.0, -1.0]), mask)
    assert loss.item() == pytest.approx(0.5)
    per_row = -torch.tensor([1.0, -1.0])  # each row's own token mean
    assert loss.item() != pytest.approx(per_row.mean().item())
    kl = masked_mean(low_var_kl(torch.tensor([[0.0, 0, 0, 0], [-1.0, -1, -1, 0]]), logprobs), mask)
    assert kl.item() == pytest.approx(3 * (math.exp(1) - 2) / 4)  # 0 on row 1, e-2 per token


def test_clipped_surrogate_gradient_only_through_kept_tokens():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss, _ = clipped_surrogate(logprobs, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask)
    loss.backward()
    assert logprobs.grad[mask == 0].abs().sum() == 0
    assert (logprobs.grad[mask == 1] != 0).all()


def test_low_var_kl_hand_computed():
    logp = torch.log(torch.tensor([0.5, 0.3, 1e-30]))
    ref = torch.log(torch.tensor([0.25, 0.3, 0.9]))
    kl = low_var_kl(logp, ref)
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1)  # e^{log .5} - log .5 - 1
    assert kl[1].item() == 0.0
    assert kl[2].item() == 10.0  # clamped
    assert (low_var_kl(ref, logp) >= 0).all()


def test_masked_mean_with_empty_mask():
    assert masked_mean(torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0


def test_a_tied_group_takes_the_batch_baseline_under_group_or_batch():
    from agents.rexrag.losses import ADVANTAGE_BASELINES

    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    is_probe = torch.tensor([False, False, False, False, False, False, True])
    official = ADVANTAGE_BASELINES["group"](rewards, groups, is_probe)
    assert official[[0, 1, 4, 5, 6]].abs().max() < 1e-6  # tied groups: no signal
    batch = ADVANTAGE_BASELINES["group_or_batch"](rewards, groups, is_probe)
    # the originals' mean 3/6 and unbiased std √0.3 (the probe does not set them)
    z = 0.5 / math.sqrt(0.3)
    expected = [-z, -z, 1 / math.sqrt(2), -1 / math.sqrt(2), z, z, z]
    assert batch.tolist() == pytest.approx(expected, rel=1e-5)
    # a right probe in the all-wrong group unties it: GRPO's own statistics again
    rescued = ADVANTAGE_BASELINES["group_or_batch"](
        torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0, 0, 0]), torch.tensor([False, False, True])
    )
    assert rescued.tolist() == pytest.approx([-1 / math.sqrt(3)] * 2 + [2 / math.sqrt(3)], rel=1e-5)
