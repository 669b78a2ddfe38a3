"""(b) HFGenerator's tokens/s against ``model.generate`` on the same prompts."""

from __future__ import annotations

from dataclasses import replace

import torch

from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator
from benchmarks.gpu_check.device import timed
from benchmarks.gpu_check.models import IdsOnlyTokenizer, Sizes, random_prompts
from benchmarks.gpu_check.report import Row, verdict

#: (b) HFGenerator must reach this share of ``model.generate``'s tokens/s on a CUDA device.
#: Not judged on CPU (``--smoke``): tiny shapes on a shared CPU time noise, not the
#: generator (a loaded 2-core machine measured 0.41 and 1.47 in two runs of one build).
MIN_GENERATION_RATIO = 0.5


def generation_rows(model, name: str, sizes: Sizes, device: torch.device) -> list[Row]:
    """(b) HFGenerator against ``model.generate``: same prompts (equal lengths), same
    sampling (temperature, no top-k/top-p), every row to ``new_tokens``; the speed ratio
    is judged on CUDA only, every row's completeness everywhere."""
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
        judged = device.type == "cuda"
        speed = f">= {MIN_GENERATION_RATIO}" if judged else "(speed judged on CUDA only)"
        rows.append(
            Row(
                "b generation",
                name,
                f"tokens/s, batch {batch} x {sizes.new_tokens} new (prompts {sizes.prompt_length})",
                f"HFGenerator {tokens / ours_seconds:.0f}",
                f"generate {tokens / theirs_seconds:.0f}; ratio {ratio:.2f} {speed}",
                verdict(complete and (ratio >= MIN_GENERATION_RATIO or not judged)),
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
