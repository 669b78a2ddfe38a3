"""HFGenerator on the tiny Qwen2 model, loaded through from_pretrained like any hub model."""

import pytest
import torch

from agents.llm.base import Generator, SamplingParams
from agents.llm.hf import HFGenerator
from agents.llm.sampling import sampling_logprobs
from agents.llm.stop_strings import StopStringMatcher

PROMPTS = [
    "Question: who drummed for Rush?",
    "<search> Neil",
    "Doc 1(Title: Rush) Rush is a band",
    "a",
]


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return HFGenerator.from_pretrained(str(tiny_model_dir))


def encode(generator, texts):
    return [generator.tokenizer.encode(text, add_special_tokens=False) for text in texts]


def teacher_forced_logits(generator, prompt, sampled):
    ids = torch.tensor([prompt + sampled])
    with torch.no_grad():
        logits = generator.model(input_ids=ids).logits[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(sampled)]  # [len(sampled), vocab]


def test_is_a_generator(generator):
    assert isinstance(generator, Generator)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_logprobs_equal_a_teacher_forced_pass(generator, temperature, top_p):
    prompts = encode(generator, PROMPTS)
    params = SamplingParams(
        temperature=temperature, top_p=top_p, max_new_tokens=12, stop=(), seed=1
    )
    for prompt, generation in zip(prompts, generator.generate(prompts, params), strict=True):
        logits = teacher_forced_logits(generator, prompt, generation.token_ids)
        expected = sampling_logprobs(logits, temperature, top_p)
        expected = expected.gather(-1, torch.tensor(generation.token_ids)[:, None]).squeeze(-1)
        assert generation.logprobs == pytest.approx(expected.tolist(), abs=1e-4)
        assert all(lp > float("-inf") for lp in generation.logprobs)


def test_greedy_batch_equals_one_by_one(generator):
    prompts = encode(generator, PROMPTS)
    params = SamplingParams(temperature=0.0, max_new_tokens=15, stop=())
    batched = generator.generate(prompts, params)
    single = [generator.generate([prompt], params)[0] for prompt in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.logprobs for g in batched] == [pytest.approx(g.logprobs, abs=1e-4) for g in single]


def test_seeded_sampling_is_reproducible(generator):
    prompts = encode(generator, PROMPTS)
    params = SamplingParams(temperature=1.0, max_new_tokens=10, stop=(), seed=7)
    first, second = generator.generate(prompts, params), generator.generate(prompts, params)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]


def test_length_limit(generator):
    (generation,) = generator.generate(
        encode(generator, ["hello"]), SamplingParams(temperature=0.0, max_new_tokens=5, stop=())
    )
    assert len(generation.token_ids) == 5 and generation.finish_reason == "length"
    assert generation.text == generator.tokenizer.decode(generation.token_ids)


def test_stop_string_cuts_right_after_the_completing_token(generator):
    prompt = encode(generator, ["Question: who drummed for Rush?"])
    free = generator.generate(prompt, SamplingParams(temperature=0.0, max_new_tokens=30, stop=()))[
        0
    ]
    # a stop string that ends inside the output: the last 3 characters of its first 8 tokens
    head = generator.tokenizer.decode(free.token_ids[:8])
    stop = head.rstrip()[-3:]
    stopped = generator.generate(
        prompt, SamplingParams(temperature=0.0, max_new_tokens=30, stop=(stop,))
    )[0]
    assert stopped.finish_reason == "stop" and stopped.stop_string == stop
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]  # ids as sampled
    assert stop in stopped.text
    assert stop not in generator.tokenizer.decode(
        stopped.token_ids[:-1]
    )  # the last token completed it


def test_eos_ends_a_row(generator):
    prompt = encode(generator, ["hello"])
    free = generator.generate(prompt, SamplingParams(temperature=0.0, max_new_tokens=6, stop=()))[0]
    eos_generator = HFGenerator(generator.model, generator.tokenizer)
    eos_generator.eos_token_ids = {free.token_ids[3]}
    first_hit = free.token_ids.index(free.token_ids[3])
    (ended,) = eos_generator.generate(
        prompt, SamplingParams(temperature=0.0, max_new_tokens=6, stop=())
    )
    assert ended.finish_reason == "eos" and ended.token_ids == free.token_ids[: first_hit + 1]


def test_stop_string_matcher_on_tag_tokens(generator):
    tokenizer = generator.tokenizer
    matcher = StopStringMatcher(tokenizer, ("</search>", "</answer>"))
    ids = tokenizer.encode(
        "<think>ok</think><search> Neil Peart </search>", add_special_tokens=False
    )
    assert matcher.completed(ids) == "</search>"
    assert all(matcher.completed(ids[:end]) is None for end in range(1, len(ids)))
    assert matcher.completed([]) is None


def test_empty_batch_and_empty_prompt(generator):
    assert generator.generate([], SamplingParams()) == []
    with pytest.raises(ValueError, match="at least one token"):
        generator.generate([[]], SamplingParams())


def test_load_weights_changes_the_policy(generator, tiny_model_dir):
    fresh = HFGenerator.from_pretrained(str(tiny_model_dir))
    prompt = encode(fresh, ["hello there"])
    params = SamplingParams(temperature=0.0, max_new_tokens=3, stop=())
    before = fresh.generate(prompt, params)[0].logprobs
    state = {
        name: tensor + 0.05 * torch.randn_like(tensor)
        for name, tensor in fresh.model.state_dict().items()
    }
    fresh.load_weights(state)
    assert fresh.generate(prompt, params)[0].logprobs != pytest.approx(before, abs=1e-6)
