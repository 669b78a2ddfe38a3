"""One-shot device check: the torch-only parts of the GPU path, on random Qwen2.5 weights.

    python -m benchmarks.gpu_check [--models 0.5b,1.5b,3b] [--json out.json]
    python -m benchmarks.gpu_check --smoke [--json out.json]   # CPU, tiny shapes (CI)

Nothing of the CUDA path runs in the test suite, and the GPU machine this project is
sometimes lent has no Ray, vLLM or Gymnasium and nothing to download (docs/development.md,
"The device check", says what to carry and how long this takes). So this command needs
torch, transformers and the project's own torch-only modules, builds each model from
its shape (:class:`~agents.runs.memory_plan.ModelShape`, random weights, no download),
and checks, per model:

(a) a learner step: REX-RAG's loss (``clipped_surrogate`` + k3 KL, ``losses.py``) on a
    REX-RAG-shaped batch (``benchmarks/learner.py``'s trajectories, probes filtered and
    corrected by ``build_learner_batch``), in bfloat16 through FSDP2 (``sharding.py``,
    world size 1, NCCL; gloo on CPU) with activation checkpointing, two micro-batches,
    clipping and AdamW; its peak CUDA memory against ``rexrag plan``'s arithmetic
    (:func:`~agents.runs.memory_plan.plan_layouts`) for the same shapes;
(b) :class:`~agents.llm.hf.HFGenerator`'s tokens/s at batch 16 and 64 against
    ``model.generate`` on the same prompts;
(c) the generator's sampling log-probs against the learner's scoring
    (:class:`~agents.rexrag.logprobs.TokenScorer` through FSDP) in bfloat16, with the
    logits made peaked (random weights give near-uniform ones, under which every token
    has log-prob ~ -log V and an off-by-one position or a wrong temperature changes
    nothing); a planted off-by-one (the sampler's log-probs one position late) and a
    planted wrong temperature (scored at 1) must show large differences;
(d) the correction modes (``correction.py``), GRPO advantages and the loss on the device
    equal to CPU (in float64: see :data:`DEVICE_TOLERANCE`).

Every row says PASS, FAIL or SKIP; the command exits 1 if a row failed. It prints one
table (markdown, with torch/CUDA/transformers versions and the GPU) and, with
``--json``, writes the rows after every model, so a run cut short keeps what it measured.
Not exercised: Ray, RLlib's Learner and LearnerGroup, vLLM, the environment, several
learners (NCCL collectives across GPUs), CPU offload.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator
from agents.rexrag.correction import CORRECTIONS, CorrectionInputs
from agents.rexrag.learner_batch import MIN_LOGPROB, LearnerBatch, build_learner_batch
from agents.rexrag.losses import clipped_surrogate, grpo_advantages, low_var_kl, masked_mean
from agents.rexrag.sharding import clip_global_norm, shard_model
from agents.rexrag.token_batch import TokenBatch, select_rows, to_token_batch
from agents.runs.memory_plan import (
    GIB,
    PAPER_MODELS,
    LearnerSetup,
    MicroBatchShape,
    ModelShape,
    plan_layouts,
    shape_from_config,
)
from agents.trajectory import Component, Trajectory
from benchmarks.learner import synthetic_batch

#: The checked models: Qwen2.5's shapes (config.json on the hub), random weights.
MODELS = {
    "0.5b": ModelShape(
        layers=24,
        hidden=896,
        intermediate=4864,
        heads=14,
        kv_heads=2,
        head_dim=64,
        vocab=151936,
        tied_embeddings=True,
        qkv_bias=True,
    ),
    "1.5b": ModelShape(
        layers=28,
        hidden=1536,
        intermediate=8960,
        heads=12,
        kv_heads=2,
        head_dim=128,
        vocab=151936,
        tied_embeddings=True,
        qkv_bias=True,
    ),
    "3b": PAPER_MODELS["Qwen/Qwen2.5-3B"],
    # --smoke: the same layout at a size a CPU runs in seconds
    "tiny": ModelShape(
        layers=2,
        hidden=64,
        intermediate=128,
        heads=4,
        kv_heads=2,
        head_dim=16,
        vocab=4096,
        tied_embeddings=True,
        qkv_bias=True,
    ),
}

#: The official run's loss and optimiser settings (spec §5.1, RexRagConfig's defaults).
CLIP, KL_COEFF, LR, WEIGHT_DECAY, GRAD_CLIP = 0.2, 0.001, 1e-6, 0.01, 1.0
#: Sampling temperature of (c): not 1, so that a learner which ignores it is seen.
TEMPERATURE = 0.7
#: (c) peaks the logits until the tokens sampled at TEMPERATURE have this mean
#: probability: far from uniform (1/V), far from greedy (an off-by-one must show).
PEAK_SAMPLED_PROB = 0.5
#: (c) tolerances, bfloat16: the generator (KV cache, one position at a time) and the
#: learner (whole sequences, FSDP's bfloat16 gather of the same float32 weights) round
#: differently; ~0.002-0.008 mean / 0.03-0.15 max measured on CPU; the two planted bugs
#: give 1-3.
LOGPROB_MEAN_TOLERANCE, LOGPROB_MAX_TOLERANCE = 0.05, 1.0
#: A planted bug is caught when its mean |Δ| is at least this many times the real one's
#: and above LOGPROB_MEAN_TOLERANCE.
PLANTED_FACTOR = 10.0
#: (a) measured / planned peak memory that passes: the plan may overestimate a little,
#: not underestimate (its "fits" keeps 10% of the GPU free for what it does not count).
PLAN_RATIO_RANGE = (0.8, 1.1)
#: (b) HFGenerator must reach this share of ``model.generate``'s tokens/s.
MIN_GENERATION_RATIO = 0.5
#: (d) runs in float64: a float32 sum of a trajectory's log-probs (~ -10^4) rounds to
#: ~1e-3, and CUDA sums in another order than the CPU, which would move the sequence
#: mode's weights by more than any bug-free tolerance. GRPO advantages stay float32.
DEVICE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Sizes:
    """The shapes one run checks (defaults: the device run; :data:`SMOKE`: CPU)."""

    rows: int = 8  # (a) trajectories per step, in two micro-batches
    length: int = 1024  # (a) longest trajectory
    generation_batches: tuple[int, ...] = (16, 64)  # (b)
    prompt_length: int = 128  # (b)
    new_tokens: int = 128  # (b)
    sampled_rows: int = 16  # (c)
    sampled_tokens: int = 32  # (c)


SMOKE = Sizes(
    rows=4,
    length=320,
    generation_batches=(16, 64),
    prompt_length=16,
    new_tokens=8,
    sampled_rows=8,
    sampled_tokens=16,
)


@dataclass
class Row:
    """One line of the table: ``result`` is PASS, FAIL or SKIP; ``values`` go to the JSON."""

    part: str
    model: str
    what: str
    measured: str
    expected: str
    result: str
    values: dict[str, Any] = field(default_factory=dict)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


class IdsOnlyTokenizer:
    """What :class:`HFGenerator` asks of a tokenizer, for a model without one: pad id 0,
    no EOS (every row samples all its tokens), no stop strings, no text."""

    eos_token_id = None
    pad_token_id = 0

    def decode(self, token_ids, skip_special_tokens: bool = False) -> str:
        return ""


def qwen2_config(shape: ModelShape):
    """A ``Qwen2Config`` of ``shape`` (no EOS: generation runs to its length)."""
    from transformers import Qwen2Config

    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        tie_word_embeddings=shape.tied_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    if shape_from_config(config) != shape:  # what the plan counts is what is built
        raise ValueError(f"Qwen2Config does not reproduce {shape}: {shape_from_config(config)}")
    return config


def random_model(shape: ModelShape, device: torch.device, seed: int = 0):
    """A float32 ``Qwen2ForCausalLM`` of ``shape``, randomly initialised on ``device``."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    with device:
        return Qwen2ForCausalLM(qwen2_config(shape))


