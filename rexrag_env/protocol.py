"""The text protocol between a search agent and the environment (spec §1).

Everything here reproduces Search-R1 / REX-RAG byte for byte where they define it
(prompt template, ``<information>`` formatting, invalid-action notice), because
trained checkpoints and published numbers depend on the exact strings.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from rexrag_env.retrieval.base import Passage

SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
INFORMATION_OPEN, INFORMATION_CLOSE = "<information>", "</information>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

#: Strings a generation backend stops at: the end of a complete action.
STOP_STRINGS: tuple[str, ...] = (SEARCH_CLOSE, ANSWER_CLOSE)

#: The protocol's defaults (spec §1.2, §5.1), one home each: the env, the evaluation
#: harness, the sampler, RexRagConfig, the CLI and the retrieval service refer to these.
DEFAULT_RETRIEVER = "bm25"  # over the shipped corpus
DEFAULT_TOPK = 3  # passages per search
DEFAULT_MAX_TURNS = 5  # search-enabled turns, then one final turn without search
DEFAULT_MAX_NEW_TOKENS = 500  # sampled per turn
DEFAULT_MAX_OBSERVATION_TOKENS = 500  # kept of each <information> block
DEFAULT_TEMPERATURE = 1.0  # rollouts (evaluation is greedy)

#: Observation for an action that is neither a complete search nor a complete answer
#: (the REX-RAG release's shortened form of Search-R1's notice, spec §1.2).
INVALID_ACTION_NOTICE = "\nMy action is invalid. "

_PROMPT_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new "
    "information. "
    "After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between "
    "<information> and </information>. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer "
    "inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: {question}\n"
)


def make_prompt(question: str) -> str:
    """Search-R1's user prompt for one question (spec §1.1).

    The question is stripped and gets a trailing "?" when it has none, as in the
    official data preparation. The "as your want" typo is kept on purpose: released
    checkpoints were trained on this exact text.
    """
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return _PROMPT_TEMPLATE.format(question=question)


def make_prompt_messages(question: str) -> list[dict[str, str]]:
    """The prompt as chat messages: one user turn, for ``tokenizer.apply_chat_template``."""
    return [{"role": "user", "content": make_prompt(question)}]


class ActionType(str, enum.Enum):
    """What a parsed action asks the environment to do."""

    SEARCH = "search"
    ANSWER = "answer"
    INVALID = "invalid"


@dataclass(frozen=True)
class ParsedAction:
    """One parsed action.

    Attributes:
        type: search, answer or invalid.
        content: the stripped text between the tags ("" for invalid actions).
        end: index in the action text just past the closing tag (0 for invalid):
            text after it is ignored, as Search-R1 truncates the turn there.
    """

    type: ActionType
    content: str = ""
    end: int = 0


_INVALID = ParsedAction(ActionType.INVALID)
_TAGS = (
    (ActionType.SEARCH, SEARCH_OPEN, SEARCH_CLOSE),
    (ActionType.ANSWER, ANSWER_OPEN, ANSWER_CLOSE),
)


def parse_action(text: str) -> ParsedAction:
    """Parse the first complete ``<search>…</search>`` or ``<answer>…</answer>`` (spec §1.2).

    "First" means the complete span whose opening tag comes first, which is what the
    official regex ``<(search|answer)>(.*?)</\\1>`` finds. This scan gives the same
    result in linear time, so a huge action full of unclosed tags cannot stall a
    rollout worker. Tags are case-sensitive, as in the official code: ``<Search>`` is
    not an action. A search with an empty query is invalid (there is nothing to look up).
    """
    best: ParsedAction | None = None
    best_start = len(text) + 1
    for action_type, open_tag, close_tag in _TAGS:
        start = text.find(open_tag)
        if start < 0 or start >= best_start:
            continue
        close = text.find(close_tag, start + len(open_tag))
        if close < 0:
            continue  # no complete span of this tag exists anywhere after `start`
        best_start = start
        content = text[start + len(open_tag) : close].strip()
        best = ParsedAction(action_type, content, close + len(close_tag))
    if best is None or (best.type is ActionType.SEARCH and not best.content):
        return _INVALID
    return best


def format_passages(passages: Sequence[Passage]) -> str:
    """Search-R1's passage list: ``Doc {k}(Title: {title line}) {text}`` one per line."""
    return "".join(
        f"Doc {rank}(Title: {passage.title_line}) {passage.text}\n"
        for rank, passage in enumerate(passages, start=1)
    )


def format_information(passages: Sequence[Passage]) -> str:
    """The observation that answers a search (spec §1.2)."""
    return f"\n\n{INFORMATION_OPEN}{format_passages(passages).strip()}{INFORMATION_CLOSE}\n\n"
