"""Trajectory records: token ids with one component label per token (DESIGN.md principle 1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from rexrag_env.reward import SCORE_NAMES, zero_scores


class Component(enum.IntEnum):
    """What produced a token, and so whether the learner trains on it (spec §1.3).

    Codes follow the official REX-RAG ``component_mask`` where it defines them.
    """

    PROMPT = 0  #: the question prompt (chat template applied); context only
    MODEL = 1  #: sampled by the policy; trained
    FEEDBACK = 3  #: the invalid-action notice; never trained
    INFO = 4  #: a retrieved <information> block; never trained
    PROBE_PROMPT = 5  #: an inserted exploratory prompt; trained (spec §3.2)
    PAD = 7  #: padding in a batch


def observation_component(action_type: str) -> Component:
    """The label of the observation that answers an action: the invalid-action notice
    is FEEDBACK, anything else (passages, the empty end) INFO. Rollouts and SFT
    demonstrations label alike."""
    return Component.FEEDBACK if action_type == "invalid" else Component.INFO


@dataclass
class Turn:
    """One agent turn as the environment saw it (for humans, eval files and debugging)."""

    action: str
    observation: str
    action_type: str
    query: str | None = None
    doc_ids: list[str] = field(default_factory=list)
    reward: float = 0.0  #: the env's reward for this step


@dataclass
class Trajectory:
    """One episode: what every agent produces, and in tokens what a trainer consumes.

    Text agents fill only the text fields. Token agents also fill ``token_ids``, where
    ``token_ids[i]`` has label ``components[i]`` and ``sampling_logprobs[i]`` is the
    behaviour log-probability of a MODEL token as sampled, of a PROBE_PROMPT token its
    log-probability under the exploratory prompt pool, and 0.0 for every other label;
    NaN marks a MODEL token that no sampler scored (a probe's re-encoded boundary
    text, see :func:`agents.rexrag.probes.make_probe`). The prompt occupies the first
    ``prompt_length`` tokens.
    """

    example_id: str
    question: str
    golden_answers: list[str]
    data_source: str
    prompt: str = ""
    token_ids: list[int] = field(default_factory=list)
    components: list[int] = field(default_factory=list)
    sampling_logprobs: list[float] = field(default_factory=list)
    prompt_length: int = 0
    turns: list[Turn] = field(default_factory=list)
    reward: float = 0.0
    scores: dict[str, float] = field(default_factory=zero_scores)
    answer: str | None = None
    num_searches: int = 0
    truncated: bool = False
    finished: bool = False
    is_probe: bool = False
    #: an original that met the probe trigger (before the ``probe_prob`` coin)
    probe_eligible: bool = False
    #: unique among an iteration's trajectories (the sampler's ``question#k`` for the
    #: k-th original of a group); "" where nobody named it
    rollout_id: str = ""
    #: a probe's parent: the ``rollout_id`` of the original it copies
    parent_id: str | None = None
    #: a probe's first token of its own: ``token_ids[:branch_point]`` are its parent's,
    #: as sampled (the re-encoded tokens at the cut and the prompt come after)
    branch_point: int | None = None

    @classmethod
    def start(cls, prompt: str, reset_info: dict[str, Any]) -> Trajectory:
        """A new trajectory from ``env.reset()``'s prompt and info."""
        return cls(
            example_id=str(reset_info["id"]),
            question=reset_info["question"],
            golden_answers=list(reset_info["golden_answers"]),
            data_source=reset_info.get("data_source", ""),
            prompt=prompt,
        )

    def record_step(
        self,
        action: str,
        observation: str,
        reward: float,
        terminated: bool,
        truncated: bool,
        info: dict[str, Any],
    ) -> None:
        """Account for one ``env.step``: the turn, its reward, the searches, and the
        outcome when it ends. ``reward`` is the return's (``SearchQAEnv``: EM on the
        answering step; a subclass may reward otherwise); the scores stay the answer's."""
        self.turns.append(
            Turn(
                action,
                observation,
                info["action_type"],
                info.get("query"),
                list(info.get("doc_ids", [])),
                float(reward),
            )
        )
        self.reward += float(reward)
        self.num_searches = info.get("num_searches", self.num_searches)
        if terminated or truncated:
            self.finished, self.truncated = True, bool(truncated)
            self.answer = info.get("answer")
            self.scores = {key: float(info.get(key, 0.0)) for key in SCORE_NAMES}

    @property
    def correct(self) -> bool:
        """Whether the answer is an exact match: what "wrong answer" and "dead end" mean
        (spec §3.1, §3.2), whatever the env's reward is."""
        return self.scores["em"] > 0

    def extend(
        self, token_ids: list[int], component: Component, logprobs: list[float] | None = None
    ) -> None:
        """Append tokens that all carry one label."""
        self.token_ids.extend(token_ids)
        self.components.extend([int(component)] * len(token_ids))
        self.sampling_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(token_ids))

    def tokens_of(self, component: Component) -> list[int]:
        """The ids labelled ``component``, in order."""
        return [t for t, c in zip(self.token_ids, self.components, strict=True) if c == component]

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def invalid_actions(self) -> int:
        return sum(turn.action_type == "invalid" for turn in self.turns)

    @property
    def transcript(self) -> str:
        """The episode as text: prompt, then each action and its observation."""
        return self.prompt + "".join(turn.action + turn.observation for turn in self.turns)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary (no token ids) for evaluation files."""
        return {
            "id": self.example_id,
            "data_source": self.data_source,
            "question": self.question,
            "golden_answers": self.golden_answers,
            "prediction": self.answer,
            **self.scores,
            "num_searches": self.num_searches,
            "turns": self.num_turns,
            "invalid_actions": self.invalid_actions,
            "truncated": self.truncated,
            "is_probe": self.is_probe,
            "trajectory": self.transcript,
        }
