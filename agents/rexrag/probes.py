"""The exploratory prompt pool and the probability of drawing a prompt's tokens from it.

A probe appends one prompt drawn uniformly from the pool (spec §3.2). The policy
correction needs, for every inserted token, its probability under that draw given the
prompt tokens before it (spec §4.3, the official ``PrefixIndex``): with a uniform pool
that is ``#prompts starting with prefix+token / #prompts starting with prefix``. The
pool is tokenised with the policy's own tokenizer, so the trie fits any model (the
official pickle only fits Qwen2.5's).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


class PromptPool:
    """Tokenised exploratory prompts and their prefix-trie probabilities."""

    def __init__(self, prompts: Sequence[Sequence[int]]):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError(
                "the prompt pool needs at least one prompt, each of at least one token"
            )
        self.prompts = [tuple(p) for p in prompts]
        self._prefix_counts = Counter(
            p[:length] for p in self.prompts for length in range(len(p) + 1)
        )

    def __len__(self) -> int:
        return len(self.prompts)

    def token_logprobs(self, prompt: Sequence[int]) -> list[float]:
        """log P(token_t | tokens_<t) of each token of ``prompt`` under a uniform pool draw.

        Summed, they give log P(prompt) = log(copies in pool / pool size).
        """
        prompt = tuple(prompt)
        if self._prefix_counts[prompt] == 0:
            raise ValueError("the prompt is not in the pool")
        return [
            math.log(self._prefix_counts[prompt[: t + 1]] / self._prefix_counts[prompt[:t]])
            for t in range(len(prompt))
        ]
