"""VLLMGenerator: the import guard here; the same checks as HFGenerator on a CUDA machine."""

import importlib.util

import pytest

from agents.llm.base import SamplingParams

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed: the guard does not apply")
def test_clear_error_without_vllm():
    from agents.llm.vllm_backend import VLLMGenerator

    with pytest.raises(ImportError, match=r"rexrag\[gpu\]"):
        VLLMGenerator("any-model")


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_VLLM and cuda_available()), reason="needs vllm and a CUDA GPU")
def test_vllm_logprobs_and_stop_strings_match_hf(tiny_model_dir):
    import torch

    from agents.llm.hf import HFGenerator
    from agents.llm.vllm_backend import VLLMGenerator

    vllm_generator = VLLMGenerator(str(tiny_model_dir), gpu_memory_utilization=0.2, dtype="float32")
    hf = HFGenerator.from_pretrained(str(tiny_model_dir))
    prompts = [
        hf.tokenizer.encode(t, add_special_tokens=False) for t in ["hello", "Question: who?"]
    ]
    params = SamplingParams(temperature=0.0, max_new_tokens=12, stop=())
    for ours, theirs in zip(
        hf.generate(prompts, params), vllm_generator.generate(prompts, params), strict=True
    ):
        assert theirs.token_ids == ours.token_ids
        assert theirs.logprobs == pytest.approx(ours.logprobs, abs=1e-3)
    # weight sync: both backends take the same new weights and agree again
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in hf.model.state_dict().items()}
    vllm_generator.load_weights(state)
    hf.load_weights(state)
    for ours, theirs in zip(
        hf.generate(prompts, params), vllm_generator.generate(prompts, params), strict=True
    ):
        assert theirs.logprobs == pytest.approx(ours.logprobs, abs=1e-3)
