"""The generation interface every backend implements: token ids in, token ids out.

Sampled ids are returned exactly as sampled and are never decoded and re-encoded:
re-tokenisation drift between what the policy sampled and what the learner scores is
the most common bug of multi-turn RL stacks (DESIGN.md principle 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from rexrag_env.protocol import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, STOP_STRINGS

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one turn.

    ``temperature=0`` means greedy decoding. Defaults follow the official REX-RAG
    rollout (T = 1, top-p 1, 500 new tokens per turn, stop after a complete action).
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = 1.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = STOP_STRINGS
    #: the call's seed; a backend draws each row from its own stream below it
    #: (:func:`agents.llm.seeding.stream_seed`)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    """One sampled continuation.

    Attributes:
        token_ids: the sampled ids, ending with the token that completed a stop string
            (or the EOS token, or at the length limit).
        logprobs: log-probability of each sampled id under the sampling distribution
            (temperature and top-p applied; the plain model distribution when greedy).
        text: ``token_ids`` decoded.
        finish_reason: "stop" (a stop string), "eos" (end-of-sequence token) or "length".
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason
    stop_string: str | None = field(default=None)


@runtime_checkable
class Generator(Protocol):
    """A batched sampler over token ids (Hugging Face transformers, vLLM, …)."""

    tokenizer: object

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """Sample one continuation per prompt (prompts may have different lengths)."""
        ...
