"""Probe filter, adaptive keep ratio and the exploratory prompt pool (spec §3.2, §3.3)."""

import pytest

from agents.rexrag.probes import (
    PromptPool,
    default_exploratory_prompts,
    load_exploratory_prompts,
    select_probes,
    update_keep_ratio,
)


def test_keep_ratio_ewma_hand_computed():
    rho = 0.08
    rho = update_keep_ratio(rho, 0.5)  # 0.9·0.08 + 0.1·0.5
    assert rho == pytest.approx(0.122)
    rho = update_keep_ratio(rho, 0.0)
    assert rho == pytest.approx(0.1098)
    assert update_keep_ratio(0.9, 1.0) == pytest.approx(
        0.91
    )  # uncapped, as in the official trainer


def test_select_top_k_by_prompt_score():
    scores = [-3.0, -0.5, -2.0, -0.5, -9.0]
    # K = floor(25 · 0.08) = 2: the two highest scores, ties keep the earlier probe
    assert select_probes(scores, num_originals=25, keep_ratio=0.08) == [1, 3]
    assert select_probes(scores, num_originals=50, keep_ratio=0.08) == [0, 1, 2, 3]  # K = 4
    assert select_probes(scores, num_originals=1000, keep_ratio=0.5) == [
        0,
        1,
        2,
        3,
        4,
    ]  # fewer than K
    # the official run: K = int(2560 · 0.08) = 204 -> 200 as a multiple of 8
    many = [float(-i) for i in range(300)]
    assert len(select_probes(many, 2560, 0.08, multiple_of=8)) == 200
    assert select_probes(scores, num_originals=5, keep_ratio=0.1) == []


def test_default_pool_has_30_distinct_open_think_prompts():
    prompts = default_exploratory_prompts()
    assert len(prompts) == len(set(prompts)) == 30
    assert all(p.startswith("<think> ") and "</think>" not in p for p in prompts)


def test_pool_trie_over_real_tokenized_prompts(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenized = [
        tokenizer.encode(p, add_special_tokens=False) for p in default_exploratory_prompts()
    ]
    pool = PromptPool(tokenized)
    for prompt in tokenized:
        logprobs = pool.token_logprobs(prompt)
        assert logprobs[0] == 0.0  # every prompt opens with the <think> token
        assert sum(logprobs) == pytest.approx(-3.4012, abs=1e-3)  # log(1/30)


def test_user_prompt_file(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("<think> a\n\n<think> b\n")
    assert load_exploratory_prompts(path) == ["<think> a", "<think> b"]
    path.write_text("\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_exploratory_prompts(path)


def test_probe_replaces_the_wrong_answer_and_continues(tiny_model_dir, bm25_retriever):
    from transformers import AutoTokenizer

    from agents.llm_agent import LLMAgent
    from agents.rexrag.probes import make_probe
    from agents.trajectory import Component
    from rexrag_env import SearchQAEnv
    from tests.helpers import ScriptedGenerator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    question = {
        "id": "q",
        "question": "Which band was Neil Peart the drummer of",
        "golden_answers": ["Rush"],
    }
    env = SearchQAEnv(dataset=[question], retriever=bm25_retriever, max_turns=3)
    turns = ["<search> Neil Peart </search>", "<think>so it is</think> <answer> The Who </answer>"]
    (original,) = LLMAgent(ScriptedGenerator(tokenizer, turns)).play([env], [None])
    assert original.reward == 0.0 and original.turns[-1].action_type == "answer"

    prompt = default_exploratory_prompts()[0]
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    probe = make_probe(original, prompt, prompt_ids, tokenizer)
    assert probe.is_probe and not probe.finished and not original.is_probe
    prefix = len(probe.token_ids) - len(prompt_ids)
    assert probe.token_ids[:prefix] == original.token_ids[:prefix]  # sampled ids kept as sampled
    assert probe.tokens_of(Component.PROBE_PROMPT) == prompt_ids
    last_model_run = probe.token_ids[prefix - 4 : prefix]
    assert tokenizer.decode(probe.token_ids[:prefix]).endswith("<think>so it is</think> ")
    assert "<answer>" not in tokenizer.decode(last_model_run)

    resumed = SearchQAEnv(dataset=[question], retriever=bm25_retriever, max_turns=3)
    resumed.reset(options={"example": question, "turn": original.num_turns, "num_searches": 1})
    LLMAgent(ScriptedGenerator(tokenizer, ["<answer> Rush </answer>"])).continue_trajectories(
        [resumed], [probe]
    )
    assert probe.finished and probe.reward == 1.0 and probe.num_searches == 1
    labels = [c for i, c in enumerate(probe.components) if i == 0 or c != probe.components[i - 1]]
    assert labels == [
        Component.PROMPT,
        Component.MODEL,
        Component.INFO,
        Component.MODEL,
        Component.PROBE_PROMPT,
        Component.MODEL,
    ]
    with pytest.raises(ValueError, match="not probed again"):
        make_probe(probe, prompt, prompt_ids, tokenizer)
