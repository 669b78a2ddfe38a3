"""RexRagConfig and RexRag: the REX-RAG algorithm on RLlib's new API stack.

As RLlib's ``ppo.py``, the config and the algorithm share a module. The config
carries every knob of a run; the fields, their allowed values, their checks and the
preset files are :mod:`agents.rexrag.settings` (defaults: the official run's, spec
§5.1), and ``env_config``'s episode settings are read by
:mod:`agents.rexrag.env_settings`. What stays here is RLlib's side: the config class
and what a run builds from it, and the algorithm.

One ``training_step``: every EnvRunner samples its questions' groups (originals and
probes); the learner recomputes π_old and π_ref over all tokens; the probe filter,
GRPO advantages and the behaviour probabilities of the chosen correction are computed
(:func:`build_learner_batch`); the LearnerGroup takes one optimizer step per
mini-batch; the new weights go back to the EnvRunners. With ``probes=False`` this
is plain GRPO (Search-R1).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
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
from agents.llm.base import Generator, SamplingParams
from agents.llm.seeding import stream_seed
from agents.llm_agent import LLMAgent
from agents.rexrag.credit import SUM_SUFFIX, component_means
from agents.rexrag.env_runner import RexRagEnvRunner, RolloutResult
from agents.rexrag.env_settings import (
    PACKAGE_ENVS,
    constructor_arguments,
    episode_settings,
    user_env,
)
from agents.rexrag.learner import RexRagLearner
from agents.rexrag.learner_batch import build_learner_batch
from agents.rexrag.learner_group import RexRagLearnerGroup
from agents.rexrag.probes import prompt_pool, update_keep_ratio
from agents.rexrag.rl_module import CausalLMModule
from agents.rexrag.rollout_metrics import (
    doubt_openings,
    env_steps_sampled,
    episode_stats,
    rollout_metrics,
)
from agents.rexrag.settings import (
    SETTING_NAMES,
    RexRagSettings,
    file_dict,
    file_values,
    settings_arguments_doc,
    settings_problems,
    warn_if_originals_start_clipped,
)
from agents.rexrag.token_batch import TokenBatch, select_rows, to_token_batch
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.env import SearchQAEnv
from rexrag_env.vector import SearchQAVectorEnv

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


class RolloutFailedError(RuntimeError):
    """An EnvRunner could not sample (e.g. its retriever is down): the iteration fails."""


class RexRagConfig(AlgorithmConfig):
    """Configuration of a REX-RAG (or plain GRPO, ``probes=False``) run.

    Its REX-RAG fields are :class:`~agents.rexrag.settings.RexRagSettings`' (documented
    there, checked in :mod:`agents.rexrag.settings`); set them with ``.training(...)``
    like any RLlib config. ``lr`` (1e-6), ``grad_clip`` (1.0) and ``minibatch_size``
    (256 trajectories) are RLlib's own fields. ``validate()`` names the field that is
    wrong.
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

    def training(
        self,
        *,
        llm: str = NotProvided,
        dataset: str = NotProvided,
        retriever: str = NotProvided,
        backend: str = NotProvided,
        vllm_gpu_memory_utilization: float = NotProvided,
        vllm_tensor_parallel_size: int = NotProvided,
        vllm_max_model_len: int | None = NotProvided,
        vllm_sleep_level: int = NotProvided,
        vllm_weight_transport: str = NotProvided,
        vllm_options: dict = NotProvided,
        questions_per_iteration: int = NotProvided,
        group_size: int = NotProvided,
        probes: bool = NotProvided,
        probe_prob: float = NotProvided,
        probe_trigger: str = NotProvided,
        exploratory_prompts: list[str] | str | None = NotProvided,
        keep_ratio: float = NotProvided,
        keep_ratio_decay: float = NotProvided,
        keep_ratio_when_none_kept: str = NotProvided,
        keep_multiple_of: int = NotProvided,
        correction: str = NotProvided,
        sequence_weight_cap: float = NotProvided,
        probe_credit: str = NotProvided,
        original_behaviour: str = NotProvided,
        advantage_baseline: str = NotProvided,
        max_turns: int = NotProvided,
        topk: int = NotProvided,
        max_new_tokens_per_turn: int = NotProvided,
        max_observation_tokens: int = NotProvided,
        temperature: float = NotProvided,
        top_p: float = NotProvided,
        clip_low: float = NotProvided,
        clip_high: float = NotProvided,
        kl_coeff: float = NotProvided,
        entropy_coeff: float = NotProvided,
        lr_warmup_steps: int = NotProvided,
        weight_decay: float = NotProvided,
        max_tokens_per_micro_batch: int = NotProvided,
        gradient_checkpointing: bool = NotProvided,
        dtype: str = NotProvided,
        learner_sharding: str = NotProvided,
        learner_cpu_offload: bool = NotProvided,
        lora_rank: int = NotProvided,
        lora_alpha: float = NotProvided,
        lora_target_modules: str | list[str] = NotProvided,
        eval_dataset: str | None = NotProvided,
        eval_limit: int | None = NotProvided,
        **kwargs: Any,
    ) -> RexRagConfig:
        """Sets the given REX-RAG fields, then RLlib's own (``lr``, ``grad_clip``,
        ``minibatch_size``, …, passed through ``kwargs`` to
        ``AlgorithmConfig.training``). Each keyword is the
        :class:`~agents.rexrag.settings.RexRagSettings` field of that name; its
        documentation is appended below from there (``help()`` shows it)."""
        given = {name: value for name, value in locals().items() if name in SETTING_NAMES}
        super().training(**kwargs)
        for name, value in given.items():
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def validate(self) -> None:
        """RLlib's checks and ours; first takes ``.environment(env, env_config)``'s episode
        settings into the fields of the same name (:mod:`agents.rexrag.env_settings`)."""
        taken, problems = episode_settings(self.env, self.env_config)
        problems += self._unused_rllib_fields()
        if problems:
            raise ValueError("invalid RexRagConfig: " + "; ".join(problems))
        for name, value in taken.items():
            setattr(self, name, value)
        self.check_settings()
        super().validate()

    def check_settings(self) -> None:
        """The REX-RAG part of :meth:`validate`: raises ``ValueError`` naming each bad
        field (:func:`~agents.rexrag.settings.settings_problems`), and warns when the
        official correction can start correct originals beyond the clip."""
        problems = settings_problems(self)
        if problems:
            raise ValueError("invalid RexRagConfig: " + "; ".join(problems))
        warn_if_originals_start_clipped(self)

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

    def env_class(self) -> type[SearchQAEnv]:
        """The class of the envs a run samples: ``SearchQAEnv`` for the package's ids,
        a user's registered subclass otherwise."""
        if self.env in PACKAGE_ENVS:
            return SearchQAEnv
        return user_env(self.env, self.env_config)[0]

    def env_kwargs(self) -> dict[str, Any]:
        """A user's env's own constructor arguments; none for the package's envs."""
        if self.env in PACKAGE_ENVS:
            return {}
        return constructor_arguments(user_env(self.env, self.env_config)[1])

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
        """The exploratory prompts (:func:`~agents.rexrag.probes.prompt_pool`)."""
        return prompt_pool(self.exploratory_prompts)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The run's settings as plain data (what a preset file holds)."""
        return file_dict(self)

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
        """A config from a preset name (``tiny-cpu``) or a YAML file, then ``overrides``
        (:func:`~agents.rexrag.settings.file_values`: ``base:`` chains, unknown fields
        refused, ``vllm_options`` that run outside code only with
        ``allow_remote_code``)."""
        config = cls()
        for name, value in file_values(source, overrides, allow_remote_code).items():
            setattr(config, name, value)
        return config


RexRagConfig.training.__doc__ += settings_arguments_doc(indent=8)


class RexRag(Algorithm):
    """REX-RAG (or GRPO with ``probes=False``) over :class:`RexRagEnvRunner` workers."""

    #: Called as ``observe_batch(trajectories, learner_batch, old_logprobs)`` in every
    #: iteration when set: ``rexrag train`` keeps a sample of the groups for people to
    #: read (agents/runs/samples.py) without the algorithm knowing the run directory.
    observe_batch: Callable[..., None] | None = None

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
        if self.observe_batch is not None:
            self.observe_batch(trajectories, prepared, scores["old_logprobs"])
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
