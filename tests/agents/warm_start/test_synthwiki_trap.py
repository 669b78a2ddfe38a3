"""The trap warm start: its demonstrations, its tokenizer, its key, and the profile."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agents.rexrag import RexRagConfig
from agents.rexrag.probes import default_exploratory_prompts
from agents.trajectory import Component
from agents.warm_start.synthwiki_trap import (
    SynthWikiTrapWarmStart,
    probe_told,
    self_doubting,
    trap_tokenizer_texts,
)


@pytest.fixture(scope="module")
def chain():
    """A 2-hop evidence-chain episode on SynthWiki train."""
    import gymnasium as gym

    import rexrag_env
    from agents.base import run_episode
    from agents.scripted import EvidenceChainAgent

    env = gym.make(rexrag_env.SYNTHWIKI_ENV_ID, split="train").unwrapped
    index = next(i for i, e in enumerate(env.examples) if e.metadata["num_hops"] == 2)
    return run_episode(env, EvidenceChainAgent(), options={"index": index})


@pytest.fixture(scope="module")
def trap_tokenizer():
    from agents.llm.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer(4096, trap_tokenizer_texts())


def trained_text(trajectory, tokenizer) -> str:
    from agents.warm_start.sft import tokenize_demonstration

    tokens = tokenize_demonstration(trajectory, tokenizer)
    return tokenizer.decode(
        [
            t
            for t, c in zip(tokens.token_ids, tokens.components, strict=True)
            if c == Component.MODEL
        ]
    )


def test_a_told_probe_trains_the_doubt_but_not_its_opening(chain, trap_tokenizer):
    from agents.scripted import CHAIN_COMPLETE

    doubt = default_exploratory_prompts()[0]
    told = probe_told(chain, doubt)
    assert [t.action_type for t in told.turns] == ["search", "probe_prompt", "search", "answer"]
    assert told.turns[1].action == CHAIN_COMPLETE and told.turns[1].observation == "<think>"
    assert told.reward == chain.reward == 1.0
    trained = trained_text(told, trap_tokenizer)
    body = doubt.removeprefix("<think>").strip()
    # every word of the doubt is trained, but the policy never learns to open it here:
    # after "The chain is complete.</think>" the trained text goes on with the doubt's body
    assert body in trained and CHAIN_COMPLETE + "<think>" not in trained
    assert trained.count("<think>") == told.num_turns - 1


def test_a_self_doubting_demonstration_writes_the_whole_doubt_itself(chain, trap_tokenizer):
    doubt = default_exploratory_prompts()[3]
    doubting = self_doubting(chain, doubt)
    assert [t.action_type for t in doubting.turns] == ["search", "search", "answer"]
    assert doubt in trained_text(doubting, trap_tokenizer)


def test_the_trap_tokenizer_keeps_the_pools_words_whole(trap_tokenizer):
    from agents.llm.tiny import build_tiny_tokenizer
    from rexrag_env.synthwiki import synthwiki_texts

    prompts = default_exploratory_prompts()
    # the words that follow a space (a hyphen's second half never does)
    words = {word.strip(",.;:") for prompt in prompts for word in prompt.split()[1:]}
    words = {word for word in words if word.isalpha()}
    assert len(words) > 150
    assert all(len(trap_tokenizer.encode(f" {w}", add_special_tokens=False)) == 1 for w in words)
    # the testbed's own tokenizer splits the pool's English into pieces
    synthwiki_only = build_tiny_tokenizer(4096, synthwiki_texts())

    def tokens(tokenizer) -> float:
        return sum(len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts)

    assert tokens(trap_tokenizer) < 0.6 * tokens(synthwiki_only)


def test_the_recipe_mixes_its_demonstrators_by_share(trap_tokenizer):
    from rexrag_env.datasets import load_qa_dataset

    recipe = SynthWikiTrapWarmStart(
        probe_told_share=0.5, self_doubt_share=0.25, own_chain_share=0.0, repeats=1
    )
    demonstrations = recipe.demonstrations(trap_tokenizer, "synthwiki/validation")
    hops = {q.id: q.metadata["num_hops"] for q in load_qa_dataset("synthwiki/validation")}
    multi_hop = [d for d in demonstrations if hops[d.example_id] >= 2]
    prompts = default_exploratory_prompts()
    told = [d for d in multi_hop if any(t.action_type == "probe_prompt" for t in d.turns)]
    doubting = [d for d in multi_hop if any(p in t.action for t in d.turns for p in prompts)]
    assert 0.3 < len(told) / len(multi_hop) < 0.7
    assert 0.1 < len(doubting) / len(multi_hop) < 0.4
    # the rest answer after the first hop (own_chain_share 0): wrong on multi-hop
    others = [d for d in multi_hop if d not in told and d not in doubting]
    assert others and not any(d.correct for d in others)
    assert all(d.correct for d in told + doubting)
    with pytest.raises(ValueError, match="sum to at most 1"):
        SynthWikiTrapWarmStart(probe_told_share=0.9, self_doubt_share=0.2)
    assert recipe.key() != replace(recipe, self_doubt_share=0.2).key()


def test_the_profile_of_a_policy_that_always_commits(committing_policy):
    from agents.analysis.dead_end_profile import dead_end_profile

    config = RexRagConfig.from_yaml(
        "tiny-synthwiki",
        {
            "llm": str(committing_policy),
            "dataset": "synthwiki/validation",
            "group_size": 3,
            "probe_prob": 1.0,
            "max_new_tokens_per_turn": 32,
        },
    )
    profile = dead_end_profile(config, preset="committing", passes=1, limit=12)
    # it answers after one search: it never goes on, no multi-hop question is right
    assert profile.continue_rate.mean == 0.0 and profile.right_given_continue is None
    assert profile.continue_rate.high < 0.2  # Wilson: an honest bound from n rollouts
    multi_hop = [interval for hops, interval in profile.accuracy_by_hops.items() if hops >= 2]
    assert multi_hop and all(interval.mean == 0.0 for interval in multi_hop)
    assert profile.hopeless_question_share == 1.0
    # every wrong original answered in a search turn, so each spawned a probe (probe_prob 1)
    assert profile.probes > 0 and profile.prompt_tokens > 0
    assert profile.prompt_logprob_per_token < 0
    names = [name for name, _ in profile.rows()]
    assert "continue after hop 1 (multi-hop)" in names and "log pi_old per prompt token" in names
    assert profile.table().startswith("| committing |")


def test_the_profile_command_prints_the_table(committing_policy, capsys):
    from agents.cli import main

    overrides = [f"llm={committing_policy}", "group_size=2"]
    arguments = ["profile", "--config", "tiny-synthwiki", *overrides]
    assert main([*arguments, "--passes", "1", "--limit", "6"]) == 0
    out = capsys.readouterr().out
    assert "| tiny-synthwiki | |" in out and "| continue after hop 1 (multi-hop) | 0.000" in out
    assert main([*arguments, "--passes", "0"]) == 2
    assert "--passes must be at least 1" in capsys.readouterr().err
