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
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

from agents.trajectory import Component, Trajectory, Turn
from rexrag_env.protocol import ANSWER_OPEN
from rexrag_env.reward import zero_scores

#: Official keep-ratio EWMA: ρ ← decay·ρ + (1 - decay)·accuracy of kept probes (spec §3.3).
KEEP_RATIO_DECAY = 0.9


def default_exploratory_prompts() -> list[str]:
    """Our pool of 30 exploratory prompts (spec §3.2 item 4): each opens a ``<think>``
    that doubts the path so far (missed information or a reasoning error) and is left
    open, so the policy continues the thought, may search again, and answers again."""
    return load_exploratory_prompts(
        Path(str(files("agents.rexrag") / "data" / "exploratory_prompts.txt"))
    )


def load_exploratory_prompts(path: str | Path) -> list[str]:
    """A user pool: one prompt per non-empty line."""
    prompts = [
        line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    if not prompts:
        raise ValueError(f"exploratory prompt file {path} has no prompts")
    return prompts


def prompt_pool(source: Sequence[str] | str | Path | None) -> list[str]:
    """The exploratory prompts a run draws from: ours for ``None``, the prompts of a
    file (one per line), or a list's non-empty strings; ``ValueError`` if none."""
    if source is None:
        return default_exploratory_prompts()
    if isinstance(source, (str, Path)):
        return load_exploratory_prompts(source)
    prompts = [p for p in source if isinstance(p, str) and p.strip()]
    if not prompts:
        raise ValueError("the exploratory prompt pool is empty")
    return prompts


def update_keep_ratio(
    keep_ratio: float, kept_probe_accuracy: float, decay: float = KEEP_RATIO_DECAY
) -> float:
    """One EWMA step of the adaptive keep ratio (uncapped, as in the trainer the code uses)."""
    return decay * keep_ratio + (1.0 - decay) * kept_probe_accuracy


def probe_keep_count(num_originals: int, keep_ratio: float, multiple_of: int = 1) -> int:
    """K, the most probes the filter keeps: ⌊num_originals·ρ⌋ rounded down to a multiple
    of ``multiple_of`` (spec §3.3; the official run uses 8, its GPU count)."""
    limit = int(num_originals * keep_ratio)
    return limit - limit % multiple_of


def select_probes(
    prompt_scores: Sequence[float], num_originals: int, keep_ratio: float, multiple_of: int = 1
) -> list[int]:
    """Indices of the probes to keep: the top K by score (:func:`probe_keep_count`).

    ``prompt_scores``: each probe's mean π_old log-prob over its inserted prompt tokens,
    so the probes most natural to the current policy are kept. All are kept when fewer
    than K exist. Ties keep the earlier probe.
    """
    limit = probe_keep_count(num_originals, keep_ratio, multiple_of)
    order = sorted(range(len(prompt_scores)), key=lambda i: (-prompt_scores[i], i))
    return sorted(order[:limit])


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


def make_probe(
    original: Trajectory,
    prompt_text: str,
    prompt_ids: Sequence[int],
    tokenizer,
    prompt_logprobs: Sequence[float] | None = None,
) -> Trajectory:
    """A probe of a trajectory that answered wrongly (spec §3.2 items 3-5).

    It keeps every token of ``original`` up to its final ``<answer>`` (earlier turns,
    searches and passages included), appends the exploratory prompt as PROBE_PROMPT
    tokens, and is left unfinished, to be continued by the same policy in an environment
    reset at the next turn. It names its parent (``parent_id``) and where it branches
    off (``branch_point``: the first token that is not the parent's as sampled).

    The cut is exact in text. A BPE tokenizer often merges ``<answer>``'s first bytes
    with what precedes them (``</think><answer>`` samples ``</think`` + ``><`` + …, and
    ``.<`` is one token in Qwen's and SmolLM2's vocabularies), so no token boundary lies
    at the cut. The sampled ids wholly before ``<answer>`` are kept as sampled; only the
    text of the one straddling token that precedes ``<answer>`` is re-encoded and
    appended as MODEL tokens (a few at most). Those carry no sampling log-prob (NaN,
    see :class:`Trajectory`): the learner scores π_old on them like on every token.
    The official code re-tokenises the whole edited text instead.
    ``prompt_logprobs`` (:meth:`PromptPool.token_logprobs`) become the prompt tokens'
    sampling log-probs: the prompt was drawn from the pool, not from the policy.
    """
    if original.is_probe:
        raise ValueError("probes are not probed again (one level of probing, spec §3.2)")
    last_turn = original.turns[-1]
    action = last_turn.action
    answer_at = action.find(ANSWER_OPEN)
    if last_turn.action_type != "answer" or answer_at < 0:
        raise ValueError("only a trajectory that ended with an answer can be probed")
    turn_start = len(original.components)
    while turn_start > 0 and original.components[turn_start - 1] == Component.MODEL:
        turn_start -= 1
    turn_ids = original.token_ids[turn_start:]
    keep = _sampled_prefix_length(turn_ids, action[:answer_at], tokenizer)
    kept_text = tokenizer.decode(turn_ids[:keep])
    boundary_text = action[len(kept_text) : answer_at]
    boundary_ids = tokenizer.encode(boundary_text, add_special_tokens=False)
    end = turn_start + keep
    probe = replace(
        original,
        token_ids=original.token_ids[:end],
        components=original.components[:end],
        sampling_logprobs=original.sampling_logprobs[:end],
        turns=[*original.turns[:-1], Turn(action[:answer_at], prompt_text, "probe_prompt")],
        reward=sum(turn.reward for turn in original.turns[:-1]),
        scores=zero_scores(),
        answer=None,
        truncated=False,
        finished=False,
        is_probe=True,
        rollout_id=f"{original.rollout_id}/probe",
        parent_id=original.rollout_id,
        branch_point=end,
    )
    probe.extend(boundary_ids, Component.MODEL, [math.nan] * len(boundary_ids))
    probe.extend(
        list(prompt_ids),
        Component.PROBE_PROMPT,
        None if prompt_logprobs is None else list(prompt_logprobs),
    )
    return probe


def _sampled_prefix_length(turn_ids: Sequence[int], text_before_answer: str, tokenizer) -> int:
    """How many of the turn's sampled ids decode to a prefix of ``text_before_answer``."""
    keep = 0
    while keep < len(turn_ids):
        text = tokenizer.decode(turn_ids[: keep + 1])
        if not text_before_answer.startswith(text):
            break
        keep += 1
    return keep
