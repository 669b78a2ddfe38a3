"""The tiny test model goes through exactly the from_pretrained path of a hub model."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.llm.tiny import TAG_TOKENS, build_tiny_model


def test_round_trip_through_from_pretrained(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tokenizer)
    ids = tokenizer.encode(
        "<search> Neil Peart </search>", return_tensors="pt", add_special_tokens=False
    )
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 4)


def test_special_ids_agree_between_tokenizer_and_configs(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for config in (model.config, model.generation_config):
        assert config.eos_token_id == tokenizer.eos_token_id
        assert config.pad_token_id == tokenizer.pad_token_id


def test_tags_are_single_tokens_and_text_round_trips(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for tag in TAG_TOKENS:
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    for text in [
        "<think>hmm</think>\n<search> who is Neil Peart? </search>",
        '\n\n<information>Doc 1(Title: "Zürich") café – ✓ 北京</information>\n\n',
        "  spaces  and\ttabs .",
        "<answer> Rush </answer><|im_end|>",
    ]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    # tags are text the model writes, not control tokens: skipping specials keeps them
    ids = tokenizer.encode("<answer> Rush </answer><|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<answer> Rush </answer>"


def test_chat_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    small = {"hidden_size": 32, "num_layers": 1, "intermediate_size": 64, "vocab_size": 600}
    paths = [
        build_tiny_model(tmp_path / name, seed=seed, **small)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    states = [AutoModelForCausalLM.from_pretrained(path).state_dict() for path in paths]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert not torch.equal(
        states[0]["model.embed_tokens.weight"], states[2]["model.embed_tokens.weight"]
    )
    tokenizer_files = [(path / "tokenizer.json").read_bytes() for path in paths]
    assert tokenizer_files[0] == tokenizer_files[1] == tokenizer_files[2]
