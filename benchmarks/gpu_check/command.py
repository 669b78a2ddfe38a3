"""The command: every part for each model, the table, the JSON, the exit status."""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from agents.analysis.memory_plan import ModelShape
from agents.llm.hf import HFGenerator
from agents.rexrag.sharding import shard_model
from benchmarks import gpu_check
from benchmarks.gpu_check.agreement import agreement_rows, sampled_batch, score
from benchmarks.gpu_check.device import process_group, release
from benchmarks.gpu_check.generation import generation_rows
from benchmarks.gpu_check.learner_step import LR, WEIGHT_DECAY, corrected_batch, learner_rows
from benchmarks.gpu_check.models import (
    MODELS,
    PEAK_SAMPLED_PROB,
    SMOKE,
    TEMPERATURE,
    IdsOnlyTokenizer,
    Sizes,
    peak_logits,
    random_model,
    random_prompts,
)
from benchmarks.gpu_check.pure_math import device_rows
from benchmarks.gpu_check.report import Row, environment, render, write_json
from benchmarks.learner import synthetic_batch


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``names`` holds the models to check, in order."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description=gpu_check.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    """Check each model; the exit status: 0, 1 if a row failed, 2 if there is no CUDA
    device to check (and no ``--smoke``)."""
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
