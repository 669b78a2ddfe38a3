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
    from gymnasium.vector import AutoresetMode
    from transformers import AutoTokenizer

    from agents.base import start_episodes
    from agents.llm_agent import LLMAgent
    from agents.rexrag.probes import make_probe
    from agents.trajectory import Component
    from rexrag_env import SearchQAVectorEnv
    from tests.helpers import ScriptedGenerator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    question = {
        "id": "q",
        "question": "Which band was Neil Peart the drummer of",
        "golden_answers": ["Rush"],
    }
    envs = SearchQAVectorEnv(
        1,
        dataset=[question],
        retriever=bm25_retriever,
        max_turns=3,
        autoreset_mode=AutoresetMode.DISABLED,
    )
    turns = ["<search> Neil Peart </search>", "<think>so it is</think> <answer> The Who </answer>"]
    (original,) = LLMAgent(ScriptedGenerator(tokenizer, turns)).play(envs, [None])
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

    start_episodes(envs, [{"example": question, "turn": original.num_turns, "num_searches": 1}])
    LLMAgent(ScriptedGenerator(tokenizer, ["<answer> Rush </answer>"])).continue_trajectories(
        envs, [probe]
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


#: Texts of a final turn whose ``<answer>`` a BPE tokenizer merges with what precedes it.
BOUNDARY_SHAPES = (
    "<think>so it is</think><answer> The Who </answer>",
    "<search> x </search> I think.<answer> The Who </answer>",
    "I think\n<answer> The Who </answer>",
    "I think <answer> The Who </answer>",
)


@pytest.fixture(scope="module")
def byte_level_bpe():
    """A byte-level BPE trained here on text of these shapes, with GPT-2's split rule
    (as Qwen's and SmolLM2's): it learns the ``><``, ``.<`` and `` <`` merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    texts = [*BOUNDARY_SHAPES, *default_exploratory_prompts()] * 50
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False)


def answered(tokenizer, action: str):
    """A finished trajectory whose one turn sampled ``action``'s canonical tokens."""
    from agents.trajectory import Component, Trajectory, Turn

    trajectory = Trajectory("q", "question", ["Rush"], "test")
    trajectory.extend(tokenizer.encode("question:", add_special_tokens=False), Component.PROMPT)
    trajectory.prompt_length = len(trajectory.token_ids)
    ids = tokenizer.encode(action, add_special_tokens=False)
    trajectory.extend(ids, Component.MODEL, [-0.5] * len(ids))
    trajectory.turns = [Turn(action, "", "answer")]
    trajectory.finished = True
    return trajectory


@pytest.mark.parametrize("action", BOUNDARY_SHAPES)
@pytest.mark.parametrize(  # smollm2_tokenizer converts SmolLM2 from its GGUF file first
    "tokenizer_name", [pytest.param("smollm2_tokenizer", marks=pytest.mark.slow), "byte_level_bpe"]
)
def test_the_probe_cut_is_exact_in_text_on_real_bpe_tokenizers(request, tokenizer_name, action):
    import math

    from agents.rexrag.probes import make_probe
    from agents.rexrag.token_batch import to_token_batch
    from agents.trajectory import Component

    tokenizer = request.getfixturevalue(tokenizer_name)
    original = answered(tokenizer, action)
    original.rollout_id = "q#0"
    prompt = default_exploratory_prompts()[0]
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    probe = make_probe(original, prompt, prompt_ids, tokenizer)
    assert (probe.parent_id, probe.rollout_id) == ("q#0", "q#0/probe")

    start = probe.components.index(Component.PROBE_PROMPT)
    response = probe.token_ids[probe.prompt_length : start]
    before_answer = action[: action.find("<answer>")]
    assert tokenizer.decode(response) == before_answer  # no broken "</think", no lost "."
    assert tokenizer.decode(probe.token_ids[probe.prompt_length :]) == before_answer + prompt
    assert all(c == Component.MODEL for c in probe.components[probe.prompt_length : start])
    # sampled ids are kept as sampled up to the straddling token; only that text is
    # re-encoded, and it has no sampling log-prob (kept out of logprob_mismatch)
    sampled = [lp for lp in probe.sampling_logprobs[:start] if not math.isnan(lp)]
    kept = len(sampled)
    assert probe.token_ids[:kept] == original.token_ids[:kept]
    assert start - kept <= 3
    assert to_token_batch([probe]).sampler_scored[0, :start].sum() == kept
    # the branch point is the first token that is not the parent's as sampled: the
    # re-encoded straddling tokens belong to the probe's own part
    assert probe.branch_point == kept
    assert probe.token_ids[kept:] != original.token_ids[kept : len(probe.token_ids)]
    batch = to_token_batch([original, probe])
    assert batch.parent_row.tolist() == [-1, 0]
    assert batch.branch_point.tolist() == [original.prompt_length, kept]
    assert batch.select([1]).parent_row.tolist() == [-1]  # its parent was not selected
    assert batch.select([1, 0]).parent_row.tolist() == [1, -1]


@pytest.mark.slow
def test_the_shapes_really_straddle_a_token_boundary(smollm2_tokenizer, byte_level_bpe):
    """The test above would pass on the old whole-token cut if no token straddled."""
    for tokenizer in (smollm2_tokenizer, byte_level_bpe):
        straddling = 0
        for action in BOUNDARY_SHAPES:
            ids = tokenizer.encode(action, add_special_tokens=False)
            cut = action.find("<answer>")
            ends = [len(tokenizer.decode(ids[: n + 1])) for n in range(len(ids))]
            straddling += cut not in ends
        assert straddling >= 2, tokenizer
