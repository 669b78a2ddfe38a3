"""Is the policy correction unbiased? An idealised REX-RAG where everything can be enumerated.

The policy is a tabular autoregressive distribution over short token sequences:
thinking tokens x, y; prompt tokens p, q; answer tokens A (right, reward 1) and W
(wrong, reward 0). An episode ends at an answer or after ``MAX_LENGTH`` tokens. Mixed
sampling draws ``n_originals`` episodes from π and ``n_probes`` from the probe
distribution μ: an episode of π conditioned on answering W right after a 1-2 token
x/y prefix h, with that answer replaced by a prompt drawn uniformly from a pool with a
shared prefix (pp, pq, qq), then continued by π. α = n_probes / (n_originals + n_probes).

Every estimator below is an average of per-sample terms g(τ) (REINFORCE at θ = θ_old,
no baseline, so the correction is the only thing that can bias it). Its expectation is
(1-α)·Σ π(τ) g(τ) + α·Σ μ(τ) g(τ), computed exactly over all 1,706 sequences and compared
with the exact ∇J, J = Σ π(τ) R(τ). A Monte Carlo run of the same estimator checks the
enumeration. The weights come from ``agents.rexrag.correction``, the functions the
learner uses.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from agents.rexrag.correction import (
    CORRECTIONS,
    ORIGINAL_BEHAVIOURS,
    CorrectionInputs,
    sequence_log_weights,
)
from agents.rexrag.credit import PROBE_CREDITS, credit_components
from agents.rexrag.probes import PromptPool

X, Y, P, Q, A, W = range(6)
BOS, VOCAB, MAX_LENGTH = 6, 6, 5
POOL = PromptPool([[P, P], [P, Q], [Q, Q]])
ALPHA = 0.25  # 3 originals per probe


def all_sequences() -> list[tuple[int, ...]]:
    """Every episode: ends at its first answer token, or has MAX_LENGTH tokens."""
    thinking = (X, Y, P, Q)
    episodes = []
    for length in range(1, MAX_LENGTH + 1):
        for body in itertools.product(thinking, repeat=length - 1):
            episodes += [(*body, A), (*body, W)]
    episodes += list(itertools.product(thinking, repeat=MAX_LENGTH))
    return episodes


SEQUENCES = all_sequences()


def probe_split(sequence) -> int | None:
    """len(h) if the sequence has a probe's shape h + pool prompt + continuation."""
    prefix = 0
    while prefix < len(sequence) and sequence[prefix] in (X, Y):
        prefix += 1
    prompt = tuple(sequence[prefix : prefix + 2])
    if prefix in (1, 2) and prefix + 2 < len(sequence) and POOL._prefix_counts[prompt]:
        return prefix
    return None


