"""The trap warm start: a SynthWiki policy that is really stuck, and reads the probes' prompts.

``tiny-synthwiki``'s policy is never truly stuck (10% of its multi-hop rollouts already
go on after the first hop, and one skill fixes every such question), and its tokenizer
splits the exploratory prompts' English into ~40 foreign tokens each (log π_old of
about -14 per prompt token): GRPO learns without probes, and the probes' prompts carry
no learning signal. This recipe builds the opposite case (issue "Dead ends, seen and
fixed", item 5), on the same tiny architecture:

- **stuck**: on multi-hop questions every demonstration stops after the first hop. It
  either answers there (``OverconfidentAgent``), or is told as a successful probe: the
  doubt interrupts and the chain resumes (:func:`probe_told`). Only
  ``self_doubt_share`` (0.4%) doubt on their own (:func:`self_doubting`) and
  ``own_chain_share`` (none by default) follow the chain unprompted, so the policy
  rarely goes on by itself (0.25% of the multi-hop demonstrations gave 1.5% of
  rollouts that went on: sampling at T = 1 inflates a rare choice);
- **not unsolvable**: the told probes teach it to follow the chain once it does go
  on, so the rare rollout that continues is mostly right;
- **prompts in distribution**: the tokenizer is trained on the pool's text as well
  (its words are whole tokens), and a told probe trains every token of the doubt but
  its opening ``<think>``, which stays an observation. So the policy knows how a doubt
  goes on and what follows it, but the decision to start one is learnt from the rare
  self-doubting demonstrations only: a pretrained LLM's position ("wait, ..." is
  fluent English to it, yet it seldom writes it unasked).

Measured with ``rexrag profile --config tiny-synthwiki-trap`` (docs/testbed.md).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from agents.rexrag.probes import default_exploratory_prompts
from agents.scripted import CHAIN_COMPLETE, EvidenceChainAgent, OverconfidentAgent
from agents.trajectory import Trajectory, Turn
from agents.warm_start.sft import collect_demonstrations
from agents.warm_start.store import digest
from agents.warm_start.synthwiki_policy import (
    TINY_SYNTHWIKI_ARCHITECTURE,
    synthwiki_env,
    tiny_base_path,
)
from rexrag_env.protocol import THINK_OPEN
from rexrag_env.retrieval.bm25 import RANKING_VERSION

#: The model alias of the untrained tiny Qwen2 whose tokenizer also knows the pool.
TRAP_BASE = "tiny-synthwiki-trap-base"
#: How often each pool prompt is repeated in the tokenizer's training text: enough that
#: BPE merges its words whole against ~10^4 SynthWiki texts.
POOL_TEXT_REPEATS = 50


@dataclass(frozen=True)
class SynthWikiTrapWarmStart:
    """How the trap policy is made; every field is part of its cache key.

    On multi-hop questions a demonstration is told as a probe with probability
    ``probe_told_share``, doubts on its own with ``self_doubt_share``, follows the
    chain unprompted with ``own_chain_share``, and answers after the first hop
    otherwise. One-hop questions are answered after their one search by every
    demonstrator.
    """

    base: str = TRAP_BASE
    probe_told_share: float = 0.6
    self_doubt_share: float = 0.004
    own_chain_share: float = 0.0
    steps: int = 800
    lr: float = 3e-3
    batch_size: int = 16
    repeats: int = 2
    max_turns: int = 4
    topk: int = 2
    max_observation_tokens: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        shares = (self.probe_told_share, self.self_doubt_share, self.own_chain_share)
        if any(share < 0.0 for share in shares) or sum(shares) > 1.0:
            raise ValueError(
                "probe_told_share, self_doubt_share and own_chain_share must be >= 0 and sum "
                f"to at most 1, got {shares}"
            )

    def key(self) -> str:
        """A short hash of the recipe, the architecture, the ranking and the pool."""
        key = {
            "recipe": asdict(self),
            "tiny": TINY_SYNTHWIKI_ARCHITECTURE,
            "ranking": RANKING_VERSION,
            "pool": default_exploratory_prompts(),
        }
        return digest(key)

    def demonstrations(self, tokenizer, dataset: str | None = None) -> list[Trajectory]:
        """The recipe's token demonstrations on ``dataset`` (default ``synthwiki/train``)."""
        env = synthwiki_env(dataset or "synthwiki/train", self.max_turns, self.topk)
        doubts = default_exploratory_prompts()
        kinds = ("probe_told", "self_doubt", "own_chain")
        shares = (self.probe_told_share, self.self_doubt_share, self.own_chain_share)

        def kind_of(rng: random.Random) -> str:
            draw, bound = rng.random(), 0.0
            for kind, share in zip(kinds, shares, strict=True):
                bound += share
                if draw < bound:
                    return kind
            return "overconfident"

        chosen: list[str] = []

        def demonstrator(rng: random.Random):
            chosen.append(kind_of(rng))
            return OverconfidentAgent() if chosen[-1] == "overconfident" else EvidenceChainAgent()

        def edit(trajectory: Trajectory, rng: random.Random) -> Trajectory:
            searches = [turn.action_type for turn in trajectory.turns].count("search")
            if searches < 2 or chosen[-1] in ("overconfident", "own_chain"):
                return trajectory
            doubt = rng.choice(doubts)
            told = probe_told if chosen[-1] == "probe_told" else self_doubting
            return told(trajectory, doubt)

        return collect_demonstrations(
            env,
            demonstrator,
            tokenizer,
            repeats=self.repeats,
            seed=self.seed,
            max_observation_tokens=self.max_observation_tokens,
            edit=edit,
        )


