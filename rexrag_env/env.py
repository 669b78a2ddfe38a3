"""SearchQAEnv: search-augmented question answering as a Gymnasium text environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym

from rexrag_env.datasets import QAExample, load_qa_dataset
from rexrag_env.embedded import DEFAULT_DATASET
from rexrag_env.protocol import (
    DEFAULT_MAX_TURNS,
    DEFAULT_RETRIEVER,
    DEFAULT_TOPK,
    INVALID_ACTION_NOTICE,
    ActionType,
    ParsedAction,
    format_information,
    make_prompt,
    make_prompt_messages,
    parse_action,
)
from rexrag_env.retrieval.base import Passage, Retriever
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.reward import score_answer, zero_scores
from rexrag_env.spaces import UnicodeText


class SearchQAEnv(gym.Env[str, str]):
    """Answer a question by searching a passage corpus (Search-R1 / REX-RAG protocol).

    ## Description
    The agent reads a question, may call a search tool several times, and must end
    with an answer. It speaks the Search-R1 tag protocol (spec §1): reasoning in
    ``<think>…</think>``, a search as ``<search> query </search>``, the final answer as
    ``<answer> … </answer>``. The environment speaks text only and knows nothing about
    models: a rollout worker turns its text into tokens.

    ## Action space
    ``UnicodeText``: one turn of agent text (any string). The environment acts on the
    *first complete* ``<search>…</search>`` or ``<answer>…</answer>`` span and ignores
    what follows it (``info["action_end"]`` says where the span ends). Tags are
    case-sensitive. Anything without a complete span, or a search with an empty query,
    is an invalid action. No string crashes the environment; a non-string raises
    ``TypeError``.

    ## Observation space
    ``UnicodeText``. ``reset`` returns the Search-R1 user prompt for the question
    (``info["messages"]`` has it as chat messages for ``apply_chat_template``).
    ``step`` returns only the text to append to the agent's context:
    - search: ``"\\n\\n<information>Doc 1(Title: …) …\\nDoc 2(…) …</information>\\n\\n"``
      with the ``topk`` best passages;
    - invalid action: ``"\\nMy action is invalid. "``;
    - answer, or the end of the episode: ``""``.

    ## Rewards
    Exact match (SQuAD normalisation, any gold answer) of the answer: 1.0 or 0.0, given
    on the answering step. Every other step gives 0. There is no format reward
    (the official REX-RAG setting, spec §2.1).

    ## Starting state
    A question drawn uniformly from ``dataset`` with the environment's RNG, or the one
    given in ``reset(options=…)``: ``{"example": QAExample | {"question", "golden_answers", …}}``
    or ``{"index": i}``. ``options["turn"] = t`` (with optional ``"num_searches"``)
    resumes the question with ``t`` turns already used; the rollout worker does this to
    continue a probe from the turn of the answer it replaced (spec §3.2).

    ## Episode end
    - terminated: the agent answered (in any turn).
    - truncated: ``max_turns`` search-enabled turns and one final turn have passed
      without an answer. In the final turn a search is not executed (spec §1.2).

    ## Info
    reset: ``question``, ``golden_answers``, ``id``, ``data_source``, ``messages``, ``turn``,
    ``metadata`` (the record's other fields, e.g. SynthWiki's evidence chain ``hops``).
    step: ``turn`` (index of the turn just played), ``action_type`` (search / answer /
    invalid), ``action_end``, ``query`` and ``doc_ids`` (for searches), ``answer``,
    ``em``, ``f1``, ``cover_em``, ``sub_em`` (:data:`~rexrag_env.reward.SCORE_NAMES`),
    ``golden_answers``, ``num_searches``, ``search_enabled``.

    ## Arguments
    - ``dataset``: an embedded benchmark name (default ``"hotpotqa"``), a dataset file
      path (JSONL or Search-R1 parquet), or a sequence of ``QAExample`` / mappings.
    - ``retriever``: ``"bm25"`` (default, over the shipped corpus, built once and cached),
      ``"dense"``, a retrieval-service URL, an index directory, or any object with
      ``search(queries, k)``.
    - ``max_turns``: search-enabled turns before the final one (default 5, spec §5.1).
    - ``topk``: passages per search (default 3).
    - ``render_mode``: ``"ansi"`` returns the episode transcript from ``render()``.

    ## Version history
    - v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        dataset: str | Path | Sequence[QAExample | Mapping[str, Any]] = DEFAULT_DATASET,
        retriever: Retriever | str | Path = DEFAULT_RETRIEVER,
        max_turns: int = DEFAULT_MAX_TURNS,
        topk: int = DEFAULT_TOPK,
        render_mode: str | None = None,
    ):
        if not isinstance(max_turns, int) or max_turns < 0:
            raise ValueError(f"max_turns must be a non-negative integer, got {max_turns!r}")
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive integer, got {topk!r}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.examples = _resolve_dataset(dataset)
        self.retriever = make_retriever(retriever)
        self.max_turns = max_turns
        self.topk = topk
        self.render_mode = render_mode
        self.observation_space = UnicodeText()
        self.action_space = UnicodeText()
        self._example: QAExample | None = None
        self._turn = 0
        self._num_searches = 0
        self._done = True
        self._transcript: list[str] = []

    @property
    def search_enabled(self) -> bool:
        """Whether the next step may search (false in the final turn, spec §1.2)."""
        return self._turn < self.max_turns

    @property
    def example(self) -> QAExample | None:
        """The question of the current episode."""
        return self._example

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        if "example" in options:
            example = options["example"]
            self._example = (
                example if isinstance(example, QAExample) else QAExample.from_mapping(example)
            )
        elif "index" in options:
            self._example = self.examples[int(options["index"])]
        else:
            self._example = self.examples[int(self.np_random.integers(len(self.examples)))]
        turn = int(options.get("turn", 0))
        if not 0 <= turn <= self.max_turns:
            raise ValueError(f"options['turn'] must be in [0, {self.max_turns}], got {turn}")
        self._turn = turn
        self._num_searches = int(options.get("num_searches", 0))
        self._done = False
        prompt = make_prompt(self._example.question)
        self._transcript = [prompt]
        info = {
            "question": self._example.question,
            "golden_answers": list(self._example.golden_answers),
            "id": self._example.id,
            "data_source": self._example.data_source,
            "messages": make_prompt_messages(self._example.question),
            "turn": self._turn,
            "metadata": dict(self._example.metadata),
        }
        return prompt, info

    def step(self, action: str):
        self.check_action(action)
        parsed = parse_action(action)
        passages = None
        if self.runs_search(parsed):
            # Retrieve before touching the state: if the retriever fails, the caller
            # can retry this step.
            passages = self.retriever.search([parsed.content], self.topk)[0]
        return self.advance(action, parsed, passages)

    # ``step`` in three parts, so that SearchQAVectorEnv can check and parse every
    # env's action, answer all their searches in one retriever call, and then advance
    # each env exactly as ``step`` does.

    def check_action(self, action: Any) -> None:
        """Raise unless ``action`` can be played now: the episode runs and it is a string."""
        if self._done or self._example is None:
            raise RuntimeError("the episode is over (or never started): call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"an action is a string of agent text, got {type(action).__name__}")

    def runs_search(self, parsed: ParsedAction) -> bool:
        """Whether playing ``parsed`` now calls the retriever: a search in a
        search-enabled turn (a search in the final turn is not executed, spec §1.2)."""
        return parsed.type is ActionType.SEARCH and self.search_enabled

    def advance(
        self, action: str, parsed: ParsedAction, passages: Sequence[Passage] | None
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Play one turn of ``action`` (checked, parsed as ``parsed``) given the
        ``passages`` of its search: ``step``'s result, with no parsing or retrieval of
        its own. ``passages`` is given exactly when :meth:`runs_search` is true."""
        self.check_action(action)
        if (passages is not None) != self.runs_search(parsed):
            raise ValueError(
                "advance() takes the passages of a search that runs in this turn, and only "
                "then: pass the retriever's result for it exactly when runs_search(parsed)"
            )
        search_enabled = self.search_enabled
        info: dict[str, Any] = {
            "turn": self._turn,
            "action_type": parsed.type.value,
            "action_end": parsed.end,
            "query": None,
            "doc_ids": [],
            "answer": None,
            **zero_scores(),
            "golden_answers": list(self._example.golden_answers),
            "search_enabled": search_enabled,
        }
        observation, reward, terminated = "", 0.0, False
        if parsed.type is ActionType.ANSWER:
            scores = score_answer(parsed.content, self._example.golden_answers)
            info.update(answer=parsed.content, **scores)
            reward, terminated = scores["em"], True
        elif parsed.type is ActionType.SEARCH:
            info["query"] = parsed.content
            if passages is not None:
                observation = format_information(passages)
                info["doc_ids"] = [passage.id for passage in passages]
                self._num_searches += 1
        else:
            observation = INVALID_ACTION_NOTICE
        truncated = not terminated and not search_enabled
        self._turn += 1
        self._done = terminated or truncated
        if self._done:
            observation = ""  # nothing follows the last turn
        info["num_searches"] = self._num_searches
        self._transcript += [action[: parsed.end] if parsed.end else action, observation]
        return observation, reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return "".join(self._transcript)
        return None


def _resolve_dataset(dataset: Any) -> list[QAExample]:
    if isinstance(dataset, (str, Path)):
        examples = load_qa_dataset(dataset)
    else:
        examples = [
            item if isinstance(item, QAExample) else QAExample.from_mapping(item, default_id=str(i))
            for i, item in enumerate(dataset)
        ]
    if not examples:
        raise ValueError("the dataset has no questions")
    return examples
