"""Per-GPU memory of a training config before any GPU is rented: ``rexrag plan``.

For one :class:`~agents.rexrag.RexRagConfig` and the shape of its model, the plan counts
the bytes a learner GPU holds at its peak under three layouts of the same run:
``ddp`` (RLlib's replicas: every learner holds all weights, gradients and AdamW state),
``fsdp`` (FSDP2 shards them over the learners, per decoder layer) and ``fsdp+offload``
(the shards, their gradients and the optimizer step in CPU memory). It is arithmetic
on a :class:`ModelShape`, a :class:`MicroBatchShape` and a :class:`LearnerSetup`: no
model is built, nothing is allocated. :func:`plan_memory` reads the last two from a
config; :func:`plan_layouts` is the arithmetic alone, which needs no Ray
(``benchmarks/gpu_check/`` calls it with the shapes it measures on a GPU).

Every row is a count of tensors the learner really holds (``learner.py``,
``logprobs.py``, ``sharding.py``, ``rl_module.py``), not a fitted factor; the
activation count was read off transformers' Qwen2/Llama code and checked against the
tensors autograd saves (:func:`layer_activation_bytes`). ``benchmarks/learner.py
--plan`` compares the estimate with the measured peak of a CPU learner (docs/training.md,
"Memory plan").
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.rexrag import RexRagConfig

GIB = 2**30
LAYOUTS = ("ddp", "fsdp", "fsdp+offload")
#: Share of a GPU's memory a plan may fill: the CUDA context (about 0.5 GiB a process)
#: and the caching allocator's fragmentation take memory that no row counts.
USABLE_SHARE = 0.9
#: A question prompt with its chat template: about 130 tokens for a HotpotQA question
#: with the SmolLM2 and Qwen tokenizers; 256 leaves room for long questions.
PROMPT_TOKENS = 256
#: The longest shipped exploratory prompt is 24 tokens (a probe's trained prompt).
PROBE_PROMPT_TOKENS = 32
#: Model types with the Qwen2/Llama decoder layout this module counts.
SUPPORTED_MODEL_TYPES = ("qwen2", "llama", "mistral")
#: The projections of a decoder layer (what peft's ``all-linear`` adapts).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: The table's rows, in order: (key, label).
ROWS = (
    ("parameters", "parameters (fp32 master)"),
    ("gradients", "gradients (fp32)"),
    ("ddp_buckets", "DDP all-reduce buckets"),
    ("adamw", "AdamW state (2 x fp32)"),
    ("reference", "reference model"),
    ("vllm", "vLLM engines"),
    ("compute_copy", "compute copy of weights"),
    ("activations", "activations (saved)"),
    ("lm_head", "LM-head backward"),
    ("layer_backward", "layer backward"),
    ("adamw_step", "AdamW step temporaries"),
)
#: Rows held through the whole step (see :attr:`LayoutPlan.peak_bytes` for the rest).
RESIDENT = ("parameters", "gradients", "ddp_buckets", "adamw", "reference", "vllm")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Qwen2/Llama-layout decoder: all the plan needs of a model."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = False  # Qwen2 biases q/k/v
    o_bias: bool = False  # Llama's ``attention_bias`` biases o_proj too
    mlp_bias: bool = False

    def projections(self) -> dict[str, tuple[int, int]]:
        """``(in_features, out_features)`` of each projection of a decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def layer_linear_params(self) -> int:
        """Weights and biases of one layer's projections (the matmul weights)."""
        projections = self.projections()
        weights = sum(fan_in * fan_out for fan_in, fan_out in projections.values())
        biases = 0
        if self.qkv_bias:
            biases += sum(projections[name][1] for name in ("q_proj", "k_proj", "v_proj"))
        if self.o_bias:
            biases += self.hidden
        if self.mlp_bias:
            biases += 2 * self.intermediate + self.hidden
        return weights + biases

    @property
    def layer_params(self) -> int:
        """One decoder layer: its projections and two RMSNorm weights."""
        return self.layer_linear_params + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def root_params(self) -> int:
        """Outside the layers (FSDP's root group): embeddings, final norm, and the LM
        head unless it is the embedding matrix itself."""
        heads = 1 if self.tied_embeddings else 2
        return heads * self.embedding_params + self.hidden

    @property
    def num_params(self) -> int:
        """Parameters of the model, tied weights once (``sum(p.numel() for p in
        model.parameters())``)."""
        return self.layers * self.layer_params + self.root_params


