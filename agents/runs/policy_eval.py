"""Greedy test-set evaluation of a trained (or warm-start) policy, with a run's settings.

The before/after numbers of ``rexrag train`` and ``benchmarks/dead_ends.py`` come from
here: the evaluation harness's pinned protocol (greedy decoding, EM against any gold
answer) with the run's retriever, top-k, turn and token limits, so "before" and "after"
differ only in the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.evaluation import AgentIdentity, EvalProtocol, evaluate, protocol_llm_agent
from agents.rexrag import RexRagConfig
from agents.runs.run_directory import resolve_policy, run_config


def checkpoint_evaluation(
    checkpoint: str | Path,
    datasets: Sequence[str],
    limit: int | None,
    overrides: dict[str, Any],
) -> tuple[Path, EvalProtocol, Path | None]:
    """``(policy directory, protocol, config.yaml it came from)`` for evaluating a
    checkpoint: inside a run, the run's protocol (what its ``eval_before`` and
    ``eval_after`` used), else the harness defaults; ``overrides`` (EvalProtocol
    fields) win over either."""
    policy = resolve_policy(checkpoint)
    found = run_config(checkpoint)
    if found is None:
        return policy, EvalProtocol(datasets=tuple(datasets), limit=limit, **overrides), None
    source, config = found
    for name, value in overrides.items():
        setattr(config, config.EVAL_PROTOCOL_FIELDS[name], value)
    return policy, config.eval_protocol(datasets, limit), source


def evaluate_policy(
    policy_dir: str | Path,
    config: RexRagConfig,
    datasets: Sequence[str],
    out_dir: str | Path,
    *,
    limit: int | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """EM / F1 / cover-EM (×100) and searches per question of the policy in
    ``policy_dir`` (an alias or ``save_pretrained`` directory) on the first ``limit``
    questions of each of ``datasets``, under the run's protocol
    (:meth:`RexRagConfig.eval_protocol`); per-question records and the summary (per
    dataset and ``"average"``) are written to ``out_dir``."""
    protocol = config.eval_protocol(datasets, limit)
    agent = protocol_llm_agent(str(policy_dir), protocol)
    return evaluate(
        agent,
        protocol,
        out_dir,
        batch_size=batch_size,
        progress=False,
        log=log,
        identity=AgentIdentity.of("llm", policy_dir),
    )
