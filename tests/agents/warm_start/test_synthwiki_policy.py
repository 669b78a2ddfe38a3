"""SynthWiki warm starts: recipes, the testbed tokenizer, and REX-RAG on SynthWiki."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from agents import WARM_START_ALIASES
from agents.llm.models import load_model_and_tokenizer
from agents.rexrag import RexRagConfig
from agents.rexrag.rexrag import METRICS_KEY
from agents.warm_start import recipes, synthwiki_policy
from agents.warm_start.recipes import WARM_STARTS
from agents.warm_start.store import warm_start
from agents.warm_start.synthwiki_policy import TINY_BASE, SynthWikiWarmStart


def test_every_warm_start_is_a_model_alias_and_its_key_follows_its_recipe(monkeypatch):
    assert set(WARM_STARTS) == set(WARM_START_ALIASES)
    recipe = WARM_STARTS["tiny-synthwiki"]
    assert recipe.base == TINY_BASE
    key = recipe.key()
    assert key == replace(recipe).key()
    assert key != replace(recipe, steps=recipe.steps + 1).key()
    # The demonstrations show BM25's passages: another scorer's tie order rebuilds it.
    monkeypatch.setattr(synthwiki_policy, "RANKING_VERSION", "bm25s-0.0-numpy")
    assert recipe.key() != key
    with pytest.raises(ValueError, match="overconfident_share"):
        SynthWikiWarmStart(base=TINY_BASE, overconfident_share=1.5)


def test_the_testbed_tokenizer_keeps_invented_names_whole():
    from agents.llm.tiny import build_tiny_tokenizer
    from rexrag_env.synthwiki import generate_synthwiki, synthwiki_texts

    tokenizer = build_tiny_tokenizer(4096, synthwiki_texts())
    wiki = generate_synthwiki(0)
    titles = [passage["contents"].split("\n")[0].strip('"') for passage in wiki.passages]
    words = {word for title in titles for word in title.split()}
    assert len(words) > 300
    # as in a query, after a space: one token per word, so copying a name is one step
    assert all(len(tokenizer.encode(f" {word}", add_special_tokens=False)) == 1 for word in words)


def test_a_doubting_demonstration_acts_on_the_doubt_but_is_not_trained_to_doubt(tiny_model_dir):
    import gymnasium as gym

    import rexrag_env
    from agents.base import run_episode
    from agents.scripted import CHAIN_COMPLETE, EvidenceChainAgent
    from agents.trajectory import Component
    from agents.warm_start.sft import tokenize_demonstration
    from agents.warm_start.synthwiki_policy import doubting

    env = gym.make(rexrag_env.SYNTHWIKI_ENV_ID, split="train").unwrapped
    index = next(i for i, e in enumerate(env.examples) if e.metadata["num_hops"] == 2)
    chain = run_episode(env, EvidenceChainAgent(), options={"index": index})
    doubt = "<think> Wait, let me check that again."
    retold = doubting(chain, doubt)
    assert [t.action_type for t in retold.turns] == ["search", "probe_prompt", "search", "answer"]
    assert retold.turns[1].action == CHAIN_COMPLETE and retold.reward == chain.reward == 1.0
    # the text reads as one thought: "<think> Wait, ... I need to find out about X.</think>"
    assert (doubt + retold.turns[2].action).count("<think>") == 1

    _, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    tokens = tokenize_demonstration(retold, tokenizer)
    trained = [
        t for t, c in zip(tokens.token_ids, tokens.components, strict=True) if c == Component.MODEL
    ]
    assert "Wait" not in tokenizer.decode(trained)
    assert "Wait" in tokenizer.decode(tokens.token_ids)


@pytest.mark.slow
def test_two_rexrag_iterations_on_synthwiki_produce_probes_and_finite_metrics(
    committing_policy, ray_cluster
):
    config = RexRagConfig.from_yaml(
        "tiny-synthwiki",
        {
            "llm": str(committing_policy),
            "questions_per_iteration": 6,
            "group_size": 2,
            "probe_prob": 1.0,
            "keep_ratio": 1.0,
            "max_new_tokens_per_turn": 32,
        },
    )
    algo = config.build_algo()
    try:
        history = [algo.train()[METRICS_KEY] for _ in range(2)]
    finally:
        algo.stop()
    assert sum(metrics["probes_spawned"] for metrics in history) > 0
    assert sum(metrics["probes_kept"] for metrics in history) > 0
    for metrics in history:
        # a credit component with no trained token is NaN (e.g. no probe kept); the
        # columns are there in every iteration all the same
        measured = {k: v for k, v in metrics.items() if not k.startswith("credit_")}
        assert all(math.isfinite(value) for value in measured.values()), metrics
        assert {"credit_prefix_share", "credit_prompt_kl", "self_doubt_rate"} <= set(metrics)
    assert sorted(history[0]) == sorted(history[1])


def test_the_alias_builds_its_recipe_once_into_the_cache(monkeypatch, capsys):
    quick = SynthWikiWarmStart(base=TINY_BASE, steps=2, repeats=1)
    monkeypatch.setitem(recipes.WARM_STARTS, "tiny-synthwiki", quick)
    model, tokenizer = load_model_and_tokenizer("tiny-synthwiki")
    directory = recipes.warm_start_path("tiny-synthwiki")
    assert directory.name == f"tiny-synthwiki-{quick.key()}"
    assert len((directory / "sft_losses.csv").read_text().split()) == 3  # header + 2 steps
    width = synthwiki_policy.TINY_SYNTHWIKI_ARCHITECTURE["intermediate_size"]
    assert model.config.intermediate_size == width and len(tokenizer) < 4096
    assert "warm-starting" in capsys.readouterr().out
    load_model_and_tokenizer("tiny-synthwiki")  # cached: no second build
    assert "warm-starting" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["tiny-synthwiki", "tiny-synthwiki-trap"])
def test_the_shipped_warm_start_is_the_current_recipe_and_the_recipe_retraces_it(alias):
    """The package's SynthWiki warm starts were built by their current recipes: the keys
    match (a recipe change must ship new weights: ``rexrag sft --out
    agents/warm_start/weights/ALIAS``) and 20 steps of the recipe from the same base give
    the first 20 losses. (The whole 800-step run is not repeated here: 5-17 minutes, and
    its late steps depend on the CPU's BLAS, the reason to ship it.)"""
    from agents.warm_start.store import read_losses, shipped_warm_start

    recipe = WARM_STARTS[alias]
    shipped = shipped_warm_start(alias, recipe)
    assert shipped is not None and recipes.warm_start_path(alias) == shipped
    model, tokenizer = load_model_and_tokenizer(alias)
    assert model.num_parameters() > 1_000_000 and len(tokenizer) < 4096
    base, base_tokenizer = load_model_and_tokenizer(recipe.base)
    losses = warm_start(base, base_tokenizer, replace(recipe, steps=20))
    assert losses == pytest.approx(read_losses(shipped)[:20], rel=1e-3)
    assert read_losses(shipped)[-1] < 0.2 * losses[0] and len(read_losses(shipped)) == 800