#: Qwen2.5 (spec §5.1: Qwen2.5-3B is the paper's policy, 7B its larger run), from the
#: config.json of each on the Hugging Face hub; an -Instruct model has its base's shape.
_QWEN25_3B = ModelShape(
    layers=36,
    hidden=2048,
    intermediate=11008,
    heads=16,
    kv_heads=2,
    head_dim=128,
    vocab=151936,
    tied_embeddings=True,
    qkv_bias=True,
)
_QWEN25_7B = ModelShape(
    layers=28,
    hidden=3584,
    intermediate=18944,
    heads=28,
    kv_heads=4,
    head_dim=128,
    vocab=152064,
    tied_embeddings=False,
    qkv_bias=True,
)
PAPER_MODELS = {
    "Qwen/Qwen2.5-3B": _QWEN25_3B,
    "Qwen/Qwen2.5-3B-Instruct": _QWEN25_3B,
    "Qwen/Qwen2.5-7B": _QWEN25_7B,
    "Qwen/Qwen2.5-7B-Instruct": _QWEN25_7B,
}


def shape_from_config(config) -> ModelShape:
    """The :class:`ModelShape` of a Hugging Face ``PretrainedConfig``."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"cannot plan a {model_type!r} model: the plan counts Qwen2/Llama-layout "
            f"decoders ({', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    heads = config.num_attention_heads
    attention_bias = bool(getattr(config, "attention_bias", False))
    return ModelShape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        vocab=config.vocab_size,
        tied_embeddings=bool(config.tie_word_embeddings),
        qkv_bias=model_type == "qwen2" or attention_bias,  # Qwen2's are unconditional
        o_bias=model_type != "qwen2" and attention_bias,
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
    )


def model_shape(name: str) -> ModelShape:
    """The shape of a model alias, local directory or hub name (``RexRagConfig.llm``).

    Read from its config.json: an alias's or directory's, else the Hugging Face
    cache's, else the shipped shapes of the paper's models (:data:`PAPER_MODELS`),
    so the paper's runs can be planned offline without their weights.
    """
    from transformers import AutoConfig

    from agents.llm.models import resolve_model

    resolved = resolve_model(name)
    local = Path(resolved).expanduser()
    if local.is_dir():
        return shape_from_config(AutoConfig.from_pretrained(local))
    try:
        cached = AutoConfig.from_pretrained(resolved, local_files_only=True)
    except (OSError, ValueError):
        cached = None
    if cached is not None:
        return shape_from_config(cached)
    if resolved in PAPER_MODELS:
        return PAPER_MODELS[resolved]
    raise ValueError(
        f"model {name!r}: not a local directory, not in the Hugging Face cache and not one "
        f"of the shipped shapes ({', '.join(PAPER_MODELS)}): pass a local directory that "
        "holds its config.json"
    )


@dataclass(frozen=True)
class MicroBatchShape:
    """One padded micro-batch: ``rows`` trajectories right-padded to ``width`` tokens,
    of which ``targets`` are trained (MODEL and PROBE_PROMPT tokens)."""

    rows: int
    width: int
    targets: int

    @property
    def tokens(self) -> int:
        """Padded tokens: every layer runs on padding too."""
        return self.rows * self.width


def micro_batch_shape(config: RexRagConfig) -> MicroBatchShape:
    """The micro-batch the config's limits allow at the longest: rows as long as a
    trajectory can get (prompt, ``max_turns + 1`` model turns of
    ``max_new_tokens_per_turn``, ``max_turns`` observations, a probe's prompt), as many
    as ``max_tokens_per_micro_batch`` holds (one when a row is longer)."""
    model_turns = (config.max_turns + 1) * config.max_new_tokens_per_turn
    probe = PROBE_PROMPT_TOKENS if config.probes else 0
    width = PROMPT_TOKENS + model_turns + config.max_turns * config.max_observation_tokens + probe
    rows = max(1, config.max_tokens_per_micro_batch // width)
    return MicroBatchShape(rows=rows, width=width, targets=rows * (model_turns + probe))


@dataclass(frozen=True)
class Precision:
    """Bytes per element of what a learner's forward pass keeps, in one of the three
    ways a run computes (``RexRagConfig.dtype`` and the layout)."""

    name: str
    compute: int  # matmul inputs and outputs, attention, MLP
    residual: int  # the residual stream, RMSNorm outputs, RoPE tables
    qkv_input_copies: int  # copies of the normed input that q/k/v keep
    mlp_input_copies: int  # ... that gate/up keep


def precision(dtype: str, layout: str) -> Precision:
    """float32: everything in float32. bfloat16 under DDP: autocast (``learner.py``'s
    ``_precision``) keeps the float32 residual stream and casts each linear's input
    anew, so q, k and v each keep a copy (gate and up two). bfloat16 under FSDP: its
    mixed precision gathers bfloat16 weights, so the whole stream is bfloat16."""
    if dtype == "float32":
        return Precision("fp32", 4, 4, 1, 1)
    if dtype != "bfloat16":
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if layout == "ddp":
        return Precision("bf16 autocast", 2, 4, 3, 2)
    return Precision("bf16", 2, 2, 1, 1)


def layer_activation_bytes(shape: ModelShape, p: Precision, *, masked_width: int) -> int:
    """Bytes one decoder layer keeps for the backward pass, per token.

    The tensors autograd saves in transformers' (5.x) Qwen2/Llama decoder layer with
    SDPA attention, counted with ``torch.autograd.graph.saved_tensors_hooks`` on
    SmolLM2 in each precision (float32: 47,916 bytes per token at width 64; bfloat16:
    26,284; autocast: 32,044; this function gives the same):

    - each RMSNorm: its input in float32 (upcast), the normalised input, 1/rms;
    - the normed input of q/k/v and of gate/up (autocast: one cast copy per projection);
    - attention: q and k after RoPE, v, the output (o_proj reads it in place), the
      float32 logsumexp per head; with a padding mask (``masked_width`` > 0, several
      rows) SDPA gets a float copy of the ``[rows, 1, width, width]`` mask in every
      layer (``masked_width`` elements per token) and k/v repeated to all heads
      (``repeat_kv``); without one, GQA keeps the kv heads only;
    - MLP: gate, silu(gate), up, and their product (down_proj's input).
    """
    h, i = shape.hidden, shape.intermediate
    q = shape.heads * shape.head_dim
    kv = q if masked_width else shape.kv_heads * shape.head_dim
    norms = 2 * (4 * h + p.residual * h + 4)
    linear_inputs = p.compute * h * (p.qkv_input_copies + p.mlp_input_copies)
    attention = p.compute * (2 * q + 2 * kv + masked_width) + 4 * shape.heads
    mlp = 4 * p.compute * i
    return norms + linear_inputs + attention + mlp


def _masked_width(micro: MicroBatchShape) -> int:
    """Several padded rows mean a padding mask; a single row needs none."""
    return micro.width if micro.rows > 1 else 0


def activation_bytes(
    shape: ModelShape, p: Precision, micro: MicroBatchShape, *, checkpointing: bool
) -> int:
    """What one micro-batch keeps from the forward pass for its backward pass, the LM
    head's aside (:func:`lm_head_bytes`).

    Every layer's :func:`layer_activation_bytes`, or with gradient checkpointing
    (non-reentrant, per layer) each layer's input only; plus, outside the layers, the
    input ids, the RoPE cos/sin tables and the final norm's input and output.
    """
    if checkpointing:
        per_token = shape.layers * shape.hidden * p.residual
    else:
        per_token = shape.layers * layer_activation_bytes(
            shape, p, masked_width=_masked_width(micro)
        )
    outside = 8 + 2 * shape.head_dim * p.residual + 4 * shape.hidden + p.residual * shape.hidden
    return micro.tokens * (per_token + outside)


def layer_backward_bytes(
    shape: ModelShape, p: Precision, micro: MicroBatchShape, *, checkpointing: bool
) -> int:
    """A decoder layer's backward pass beyond the saved activations: the gradients of
    gate, up and their product, alive together; with gradient checkpointing, the
    layer's activations too, recomputed just before."""
    recomputed = (
        layer_activation_bytes(shape, p, masked_width=_masked_width(micro)) if checkpointing else 0
    )
    return micro.tokens * (recomputed + 3 * shape.intermediate * p.compute)


def lm_head_bytes(
    shape: ModelShape, p: Precision, micro: MicroBatchShape, *, entropy_loss: bool, layout: str
) -> int:
    """The LM head on the target positions only (``response_token_logprobs``), from the
    forward pass to the end of its backward pass, the first of the backward pass.

    Four float32 ``[targets, vocab]`` tensors at once: the logits (logsumexp and gather
    keep them until both have run backward), logsumexp's gradient, gather's gradient
    and their sum (measured on CPU with a fixed mmap threshold: the peak is four
    copies); an entropy bonus keeps the softmax and its product with the logits too.
    Plus the hidden states of the targets, and the LM head weight's gradient before
    it is accumulated (float32 under DDP, the gathered dtype under FSDP until its
    reduce-scatter).
    """
    vocab_sized = (4 + (2 if entropy_loss else 0)) * micro.targets * shape.vocab * 4
    hidden = micro.targets * shape.hidden * p.compute
    weight_gradient = shape.embedding_params * (4 if layout == "ddp" else p.compute)
    return vocab_sized + hidden + weight_gradient


def lora_adapter_params(shape: ModelShape, rank: int, target_modules: str | list[str]) -> int:
    """Trainable parameters of rank-``rank`` LoRA adapters on the decoder layers'
    projections (``all-linear``, or the listed projection names)."""
    names = PROJECTIONS if target_modules == "all-linear" else tuple(target_modules)
    unknown = sorted(set(names) - set(PROJECTIONS))
    if unknown:
        raise ValueError(
            f"cannot plan LoRA on {unknown}: target_modules must be 'all-linear' or names "
            f"among {PROJECTIONS}"
        )
    projections = shape.projections()
    per_layer = sum(rank * sum(projections[name]) for name in set(names))
    return shape.layers * per_layer


def compute_copy_bytes(shape: ModelShape, p: Precision, layout: str) -> int:
    """Weights in the compute dtype next to the float32 masters.

    DDP in float32: none. DDP in bfloat16: autocast caches a bfloat16 copy of every
    weight it casts (the projections and the LM head) until the autocast region ends,
    and the saved activations hold them until the backward pass: one copy of them all.
    FSDP: the root group (embeddings, final norm, LM head) stays gathered from forward
    to backward; a layer is gathered while the next one is prefetched (two layers);
    a layer's unsharded gradients are held in the compute dtype and float32 (the
    reduce-scatter's input) in the backward pass.
    """
    if layout == "ddp":
        if p.compute == 4:
            return 0
        return p.compute * (shape.layers * shape.layer_linear_params + shape.embedding_params)
    return (
        p.compute * (shape.root_params + 2 * shape.layer_params)
        + (p.compute + 4) * shape.layer_params
    )


def vllm_gpu_share(config: RexRagConfig, *, gpus: int) -> float:
    """vLLM's share of a learner GPU while the learners step: its engines on that GPU
    times ``vllm_gpu_memory_utilization``, when GPU EnvRunners share the learners' GPUs
    (``0 < num_gpus_per_env_runner < 1``). Sleeping engines (``vllm_sleep_level`` 1 or
    2) free their weights and KV cache for the step, so they count 0."""
    shares_gpus = 0 < config.num_gpus_per_env_runner < 1
    if config.backend != "vllm" or not shares_gpus or config.vllm_sleep_level:
        return 0.0
    engines = math.ceil(config.num_env_runners * config.vllm_tensor_parallel_size / gpus)
    return engines * config.vllm_gpu_memory_utilization


@dataclass(frozen=True)
class LayoutPlan:
    """One layout's bytes per learner GPU (``rows``, keyed as :data:`ROWS`), its peak,
    and the CPU memory per node its offloaded state takes."""

    layout: str
    precision: str
    rows: dict[str, float]
    cpu_bytes_per_node: float
    usable_bytes: float

    @property
    def peak_bytes(self) -> float:
        """The resident rows plus the largest of the three moments of a step: the LM
        head's backward and a layer's backward (each on top of the compute copy and the
        saved activations: the LM head's temporaries are gone before the first layer's
        backward starts) and the optimizer step (after the activations are freed)."""
        rows = self.rows
        resident = sum(rows[key] for key in RESIDENT)
        passes = rows["compute_copy"] + rows["activations"]
        backward = max(rows["lm_head"], rows["layer_backward"])
        return resident + max(passes + backward, rows["adamw_step"])

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.usable_bytes


@dataclass(frozen=True)
class MemoryPlan:
    """The plan of one config on ``gpus`` learner GPUs of ``gpu_memory_gb`` GiB each."""

    model: str
    configured_layout: str
    gpus: int
    gpu_memory_gb: float
    checkpointing: bool
    micro_batch: MicroBatchShape
    num_params: int
    trainable_params: int
    layouts: tuple[LayoutPlan, ...]
    notes: tuple[str, ...] = ()

    def layout(self, name: str) -> LayoutPlan:
        """The plan of layout ``name`` (one of :data:`LAYOUTS`)."""
        return next(plan for plan in self.layouts if plan.layout == name)


@dataclass(frozen=True)
class LearnerSetup:
    """How the learners compute, all the plan reads of a run besides the model's and
    the micro-batch's shapes: plain data, so the arithmetic (:func:`plan_layouts`)
    needs no config object, nor Ray.

    Attributes:
        model: the model's name, for the table.
        dtype: ``"float32"`` or ``"bfloat16"`` (``RexRagConfig.dtype``).
        gradient_checkpointing: per decoder layer, non-reentrant.
        entropy_loss: the loss has an entropy bonus (its gradient keeps two more
            vocabulary-sized tensors).
        lora_rank: 0 for full fine-tuning; else rank-``lora_rank`` adapters on
            ``lora_target_modules`` are trained and no reference copy is kept.
        configured_layout: the run's own layout (one of :data:`LAYOUTS`), starred.
        vllm_gpu_share: the fraction of each learner GPU that awake vLLM engines hold
            while the learners step (:func:`vllm_gpu_share`).
        notes: what the table's rows do not show, printed under it.
    """

    model: str
    dtype: str
    gradient_checkpointing: bool
    entropy_loss: bool = False
    lora_rank: int = 0
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    configured_layout: str = "ddp"
    vllm_gpu_share: float = 0.0
    notes: tuple[str, ...] = ()


def learner_setup(config: RexRagConfig, *, gpus: int) -> LearnerSetup:
    """The :class:`LearnerSetup` of ``config``'s learners on ``gpus`` GPUs."""
    target_modules = config.lora_target_modules
    return LearnerSetup(
        model=config.llm,
        dtype=config.dtype,
        gradient_checkpointing=config.gradient_checkpointing,
        entropy_loss=config.entropy_coeff > 0,
        lora_rank=config.lora_rank,
        lora_target_modules=(
            target_modules if isinstance(target_modules, str) else tuple(target_modules)
        ),
        configured_layout=(
            "fsdp+offload"
            if config.learner_sharding == "fsdp" and config.learner_cpu_offload
            else config.learner_sharding
        ),
        vllm_gpu_share=vllm_gpu_share(config, gpus=gpus),
        notes=_notes(config),
    )


def plan_memory(
    config: RexRagConfig,
    shape: ModelShape,
    *,
    gpus: int,
    gpu_memory_gb: float,
    micro_batch: MicroBatchShape | None = None,
    gpus_per_node: int = 8,
) -> MemoryPlan:
    """Per-GPU memory of ``config``'s learners on ``gpus`` GPUs (one learner each) of
    ``gpu_memory_gb`` GiB, for each of :data:`LAYOUTS` (:func:`plan_layouts`).

    ``micro_batch``: the micro-batch to plan for (default :func:`micro_batch_shape`,
    the longest the config allows).
    """
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    return plan_layouts(
        learner_setup(config, gpus=gpus),
        shape,
        micro_batch or micro_batch_shape(config),
        gpus=gpus,
        gpu_memory_gb=gpu_memory_gb,
        gpus_per_node=gpus_per_node,
    )


def plan_layouts(
    setup: LearnerSetup,
    shape: ModelShape,
    micro: MicroBatchShape,
    *,
    gpus: int,
    gpu_memory_gb: float,
    gpus_per_node: int = 8,
) -> MemoryPlan:
    """Per-GPU memory of learners computing as ``setup`` says on micro-batches of
    ``micro``, on ``gpus`` GPUs (one learner each) of ``gpu_memory_gb`` GiB, for each
    of :data:`LAYOUTS`.

    Parameters, gradients and AdamW state are float32 on the learners whatever
    ``dtype``; DDP replicates them (and, over several GPUs, its all-reduce buckets copy
    the gradients: RLlib keeps ``gradient_as_bucket_view`` off), FSDP divides them by
    ``gpus``, offload moves them (and the optimizer step) to CPU memory, counted per
    node of ``gpus_per_node`` GPUs. The reference policy is a copy in ``dtype`` (DDP),
    sharded like the policy (FSDP), none with LoRA. Gradients are counted whole (from
    the second micro-batch of a step on they are).
    """
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    if gpu_memory_gb <= 0:
        raise ValueError(f"gpu memory must be > 0 GiB, got {gpu_memory_gb}")
    params = shape.num_params
    lora = setup.lora_rank > 0
    adapters = lora_adapter_params(shape, setup.lora_rank, setup.lora_target_modules) if lora else 0
    trainable = adapters if lora else params
    stored = params + adapters
    gpu_memory = gpu_memory_gb * GIB
    checkpointing = setup.gradient_checkpointing
    layouts = []
    for layout in LAYOUTS:
        p = precision(setup.dtype, layout)
        shards = 1 if layout == "ddp" else gpus
        reference = 0 if lora else params * p.compute
        on_gpu = 0.0 if layout == "fsdp+offload" else 1.0
        master = {
            "parameters": 4 * stored,
            "gradients": 4 * trainable,
            "adamw": 8 * trainable,
            "reference": reference,
            "adamw_step": 4 * trainable,  # foreach AdamW: sqrt of the second moment
        }
        rows = {key: on_gpu * value / shards for key, value in master.items()}
        rows["ddp_buckets"] = 4 * trainable if layout == "ddp" and gpus > 1 else 0
        rows["vllm"] = setup.vllm_gpu_share * gpu_memory
        rows["compute_copy"] = compute_copy_bytes(shape, p, layout)
        rows["activations"] = activation_bytes(shape, p, micro, checkpointing=checkpointing)
        rows["lm_head"] = lm_head_bytes(
            shape, p, micro, entropy_loss=setup.entropy_loss, layout=layout
        )
        rows["layer_backward"] = layer_backward_bytes(shape, p, micro, checkpointing=checkpointing)
        offloaded = (1 - on_gpu) * sum(master[key] for key in RESIDENT if key in master)
        learners_per_node = min(gpus, gpus_per_node)
        layouts.append(
            LayoutPlan(
                layout=layout,
                precision=p.name,
                rows={key: float(rows[key]) for key, _ in ROWS},
                cpu_bytes_per_node=learners_per_node * offloaded / shards,
                usable_bytes=USABLE_SHARE * gpu_memory,
            )
        )
    return MemoryPlan(
        model=setup.model,
        configured_layout=setup.configured_layout,
        gpus=gpus,
        gpu_memory_gb=gpu_memory_gb,
        checkpointing=checkpointing,
        micro_batch=micro,
        num_params=params,
        trainable_params=trainable,
        layouts=tuple(layouts),
        notes=setup.notes,
    )


def _notes(config: RexRagConfig) -> tuple[str, ...]:
    """What the table's rows do not show of the config."""
    notes = []
    shares_gpus = config.backend == "vllm" and 0 < config.num_gpus_per_env_runner < 1
    if shares_gpus and config.vllm_sleep_level:
        notes.append(
            f"vLLM shares the learners' GPUs but sleeps while they step (vllm_sleep_level "
            f"{config.vllm_sleep_level}); awake, each engine takes "
            f"{config.vllm_gpu_memory_utilization:g} of a GPU"
        )
    if config.lora_rank > 0:
        notes.append(
            "LoRA: base weights float32 and frozen, no reference copy; learner_sharding='fsdp' "
            "refuses LoRA, so only the ddp column is a layout the run can use"
        )
    return tuple(notes)


def render_plan(plan: MemoryPlan) -> str:
    """The plan as a text table: rows x layouts in GiB per GPU, the peak, the verdict."""
    micro = plan.micro_batch
    names = [
        f"{layout.layout}{' *' if layout.layout == plan.configured_layout else ''}"
        for layout in plan.layouts
    ]
    precisions = [layout.precision for layout in plan.layouts]
    label_width = max(len(label) for _, label in ROWS) + 2
    column = max(10, *(len(text) + 2 for text in (*names, *precisions)))

    def line(label: str, cells: list[str]) -> str:
        return label.ljust(label_width) + "".join(cell.rjust(column) for cell in cells)

    def gib(value: float) -> str:
        return f"{value / GIB:.2f}"

    usable = USABLE_SHARE * plan.gpu_memory_gb
    lines = [
        f"{plan.model}: {_count(plan.num_params)} parameters "
        f"({_count(plan.trainable_params)} trained) on {plan.gpus} learner GPU(s) "
        f"of {plan.gpu_memory_gb:g} GiB",
        f"micro-batch: {micro.rows} x {micro.width} tokens ({micro.tokens} padded, "
        f"{micro.targets} targets); gradient checkpointing "
        f"{'on' if plan.checkpointing else 'off'}",
        "",
        line("GiB per GPU", names),
        line("precision", precisions),
    ]
    for key, label in ROWS:
        lines.append(line(label, [gib(layout.rows[key]) for layout in plan.layouts]))
    lines.append(line("peak", [gib(layout.peak_bytes) for layout in plan.layouts]))
    lines.append(
        line(
            f"fits in {usable:g} GiB",
            ["yes" if layout.fits else "no" for layout in plan.layouts],
        )
    )
    lines.append(
        line(
            "CPU per node (offload)",
            [gib(layout.cpu_bytes_per_node) for layout in plan.layouts],
        )
    )
    fitting = [layout.layout for layout in plan.layouts if layout.fits]
    footer = [
        f"* the config's layout. Fits: {', '.join(fitting) if fitting else 'none'} "
        f"(peak within {USABLE_SHARE:.0%} of each GPU: the CUDA context and allocator "
        "fragmentation are not counted).",
        *plan.notes,
    ]
    lines.append("")
    lines += [textwrap.fill(text, width=88, subsequent_indent="  ") for text in footer]
    return "\n".join(lines)


def _count(number: int) -> str:
    """``7615616512`` -> ``7.616B``, ``134515008`` -> ``134.5M``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if number >= scale:
            return f"{number / scale:.4g}{unit}"
    return str(number)