class Idealised:
    """Token tensors of all sequences and the exact π, μ, J under logits θ."""

    def __init__(self, theta: torch.Tensor):
        self.theta = theta  # [MAX_LENGTH, BOS + 1, VOCAB]: logits by position and previous token
        rows = len(SEQUENCES)
        self.tokens = torch.zeros(rows, MAX_LENGTH, dtype=torch.long)
        self.mask = torch.zeros(rows, MAX_LENGTH, dtype=torch.bool)
        for row, sequence in enumerate(SEQUENCES):
            self.tokens[row, : len(sequence)] = torch.tensor(sequence)
            self.mask[row, : len(sequence)] = True
        previous = torch.cat([torch.full((rows, 1), BOS), self.tokens[:, :-1]], 1)
        positions = torch.arange(MAX_LENGTH).expand(rows, -1)
        log_table = torch.log_softmax(theta, -1)
        self.token_logprobs = torch.where(
            self.mask, log_table[positions, previous, self.tokens], torch.zeros(())
        )  # [rows, MAX_LENGTH]
        # ∇_θ log π(y_t | t, y_{t-1}) = e_{y_t} − softmax(θ[t, y_{t-1}]), in that slot of θ
        self.slots = positions * (BOS + 1) + previous  # [rows, MAX_LENGTH]
        self.token_scores = (
            torch.nn.functional.one_hot(self.tokens, VOCAB)
            - torch.softmax(theta, -1).reshape(-1, VOCAB)[self.slots]
        )  # [rows, MAX_LENGTH, VOCAB]
        self.pi = self.token_logprobs.sum(-1).exp()
        self.reward = torch.tensor([float(s[-1] == A) for s in SEQUENCES], dtype=torch.float64)
        self.splits = [probe_split(s) for s in SEQUENCES]
        self._probe_distribution()

    def _probe_distribution(self) -> None:
        rows = len(SEQUENCES)
        self.is_probe_shape = torch.tensor([split is not None for split in self.splits])
        self.prompt_mask = torch.zeros(rows, MAX_LENGTH, dtype=torch.bool)
        self.pool_logprobs = torch.zeros(rows, MAX_LENGTH, dtype=torch.float64)
        self.log_fail_given_prefix = torch.zeros(rows, dtype=torch.float64)
        log_table = torch.log_softmax(self.theta, -1)
        for row, split in enumerate(self.splits):
            if split is None:
                continue
            sequence = SEQUENCES[row]
            self.prompt_mask[row, split : split + 2] = True
            self.pool_logprobs[row, split : split + 2] = torch.tensor(
                POOL.token_logprobs(sequence[split : split + 2])
            )
            previous = sequence[split - 1]
            self.log_fail_given_prefix[row] = log_table[split, previous, W]
        # P(trigger) = Σ_h π(h)·π(W | h) over 1-2 token x/y prefixes h
        triggers = [s for s in SEQUENCES if s[-1] == W and len(s) in (2, 3)]
        triggers = [s for s in triggers if all(t in (X, Y) for t in s[:-1])]
        self.p_trigger = float(sum(self.pi[SEQUENCES.index(s)] for s in triggers).detach())
        log_mu = (
            torch.where(self.prompt_mask, self.pool_logprobs, self.token_logprobs).sum(-1)
            + self.log_fail_given_prefix
            - math.log(self.p_trigger)
        )
        self.mu = torch.where(self.is_probe_shape, log_mu.exp(), torch.zeros(()))

    def per_sequence_gradients(self, weights: torch.Tensor) -> torch.Tensor:
        """``[rows, θ.numel()]``: Σ_t weights[row, t] · ∇log π(token t of row)."""
        rows = len(SEQUENCES)
        contributions = (weights * self.mask).unsqueeze(-1) * self.token_scores
        gradients = torch.zeros(rows, MAX_LENGTH * (BOS + 1), VOCAB, dtype=contributions.dtype)
        gradients.scatter_add_(1, self.slots.unsqueeze(-1).expand(-1, -1, VOCAB), contributions)
        return gradients.reshape(rows, -1)

    def gradient(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ over rows of :meth:`per_sequence_gradients`, θ-shaped."""
        return self.per_sequence_gradients(weights).sum(0).reshape(self.theta.shape)


@pytest.fixture(scope="module")
def model() -> Idealised:
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(MAX_LENGTH, BOS + 1, VOCAB, generator=generator, dtype=torch.float64)
    theta[..., W] += 1.0  # wrong answers are common: probes have failures to start from
    return Idealised(theta)


def per_sample_weights(
    model: Idealised, mode: str, from_probe: bool, originals: str = "mixture"
) -> torch.Tensor:
    """``[rows, MAX_LENGTH]`` token weights of each sequence as a sample of one sampler.

    ``from_probe``: the sequence was drawn by μ (the official code and ours flag probes
    by how they were made, not by their content). The production modes go through
    :data:`CORRECTIONS` with the rates ``build_learner_batch`` measures, at their
    expectation: the originals' error rate 1 - J and their trigger rate P(trigger).
    """
    old = model.token_logprobs
    flag = torch.full((len(SEQUENCES),), from_probe) & model.is_probe_shape
    error_rate = 1.0 - float((model.pi * model.reward).sum())
    if mode in PRODUCTION:
        start = torch.where(model.prompt_mask.any(-1), model.prompt_mask.int().argmax(-1), 0)
        inputs = CorrectionInputs(
            old_logprobs=old,
            loss_mask=model.mask,
            is_probe=flag,
            prompt_mask=model.prompt_mask,
            pool_logprobs=model.pool_logprobs,
            prompt_start=start,
            response_start=None,
            alpha=ALPHA,
            error_rate=error_rate,
            trigger_rate=model.p_trigger,
        )
        corrected = ORIGINAL_BEHAVIOURS[originals](CORRECTIONS[PRODUCTION[mode]](inputs), inputs)
        return (old - corrected.behaviour_logprobs).exp() * corrected.advantage_weights.unsqueeze(
            -1
        )
    exact = mode == "sequence (exact μ)"
    log_w = sequence_log_weights(
        old,
        old,
        model.mask,
        model.is_probe_shape if exact else flag,
        model.prompt_mask,
        model.pool_logprobs,
        ALPHA,
        model.p_trigger if exact else error_rate,
        cap=math.inf,
        log_fail_given_prefix=model.log_fail_given_prefix if exact else None,
    )
    return log_w.exp().unsqueeze(-1).expand_as(old)


#: The modes as the learner runs them (name in the report -> CORRECTIONS key).
PRODUCTION = {"sequence (production)": "sequence", "rexrag": "rexrag", "none": "none"}
MODES = ("sequence (exact μ)", "sequence (err = 1 − acc)", *PRODUCTION)


def expected_estimate(model: Idealised, mode: str) -> torch.Tensor:
    """E[estimator] = (1-α)·E_π[g] + α·E_μ[g], by enumeration."""
    reward = model.reward.unsqueeze(-1)
    originals = per_sample_weights(model, mode, from_probe=False) * reward
    probes = per_sample_weights(model, mode, from_probe=True) * reward
    return model.gradient(
        (1 - ALPHA) * model.pi.unsqueeze(-1) * originals + ALPHA * model.mu.unsqueeze(-1) * probes
    )


def test_the_probe_distribution_is_normalised(model):
    assert float(model.pi.sum()) == pytest.approx(1.0)
    assert float(model.mu.sum()) == pytest.approx(1.0)
    assert 0.01 < model.p_trigger < 1.0


def test_trajectory_level_correction_is_unbiased_and_the_others_are_not(model):
    exact = model.gradient(model.pi.unsqueeze(-1) * model.reward.unsqueeze(-1))
    theta = model.theta.clone().requires_grad_(True)
    (Idealised(theta).pi * model.reward).sum().backward()  # J by autograd, as a cross-check
    assert torch.allclose(exact, theta.grad)

    bias = {}
    for mode in MODES:
        estimate = expected_estimate(model, mode)
        bias[mode] = float((estimate - exact).norm() / exact.norm())
        cosine = float((estimate * exact).sum() / (estimate.norm() * exact.norm()))
        print(f"{mode:>22}: relative bias {bias[mode]:.4f}, cosine to ∇J {cosine:.4f}")
    assert bias["sequence (exact μ)"] < 1e-9
    assert bias["none"] > 0.05 and bias["rexrag"] > 1e-3
    assert bias["sequence (err = 1 − acc)"] > 1e-3
    assert 0 < bias["sequence (production)"] < bias["sequence (err = 1 − acc)"]


def test_monte_carlo_agrees_with_the_enumeration(model):
    """The exact-μ estimator on sampled batches converges to ∇J (statistical tolerance)."""
    generator = torch.Generator().manual_seed(1)
    samples, probes = 60_000, 20_000  # α = 0.25
    originals = torch.multinomial(model.pi, samples, replacement=True, generator=generator)
    drawn = torch.multinomial(model.mu, probes, replacement=True, generator=generator)
    reward = model.reward.unsqueeze(-1)
    weights = per_sample_weights(model, "sequence (exact μ)", from_probe=True) * reward
    per_row = model.per_sequence_gradients(weights)  # [rows, θ]
    counts = torch.bincount(torch.cat([originals, drawn]), minlength=len(SEQUENCES)).double()
    total = float(counts.sum())
    mean = counts @ per_row / total
    variance = counts @ per_row.square() / total - mean.square()
    stderr = (variance.clamp(min=0) / total).sqrt()
    exact = model.gradient(model.pi.unsqueeze(-1) * reward).reshape(-1)
    # ‖error‖ against its expected size √(Σ Var/N): per-coordinate z-scores would be
    # fragile for coordinates only rare sequences touch
    assert float((mean - exact).norm()) < 3.0 * float(stderr.norm())
    assert float(stderr.norm()) < 0.05 * float(exact.norm())  # and the test has power


# -- probe credit: which of a probe's tokens carry its advantage ----------------------


def credited(model: Idealised, credit: str, from_probe: bool) -> torch.Tensor:
    """``[rows, MAX_LENGTH]`` the tokens that carry loss under ``probe_credit`` when each
    sequence is a sample of the originals (``from_probe=False``) or of μ, through the
    production :data:`PROBE_CREDITS` on the sequences' credit components (a probe's
    branch point is the end of its copied prefix h)."""
    rows = len(SEQUENCES)
    is_probe = (torch.full((rows,), from_probe) & model.is_probe_shape).numpy()
    branch = np.array([split or 0 for split in model.splits])
    components = credit_components(model.mask.numpy(), model.prompt_mask.numpy(), is_probe, branch)
    return torch.as_tensor(PROBE_CREDITS[credit](components))


def expected_estimate_with_credit(model: Idealised, mode: str, credit: str) -> torch.Tensor:
    """:func:`expected_estimate` with the probes' tokens masked as ``credit`` says."""
    reward = model.reward.unsqueeze(-1)
    originals = per_sample_weights(model, mode, from_probe=False) * reward
    probes = per_sample_weights(model, mode, from_probe=True) * reward
    probes = probes * credited(model, credit, from_probe=True)
    return model.gradient(
        (1 - ALPHA) * model.pi.unsqueeze(-1) * originals + ALPHA * model.mu.unsqueeze(-1) * probes
    )


