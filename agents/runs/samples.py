"""What the policy wrote: a bounded sample of each iteration's groups, for a person to read.

The metrics say how often a dead end was rescued; only the text says how. Each iteration
keeps a few of its GRPO groups (one question: its originals and their probes) as plain
JSON, ``RUN/samples/iteration_NNNNNN.jsonl``, one group a line, so that
``rexrag report`` can show them and anyone can ``grep`` them:

- the question, its gold answers and the question prompt (once a group);
- every original and probe, its response split into labelled segments (``model``,
  ``information``, ``invalid`` for the invalid-action notice, ``probe_prompt``), each
  with its credit component (``original``, ``prefix``, ``prompt``, ``continuation``,
  :mod:`agents.rexrag.credit`) and, where the token runs line up with the text, its
  token count and the advantage it carries (``push``);
- reward, exact match, answer, the probe's parent and branch point, whether the probe
  filter kept it, the advantage the learner used, and per credit component the trained
  tokens, Σ A·w (``push``: the weight of ∇log π at θ_old, signed) and the mean importance
  weight w = π_old / q.

Which groups: the ones a person studying dead ends wants first. Groups are ranked by
kind (:data:`GROUP_KINDS`: rescued, kept probe, probes all dropped, dead end, mixed,
solved); the ranking takes one group of each kind present, then fills up by kind, so
any prefix of it is itself a fair sample. The algorithm hands each iteration's batch
to its ``observe_batch`` hook; a run sets a :class:`SampleCollector` there, which keeps
the first ``sample_groups`` groups (:data:`DEFAULT_SAMPLE_GROUPS`, at most
:data:`MAX_SAMPLE_GROUPS`). The algorithm never imports this module (agents.rexrag is the
lower layer). The text comes from the trajectory's turns (what the environment saw and
answered), not from decoding token ids: the learner never sees it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.rexrag.credit import COMPONENT_NAMES, PROBE_CREDITS, credit_components
from agents.rexrag.learner_batch import MIN_LOGPROB, LearnerBatch
from agents.trajectory import Component, Trajectory

#: The most groups a run writes per iteration: 8 groups of paper-sized trajectories are
#: about 1 MB an iteration on disk.
MAX_SAMPLE_GROUPS = 8
#: Groups a run writes per iteration unless told otherwise (``rexrag train --sample-groups``).
DEFAULT_SAMPLE_GROUPS = 4
#: Where a run's samples live, one file an iteration.
SAMPLES_DIR = "samples"
_FILE_NAME = re.compile(r"^iteration_(\d+)\.jsonl$")

#: Kinds of group, in the order a person studying dead ends reads them.
GROUP_KINDS = (
    "rescued",  # every original wrong, a kept probe right
    "kept_probe",  # a probe the filter kept (not a rescue)
    "probes_dropped",  # probed, every probe dropped by the filter
    "dead_end",  # every original wrong, no probe spawned
    "mixed",  # some originals right, some wrong
    "solved",  # every original right
)

#: A response segment's kind, from the label of its tokens.
SEGMENT_KINDS = {
    Component.MODEL: "model",
    Component.INFO: "information",
    Component.FEEDBACK: "invalid",
    Component.PROBE_PROMPT: "probe_prompt",
}
_OBSERVATION_KINDS = {"invalid": Component.FEEDBACK, "probe_prompt": Component.PROBE_PROMPT}


def group_kind(
    originals: Sequence[Trajectory], probes: Sequence[Trajectory], kept: set[str]
) -> str:
    """The :data:`GROUP_KINDS` entry of one question's group (``kept``: rollout ids of
    the probes the filter kept)."""
    right = sum(t.correct for t in originals)
    kept_probes = [p for p in probes if p.rollout_id in kept]
    if right == 0 and any(p.correct for p in kept_probes):
        return "rescued"
    if kept_probes:
        return "kept_probe"
    if probes:
        return "probes_dropped"
    if right == 0:
        return "dead_end"
    return "solved" if right == len(originals) else "mixed"


def rank_groups(kinds: Sequence[str]) -> list[int]:
    """Indices of groups (given their kinds, in sampling order) in the order they are
    kept: one of each kind present, by :data:`GROUP_KINDS` priority, then the rest by
    priority, earlier groups first. Any prefix is a bounded sample with every kind the
    bound allows."""
    by_kind = {kind: [i for i, k in enumerate(kinds) if k == kind] for kind in GROUP_KINDS}
    firsts = [members[0] for members in by_kind.values() if members]
    rest = [i for members in by_kind.values() for i in members[1:]]
    return firsts + rest


def text_segments(trajectory: Trajectory) -> list[dict[str, Any]]:
    """The response as ``[{"kind", "text"}]``: each turn's action (``model``), then its
    observation (``information``, ``invalid`` or, in a probe, ``probe_prompt``); empty
    texts are left out (an answer's empty observation)."""
    segments = []
    for turn in trajectory.turns:
        observation = _OBSERVATION_KINDS.get(turn.action_type, Component.INFO)
        for label, text in ((Component.MODEL, turn.action), (observation, turn.observation)):
            if text:
                segments.append({"kind": SEGMENT_KINDS[label], "text": text})
    return segments


def token_runs(trajectory: Trajectory) -> list[tuple[str, int, int]]:
    """``[(segment kind, start, end)]``: the response's runs of equally labelled tokens."""
    runs: list[tuple[str, int, int]] = []
    components = trajectory.components
    start = trajectory.prompt_length
    for position in range(start + 1, len(components) + 1):
        if position == len(components) or components[position] != components[start]:
            label = Component(components[start])
            runs.append((SEGMENT_KINDS.get(label, label.name.lower()), start, position))
            start = position
    return runs


def segment_spans(trajectory: Trajectory, segments: Sequence[dict]) -> list[tuple[int, int]] | None:
    """The token span of each text segment, or None where the token runs do not line up
    one to one with the text segments (then only whole-trajectory credit is shown)."""
    runs = token_runs(trajectory)
    if [kind for kind, _, _ in runs] != [segment["kind"] for segment in segments]:
        return None
    return [(start, end) for _, start, end in runs]


def iteration_samples(
    trajectories: Sequence[Trajectory],
    prepared: LearnerBatch,
    old_logprobs: np.ndarray,
    *,
    probe_credit: str,
    limit: int = DEFAULT_SAMPLE_GROUPS,
) -> list[dict[str, Any]]:
    """The first ``limit`` groups of an iteration by :func:`rank_groups`, as JSON-ready dicts.

    ``trajectories``: the iteration's, in batch order (``to_token_batch``'s rows);
    ``prepared``: :func:`~agents.rexrag.learner_batch.build_learner_batch`'s result for
    them; ``old_logprobs``: ``[batch, seq]`` log π_old, as given to it; ``probe_credit``:
    the run's option, which says which kept rows reached the learner's columns.
    """
    credit = _row_credit(prepared, old_logprobs, probe_credit)
    kept_ids = {trajectories[row].rollout_id for row in prepared.rows}
    groups: dict[str, list[int]] = {}
    for index, trajectory in enumerate(trajectories):
        groups.setdefault(trajectory.example_id, []).append(index)
    members = list(groups.values())
    kinds = []
    for rows in members:
        originals = [trajectories[i] for i in rows if not trajectories[i].is_probe]
        probes = [trajectories[i] for i in rows if trajectories[i].is_probe]
        kinds.append(group_kind(originals, probes, kept_ids))
    samples = []
    for group in rank_groups(kinds)[:limit]:
        rows = members[group]
        samples.append(_group_record(trajectories, rows, kinds[group], kept_ids, credit))
    return samples


class SampleCollector:
    """The ``observe_batch`` hook of a run's algorithm: turns each iteration's batch into
    its sample at once (the batch is freed as usual when ``training_step`` ends) and keeps
    it until the run takes it."""

    def __init__(self, probe_credit: str, limit: int = DEFAULT_SAMPLE_GROUPS) -> None:
        check_sample_groups(limit)
        self.probe_credit = probe_credit
        self.limit = limit
        self._latest: list[dict[str, Any]] | None = None

    def __call__(
        self, trajectories: Sequence[Trajectory], prepared: LearnerBatch, old_logprobs: np.ndarray
    ) -> None:
        if self.limit:
            self._latest = iteration_samples(
                trajectories,
                prepared,
                old_logprobs,
                probe_credit=self.probe_credit,
                limit=self.limit,
            )

    def take(self) -> list[dict[str, Any]] | None:
        """The last iteration's sample (None if none came since the last ``take``)."""
        latest, self._latest = self._latest, None
        return latest


def check_sample_groups(count: int) -> None:
    """Refuse a per-iteration group count outside 0..MAX_SAMPLE_GROUPS, before any work."""
    if not 0 <= count <= MAX_SAMPLE_GROUPS:
        raise ValueError(
            f"sample_groups must be between 0 (no samples) and {MAX_SAMPLE_GROUPS}, got {count}: "
            "the samples are for reading, and a run of hundreds of iterations keeps every one"
        )


def _row_credit(
    prepared: LearnerBatch, old_logprobs: np.ndarray, probe_credit: str
) -> dict[int, dict[str, Any]]:
    """Per batch row that reached the learner's columns: its advantage and per-token
    arrays (trained mask, credit component, A·w at θ_old)."""
    kept = prepared.batch
    components = credit_components(
        kept.loss_mask, kept.prompt_mask, kept.is_probe, kept.branch_point
    )
    column_rows = np.flatnonzero(PROBE_CREDITS[probe_credit](components).any(-1))
    columns = prepared.columns
    if len(column_rows) != len(columns["advantages"]):
        raise ValueError(
            f"samples: {len(column_rows)} kept rows carry loss under probe_credit="
            f"{probe_credit!r} but the learner batch has {len(columns['advantages'])}: "
            "iteration_samples must be given the probe_credit the batch was built with"
        )
    old = np.maximum(np.nan_to_num(old_logprobs, nan=MIN_LOGPROB), MIN_LOGPROB)
    width = columns["behaviour_logprobs"].shape[1]
    credit = {}
    for column, kept_index in enumerate(column_rows):
        row = int(prepared.rows[kept_index])
        advantage = float(columns["advantages"][column])
        weights = np.exp(old[row, :width] - columns["behaviour_logprobs"][column])  # [width]
        trained = columns["target_mask"][column].astype(bool)  # [width]
        credit[row] = {
            "advantage": advantage,
            "trained": trained,
            "component": columns["credit_component"][column],
            "weights": weights,
            "push": np.where(trained, advantage * weights, 0.0),
        }
    return credit


def _group_record(
    trajectories: Sequence[Trajectory],
    rows: Sequence[int],
    kind: str,
    kept_ids: set[str],
    credit: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    first = trajectories[rows[0]]
    originals = [trajectories[i] for i in rows if not trajectories[i].is_probe]
    probes = [trajectories[i] for i in rows if trajectories[i].is_probe]
    kept = [p for p in probes if p.rollout_id in kept_ids]
    return {
        "kind": kind,
        "question_id": first.example_id,
        "question": first.question,
        "golden_answers": list(first.golden_answers),
        "data_source": first.data_source,
        "prompt": first.prompt,
        "originals": len(originals),
        "originals_right": sum(t.correct for t in originals),
        "probes_spawned": len(probes),
        "probes_kept": len(kept),
        "probes_right": sum(p.correct for p in probes),
        "kept_probes_right": sum(p.correct for p in kept),
        "trajectories": [
            _trajectory_record(
                trajectories[i], trajectories[i].rollout_id in kept_ids, credit.get(i)
            )
            for i in rows
        ],
    }


def _trajectory_record(
    trajectory: Trajectory, kept: bool, credit: dict[str, Any] | None
) -> dict[str, Any]:
    segments = text_segments(trajectory)
    branch_segment = next((i for i, s in enumerate(segments) if s["kind"] == "probe_prompt"), None)
    for index, segment in enumerate(segments):
        segment["credit"] = _segment_credit(trajectory, segment["kind"], index, branch_segment)
    spans = segment_spans(trajectory, segments)
    if spans is not None:
        for segment, (start, end) in zip(segments, spans, strict=True):
            segment["tokens"] = end - start
            if credit is not None:
                push = credit["push"][start:end]
                trained = credit["trained"][start:end]
                segment["trained_tokens"] = int(trained.sum())
                segment["push"] = _number(push.sum())
    return {
        "id": trajectory.rollout_id,
        "parent": trajectory.parent_id,
        "probe": trajectory.is_probe,
        "kept": kept,
        "reward": _number(trajectory.reward),
        "em": _number(trajectory.scores.get("em", 0.0)),
        "answer": trajectory.answer,
        "searches": trajectory.num_searches,
        "turns": trajectory.num_turns,
        "invalid_actions": trajectory.invalid_actions,
        "truncated": trajectory.truncated,
        "tokens": len(trajectory.token_ids),
        "branch_point": trajectory.branch_point if trajectory.is_probe else None,
        "branch_segment": branch_segment,
        "advantage": None if credit is None else _number(credit["advantage"]),
        "credit": {} if credit is None else _component_credit(credit),
        "segments": segments,
    }


def _segment_credit(
    trajectory: Trajectory, kind: str, index: int, branch_segment: int | None
) -> str | None:
    """The credit component of a segment's tokens (None: not trained by label). A probe's
    model text before its prompt is its parent's, copied (``prefix``; its last few
    tokens are re-encoded at the cut before ``<answer>`` and count as ``continuation``
    in the token-level numbers)."""
    if kind == "probe_prompt":
        return "prompt"
    if kind != "model":
        return None
    if not trajectory.is_probe:
        return "original"
    before = branch_segment is None or index < branch_segment
    return "prefix" if before else "continuation"


def _component_credit(credit: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per credit component with trained tokens: ``tokens``, ``push`` (Σ A·w) and
    ``weight_mean`` (mean w = π_old / q) over them."""
    summary = {}
    for code, name in COMPONENT_NAMES.items():
        tokens = credit["trained"] & (credit["component"] == code)
        if tokens.any():
            summary[name] = {
                "tokens": int(tokens.sum()),
                "push": _number(credit["push"][tokens].sum()),
                "weight_mean": _number(credit["weights"][tokens].mean()),
            }
    return summary


def _number(value: float) -> float | None:
    """A finite float, rounded for a small file; None for NaN or infinity (JSON has none)."""
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None


def samples_path(run_dir: str | Path, iteration: int) -> Path:
    """``RUN/samples/iteration_NNNNNN.jsonl``."""
    return Path(run_dir) / SAMPLES_DIR / f"iteration_{iteration:06d}.jsonl"


def write_samples(run_dir: str | Path, iteration: int, samples: Sequence[dict[str, Any]]) -> Path:
    """Write an iteration's samples (under a temporary name, then renamed: a crash never
    leaves half a file that looks whole)."""
    path = samples_path(run_dir, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".jsonl.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for group in samples:
            record = {
                "iteration": iteration,
                **{k: v for k, v in group.items() if k != "iteration"},
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


def sample_iterations(run_dir: str | Path) -> list[int]:
    """The iterations that have a samples file, in order."""
    directory = Path(run_dir) / SAMPLES_DIR
    if not directory.is_dir():
        return []
    found = (_FILE_NAME.match(path.name) for path in directory.iterdir())
    return sorted(int(match.group(1)) for match in found if match)


def read_samples(run_dir: str | Path, iteration: int) -> list[dict[str, Any]]:
    """An iteration's groups as written."""
    path = samples_path(run_dir, iteration)
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def truncate_samples(run_dir: str | Path, iterations: int) -> None:
    """Drop the samples of iterations past ``iterations`` (written after the checkpoint a
    resume starts from, as ``metrics.csv`` drops their rows)."""
    for iteration in sample_iterations(run_dir):
        if iteration > iterations:
            samples_path(run_dir, iteration).unlink()


def transcript(row: dict[str, Any], limit: int = 4000) -> str:
    """A trajectory's response as one text, each segment under its kind (``[model]``,
    ``[information]`` …), the branch point marked, cut at ``limit`` characters."""
    parts = []
    for index, segment in enumerate(row["segments"]):
        if row["probe"] and index == row["branch_segment"]:
            parts.append("---- branch point ----\n")
        parts.append(f"[{segment['kind']}] {segment['text']}")
        if not segment["text"].endswith("\n"):
            parts.append("\n")
    text = "".join(parts)
    return (
        text if len(text) <= limit else text[:limit] + f"\n[… {len(text) - limit} more characters]"
    )


def sample_rows(samples: Sequence[dict[str, Any]], iteration: int) -> list[dict[str, Any]]:
    """One flat row per trajectory of the sampled groups (a tracker's table)."""
    return [
        {
            "iteration": iteration,
            "kind": group["kind"],
            "question": group["question"],
            "gold": " | ".join(group["golden_answers"]),
            "rollout": row["id"],
            "parent": row["parent"] or "",
            "probe": row["probe"],
            "kept": row["kept"],
            "em": row["em"],
            "advantage": row["advantage"],
            "answer": row["answer"] or "",
            "transcript": transcript(row),
        }
        for group in samples
        for row in group["trajectories"]
    ]


def samples_markdown(samples: Sequence[dict[str, Any]], limit: int = 1500) -> str:
    """The sampled groups as Markdown (TensorBoard's text tab): per group its question, a
    table of its trajectories and each probe's transcript from its branch point."""
    parts = []
    for group in samples:
        parts.append(
            f"### {group['kind'].replace('_', ' ')}: {_cell(group['question'])}\n\n"
            f"gold: {_cell(' | '.join(group['golden_answers']))}; "
            f"{group['originals_right']} of {group['originals']} originals right; probes "
            f"{group['probes_spawned']} spawned, {group['probes_kept']} kept, "
            f"{group['probes_right']} right\n\n"
            "| rollout | probe of | kept | EM | advantage | answer |\n|---|---|---|---|---|---|\n"
        )
        for row in group["trajectories"]:
            advantage = "" if row["advantage"] is None else f"{row['advantage']:+.3f}"
            parts.append(
                f"| {_cell(row['id'])} | {_cell(row['parent'] or '')} | "
                f"{'kept' if row['kept'] else 'dropped'} | {row['em']} | {advantage} | "
                f"{_cell(row['answer'] or '')} |\n"
            )
        for row in group["trajectories"]:
            if row["probe"]:
                own = {**row, "segments": row["segments"][row["branch_segment"] or 0 :]}
                text = transcript({**own, "probe": False}, limit).replace("```", "'''")
                parts.append(f"\n**{_cell(row['id'])}** from its branch point:\n\n```\n{text}```\n")
        parts.append("\n")
    return "".join(parts)


def _cell(text: str, limit: int = 200) -> str:
    """Text safe in a Markdown table cell: one line, pipes escaped, cut at ``limit``."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + "…"