@torch.no_grad()
def peak_logits(
    model, prompts: list[list[int]], temperature: float, sampled_prob: float, new_tokens: int
) -> float:
    """Scale the final norm's weight (so every logit: the LM head is linear) until the
    tokens ``model`` samples at ``temperature`` after ``prompts`` have a mean probability
    of ``sampled_prob``; returns the scale.

    Random weights give near-uniform logits. Measured on sampled tokens, not at the
    prompts: with tied embeddings a random model's favourite next token is the current
    one, so its continuations repeat and grow surer than any prompt position (a mean
    top-1 probability of 0.2 at the prompts gave sampled tokens of 0.8, under which an
    off-by-one hardly shows).
    """
    norm = model.get_decoder().norm.weight
    base = norm.detach().clone()
    generator = HFGenerator(model, IdsOnlyTokenizer())
    params = SamplingParams(
        temperature=temperature, max_new_tokens=new_tokens, stop=(), seed=len(prompts)
    )

    def mean_sampled_prob(scale: float) -> float:
        norm.copy_(base * scale)
        generations = generator.generate(prompts, params)
        return float(np.exp(np.concatenate([g.logprobs for g in generations])).mean())

    low, high = 1.0, 2.0
    while mean_sampled_prob(high) < sampled_prob:
        if high > 2**20:
            raise RuntimeError(f"logits do not peak: a scale of {high:g} samples uniformly")
        low, high = high, 2 * high
    for _ in range(6):  # bisection in log space: within 2^(1/64) of the bracket
        middle = math.sqrt(low * high)
        low, high = (middle, high) if mean_sampled_prob(middle) < sampled_prob else (low, middle)
    norm.copy_(base * high)
    return high