def test_only_the_copy_credit_keeps_the_exact_correction_unbiased(model):
    """Without a baseline, an estimator is unbiased only if every probe token keeps its
    weighted advantage: ``masked`` drops α·E_μ[w·R·∇log π(prefix)], ``group_only`` the
    probes' whole term. Printed: the relative bias of every option × mode."""
    exact = model.gradient(model.pi.unsqueeze(-1) * model.reward.unsqueeze(-1))
    bias = {}
    for credit in PROBE_CREDITS:
        for mode in MODES:
            estimate = expected_estimate_with_credit(model, mode, credit)
            bias[credit, mode] = float((estimate - exact).norm() / exact.norm())
            print(f"{credit:>10} × {mode:>24}: relative bias {bias[credit, mode]:.4f}")
    assert bias["copy", "sequence (exact μ)"] < 1e-9
    assert bias["masked", "sequence (exact μ)"] > 1e-4
    assert bias["group_only", "sequence (exact μ)"] > bias["masked", "sequence (exact μ)"]
    # group_only under the official correction: originals weighted 1/(1-α) make up for
    # their (1-α) share, so they alone are the on-policy estimate (no probe term left)
    assert bias["group_only", "rexrag"] < 1e-9
    assert bias["group_only", "none"] == pytest.approx(ALPHA)
    # masked's bias is exactly the probes' push on their copied prefix
    weights = per_sample_weights(model, "sequence (exact μ)", from_probe=True)
    prefix = credited(model, "copy", True) & ~credited(model, "masked", True)
    dropped = model.gradient(
        ALPHA * model.mu.unsqueeze(-1) * weights * model.reward.unsqueeze(-1) * prefix
    )
    masked = expected_estimate_with_credit(model, "sequence (exact μ)", "masked")
    assert torch.allclose(masked, exact - dropped, atol=1e-12)


