"""REX-RAG on Ray RLlib: mixed sampling in the rollout workers, policy correction in the learner.

The algorithm only, laid out like RLlib's ``algorithms/ppo/``. Its modules, in the
order one iteration's data flows (this is the package's map; docs/development.md maps
the rest):

0. ``settings.py`` — every knob (:class:`RexRagSettings`, official defaults but
   ``probe_credit``), the values each may take and their checks, presets
   (``presets/*.yaml``);
   ``env_settings.py`` reads ``config.environment(env, env_config)`` into them.
1. ``rexrag.py`` — :class:`RexRagConfig` (RLlib's config class with those fields) and
   :meth:`RexRag.training_step`, the table of contents: it draws the questions and
   asks the EnvRunners for their groups.
2. ``env_runner.py`` — :class:`RexRagEnvRunner`, an RLlib EnvRunner holding the policy
   and a generation backend; it runs
3. ``mixed_sampling.py`` — ``group_size`` originals per question (through
   :class:`agents.llm_agent.LLMAgent`), then probes of the wrong ones, made by
4. ``probes.py`` — the exploratory prompt pool and its trie probabilities, the probe
   cut, the top-K filter and the EWMA keep ratio.
5. ``token_batch.py`` — trajectories become padded arrays with masks.
6. ``learner.py`` — :class:`RexRagLearner` scores π_old and π_ref (``logprobs.py``)
   over the batch; then
7. ``learner_batch.py`` — filters the probes, computes GRPO advantages
   (``losses.py``), α, error and trigger rates, the behaviour log-probs of the
   chosen mode from ``correction.py`` (``CORRECTIONS``, then ``ORIGINAL_BEHAVIOURS``),
   and which tokens carry loss from ``credit.py`` (``PROBE_CREDITS``), measuring
   where the credit goes per component;
8. ``learner.py`` — the clipped, corrected loss plus k3 KL (``losses.py``) on
   ``rl_module.py``'s :class:`CausalLMModule`, one optimizer step per mini-batch
   (``micro_batches.py`` splits it by tokens; ``lr_schedule.py`` warms the learning
   rate up); with ``learner_sharding=fsdp`` the policy and the reference are FSDP2
   shards (``sharding.py``) and ``learner_group.py`` gathers their state;
9. ``rollout_metrics.py`` — what the iteration reports; weights go back to the runners.

Run tooling (run directories, evaluation, curves) is in :mod:`agents.runs`; the SFT
recipes that build starting policies are in :mod:`agents.warm_start`.

The algorithm's two classes are imported on first use (PEP 562): ``rexrag.py`` imports
Ray RLlib, and the torch-only parts (``losses.py``, ``correction.py``, ``logprobs.py``,
``sharding.py``, ``learner_batch.py``) must import without it, on machines that have
no Ray (``benchmarks/gpu_check/``; ``tests/test_torch_only_imports.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.rexrag.rexrag import RexRag, RexRagConfig

__all__ = ["RexRag", "RexRagConfig"]


def __getattr__(name: str) -> Any:
    """``RexRag`` and ``RexRagConfig`` from ``rexrag.py``, imported when first asked for."""
    if name in __all__:
        from agents.rexrag import rexrag

        return getattr(rexrag, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
