"""Policies the warm-start tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def committing_policy(tmp_path_factory, tiny_model_dir):
    """The tiny model after a short SFT on over-confident SynthWiki demonstrations only:
    it searches once and answers, so multi-hop questions end wrong and spawn probes."""
    from agents.llm.models import load_model_and_tokenizer
    from agents.warm_start.store import warm_start
    from agents.warm_start.synthwiki_policy import SynthWikiWarmStart

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    recipe = SynthWikiWarmStart(
        base=str(tiny_model_dir), overconfident_share=1.0, steps=60, batch_size=16, repeats=1
    )
    losses = warm_start(model, tokenizer, recipe)
    assert losses[-1] < losses[0]
    directory = tmp_path_factory.mktemp("committing")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