class ParentProbePairs:
    """Groups of one original τ ~ π and, when τ triggers (wrong right after a 1-2 token
    prefix h), one probe ρ of it: h copied, a pool prompt, a continuation by π. The
    group's mean reward is the baseline (GRPO without the std), so a right probe makes
    its wrong parent's advantage -R(ρ)/2 and its own +R(ρ)/2: the pairing that a
    per-sample enumeration over μ cannot see."""

    def __init__(self, model: Idealised):
        self.model = model
        index = {sequence: row for row, sequence in enumerate(SEQUENCES)}
        self.pairs: list[tuple[int, int, float]] = []  # (parent row, probe row, P(ρ | τ))
        for row, split in enumerate(model.splits):
            if split is None:
                continue
            probe = SEQUENCES[row]
            parent = index[(*probe[:split], W)]
            given_parent = (
                model.pool_logprobs[row].sum() + model.token_logprobs[row, split + 2 :].sum()
            )
            self.pairs.append((parent, row, float(given_parent.exp())))

    def rescue_value(self) -> torch.Tensor:
        """``[rows]`` V(τ) = E[R(ρ) | τ]: how often a probe of τ ends right."""
        value = torch.zeros(len(SEQUENCES), dtype=torch.float64)
        for parent, probe, chance in self.pairs:
            value[parent] += chance * self.model.reward[probe]
        return value

    def expected_gradient(self, credit: str, components: str = "all") -> torch.Tensor:
        """E over pairs of Σ_members A·∇log π(credited tokens), correction ``none``.

        ``components="prefix"`` keeps only the copied prefix h of parent and probe."""
        model = self.model
        probe_mask = credited(model, credit, from_probe=True)
        weights = torch.zeros(len(SEQUENCES), MAX_LENGTH, dtype=torch.float64)
        for parent, probe, chance in self.pairs:
            split = model.splits[probe]
            reward = model.reward[probe]
            p = model.pi[parent] * chance
            parent_tokens = model.mask[parent].clone()
            probe_tokens = probe_mask[probe].clone()
            if components == "prefix":
                parent_tokens[split:] = False
                probe_tokens[split:] = False
            weights[parent] += p * (-reward / 2) * parent_tokens
            weights[probe] += p * (reward / 2) * probe_tokens
        return model.gradient(weights)


