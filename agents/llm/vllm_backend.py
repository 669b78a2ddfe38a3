"""VLLMGenerator: the same token-in/token-out interface on vLLM (CUDA only).

vLLM is an optional dependency (``pip install 'rexrag[gpu]'``); importing this module
works without it, and constructing a generator then fails with an install hint.
"""

from __future__ import annotations

from agents.llm.base import FinishReason, Generation, SamplingParams
from agents.llm.seeding import stream_seed


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "VLLMGenerator needs vLLM, a CUDA stack: pip install 'rexrag[gpu]' on a machine with "
            "an NVIDIA GPU, or use HFGenerator (transformers, CPU or GPU)"
        ) from error
    return vllm


def _load_weights_on_worker(worker, weights) -> None:
    """Runs inside each vLLM worker process (via ``collective_rpc``)."""
    worker.model_runner.model.load_weights(weights=weights)


class VLLMGenerator:
    """Batched sampling with a vLLM engine, prompts given as token ids.

    Stop strings are kept in the output (``include_stop_str_in_output``), so the
    returned ids end with the token that completed the stop string, as with
    :class:`~agents.llm.hf.HFGenerator`. Log-probs are requested in vLLM's
    "processed" mode (after temperature and top-p) where the installed vLLM has it.

    Args:
        model: a hub name or local path (aliases are resolved by ``from_pretrained``).
        engine_options: passed to ``vllm.LLM`` (``gpu_memory_utilization``, ``dtype``, …).
    """

    def __init__(self, model: str, **engine_options):
        vllm = _import_vllm()
        engine_options.setdefault("enable_prefix_caching", True)
        engine_options.setdefault("logprobs_mode", "processed_logprobs")
        try:
            self.llm = vllm.LLM(model=model, **engine_options)
        except TypeError:  # an older vLLM without logprobs_mode: raw log-probs, exact at T=1
            engine_options.pop("logprobs_mode")
            self.llm = vllm.LLM(model=model, **engine_options)
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm = vllm

    @classmethod
    def from_pretrained(cls, name_or_path: str, **engine_options) -> VLLMGenerator:
        from agents.llm.models import resolve_model

        return cls(resolve_model(name_or_path), **engine_options)

    def load_weights(self, state_dict: dict) -> None:
        """Push new policy weights into the engine (after each trainer update)."""
        weights = [(name, tensor.detach().cpu()) for name, tensor in state_dict.items()]
        self.llm.collective_rpc(_load_weights_on_worker, args=(weights,))
        self.llm.reset_prefix_cache()  # cached KV blocks belong to the old weights

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
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
