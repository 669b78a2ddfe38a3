"""The registered warm starts: model alias -> recipe.

``load_model_and_tokenizer(alias)`` resolves these through the model table (registered
by ``agents/__init__.py``, which names them without importing this module) and gets
the shipped policy or builds it once (:func:`agents.warm_start.store.build_warm_start`).
"""

from __future__ import annotations

from pathlib import Path

from agents.warm_start.real_qa_policy import RealQAWarmStart
from agents.warm_start.store import WarmStartRecipe, build_warm_start
from agents.warm_start.synthwiki_policy import TINY_BASE, SynthWikiWarmStart
from agents.warm_start.synthwiki_trap import SynthWikiTrapWarmStart

WARM_STARTS: dict[str, WarmStartRecipe] = {
    "tiny-synthwiki": SynthWikiWarmStart(base=TINY_BASE),
    # stuck on multi-hop questions, fluent in the exploratory prompts
    "tiny-synthwiki-trap": SynthWikiTrapWarmStart(),
    # a pretrained LM learns the format in a few dozen steps; each costs ~10 s on 2 cores
    "smollm2-synthwiki": SynthWikiWarmStart(
        base="smollm2-135m", steps=40, lr=1e-4, batch_size=8, repeats=1
    ),
    # the trap's demonstrations for a pretrained LM, which reads the pool's English already
    "smollm2-synthwiki-trap": SynthWikiTrapWarmStart(
        base="smollm2-135m", steps=40, lr=1e-4, batch_size=8, repeats=1
    ),
    # search, read, answer with a span on real NQ + HotpotQA training questions
    "smollm2-realqa": RealQAWarmStart(),
}


def warm_start_path(alias: str) -> Path:
    """The policy of the registered warm start ``alias`` (shipped, cached or built now)."""
    return build_warm_start(alias, WARM_STARTS[alias])
