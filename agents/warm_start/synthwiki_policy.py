"""Warm-started SynthWiki policies: a base LM fine-tuned on scripted demonstrations, cached.

The dead-end testbed (issue: "the embedded default") needs a policy that speaks the
search protocol and can follow an evidence chain, yet often commits to an answer after
the first hop: the demonstrations mix the evidence-chain agent with a share of
over-confident ones that answer with whatever the first search found. On a 2- or
3-hop question most rollouts of such a policy give that same wrong answer (a dead end),
a few follow the chain to the right one; exactly what GRPO struggles with and REX-RAG's
probes ("wait, let me check...") are meant to fix.

Two recipes are registered as model aliases (``agents/warm_start/recipes.py``;
``load_model_and_tokenizer("tiny-synthwiki")``):

- ``tiny-synthwiki``: a 1.3M-parameter Qwen2 whose tokenizer is trained on SynthWiki
  text (every invented name is one token), SFT'd for a few minutes on 2 CPU cores.
  Copying names from passages into queries and answers emerges abruptly after a few
  hundred steps at this size; smaller models or tokenizers that split names did not
  learn it within a CPU budget (measured; see the README).
- ``smollm2-synthwiki``: the packaged SmolLM2-135M-Instruct after the same SFT.

Each is built once into the rexrag cache under a name that hashes its recipe
(``agents/warm_start/store.py``). ``tiny-synthwiki``
also ships with the package (``weights/tiny-synthwiki``, 5 MB, built by this recipe):
the same recipe on another CPU's BLAS reaches the copying skill at another step, and
the embedded default should not depend on which machine runs it, nor spend minutes on
an SFT before its first iteration. ``rexrag sft --out DIR`` rebuilds it; a test pins
that the shipped weights carry the current recipe's key and that the recipe reproduces
their loss curve.
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
from rexrag_env.protocol import THINK_OPEN
from rexrag_env.retrieval.bm25 import RANKING_VERSION

#: The model alias of the SynthWiki-tokenizer tiny Qwen2 (untrained).
TINY_BASE = "tiny-synthwiki-base"
#: Its architecture: the smallest we measured that learns to copy names within minutes.
TINY_SYNTHWIKI_ARCHITECTURE = {
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "num_kv_heads": 4,
    "intermediate_size": 512,
    "vocab_size": 4096,  # an upper bound: SynthWiki text needs about 2,300 tokens
}


@dataclass(frozen=True)
class SynthWikiWarmStart:
    """How a warm-start policy is made; every field is part of its cache key.

    ``overconfident_share`` of the demonstrations answer after the first hop (the
    source of dead ends); the rest follow the whole evidence chain, and
    ``doubt_share`` of those on multi-hop questions are told as a successful probe
    (:func:`doubting`). ``repeats`` demonstrations per training question, each drawn
    independently.
    """

    base: str
    overconfident_share: float = 0.75
    doubt_share: float = 0.5
    steps: int = 800
    lr: float = 3e-3
    batch_size: int = 16
    repeats: int = 2
    max_turns: int = 4
    topk: int = 2
    max_observation_tokens: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("overconfident_share", "doubt_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def key(self) -> str:
        """A short hash of everything the policy depends on: the recipe, the tiny
        architecture and the ranking (the demonstrations show the passages BM25 returns)."""
        key = {
            "recipe": asdict(self),
            "tiny": TINY_SYNTHWIKI_ARCHITECTURE,
            "ranking": RANKING_VERSION,
        }
        return digest(key)

    def demonstrations(self, tokenizer, dataset: str | None = None) -> list[Trajectory]:
        """The recipe's token demonstrations on ``dataset`` (default ``synthwiki/train``)."""
        return synthwiki_demonstrations(tokenizer, self, dataset or "synthwiki/train")


def doubting(trajectory: Trajectory, doubt: str) -> Trajectory:
    """An evidence-chain demonstration (of 2+ hops) retold as a successful probe.

    After the first search it thinks it is done, exactly as the over-confident agent
    does before answering; then ``doubt`` (an exploratory prompt) interrupts, and the
    chain resumes inside that thought. The doubt is recorded as an observation, text
    the model did not write, so SFT does not train the policy to doubt on its own: it
    only learns to act on a doubt, as an instruction-following LLM would. Without this
    a tiny LM, which has no pretraining, cannot make sense of a probe's prompt.
    """
    first, second, *rest = trajectory.turns
    committed = Turn(CHAIN_COMPLETE, doubt, "probe_prompt")
    resumed = replace(second, action=" " + second.action.removeprefix(THINK_OPEN).lstrip())
    return replace(trajectory, turns=[first, committed, resumed, *rest])


def synthwiki_demonstrations(
    tokenizer, recipe: SynthWikiWarmStart, dataset: str = "synthwiki/train"
) -> list[Trajectory]:
    """The recipe's token demonstrations on ``dataset`` (a split with evidence chains)."""
    env = synthwiki_env(dataset, recipe.max_turns, recipe.topk)

    def demonstrator(rng: random.Random):
        overconfident = rng.random() < recipe.overconfident_share
        return OverconfidentAgent() if overconfident else EvidenceChainAgent()

    doubts = default_exploratory_prompts()

    def edit(trajectory: Trajectory, rng: random.Random) -> Trajectory:
        searches = [turn.action_type for turn in trajectory.turns].count("search")
        if searches >= 2 and rng.random() < recipe.doubt_share:  # a chain of 2+ hops
            return doubting(trajectory, rng.choice(doubts))
        return trajectory

    return collect_demonstrations(
        env,
        demonstrator,
        tokenizer,
        repeats=recipe.repeats,
        seed=recipe.seed,
        max_observation_tokens=recipe.max_observation_tokens,
        edit=edit,
    )


def synthwiki_env(dataset: str, max_turns: int, topk: int):
    """A ``SearchQAEnv`` on ``dataset`` over the SynthWiki corpus, for demonstrators that
    follow evidence chains (refused for a split without them)."""
    from rexrag_env.env import SearchQAEnv

    env = SearchQAEnv(dataset=dataset, retriever="synthwiki", max_turns=max_turns, topk=topk)
    if not all("hops" in example.metadata for example in env.examples):
        raise ValueError(
            f"dataset {dataset!r} has no evidence chains (metadata 'hops'): "
            "the demonstrators follow them; use a SynthWiki split"
        )
    return env


def tiny_base_path(alias: str, texts: list[str]) -> Path:
    """An untrained tiny Qwen2 (seed 0, :data:`TINY_SYNTHWIKI_ARCHITECTURE`) whose
    tokenizer is trained on ``texts``, built once (seconds) under a name that hashes
    the architecture and the texts: two tokenizers never share a cache entry."""
    from agents.llm.tiny import build_tiny_model
    from rexrag_env.cache import build_once, cache_dir
    from rexrag_env.synthwiki import VERSION

    name = f"{alias}-{VERSION}-{digest({'tiny': TINY_SYNTHWIKI_ARCHITECTURE, 'texts': texts})}"
    return build_once(
        cache_dir() / "models" / name,
        lambda tmp: build_tiny_model(tmp, texts=texts, **TINY_SYNTHWIKI_ARCHITECTURE),
    )


def tiny_synthwiki_base_path() -> Path:
    """The untrained tiny Qwen2 with a SynthWiki tokenizer (seed 0), built once (seconds)."""
    from rexrag_env.synthwiki import synthwiki_texts

    return tiny_base_path(TINY_BASE, synthwiki_texts())