def random_prompts(count: int, length: int, vocab: int, seed: int, vary: bool) -> list[list[int]]:
    """``count`` prompts of random ids (no pad id 0); lengths from ``length // 2`` to
    ``length`` when ``vary`` (left padding exercised), else all ``length``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length // 2, length + 1, count) if vary else [length] * count
    return [rng.integers(1, vocab, int(n)).tolist() for n in lengths]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return result, time.perf_counter() - start


def generation_rows(model, name: str, sizes: Sizes, device: torch.device) -> list[Row]:
    """(b) HFGenerator against ``model.generate``: same prompts (equal lengths), same
    sampling (temperature, no top-k/top-p), every row to ``new_tokens``."""
    generator = HFGenerator(model, IdsOnlyTokenizer())
    params = SamplingParams(temperature=1.0, max_new_tokens=sizes.new_tokens, stop=(), seed=0)
    rows = []
    for batch in sizes.generation_batches:
        prompts = random_prompts(batch, sizes.prompt_length, model.config.vocab_size, batch, False)
        ids = torch.tensor(prompts, device=device)

        def ours(p=prompts, tokens=sizes.new_tokens):
            return generator.generate(p, replace(params, max_new_tokens=tokens))

        def theirs(ids=ids, tokens=sizes.new_tokens):
            return model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=0,
            )

        ours(tokens=2)  # warm-up: kernels, allocator
        theirs(tokens=2)
        generations, ours_seconds = timed(device, ours)
        output, theirs_seconds = timed(device, theirs)
        tokens = batch * sizes.new_tokens
        complete = all(len(g.token_ids) == sizes.new_tokens for g in generations)
        complete &= output.shape[1] - ids.shape[1] == sizes.new_tokens
        ratio = theirs_seconds / ours_seconds
        rows.append(
            Row(
                "b generation",
                name,
                f"tokens/s, batch {batch} x {sizes.new_tokens} new (prompts {sizes.prompt_length})",
                f"HFGenerator {tokens / ours_seconds:.0f}",
                f"generate {tokens / theirs_seconds:.0f}; ratio {ratio:.2f} >= "
                f"{MIN_GENERATION_RATIO}",
                verdict(complete and ratio >= MIN_GENERATION_RATIO),
                {
                    "batch": batch,
                    "hf_generator_tokens_per_s": tokens / ours_seconds,
                    "generate_tokens_per_s": tokens / theirs_seconds,
                    "ratio": ratio,
                    "all_rows_complete": complete,
                },
            )
        )
    return rows


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


def as_tensors(columns: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.as_tensor(value, device=device) for name, value in columns.items()}


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


def check_model(
    name: str, shape: ModelShape, sizes: Sizes, device: torch.device, rows: list[Row]
) -> None:
    """Every part for one model, appended to ``rows`` as they finish. The learner's
    weights are sharded in place, so the rollout copy (b, c) is taken first and freed
    before the learner's parts."""
    model = random_model(shape, device)
    prompts = random_prompts(8, sizes.prompt_length, shape.vocab, 1, True)
    scale = peak_logits(
        model, prompts, TEMPERATURE, PEAK_SAMPLED_PROB, max(1, sizes.sampled_tokens // 2)
    )
    rollout_model = copy.deepcopy(model).to(torch.bfloat16)
    rows += generation_rows(rollout_model, name, sizes, device)
    sampled = sampled_batch(HFGenerator(rollout_model, IdsOnlyTokenizer()), sizes, seed=2)
    del rollout_model
    release(device)

    reference = copy.deepcopy(model).to(torch.bfloat16).eval().requires_grad_(False)
    model.gradient_checkpointing_enable({"use_reentrant": False})
    options = {"compute_dtype": torch.bfloat16, "cpu_offload": False, "device_type": device.type}
    scorer = shard_model(model, **options)
    reference_scorer = shard_model(reference, **options)
    # on the sharded parameters, before any forward pass: FSDP2's root keeps its gathered
    # parameters registered after a forward pass without gradients (the scoring below)
    optimizer = torch.optim.AdamW(
        scorer.parameters(), lr=LR, betas=(0.9, 0.999), weight_decay=WEIGHT_DECAY
    )
    final_norm = model.get_decoder().norm.weight  # sharded: what the optimizer steps

    model.eval()
    peak = {
        "logit_scale": scale,
        "sampled_prob": float(np.exp(sampled.sampling_logprobs[sampled.loss_mask]).mean()),
        "uniform_prob": 1.0 / shape.vocab,
    }
    learner = score(scorer, sampled, device, TEMPERATURE)
    at_temperature_1 = score(scorer, sampled, device, 1.0)
    rows += agreement_rows(name, sampled, learner, at_temperature_1, peak)

    batch = synthetic_batch(shape.vocab, sizes.rows, sizes.length)  # a quarter probes
    old = score(scorer, batch, device, TEMPERATURE)
    learner_batch = corrected_batch(batch, old, score(reference_scorer, batch, device, TEMPERATURE))
    model.train()
    rows += learner_rows(name, shape, scorer, optimizer, final_norm, learner_batch, device)
    rows += device_rows(name, learner_batch, old, device)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """A one-rank process group in this process (NCCL on CUDA, gloo on CPU): FSDP2's
    mesh, as a learner's would be; destroyed on the way out."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", rank=0, world_size=1, device_id=device)
    else:
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def environment(device: torch.device) -> dict[str, str]:
    import transformers

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def render(rows: list[Row], env: dict[str, str], seconds: float) -> str:
    """The markdown table (each model's rows in part order; cells hold no ``|``), headed
    by what it ran on."""
    header = (
        f"gpu_check on {env['device']}: torch {env['torch']} (CUDA {env['cuda']}), "
        f"transformers {env['transformers']}, Python {env['python']}; {seconds:.0f} s"
    )
    lines = [
        header,
        "",
        "| part | model | what | measured | expected | result |",
        "|---|---|---|---|---|---|",
    ]
    models = list(dict.fromkeys(r.model for r in rows))
    lines += [
        f"| {r.part} | {r.model} | {r.what} | {r.measured} | {r.expected} | {r.result} |"
        for r in sorted(rows, key=lambda r: (models.index(r.model), r.part))
    ]
    failed = sum(r.result == "FAIL" for r in rows)
    lines += ["", f"{len(rows)} rows, {failed} failed"]
    return "\n".join(lines)


def write_json(path: Path | None, rows: list[Row], env: dict, args: dict, seconds: float) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "environment": env,
        "arguments": args,
        "seconds": seconds,
        "passed": not any(r.result == "FAIL" for r in rows),
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="0.5b,1.5b,3b", help=f"comma-separated, of {', '.join(MODELS)}"
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, the tiny model, tiny shapes")
    parser.add_argument("--json", type=Path, help="write the rows here (after every model)")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=270.0,
        help="seconds: a model whose estimated time (the last one's, scaled by parameters) "
        "would end beyond this is skipped (default 270)",
    )
    args = parser.parse_args(argv)
    args.names = ["tiny"] if args.smoke else args.models.split(",")
    unknown = [name for name in args.names if name not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}: choose from {', '.join(MODELS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.smoke:
        device, sizes = torch.device("cpu"), SMOKE
    elif torch.cuda.is_available():
        device, sizes = torch.device("cuda", 0), Sizes()
    else:
        print("no CUDA device: run with --smoke on CPU", file=sys.stderr)
        return 2
    env = environment(device)
    settings = {"models": args.names, "smoke": args.smoke, "sizes": asdict(sizes)}
    rows: list[Row] = []
    per_param = None  # seconds per parameter of the last model
    with process_group(device):
        for name in args.names:
            shape = MODELS[name]
            elapsed = time.perf_counter() - start
            estimate = per_param * shape.num_params if per_param else 0.0
            if elapsed + estimate > args.time_budget:
                rows.append(Row("-", name, "not started", "-", f"~{estimate:.0f} s more", "SKIP"))
                continue
            model_start = time.perf_counter()
            found: list[Row] = []
            try:
                check_model(name, shape, sizes, device, found)
            except Exception as error:  # one model's failure must not lose the others' rows
                traceback.print_exc()
                found.append(Row("-", name, "the check raised", repr(error)[:200], "-", "FAIL"))
            release(device)
            per_param = (time.perf_counter() - model_start) / shape.num_params
            for row in found:
                print(f"{row.result} {row.part} {row.model}: {row.what}: {row.measured}")
            rows += found
            write_json(args.json, rows, env, settings, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    write_json(args.json, rows, env, settings, seconds)
    print(render(rows, env, seconds))
    return 1 if any(row.result == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
