"""(d) The correction modes, GRPO advantages and the loss on the device equal to CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.rexrag.correction import CORRECTIONS, CorrectionInputs
from agents.rexrag.learner_batch import MIN_LOGPROB, LearnerBatch
from agents.rexrag.losses import grpo_advantages
from benchmarks.gpu_check.device import as_tensors
from benchmarks.gpu_check.learner_step import rexrag_loss
from benchmarks.gpu_check.report import Row, verdict

#: (d) runs in float64: a float32 sum of a trajectory's log-probs (~ -10^4) rounds to
#: ~1e-3, and CUDA sums in another order than the CPU, which would move the sequence
#: mode's weights by more than any bug-free tolerance. GRPO advantages stay float32.
DEVICE_TOLERANCE = 1e-6


def correction_inputs(learner_batch: LearnerBatch, old: np.ndarray) -> CorrectionInputs:
    """What the correction modes read of ``learner_batch`` (its kept rows, its α, error
    and trigger rates), from π_old log-probs ``old`` of the whole batch."""
    kept = learner_batch.batch
    width = kept.input_ids.shape[1]
    stats = learner_batch.stats
    return CorrectionInputs(
        old_logprobs=torch.as_tensor(np.maximum(old[learner_batch.rows, :width], MIN_LOGPROB)),
        loss_mask=torch.as_tensor(kept.loss_mask),
        is_probe=torch.as_tensor(kept.is_probe),
        prompt_mask=torch.as_tensor(kept.prompt_mask),
        pool_logprobs=torch.as_tensor(np.maximum(kept.sampling_logprobs, MIN_LOGPROB)),
        prompt_start=torch.as_tensor(kept.prompt_start),
        response_start=torch.as_tensor(kept.response_start),
        alpha=stats["alpha"],
        error_rate=stats["error_rate"],
        trigger_rate=stats["trigger_rate"],
    )


def in_float64(value: Any, device: torch.device) -> Any:
    """A tensor on ``device``, float64 if it is floating; anything else as it is."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(device, torch.float64 if value.is_floating_point() else value.dtype)


def pure_math(
    inputs: CorrectionInputs, learner_batch: LearnerBatch, device: torch.device
) -> dict[str, torch.Tensor]:
    """Every correction mode, GRPO advantages and the loss (at log-probs off π_old, so
    the ratio and the clip move), on ``device``; the results back on CPU."""
    results = {}
    moved = CorrectionInputs(**{k: in_float64(v, device) for k, v in vars(inputs).items()})
    for mode, correct in CORRECTIONS.items():
        corrected = correct(moved)
        results[f"{mode}: behaviour log-probs"] = corrected.behaviour_logprobs
        results[f"{mode}: advantage weights"] = corrected.advantage_weights
    kept = learner_batch.batch
    results["GRPO advantages"] = grpo_advantages(
        torch.as_tensor(kept.rewards, device=device), torch.as_tensor(kept.group_ids, device=device)
    )
    columns = as_tensors(learner_batch.columns, torch.device("cpu"))
    tensors = {name: in_float64(value, device) for name, value in columns.items()}
    noise = torch.linspace(
        -0.3, 0.3, tensors["behaviour_logprobs"].numel(), device=device, dtype=torch.float64
    )
    logprobs = tensors["behaviour_logprobs"] + noise.view_as(tensors["behaviour_logprobs"])
    results["loss"] = rexrag_loss(logprobs, tensors)
    return {name: value.detach().double().cpu() for name, value in results.items()}


def device_rows(
    name: str, learner_batch: LearnerBatch, old: np.ndarray, device: torch.device
) -> list[Row]:
    """(d) the correction and loss functions on ``device`` equal to CPU."""
    inputs = correction_inputs(learner_batch, old)
    on_cpu = pure_math(inputs, learner_batch, torch.device("cpu"))
    there = pure_math(inputs, learner_batch, device)
    worst = {key: float((on_cpu[key] - there[key]).abs().max()) for key in on_cpu}
    largest = max(worst.values())
    return [
        Row(
            "d pure math",
            name,
            f"{len(CORRECTIONS)} correction modes, GRPO advantages, loss (float64): "
            f"{device.type} vs cpu",
            f"max abs Δ {largest:.2g}",
            f"<= {DEVICE_TOLERANCE:g}",
            verdict(largest <= DEVICE_TOLERANCE),
            worst,
        )
    ]
