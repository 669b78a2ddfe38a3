"""``rexrag plan``: model shapes, the per-GPU memory of each layout, the CLI table.

Pure arithmetic, no training: how well the estimate matches measured memory is
``benchmarks/learner.py --plan``'s job (docs/training.md, "Memory plan").
"""

import pytest

from agents.analysis.memory_plan import (
    GIB,
    LAYOUTS,
    PAPER_MODELS,
    LearnerSetup,
    MicroBatchShape,
    layer_activation_bytes,
    micro_batch_shape,
    model_shape,
    plan_layouts,
    plan_memory,
    precision,
    shape_from_config,
)
from agents.cli import main
from agents.rexrag import RexRagConfig

QWEN_3B = PAPER_MODELS["Qwen/Qwen2.5-3B"]


def paper_config(**overrides) -> RexRagConfig:
    return RexRagConfig.from_yaml("qwen2.5-3b-search-r1", overrides)


def test_the_tiny_models_shape_counts_its_parameters(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model_shape("tiny").num_params == sum(p.numel() for p in model.parameters())
    assert model_shape(str(tiny_model_dir)) == model_shape("tiny")


def smollm2_shape():
    """SmolLM2-135M-Instruct's shape, from its config.json (as the smollm2-135m alias
    converts it)."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    return shape_from_config(config)


def test_smollm2s_config_gives_its_134_5m_parameters():
    assert smollm2_shape().num_params == 134_515_008


@pytest.mark.parametrize(
    "name, billions",
    [
        ("Qwen/Qwen2.5-3B", 3.09),
        ("Qwen/Qwen2.5-3B-Instruct", 3.09),
        ("Qwen/Qwen2.5-7B", 7.62),
        ("Qwen/Qwen2.5-7B-Instruct", 7.62),
    ],
)
def test_the_papers_models_are_planned_offline(name, billions):
    assert round(model_shape(name).num_params / 1e9, 2) == billions


def test_an_unknown_hub_name_asks_for_a_local_directory():
    with pytest.raises(ValueError, match="local directory"):
        model_shape("nobody-here/no-such-model")


def test_the_layer_count_is_what_autograd_saves():
    """The bytes per token per layer counted with saved_tensors_hooks on SmolLM2
    (transformers 5, SDPA, two padded rows of 64 tokens), in each precision."""
    smollm2 = smollm2_shape()
    counted = {("float32", "ddp"): 47_916, ("bfloat16", "fsdp"): 26_284}
    counted[("bfloat16", "ddp")] = 32_044  # autocast
    for (dtype, layout), saved in counted.items():
        assert layer_activation_bytes(smollm2, precision(dtype, layout), masked_width=64) == saved


def test_fsdp_divides_the_float32_state_by_the_learners_and_offload_moves_it_off():
    plan = plan_memory(paper_config(), QWEN_3B, gpus=8, gpu_memory_gb=80)
    ddp, fsdp, offload = (plan.layout(name) for name in LAYOUTS)
    for row in ("parameters", "gradients", "adamw"):
        assert ddp.rows[row] == pytest.approx(4 * QWEN_3B.num_params * (2 if row == "adamw" else 1))
        assert fsdp.rows[row] == pytest.approx(ddp.rows[row] / 8)
        assert offload.rows[row] == 0
    assert ddp.rows["ddp_buckets"] == ddp.rows["gradients"]  # several DDP learners only
    assert offload.cpu_bytes_per_node > 0 and fsdp.cpu_bytes_per_node == 0
    assert ddp.peak_bytes > fsdp.peak_bytes > offload.peak_bytes


def test_gradient_checkpointing_lowers_activations():
    def planned(checkpointing: bool):
        config = paper_config(gradient_checkpointing=checkpointing)
        return plan_memory(config, QWEN_3B, gpus=8, gpu_memory_gb=80).layout("fsdp")

    off, on = planned(False), planned(True)
    assert on.rows["activations"] < off.rows["activations"] / 10
    assert on.peak_bytes < off.peak_bytes


def test_the_longest_micro_batch_the_paper_config_allows():
    # 256 prompt + 6 turns x 500 + 5 observations x 500 + 32 probe prompt = 5788 tokens
    assert micro_batch_shape(paper_config()) == MicroBatchShape(rows=4, width=5788, targets=12128)


def test_the_arithmetic_alone_plans_what_the_config_says():
    """plan_layouts takes plain data (no config, no Ray: benchmarks/gpu_check calls it
    on a GPU machine): the paper preset's setup written by hand gives the preset's plan."""
    config = paper_config()
    by_hand = LearnerSetup(
        model="Qwen/Qwen2.5-3B",
        dtype="bfloat16",
        gradient_checkpointing=True,
        configured_layout="fsdp",
    )
    micro = MicroBatchShape(rows=4, width=5788, targets=12128)
    planned = plan_layouts(by_hand, QWEN_3B, micro, gpus=8, gpu_memory_gb=80)
    assert planned.layouts == plan_memory(config, QWEN_3B, gpus=8, gpu_memory_gb=80).layouts
    assert planned.configured_layout == "fsdp" and planned.micro_batch == micro


def test_awake_vllm_engines_take_their_share_of_a_shared_gpu():
    config = paper_config(vllm_sleep_level=0, num_env_runners=16)
    plan = plan_memory(config, QWEN_3B, gpus=8, gpu_memory_gb=80)
    assert plan.layout("fsdp").rows["vllm"] == pytest.approx(2 * 0.4 * 80 * GIB)
    asleep = plan_memory(paper_config(), QWEN_3B, gpus=8, gpu_memory_gb=80)
    assert asleep.layout("fsdp").rows["vllm"] == 0


def test_lora_trains_adapters_only_and_keeps_no_reference_copy():
    config = paper_config(lora_rank=8, lora_target_modules=["q_proj", "v_proj"])
    ddp = plan_memory(config, QWEN_3B, gpus=1, gpu_memory_gb=80).layout("ddp")
    adapters = 36 * 8 * ((2048 + 2048) + (2048 + 256))  # layers x rank x (in + out)
    assert ddp.rows["gradients"] == 4 * adapters
    assert ddp.rows["reference"] == 0


def test_qwen25_7b_fits_8_gpus_sharded_but_not_replicated():
    # the paper preset's hardware: vLLM engines share the GPUs, asleep while learners step
    config = paper_config(
        llm="Qwen/Qwen2.5-7B",
        dtype="bfloat16",
        learner_sharding="fsdp",
        num_learners=8,
        gradient_checkpointing=True,
        max_tokens_per_micro_batch=24000,  # the official ppo_max_token_len_per_gpu
    )
    plan = plan_memory(config, model_shape(config.llm), gpus=8, gpu_memory_gb=80)
    assert plan.layout("fsdp").fits and plan.layout("fsdp+offload").fits
    assert not plan.layout("ddp").fits


def verdict(out: str) -> list[str]:
    """The "fits in ... GiB" row of a printed plan: one yes/no per layout."""
    row = next(line for line in out.splitlines() if line.startswith("fits in"))
    return row.split()[-len(LAYOUTS) :]


def test_rexrag_plan_prints_the_table_and_its_verdict(capsys):
    assert main(["plan", "--config", "tiny-cpu", "--gpu-memory", "16"]) == 0
    out = capsys.readouterr().out
    assert "ddp *" in out and "fsdp+offload" in out and "peak" in out
    assert "fits in 14.4 GiB" in out and verdict(out) == ["yes", "yes", "yes"]
    assert main(["plan", "--config", "tiny-cpu", "--gpu-memory", "0.01"]) == 0  # exit 0 anyway
    assert verdict(capsys.readouterr().out) == ["no", "no", "no"]
