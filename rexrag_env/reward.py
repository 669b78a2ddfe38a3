"""Answer scoring for search-augmented QA (spec §2).

The reward of REX-RAG and Search-R1 is exact match (EM) after SQuAD-style
normalisation, against any of several gold answers. Token F1 and cover-EM (the
gold answer appears inside the prediction) are reported next to it so numbers
can be compared with FlashRAG-style evaluations. All functions are pure.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_ANSWER_SPAN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation, in the order of the official code (spec §2.2).

    lower-case → drop ASCII punctuation → replace whole-word articles with a space →
    collapse whitespace. Unicode letters are kept as they are (the official code does
    not fold accents), so "Zürich" and "Zurich" stay different answers.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golden_answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(gold) for gold in golden_answers))


def cover_exact_match(prediction: str, golden_answers: Sequence[str]) -> float:
    """1.0 if some normalised gold answer occurs in the normalised prediction.

    The match is on whole tokens ("no" is not covered by "not"), and an empty gold
    answer covers nothing: otherwise every prediction would score 1.
    """
    padded_prediction = f" {normalize_answer(prediction)} "
    for gold in golden_answers:
        normalized_gold = normalize_answer(gold)
        if normalized_gold and f" {normalized_gold} " in padded_prediction:
            return 1.0
    return 0.0


def substring_exact_match(prediction: str, golden_answers: Sequence[str]) -> float:
    """1.0 if some normalised gold answer is a substring of the normalised prediction:
    FlashRAG's ``sub_em``. Unlike :func:`cover_exact_match` it matches inside words
    ("no" is in "not"), so it is reported under its own name for comparisons with
    FlashRAG's tables."""
    normalized = normalize_answer(prediction)
    return float(any(gold and gold in normalized for gold in map(normalize_answer, golden_answers)))


def token_f1(prediction: str, golden_answers: Sequence[str]) -> float:
    """Best token-level F1 over the gold answers (SQuAD definition).

    Two empty answers agree perfectly (F1 = 1); one empty side gives 0.
    """
    prediction_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golden_answers:
        gold_tokens = normalize_answer(gold).split()
        if not prediction_tokens or not gold_tokens:
            best = max(best, float(prediction_tokens == gold_tokens))
            continue
        overlap = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
        if overlap == 0:
            continue
        precision = overlap / len(prediction_tokens)
        recall = overlap / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def extract_answer(text: str) -> str | None:
    """The stripped content of the last complete ``<answer>…</answer>`` span, or None.

    The last span is the one that counts (spec §2.1): a response may quote the tag
    while reasoning before it commits to an answer.
    """
    spans = _ANSWER_SPAN.findall(text)
    return spans[-1].strip() if spans else None


#: The scores of an answer, in report order: exact match (the reward), token F1,
#: cover-EM (whole tokens) and FlashRAG's sub-EM (substring).
SCORE_NAMES = ("em", "f1", "cover_em", "sub_em")


def zero_scores() -> dict[str, float]:
    """The scores of no answer."""
    return dict.fromkeys(SCORE_NAMES, 0.0)


def score_answer(prediction: str | None, golden_answers: Sequence[str]) -> dict[str, float]:
    """Every :data:`SCORE_NAMES` score of one prediction; no prediction scores 0 on all."""
    if prediction is None:
        return zero_scores()
    return {
        "em": exact_match(prediction, golden_answers),
        "f1": token_f1(prediction, golden_answers),
        "cover_em": cover_exact_match(prediction, golden_answers),
        "sub_em": substring_exact_match(prediction, golden_answers),
    }
