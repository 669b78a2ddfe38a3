"""RexRagConfig: every knob of a REX-RAG run in one RLlib AlgorithmConfig (spec §5.1).

Defaults are the official run's (``run_grpo_sglang_fsdp.sh``); where the paper and the
code disagree (spec §7) the code's choice is the default and the other is an option.
Presets are YAML files of overrides (``presets/*.yaml``), not code branches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from agents.rexrag.correction import CORRECTION_MODES
from agents.rexrag.rl_module import CausalLMModule

PROBE_TRIGGERS = ("wrong_answer", "dead_end_group")
#: What the keep ratio does in an iteration that kept no probe: "decay" (official: the
#: kept probes' accuracy counts as 0, so ρ ← decay·ρ) or "hold" (ρ unchanged).
KEEP_RATIO_WHEN_NONE_KEPT = ("decay", "hold")
BACKENDS = ("hf", "vllm")


@dataclass
class RexRagSettings:
    """The REX-RAG-specific fields, with the official defaults (spec §5.1)."""

    llm: str = "Qwen/Qwen2.5-3B"  # the policy: alias, hub name or save_pretrained directory
    dataset: str = "hotpotqa"
    retriever: str = "bm25"
    backend: str = "hf"  # rollout generation: "hf" (transformers, CPU/GPU) or "vllm" (GPU)
    vllm_options: dict = field(default_factory=lambda: {"gpu_memory_utilization": 0.4})
    questions_per_iteration: int = 512
    group_size: int = 5
    probes: bool = True  # False: plain GRPO (Search-R1)
    probe_prob: float = 20 / 101  # random.randint(0, 100) < 20
    probe_trigger: str = "wrong_answer"
    exploratory_prompts: list[str] | str | None = None  # None: our 30-prompt pool; or a file
    keep_ratio: float = 0.08
    keep_ratio_decay: float = 0.9
    keep_ratio_when_none_kept: str = "decay"  # see KEEP_RATIO_WHEN_NONE_KEPT
    keep_multiple_of: int = 8
    correction: str = "rexrag"
    sequence_weight_cap: float = 2.0
    max_turns: int = 5
    topk: int = 3
    max_new_tokens_per_turn: int = 500
    max_observation_tokens: int = 500
    temperature: float = 1.0
    top_p: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coeff: float = 0.001
    entropy_coeff: float = 0.0
    lr_warmup_steps: int = 286
    weight_decay: float = 0.01
    max_tokens_per_micro_batch: int = 24000  # ppo_max_token_len_per_gpu: memory, not math
    gradient_checkpointing: bool = False
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank instead of all weights
    lora_alpha: float = 16.0
    lora_target_modules: str | list[str] = "all-linear"
    # rexrag train: greedy test EM before and after training (None: no evaluation)
    eval_dataset: str | None = None
    eval_limit: int | None = None  # first N questions; None: all


_SETTINGS = tuple(f.name for f in fields(RexRagSettings))
_BASE_FIELDS = (
    "lr",
    "grad_clip",
    "minibatch_size",
    "seed",
    "num_env_runners",
    "num_learners",
    "num_gpus_per_learner",
    "num_gpus_per_env_runner",
)


class RexRagConfig(AlgorithmConfig):
    """Configuration of a REX-RAG (or plain GRPO, ``probes=False``) run.

    Set fields with ``.training(...)`` like any RLlib config; ``lr`` (1e-6),
    ``grad_clip`` (1.0) and ``minibatch_size`` (256 trajectories) are RLlib's own fields.
    ``validate()`` names the field that is wrong.
    """

    def __init__(self, algo_class=None):
        if algo_class is None:
            from agents.rexrag.rexrag import RexRag

            algo_class = RexRag
        super().__init__(algo_class=algo_class)
        for name, value in vars(RexRagSettings()).items():
            setattr(self, name, value)
        self.lr = 1e-6
        self.grad_clip = 1.0
        self.minibatch_size = 256
        from agents.rexrag.env_runner import RexRagEnvRunner

        self.env_runner_cls = RexRagEnvRunner
        # Remote EnvRunners sample; a driver-side copy of the policy would only cost memory.
        self.create_local_env_runner = False
        self.restart_failed_env_runners = True

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        """The policy module: the configured causal LM (see :class:`CausalLMModule`)."""
        return RLModuleSpec(
            module_class=CausalLMModule,
            model_config={
                "model": self.llm,
                "gradient_checkpointing": self.gradient_checkpointing,
                # The entropy metric comes from the scoring pass; the update pays for
                # a vocabulary-sized entropy only when it is a loss term.
                "entropy": "loss" if self.entropy_coeff > 0 else None,
                # π_old, π_θ and π_ref at the rollout temperature (greedy rollouts: T = 1,
                # the convention of the samplers' log-probs)
                "temperature": self.temperature if self.temperature > 0 else 1.0,
                "lora": None
                if self.lora_rank <= 0
                else {
                    "r": self.lora_rank,
                    "alpha": self.lora_alpha,
                    "target_modules": self.lora_target_modules,
                },
            },
        )

    def get_default_learner_class(self):
        from agents.rexrag.learner import RexRagLearner

        return RexRagLearner

    def training(self, **kwargs) -> RexRagConfig:
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in _SETTINGS}
        super().training(**kwargs)
        for name, value in ours.items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def validate(self) -> None:
        self.check_settings()
        super().validate()

    def check_settings(self) -> None:
        """The REX-RAG part of :meth:`validate`: raises ``ValueError`` naming each bad field."""
        problems = []
        if not isinstance(self.group_size, int) or self.group_size < 2:
            problems.append(
                f"group_size must be an integer >= 2 (GRPO needs a group), got {self.group_size!r}"
            )
        if not 0.0 <= self.probe_prob <= 1.0:
            problems.append(f"probe_prob must be in [0, 1], got {self.probe_prob!r}")
        if self.correction not in CORRECTION_MODES:
            problems.append(
                f"correction must be one of {CORRECTION_MODES}, got {self.correction!r}"
            )
        if self.probe_trigger not in PROBE_TRIGGERS:
            problems.append(
                f"probe_trigger must be one of {PROBE_TRIGGERS}, got {self.probe_trigger!r}"
            )
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.keep_ratio < 0.0:
            problems.append(f"keep_ratio must be >= 0, got {self.keep_ratio!r}")
        if not 0.0 <= self.keep_ratio_decay <= 1.0:
            problems.append(f"keep_ratio_decay must be in [0, 1], got {self.keep_ratio_decay!r}")
        if self.keep_ratio_when_none_kept not in KEEP_RATIO_WHEN_NONE_KEPT:
            problems.append(
                f"keep_ratio_when_none_kept must be one of {KEEP_RATIO_WHEN_NONE_KEPT}, "
                f"got {self.keep_ratio_when_none_kept!r}"
            )
        problems += self._probe_filter_problems()
        if self.max_turns < 0 or self.topk < 1:
            problems.append(
                f"max_turns must be >= 0 and topk >= 1, got {self.max_turns!r}, {self.topk!r}"
            )
        if self.clip_low < 0 or self.clip_high < 0:
            problems.append("clip_low and clip_high must be >= 0")
        if not isinstance(self.questions_per_iteration, int) or self.questions_per_iteration < 1:
            problems.append(
                "questions_per_iteration must be an integer >= 1, "
                f"got {self.questions_per_iteration!r}"
            )
        if self.max_tokens_per_micro_batch < 1:
            problems.append(
                f"max_tokens_per_micro_batch must be >= 1, got {self.max_tokens_per_micro_batch!r}"
            )
        if self.lora_rank > 0 and self.backend == "vllm":
            problems.append(
                "lora_rank > 0 needs backend 'hf' (the vLLM backend syncs full weights only)"
            )
        if self.sequence_weight_cap <= 0:
            problems.append(f"sequence_weight_cap must be > 0, got {self.sequence_weight_cap!r}")
        if self.probes:
            try:
                self.prompt_pool()
            except (OSError, ValueError) as error:
                problems.append(f"exploratory_prompts: {error}")
        if problems:
            raise ValueError("invalid RexRagConfig: " + "; ".join(problems))

    def _probe_filter_problems(self) -> list[str]:
        """The filter keeps K = ⌊originals·keep_ratio⌋ rounded down to a multiple of
        ``keep_multiple_of`` probes (spec §3.3). Below one multiple K is 0 from the first
        iteration, every spawned probe is discarded, and the keep ratio only decays: a
        run that pays for probes and never trains on one. Refused, naming the fields."""
        if not self.probes or self.probe_prob <= 0:
            return []
        originals = self.questions_per_iteration * self.group_size
        if int(originals * self.keep_ratio) >= self.keep_multiple_of:
            return []
        return [
            "with probes on, questions_per_iteration · group_size · keep_ratio "
            f"({self.questions_per_iteration} · {self.group_size} · {self.keep_ratio:g} = "
            f"{originals * self.keep_ratio:g}) is below keep_multiple_of "
            f"({self.keep_multiple_of}), so no probe would ever be kept: raise "
            "questions_per_iteration or keep_ratio, or lower keep_multiple_of (1 rounds to "
            "any count; the official 8 is its GPU count)"
        ]

    def question_source(self) -> str:
        """The dataset to load: ``dataset``, with ``"tiny-sanity"`` meaning the sanity
        task's questions (written next to the cached warm-started policy)."""
        if self.dataset == "tiny-sanity":
            from agents.rexrag.sanity_task import QUESTIONS_FILE, sanity_policy_path

            return str(sanity_policy_path() / QUESTIONS_FILE)
        return str(self.dataset)

    def prompt_pool(self) -> list[str]:
        """The exploratory prompts: ours by default, a list, or a file with one per line."""
        from agents.rexrag.probes import default_exploratory_prompts, load_exploratory_prompts

        if self.exploratory_prompts is None:
            return default_exploratory_prompts()
        if isinstance(self.exploratory_prompts, (str, Path)):
            return load_exploratory_prompts(self.exploratory_prompts)
        prompts = [p for p in self.exploratory_prompts if isinstance(p, str) and p.strip()]
        if not prompts:
            raise ValueError("the exploratory prompt pool is empty")
        return prompts

    def to_yaml_dict(self) -> dict[str, Any]:
        """The run's settings as plain data (what a preset file holds)."""
        return {name: getattr(self, name) for name in (*_BASE_FIELDS, *_SETTINGS)}

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, source: str | Path, overrides: dict[str, Any] | None = None) -> RexRagConfig:
        """A config from a preset name (``tiny-cpu``) or a YAML file, then ``overrides``.

        A file may start from another preset or file with ``base: NAME``; its own
        fields override the base's.
        """
        values = {**_read_config_file(source), **(overrides or {})}
        unknown = sorted(set(values) - set(_BASE_FIELDS) - set(_SETTINGS))
        if unknown:
            raise ValueError(f"config {source}: unknown fields {unknown}")
        config = cls()
        for name, value in values.items():
            setattr(config, name, value)
        return config


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


def _read_config_file(source: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
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
    return {**_read_config_file(base, (*seen, str(path))), **values}


def presets() -> list[str]:
    """Names of the shipped presets."""
    directory = Path(str(files("agents.rexrag") / "presets"))
    return sorted(p.stem for p in directory.glob("*.yaml"))
