"""Learner throughput and peak memory: RexRagLearner vs a plain HF training loop.

    python benchmarks/learner.py [--model tiny] [--batch 16] [--length 768] [--repeats 3]
    python benchmarks/learner.py --plan [--malloc-default]   # `rexrag plan` vs measured

Both sides take optimizer steps on the same padded batch of REX-RAG-shaped
trajectories (a question prompt, model turns, retrieved passages, and for a quarter of
the rows an exploratory prompt): same model, same AdamW. The baseline is what a first
implementation looks like: ``model(...).logits`` over every position, a full
``log_softmax``, gather, masked mean, backward, step. RexRagLearner adds everything
REX-RAG needs (clipped ratio against the corrected behaviour probability, KL to the
reference, token-mean over MODEL + PROBE_PROMPT tokens, micro-batching), and
scores only the trained positions; ``hf-loop-targeted`` is the plain loop with that same
response-only scoring, so the difference to it is the cost of REX-RAG's loss alone.
The driver-side correction (probe filter, GRPO advantages, behaviour log-probs:
``build_learner_batch``) and the learner's π_old / π_ref scoring pass are timed as their
own rows. Each variant runs in a fresh process so its
peak memory (max RSS on CPU, max allocated on CUDA) is its own.

``--plan`` checks :mod:`agents.analysis.memory_plan` instead: for the tiny model and
SmolLM2-135M, with and without gradient checkpointing (and SmolLM2 under bfloat16
autocast), a RexRagLearner (as in
``rexrag-update``) takes a warm-up step (AdamW's state exists from then on) and then
one step of two micro-batches (the second runs with every gradient allocated, the
peak the plan counts). Measured: peak RSS minus the RSS just before the model is
loaded, in a fresh process. On CPU that is the "GPU" of the plan's ``ddp`` layout on
one learner.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import torch

from agents.trajectory import Component

VARIANTS = ("hf-loop", "hf-loop-targeted", "rexrag-update", "rexrag-scoring", "rexrag-correction")
#: --plan cases: (model, dtype, gradient checkpointing). bfloat16 is autocast, the
#: precision of DDP learners in bfloat16.
PLAN_CASES = (
    ("tiny", "float32", False),
    ("tiny", "float32", True),
    ("smollm2-135m", "float32", False),
    ("smollm2-135m", "float32", True),
    ("smollm2-135m", "bfloat16", False),
)
#: model -> (max_tokens_per_micro_batch, longest trajectory). The tiny model needs many
#: tokens for its activations to outweigh the process's own noise.
PLAN_BUDGETS = {"tiny": (16384, 1024), "smollm2-135m": (2048, 512)}
#: glibc raises its mmap threshold (up to 32 MiB) as big blocks are freed; smaller
#: blocks then come from the heap, whose freed holes stay resident: RSS no tensor holds
#: (with the defaults SmolLM2's peak RSS is 1.4x its live tensors). A fixed threshold
#: sends every block from 64 KiB up back to the system when freed, so RSS follows the
#: live tensors, as ``torch.cuda.max_memory_allocated`` does on a GPU.
PLAN_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


def synthetic_batch(vocab_size: int, rows: int, length: int, seed: int = 0) -> dict:
    """Padded trajectories with realistic component layout and lengths (75-100% of max)."""
    from agents.rexrag.token_batch import to_token_batch
    from agents.trajectory import Trajectory

    rng = np.random.default_rng(seed)
    trajectories = []
    for row in range(rows):
        size = int(length * rng.uniform(0.75, 1.0))
        labels = [Component.PROMPT] * 120
        while len(labels) < size:
            labels += [Component.MODEL] * 60 + [Component.INFO] * 150
        labels = labels[:size]
        is_probe = row % 4 == 3
        if is_probe:
            labels[size - 80 : size - 60] = [Component.PROBE_PROMPT] * 20
        trajectories.append(
            Trajectory(
                example_id=f"q{row // 5}",
                question="q",
                golden_answers=["a"],
                data_source="bench",
                token_ids=rng.integers(0, vocab_size, size).tolist(),
                components=[int(c) for c in labels],
                sampling_logprobs=[-1.0] * size,
                prompt_length=120,
                reward=float(rng.random() < 0.3),
                is_probe=is_probe,
            )
        )
    return to_token_batch(trajectories)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step, repeats: int) -> float:
    step()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def run_variant(variant: str, args) -> dict:
    from agents.rexrag import RexRagConfig
    from agents.rexrag.learner_batch import build_learner_batch
    from agents.rexrag.logprobs import response_token_logprobs
    from rexrag_env.spaces import UnicodeText

    config = RexRagConfig.from_yaml(
        "tiny-cpu", {"llm": args.model, "minibatch_size": args.batch, "lr_warmup_steps": 0}
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        config.learners(num_gpus_per_learner=1)
    learner = config.build_learner(spaces={"default_policy": (UnicodeText(), UnicodeText())})
    model = learner.module["default_policy"].model
    batch = synthetic_batch(model.config.vocab_size, args.batch, args.length)
    trained_tokens = int(batch.loss_mask.sum())
    scoring_columns = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "target_mask": batch.loss_mask,
    }
    scores = learner.score_tokens(scoring_columns)

    def correction():
        return build_learner_batch(
            batch,
            scores["old_logprobs"],
            scores["reference_logprobs"],
            keep_ratio=1.0,  # every probe kept: both sides train on the same rows
            keep_multiple_of=1,
            correction="rexrag",
            sequence_weight_cap=config.sequence_weight_cap,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
        )

    if variant.startswith("hf-loop"):
        del learner.reference_model  # the plain loop keeps no reference copy
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        ids = torch.as_tensor(batch.input_ids, device=device)
        attention = torch.as_tensor(batch.attention_mask, device=device)
        mask = torch.as_tensor(batch.loss_mask, device=device, dtype=torch.float32)
        advantages = torch.as_tensor(batch.rewards, device=device) - 0.3

        def token_logprobs():
            if variant == "hf-loop-targeted":  # our response-only log-probs, plain PG loss
                return response_token_logprobs(model, ids, attention, mask.bool())
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
            shifted = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            return torch.nn.functional.pad(shifted, (1, 0))

        def step():
            loss = -((token_logprobs() * advantages[:, None]) * mask).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    elif variant == "rexrag-update":
        from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

        columns = correction().columns
        train_batch = MultiAgentBatch(
            {"default_policy": SampleBatch(columns)}, env_steps=len(columns["advantages"])
        )
        trained_tokens = int(columns["loss_mask"].sum())

        def step():
            learner.update(batch=train_batch)

    elif variant == "rexrag-scoring":

        def step():
            learner.score_tokens(scoring_columns)

    else:

        def step():
            correction()

    seconds = timed(step, args.repeats)
    return {
        "variant": variant,
        "seconds": seconds,
        "tokens": trained_tokens,
        "padded_tokens": int(batch.input_ids.size),
        "peak_mb": peak_memory_mb(),
    }


def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def update_columns(batch, config) -> dict:
    """The learner's columns for ``batch``; π_old and π_ref are the sampling log-probs
    (their values do not change what an update allocates, and scoring would cost a
    forward pass of the whole batch)."""
    from agents.rexrag.learner_batch import build_learner_batch

    return build_learner_batch(
        batch,
        batch.sampling_logprobs,
        batch.sampling_logprobs,
        keep_ratio=1.0,
        keep_multiple_of=1,
        correction="rexrag",
        sequence_weight_cap=config.sequence_weight_cap,
        clip_low=config.clip_low,
        clip_high=config.clip_high,
    ).columns


def run_plan_case(model_name: str, dtype: str, checkpointing: bool) -> dict:
    """Estimate and measure one --plan case (in a fresh process)."""
    import gc

    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from agents.analysis.memory_plan import MicroBatchShape, model_shape, plan_memory
    from agents.rexrag import RexRagConfig
    from agents.rexrag.micro_batches import micro_batches
    from rexrag_env.spaces import UnicodeText

    tokens, length = PLAN_BUDGETS[model_name]
    config = RexRagConfig.from_yaml(
        "tiny-cpu",
        {
            "llm": model_name,
            "dtype": dtype,
            "gradient_checkpointing": checkpointing,
            "max_tokens_per_micro_batch": tokens,
            "lr_warmup_steps": 0,
        },
    )
    shape = model_shape(model_name)  # resolves the alias: the model is built, not loaded
    rows = 2 * max(1, tokens // length)  # two micro-batches
    columns = update_columns(synthetic_batch(shape.vocab, rows, length), config)
    warm_up = update_columns(synthetic_batch(shape.vocab, 2, 256, seed=1), config)

    def as_batch(values: dict) -> MultiAgentBatch:
        return MultiAgentBatch(
            {"default_policy": SampleBatch(values)}, env_steps=len(values["advantages"])
        )

    attention = torch.as_tensor(columns["attention_mask"])
    chunks = [
        MicroBatchShape(
            rows=part.stop - part.start,
            width=width,
            targets=int(columns["loss_mask"][part].sum()),
        )
        for part, width in micro_batches(attention, tokens)
    ]
    spaces = {"default_policy": (UnicodeText(), UnicodeText())}
    # A throwaway learner of the tiny model first: building one imports ~1400 modules
    # lazily (torch.distributed, dynamo, sympy, …: ~130 MB), which are not the model's.
    RexRagConfig.from_yaml("tiny-cpu").build_learner(spaces=spaces)
    gc.collect()
    before_model = current_rss_bytes()
    learner = config.build_learner(spaces=spaces)
    learner.update(batch=as_batch(warm_up))
    after_warm_up = current_rss_bytes()
    learner.update(batch=as_batch(columns))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # the micro-batch the plan peaks at (they differ a little in width and targets)
    plan = max(
        (
            plan_memory(config, shape, gpus=1, gpu_memory_gb=80, micro_batch=chunk).layout("ddp")
            for chunk in chunks
        ),
        key=lambda layout: layout.peak_bytes,
    )
    static_rows = ("parameters", "gradients", "adamw", "reference")
    return {
        "micro_batches": [(c.rows, c.width, c.targets) for c in chunks],
        "estimate": plan.peak_bytes,
        "measured": peak - before_model,
        "static_estimate": sum(plan.rows[key] for key in static_rows),
        "static_measured": after_warm_up - before_model,
    }


def print_plan_validation(malloc_default: bool) -> None:
    """Each --plan case in a fresh process, then the table (MiB, estimate / measured)."""
    allocator = "glibc's default malloc" if malloc_default else "MALLOC_MMAP_THRESHOLD_=65536"
    print(
        f"device=cpu (the ddp layout on 1 learner) torch threads="
        f"{torch.get_num_threads()} {allocator}; "
        "measured = peak RSS - RSS before the model is loaded"
    )
    print(
        "| model | dtype | checkpointing | micro-batches: rows x width (targets) "
        "| estimate (MiB) | measured (MiB) | ratio | static estimate / measured (MiB) |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|")
    for model_name, dtype, checkpointing in PLAN_CASES:
        switch = "on" if checkpointing else "off"
        command = [sys.executable, __file__, "--plan-case", f"{model_name}:{dtype}:{switch}"]
        output = subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            env=None if malloc_default else PLAN_ENV,
        ).stdout
        case = json.loads(output.strip().splitlines()[-1])
        shapes = ", ".join(f"{r}x{w} ({t})" for r, w, t in case["micro_batches"])
        estimate, measured = case["estimate"] / 2**20, case["measured"] / 2**20
        static = f"{case['static_estimate'] / 2**20:.0f} / {case['static_measured'] / 2**20:.0f}"
        print(
            f"| {model_name} | {dtype} | {switch} | {shapes} | {estimate:.0f} | {measured:.0f} "
            f"| {estimate / measured:.2f} | {static} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="model alias, hub name or path")
    parser.add_argument("--batch", type=int, default=16, help="trajectories per update")
    parser.add_argument("--length", type=int, default=768, help="longest trajectory (tokens)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (median)")
    parser.add_argument(
        "--plan", action="store_true", help="rexrag plan's estimate vs measured peak memory"
    )
    parser.add_argument(
        "--malloc-default",
        action="store_true",
        help="--plan under glibc's default mmap threshold (RSS then counts freed heap too)",
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--plan-case", help=argparse.SUPPRESS)  # MODEL:DTYPE:on|off
    args = parser.parse_args()
    if args.variant:  # a child process: one measurement, as JSON
        print(json.dumps(run_variant(args.variant, args)))
        return
    if args.plan_case:
        model_name, dtype, checkpointing = args.plan_case.split(":")
        print(json.dumps(run_plan_case(model_name, dtype, checkpointing == "on")))
        return
    if args.plan:
        print_plan_validation(args.malloc_default)
        return

    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
    baseline = results["hf-loop"]
    update = results["rexrag-update"]
    print(
        f"model={args.model} batch={args.batch}x{args.length} "
        f"device={'cuda' if torch.cuda.is_available() else 'cpu'} "
        f"torch threads={torch.get_num_threads()} repeats={args.repeats} (median)"
    )
    print("| step | seconds | trained tokens/s | peak memory (MB) |")
    print("|---|---:|---:|---:|")
    for name, result in results.items():
        rate = result["tokens"] / result["seconds"]
        print(f"| {name} | {result['seconds']:.3f} | {rate:.0f} | {result['peak_mb']:.0f} |")
    overhead = update["seconds"] / baseline["seconds"] - 1
    full = (update["seconds"] + results["rexrag-correction"]["seconds"]) / baseline["seconds"] - 1
    print()
    targeted = update["seconds"] / results["hf-loop-targeted"]["seconds"] - 1
    print(f"RexRagLearner update vs plain HF loop: {overhead:+.1%} time (target < +15%)")
    print(f"... including the driver-side correction: {full:+.1%} time")
    print(
        f"... vs the plain loop with our response-only log-probs: {targeted:+.1%} time "
        "(the cost of the clipped, corrected loss + KL + micro-batching alone)"
    )
    print(
        f"peak memory: {update['peak_mb'] / baseline['peak_mb']:.2f}x the plain loop's "
        "(the learner also holds the frozen reference policy)"
    )


if __name__ == "__main__":
    main()
