"""(a) One learner step of REX-RAG's loss through FSDP2, and its peak memory against
``rexrag plan``."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from agents.analysis.memory_plan import GIB, LearnerSetup, MicroBatchShape, ModelShape, plan_layouts
from agents.rexrag.learner_batch import LearnerBatch, build_learner_batch
from agents.rexrag.losses import clipped_surrogate, low_var_kl, masked_mean
from agents.rexrag.sharding import clip_global_norm
from agents.rexrag.token_batch import TokenBatch, select_rows
from benchmarks.gpu_check.device import as_tensors, timed
from benchmarks.gpu_check.models import TEMPERATURE
from benchmarks.gpu_check.report import Row, verdict

#: The official run's loss and optimiser settings (spec §5.1, RexRagConfig's defaults).
CLIP, KL_COEFF, LR, WEIGHT_DECAY, GRAD_CLIP = 0.2, 0.001, 1e-6, 0.01, 1.0


#: (a) measured / planned peak memory that passes: the plan may overestimate a little,
#: not underestimate (its "fits" keeps 10% of the GPU free for what it does not count).
PLAN_RATIO_RANGE = (0.8, 1.1)


def rexrag_loss(logprobs: torch.Tensor, micro: dict[str, torch.Tensor]) -> torch.Tensor:
    """The learner's loss (``RexRagLearner.compute_loss_for_module``): the clipped surrogate
    against the corrected behaviour log-probs plus the k3 KL to the reference, token
    means over ``loss_mask``."""
    mask = micro["loss_mask"].to(logprobs.dtype)
    policy_loss, _ = clipped_surrogate(
        logprobs, micro["behaviour_logprobs"], micro["advantages"], mask, CLIP, CLIP
    )
    kl = masked_mean(low_var_kl(logprobs, micro["reference_logprobs"]), mask)
    return policy_loss + KL_COEFF * kl


def learner_step(
    scorer, optimizer: torch.optim.Optimizer, micro_batches: list[dict[str, torch.Tensor]]
) -> tuple[float, float]:
    """One optimizer step over ``micro_batches``, each weighted by its share of the
    trained tokens (the exact token mean, as the learner does); returns the loss and
    the gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    total_tokens = sum(float(micro["loss_mask"].sum()) for micro in micro_batches)
    loss_sum = 0.0
    for micro in micro_batches:
        logprobs = scorer(
            micro["input_ids"], micro["attention_mask"], micro["target_mask"], None, TEMPERATURE
        )
        loss = rexrag_loss(logprobs, micro)
        share = float(micro["loss_mask"].sum()) / total_tokens
        (loss * share).backward()
        loss_sum += float(loss.detach()) * share
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    gradients = {index: p.grad for index, p in enumerate(parameters) if p.grad is not None}
    norm = clip_global_norm(gradients, GRAD_CLIP)
    optimizer.step()
    return loss_sum, norm


def corrected_batch(batch: TokenBatch, old: np.ndarray, reference: np.ndarray) -> LearnerBatch:
    """``batch`` with its probes filtered and corrected by the official ``rexrag`` mode
    (every probe kept), from π_old and π_ref log-probs ``[batch, seq]``."""
    return build_learner_batch(
        batch=batch,
        old_logprobs=old,
        reference_logprobs=reference,
        keep_ratio=1.0,
        keep_multiple_of=1,
        correction="rexrag",
        sequence_weight_cap=2.0,
        clip_low=CLIP,
        clip_high=CLIP,
    )


def split_in_two(columns: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Two micro-batches (each trimmed to its longest row): the second runs with every
    gradient allocated, the moment ``rexrag plan`` counts."""
    rows = len(columns["advantages"])
    return [select_rows(columns, part) for part in (slice(0, rows // 2), slice(rows // 2, rows))]


def micro_batch_shape(micro: dict[str, torch.Tensor]) -> MicroBatchShape:
    """What ``rexrag plan`` needs of a micro-batch: rows, padded width, trained tokens."""
    rows, width = micro["input_ids"].shape
    return MicroBatchShape(rows=rows, width=width, targets=int(micro["loss_mask"].sum()))


def learner_rows(
    name: str,
    shape: ModelShape,
    scorer,
    optimizer: torch.optim.Optimizer,
    watched: torch.Tensor,
    learner_batch: LearnerBatch,
    device: torch.device,
) -> list[Row]:
    """(a) a warm-up step (AdamW's state exists from then on), then the measured step:
    its time, its loss and gradient, whether ``watched`` (a sharded parameter) moved,
    and its peak memory against the plan."""
    micro_batches = split_in_two(as_tensors(learner_batch.columns, device))
    probe = watched.to_local()  # this rank's shard: all of it on one rank
    before = probe.detach().to("cpu", copy=True)  # not on the GPU: not in the peak
    learner_step(scorer, optimizer, micro_batches)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    (loss, norm), seconds = timed(device, lambda: learner_step(scorer, optimizer, micro_batches))
    moved = float((probe.detach().cpu() - before).abs().max())
    tokens = sum(int(micro["loss_mask"].sum()) for micro in micro_batches)
    shapes = [micro_batch_shape(micro) for micro in micro_batches]
    step_ok = math.isfinite(loss) and math.isfinite(norm) and norm > 0 and moved > 0
    rows = [
        Row(
            "a learner step",
            name,
            "bf16 FSDP2 (1 rank) + checkpointing, micro-batches "
            + ", ".join(f"{s.rows}x{s.width}" for s in shapes)
            + f" ({tokens} trained tokens)",
            f"{seconds:.2f} s ({tokens / seconds:.0f} tok/s); loss {loss:.3g}, grad norm "
            f"{norm:.3g}",
            "finite loss and gradient, weights moved",
            verdict(step_ok),
            {"seconds": seconds, "loss": loss, "grad_norm": norm, "max_weight_change": moved},
        )
    ]
    gpu_memory_gb = (
        torch.cuda.get_device_properties(device).total_memory / GIB
        if device.type == "cuda"
        else 80.0
    )
    setup = LearnerSetup(
        model=name, dtype="bfloat16", gradient_checkpointing=True, configured_layout="fsdp"
    )
    plans = [
        plan_layouts(setup, shape, micro, gpus=1, gpu_memory_gb=gpu_memory_gb).layout("fsdp")
        for micro in shapes
    ]
    planned = max(plan.peak_bytes for plan in plans)
    values: dict[str, Any] = {
        "planned_bytes": planned,
        "micro_batches": [asdict(s) for s in shapes],
    }
    if device.type != "cuda":
        measured, expected, result = "n/a (no CUDA)", f"plan {planned / GIB:.3f} GiB", "SKIP"
    else:
        peak = torch.cuda.max_memory_allocated()
        ratio = peak / planned
        low, high = PLAN_RATIO_RANGE
        values |= {"peak_bytes": peak, "ratio": ratio}
        measured = f"{peak / GIB:.2f} GiB"
        expected = f"plan {planned / GIB:.2f} GiB; ratio {ratio:.2f} in [{low}, {high}]"
        result = verdict(low <= ratio <= high)
    rows.append(
        Row(
            "a learner step",
            name,
            "peak CUDA memory of the step vs rexrag plan (fsdp, 1 GPU)",
            measured,
            expected,
            result,
            values,
        )
    )
    return rows
