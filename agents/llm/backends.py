"""The generation backends by name: what ``backend: hf|vllm`` and ``--backend`` mean."""

from __future__ import annotations

from agents.llm.base import Generator

#: ``hf``: transformers, CPU or GPU, in the calling process. ``vllm``: a vLLM engine
#: (its CUDA build or its x86-64 CPU build) in processes of its own.
BACKENDS = ("hf", "vllm")


def load_generator(model: str, backend: str = "hf", **engine_options) -> Generator:
    """A generator over ``model`` (an alias, hub name or ``save_pretrained`` directory)
    on ``backend``; ``engine_options`` go to the vLLM engine (the HF backend has none)."""
    if backend == "hf":
        if engine_options:
            raise ValueError(
                f"the hf backend takes no engine options, got {sorted(engine_options)}"
            )
        from agents.llm.hf import HFGenerator

        return HFGenerator.from_pretrained(model)
    if backend == "vllm":
        from agents.llm.vllm_backend import VLLMGenerator

        return VLLMGenerator.from_pretrained(model, **engine_options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
