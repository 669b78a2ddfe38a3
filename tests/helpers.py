"""Test doubles and markers shared by several test modules."""

import platform
import sys

import pytest

from agents.llm.base import Generation
from rexrag_env.retrieval.base import Passage


class ScriptedGenerator:
    """A Generator that 'samples' fixed turns with a real tokenizer, to drive known paths.

    Each generate call takes the next turn: one text for every row, or a list of texts,
    one per row (so the rows of a group can have different outcomes).
    """

    def __init__(self, tokenizer, turns):
        self.tokenizer = tokenizer
        self.turns = list(turns)
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        turn = self.turns.pop(0)
        texts = [turn] * len(prompts) if isinstance(turn, str) else list(turn)
        if len(texts) != len(prompts):
            raise ValueError(f"scripted {len(texts)} texts for {len(prompts)} prompts")
        return [self._generation(text) for text in texts]

    def _generation(self, text: str) -> Generation:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Generation(ids, [-0.5] * len(ids), self.tokenizer.decode(ids), "stop")


class CountingRetriever:
    """A retriever that records the queries of each call and passes them on to
    ``backend``, or answers each with ``k`` made-up passages."""

    def __init__(self, backend=None):
        self.backend = backend
        self.calls = []

    def search(self, queries, k):
        self.calls.append(list(queries))
        if self.backend is not None:
            return self.backend.search(queries, k)
        return [[Passage(str(i), "T\nx") for i in range(k)] for _ in queries]

    @property
    def batch_sizes(self) -> list[int]:
        """The number of queries of each call."""
        return [len(queries) for queries in self.calls]


#: vLLM's builds are for x86-64 Linux (its CPU build is in the test install; CUDA
#: machines have the other). Elsewhere its tests skip; where it can run, a missing vllm
#: fails them with the install hint instead of skipping them unnoticed.
needs_vllm = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")),
    reason="vLLM's builds are for x86-64 Linux",
)
