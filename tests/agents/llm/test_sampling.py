import math

import pytest
import torch

from agents.llm.base import SamplingParams
from agents.llm.sampling import sample_next_tokens, sampling_logprobs

PROBS = torch.tensor([[0.5, 0.3, 0.2]])
LOGITS = PROBS.log() + 1.7  # any shift: softmax is shift-invariant


def test_greedy_reports_the_model_distribution():
    ids, logprobs = sample_next_tokens(LOGITS, temperature=0.0, top_p=0.3)
    assert ids.tolist() == [0]
    assert logprobs.item() == pytest.approx(math.log(0.5))


def test_temperature_scales_logits():
    expected = torch.log_softmax(LOGITS / 0.5, dim=-1)
    assert torch.allclose(sampling_logprobs(LOGITS, 0.5, 1.0), expected)


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (1.0, [0.5, 0.3, 0.2]),
        (0.7, [0.5 / 0.8, 0.3 / 0.8, 0.0]),  # mass before token 2 is 0.8 >= 0.7: dropped
        (0.79, [0.5 / 0.8, 0.3 / 0.8, 0.0]),
        (0.81, [0.5, 0.3, 0.2]),
        (0.45, [1.0, 0.0, 0.0]),
        (0.01, [1.0, 0.0, 0.0]),  # the most likely token always stays
    ],
)
def test_top_p_nucleus_hand_computed(top_p, expected):
    probs = sampling_logprobs(LOGITS, 1.0, top_p).exp()[0]
    assert probs.tolist() == pytest.approx(expected, abs=1e-6)


def test_sampled_frequencies_match_the_reported_distribution():
    generator = torch.Generator().manual_seed(0)
    logits = LOGITS.expand(20_000, 3)
    ids, logprobs = sample_next_tokens(logits, temperature=1.0, top_p=0.7, generator=generator)
    frequencies = torch.bincount(ids, minlength=3).float() / len(ids)
    assert frequencies.tolist() == pytest.approx([0.625, 0.375, 0.0], abs=0.015)
    assert torch.allclose(logprobs.exp(), torch.tensor([0.625, 0.375, 0.0])[ids])


def test_same_seed_same_draws():
    draw = lambda: sample_next_tokens(  # noqa: E731
        LOGITS.expand(50, 3), 1.0, 1.0, torch.Generator().manual_seed(3)
    )[0]
    assert torch.equal(draw(), draw())


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0}]
)
def test_bad_sampling_params(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)
