"""What the check runs on: the models (Qwen2.5 shapes, random weights, logits peaked
until sampled tokens are informative), the batch sizes of a run, random prompts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from agents.analysis.memory_plan import PAPER_MODELS, ModelShape, shape_from_config
from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator

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


#: Sampling temperature of (c): not 1, so that a learner which ignores it is seen.
TEMPERATURE = 0.7


#: (c) peaks the logits until the tokens sampled at TEMPERATURE have this mean
#: probability: far from uniform (1/V), far from greedy (an off-by-one must show).
PEAK_SAMPLED_PROB = 0.5


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
