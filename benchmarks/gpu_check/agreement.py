"""(c) The generator's sampling log-probs against the learner's scoring, and the planted
bugs the comparison must tell apart from agreement."""

from __future__ import annotations

import numpy as np
import torch

from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator
from agents.rexrag.token_batch import TokenBatch, to_token_batch
from agents.trajectory import Component, Trajectory
from benchmarks.gpu_check.device import as_tensors
from benchmarks.gpu_check.models import TEMPERATURE, Sizes, random_prompts
from benchmarks.gpu_check.report import Row, verdict

#: (c) tolerances, bfloat16: the generator (KV cache, one position at a time) and the
#: learner (whole sequences, FSDP's bfloat16 gather of the same float32 weights) round
#: differently; ~0.002-0.008 mean / 0.03-0.15 max measured on CPU; the two planted bugs
#: give 1-3.
LOGPROB_MEAN_TOLERANCE, LOGPROB_MAX_TOLERANCE = 0.05, 1.0


#: A planted bug is caught when its mean |Δ| is at least this many times the real one's
#: and above LOGPROB_MEAN_TOLERANCE.
PLANTED_FACTOR = 10.0


def sampled_batch(generator: HFGenerator, sizes: Sizes, seed: int) -> TokenBatch:
    """(c) prompts of varied lengths continued by ``generator`` at TEMPERATURE, as the
    learner's right-padded :class:`TokenBatch` (``to_token_batch``: the bookkeeping that
    puts each sampling log-prob under its token)."""
    vocab = generator.model.config.vocab_size
    prompts = random_prompts(sizes.sampled_rows, sizes.prompt_length, vocab, seed, True)
    params = SamplingParams(
        temperature=TEMPERATURE, max_new_tokens=sizes.sampled_tokens, stop=(), seed=seed
    )
    generations = generator.generate(prompts, params)
    return to_token_batch(
        [
            Trajectory(
                example_id=f"q{row}",
                question="",
                golden_answers=[],
                data_source="gpu_check",
                token_ids=prompt + generation.token_ids,
                components=[int(Component.PROMPT)] * len(prompt)
                + [int(Component.MODEL)] * len(generation.token_ids),
                sampling_logprobs=[0.0] * len(prompt) + generation.logprobs,
                prompt_length=len(prompt),
            )
            for row, (prompt, generation) in enumerate(zip(prompts, generations, strict=True))
        ]
    )


@torch.no_grad()
def score(scorer, batch: TokenBatch, device: torch.device, temperature: float) -> np.ndarray:
    """``[batch, seq]`` float32 log-probs of ``batch``'s trained tokens under ``scorer``."""
    tensors = as_tensors(
        {"ids": batch.input_ids, "attention": batch.attention_mask, "targets": batch.loss_mask},
        device,
    )
    logprobs = scorer(tensors["ids"], tensors["attention"], tensors["targets"], None, temperature)
    return logprobs.float().cpu().numpy()


def differences(learner: np.ndarray, sampler: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """max and mean |learner - sampler| over ``mask`` (``[batch, seq]`` each)."""
    delta = np.abs(learner - sampler)[mask]
    return {"max": float(delta.max()), "mean": float(delta.mean()), "tokens": int(mask.sum())}


def one_position_late(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The planted off-by-one: each row's values moved one position later, and the mask
    of the positions that still have one from the same response."""
    late = np.zeros_like(values)
    late[:, 1:] = values[:, :-1]
    both = mask.copy()
    both[:, 1:] &= mask[:, :-1]
    both[:, 0] = False
    return late, both


def agreement_rows(
    name: str, batch: TokenBatch, learner: np.ndarray, at_temperature_1: np.ndarray, peak: dict
) -> list[Row]:
    """(c) the real comparison and the two planted bugs it must tell apart."""
    mask = batch.loss_mask
    real = differences(learner, batch.sampling_logprobs, mask)
    late, late_mask = one_position_late(batch.sampling_logprobs, mask)
    planted = {
        "planted off-by-one (sampler log-probs 1 position late)": differences(
            learner, late, late_mask
        ),
        f"planted wrong temperature (scored at 1, sampled at {TEMPERATURE})": differences(
            at_temperature_1, batch.sampling_logprobs, mask
        ),
    }
    rows = [
        Row(
            "c log-probs",
            name,
            f"sampler vs learner, bf16, T={TEMPERATURE} ({real['tokens']} tokens of mean "
            f"probability {peak['sampled_prob']:.2f}; uniform: {peak['uniform_prob']:.1g})",
            f"abs Δ max {real['max']:.3g} mean {real['mean']:.3g}",
            f"max <= {LOGPROB_MAX_TOLERANCE} mean <= {LOGPROB_MEAN_TOLERANCE}",
            verdict(
                real["max"] <= LOGPROB_MAX_TOLERANCE and real["mean"] <= LOGPROB_MEAN_TOLERANCE
            ),
            {**real, **peak},
        )
    ]
    floor = max(PLANTED_FACTOR * real["mean"], LOGPROB_MEAN_TOLERANCE)
    for what, found in planted.items():
        rows.append(
            Row(
                "c log-probs",
                name,
                what,
                f"abs Δ max {found['max']:.3g} mean {found['mean']:.3g}",
                f"caught: mean >= {floor:.3g}",
                verdict(found["mean"] >= floor),
                found,
            )
        )
    return rows