def _resumed(second: Turn, opening: str) -> Turn:
    """The second hop's turn as the continuation of a thought that ``opening`` began:
    one ``<think>`` that doubts, then looks up the next entity."""
    return replace(second, action=opening + " " + second.action.removeprefix(THINK_OPEN).lstrip())


def probe_told(trajectory: Trajectory, doubt: str) -> Trajectory:
    """A whole-chain demonstration (2+ hops) told as a successful probe whose doubt the
    policy is trained to continue but not to begin.

    After the first hop it commits (``CHAIN_COMPLETE``, trained); the doubt's opening
    ``<think>`` is an observation (not trained), and the rest of the doubt, then the
    chain, are the model's turn (trained).
    """
    if not doubt.startswith(THINK_OPEN):
        raise ValueError(f"an exploratory prompt opens a thought ({THINK_OPEN}): {doubt!r}")
    first, second, *rest = trajectory.turns
    committed = Turn(CHAIN_COMPLETE, THINK_OPEN, "probe_prompt")
    resumed = _resumed(second, doubt.removeprefix(THINK_OPEN).lstrip())
    return replace(trajectory, turns=[first, committed, resumed, *rest])


def self_doubting(trajectory: Trajectory, doubt: str) -> Trajectory:
    """A whole-chain demonstration (2+ hops) that doubts on its own after the first hop:
    the commitment, the whole doubt and the chain are one turn of the model's text."""
    first, second, *rest = trajectory.turns
    resumed = _resumed(second, CHAIN_COMPLETE + doubt)
    return replace(trajectory, turns=[first, resumed, *rest])


def trap_tokenizer_texts() -> list[str]:
    """SynthWiki's texts and the exploratory pool, repeated so that its words are whole
    tokens of the trap tokenizer."""
    from rexrag_env.synthwiki import synthwiki_texts

    return synthwiki_texts() + default_exploratory_prompts() * POOL_TEXT_REPEATS


def tiny_synthwiki_trap_base_path() -> Path:
    """The untrained trap base (the tiny architecture, the trap tokenizer), built once."""
    return tiny_base_path(TRAP_BASE, trap_tokenizer_texts())
