"""Behaviour probabilities per correction mode, against hand-computed values (spec §4.3)."""

import math

import pytest
import torch

from agents.rexrag.correction import (
    CORRECTIONS,
    CorrectionInputs,
    mixture_logprobs,
    probe_token_logmu,
    sequence_log_weights,
)
from agents.rexrag.probes import PromptPool

# one probe and one original, 5 response tokens each:
# probe: 2 prefix tokens, 2 prompt tokens (positions 2-3), 1 continuation token
OLD = torch.log(torch.tensor([[0.5, 0.4, 0.01, 0.02, 0.6], [0.5, 0.4, 0.3, 0.2, 0.6]]))
PROMPT_MASK = torch.tensor([[False, False, True, True, False], [False] * 5])
POOL = torch.log(torch.tensor([[1.0, 1.0, 0.3, 0.5, 1.0], [1.0] * 5]))
IS_PROBE = torch.tensor([True, False])
START = torch.tensor([2, 0])
ALPHA, ERROR = 0.1, 0.64  # err^(-1/2) = 1.25


def test_prompt_pool_trie_with_shared_prefixes():
    pool = PromptPool([[1, 2, 3], [1, 2, 4], [1, 5]])
    assert pool.token_logprobs([1, 2, 3]) == pytest.approx([0.0, math.log(2 / 3), math.log(1 / 2)])
    assert pool.token_logprobs([1, 5]) == pytest.approx([0.0, math.log(1 / 3)])
    assert sum(pool.token_logprobs([1, 2, 4])) == pytest.approx(
        math.log(1 / 3)
    )  # P(prompt) = 1/30 style
    duplicated = PromptPool([[1, 2], [1, 2], [3]])
    assert sum(duplicated.token_logprobs([1, 2])) == pytest.approx(math.log(2 / 3))
    with pytest.raises(ValueError, match="not in the pool"):
        pool.token_logprobs([9])
    with pytest.raises(ValueError, match="at least one"):
        PromptPool([])


def test_probe_mu_follows_the_official_table():
    logmu = probe_token_logmu(OLD, PROMPT_MASK, POOL, START, ERROR)[0].exp()
    # prefix: π_old·err^(-1/j); first prompt token: 1; later prompt token: pool; after: π_old
    assert logmu.tolist() == pytest.approx([0.625, 0.5, 1.0, 0.5, 0.6])


def inputs(alpha=ALPHA, error_rate=ERROR, trigger_rate=ERROR) -> CorrectionInputs:
    return CorrectionInputs(
        old_logprobs=OLD,
        loss_mask=torch.ones_like(OLD, dtype=torch.bool),
        is_probe=IS_PROBE,
        prompt_mask=PROMPT_MASK,
        pool_logprobs=POOL,
        prompt_start=START,
        response_start=None,
        alpha=alpha,
        error_rate=error_rate,
        trigger_rate=trigger_rate,
    )


def test_rexrag_mode_mixture_hand_computed():
    log_q = mixture_logprobs(OLD, IS_PROBE, PROMPT_MASK, POOL, START, ALPHA, ERROR)
    # probe: q = 0.9·π_old + 0.1·μ
    assert log_q[0].exp().tolist() == pytest.approx([0.5125, 0.41, 0.109, 0.068, 0.6])
    # original: μ = 0, q = 0.9·π_old (ratios start at 1/(1-α))
    assert log_q[1].exp().tolist() == pytest.approx((0.9 * OLD[1].exp()).tolist())


def test_every_mode_has_one_signature_and_none_and_no_probes_are_plain_ppo():
    for mode, correct in CORRECTIONS.items():
        corrected = correct(inputs())
        assert corrected.behaviour_logprobs.shape == OLD.shape, mode
        assert corrected.advantage_weights.shape == (2,), mode
    none = CORRECTIONS["none"](inputs())
    assert torch.equal(none.behaviour_logprobs, OLD)
    assert none.advantage_weights.tolist() == [1.0, 1.0]
    no_probes = CORRECTIONS["rexrag"](inputs(alpha=0.0))
    assert torch.allclose(no_probes.behaviour_logprobs, OLD)
    # sequence: π_old under the ratio, the weight on the advantage (trigger rate as P(fail))
    sequence = CORRECTIONS["sequence"](inputs(error_rate=0.9, trigger_rate=ERROR))
    assert torch.equal(sequence.behaviour_logprobs, OLD)
    expected = sequence_log_weights(
        OLD, OLD, torch.ones_like(OLD), IS_PROBE, PROMPT_MASK, POOL, ALPHA, ERROR
    ).exp()
    assert torch.allclose(sequence.advantage_weights, expected)


def test_alpha_of_one_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        mixture_logprobs(OLD, IS_PROBE, PROMPT_MASK, POOL, START, 1.0, ERROR)


def test_sequence_weights_hand_computed():
    # probe: prefix 0.5, prompt token (π_old 0.01, pool 0.5), continuation 0.6; original: 0.5, 0.6
    old = torch.log(torch.tensor([[0.5, 0.01, 0.6], [0.5, 0.6, 1.0]]))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    prompt_mask = torch.tensor([[False, True, False], [False, False, False]])
    pool = torch.log(torch.tensor([[1.0, 0.5, 1.0], [1.0, 1.0, 1.0]]))
    is_probe = torch.tensor([True, False])
    log_w = sequence_log_weights(
        old, old, mask, is_probe, prompt_mask, pool, alpha=0.2, error_rate=0.5
    )
    # probe: π_old(τ)=0.003, μ(τ)=0.5/0.5·0.5·0.6=0.3, q=0.8·0.003+0.2·0.3=0.0624 -> w=0.04808
    # original: w = 1/(1-α) = 1.25
    assert log_w.exp().tolist() == pytest.approx([0.003 / 0.0624, 1.25], rel=1e-4)
    doubled = sequence_log_weights(
        old + math.log(2.0), old, mask, is_probe, prompt_mask, pool, 0.2, 0.5
    )
    assert doubled[1].exp().item() == pytest.approx(2.0)  # 5.0 truncated at the cap