@pytest.fixture(scope="module")
def pairs(model) -> ParentProbePairs:
    return ParentProbePairs(model)


def test_pairs_draw_probes_from_mu(model, pairs):
    """The probe half of the pairs, weighted by its parent, is μ: the per-sample
    enumeration above and the pairs describe the same sampler."""
    marginal = torch.zeros(len(SEQUENCES), dtype=torch.float64)
    for parent, probe, chance in pairs.pairs:
        marginal[probe] += model.pi[parent] * chance
    assert torch.allclose(marginal / model.p_trigger, model.mu, atol=1e-12)


def test_copy_credit_cancels_the_parents_push_on_the_shared_prefix(pairs):
    """The issue's "part of a probe's credit cancels its parent's", exactly: with equal
    weights a right probe pushes its copied prefix up by as much as its parent pushes
    it down. ``masked`` and ``group_only`` leave the parent's push down on it."""
    assert pairs.expected_gradient("copy", "prefix").abs().max() < 1e-15
    for credit in ("masked", "group_only"):
        push = pairs.expected_gradient(credit, "prefix")
        assert push.abs().max() > 1e-4
        assert torch.allclose(push, pairs.expected_gradient("group_only", "prefix"))


def test_group_only_descends_the_chance_of_committing_where_a_doubt_rescues(model, pairs):
    """``group_only`` estimates -½ ∇_θ Σ_τ π_θ(τ)·V(τ) with V = E[R(ρ) | τ] held fixed:
    it lowers the probability of wrong answers in proportion to how often a doubt
    would have rescued them, and nothing else (a shaped objective, not ∇J)."""
    value = pairs.rescue_value().detach()
    theta = model.theta.clone().requires_grad_(True)
    (Idealised(theta).pi * value).sum().backward()
    assert torch.allclose(pairs.expected_gradient("group_only"), -0.5 * theta.grad, atol=1e-12)
    assert float(value.max()) > 0.05  # some prefixes are rescued: the test has power


def test_originals_under_policy_make_group_only_a_shorter_on_policy_step(model):
    """``original_behaviour = policy``: originals get weight 1 whatever the mode, so
    without probe terms every mode estimates (1-α)·∇J (the same direction, a step 1-α
    shorter), and with ``copy`` the official mode's bias changes but stays."""
    exact = model.gradient(model.pi.unsqueeze(-1) * model.reward.unsqueeze(-1))
    reward = model.reward.unsqueeze(-1)
    for mode in PRODUCTION:
        originals = per_sample_weights(model, mode, False, "policy") * reward
        estimate = model.gradient((1 - ALPHA) * model.pi.unsqueeze(-1) * originals)
        assert torch.allclose(estimate, (1 - ALPHA) * exact, atol=1e-12), mode
    probes = per_sample_weights(model, "rexrag", True, "policy") * reward
    originals = per_sample_weights(model, "rexrag", False, "policy") * reward
    copy = model.gradient(
        (1 - ALPHA) * model.pi.unsqueeze(-1) * originals + ALPHA * model.mu.unsqueeze(-1) * probes
    )
    bias = float((copy - exact).norm() / exact.norm())
    print(f"copy × rexrag, originals under policy: relative bias {bias:.4f}")
    assert bias > 1e-3
