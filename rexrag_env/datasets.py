"""Question-answer datasets: the formats the field ships, read into one record type.

Supported inputs:
- FlashRAG JSONL: ``{"id", "question", "golden_answers": [...]}`` (also what ships with
  the package, with extra fields such as ``supporting_titles``);
- plain JSONL: ``question`` plus ``golden_answers``, ``answers`` or ``answer``
  (a string or a list);
- Search-R1 / verl parquet: ``prompt`` (chat messages ending in "Question: …"),
  ``reward_model.ground_truth.target`` (or a ground-truth string joined by
  ``<|answer_split|>``, as DeepResearcher ships it), ``data_source``, ``extra_info.index``;
- FlashRAG parquet (its Hugging Face datasets): the JSONL columns, ``id``,
  ``question``, ``golden_answers``, with no ``reward_model``.
A malformed record raises :class:`DatasetFormatError` naming the file and line (row).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexrag_env.embedded import EMBEDDED_DATASETS, embedded_dataset_path
from rexrag_env.registry import NameRegistry

#: Named datasets besides the embedded benchmarks: name -> a builder of its file path
#: (``synthwiki/{train,validation,test}`` are registered by ``rexrag_env/__init__.py``).
DATASETS = NameRegistry("dataset")

_ANSWER_SPLIT = "<|answer_split|>"


class DatasetFormatError(ValueError):
    """A dataset record is malformed; the message names the file and line or row."""


@dataclass(frozen=True)
class QAExample:
    """One question with its accepted answers.

    Attributes:
        id: stable identifier (used as the GRPO group id downstream).
        question: the question text, as asked.
        golden_answers: every answer string that counts as correct.
        data_source: benchmark name (nq, hotpotqa, …) or the file it came from.
        metadata: anything else the record carried (e.g. supporting_titles).
    """

    id: str
    question: str
    golden_answers: tuple[str, ...]
    data_source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_mapping(
        cls, record: Mapping[str, Any], default_id: str = "", data_source: str = ""
    ) -> QAExample:
        """Build from a FlashRAG or plain record; raises ValueError saying what is missing."""
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError('needs a non-empty string "question"')
        answers = _answers_of(record)
        known = {"id", "question", "golden_answers", "answers", "answer", "data_source"}
        return cls(
            id=str(record.get("id", default_id)),
            question=question,
            golden_answers=answers,
            data_source=str(record.get("data_source", data_source)),
            metadata={key: value for key, value in record.items() if key not in known},
        )


def _answers_of(record: Mapping[str, Any]) -> tuple[str, ...]:
    for key in ("golden_answers", "answers", "answer"):
        if key in record:
            value = record[key]
            values = [value] if isinstance(value, str) else value
            if isinstance(values, Iterable) and all(isinstance(v, str) for v in values):
                answers = tuple(values)
                if answers:
                    return answers
            raise ValueError(f'"{key}" must be a string or a non-empty list of strings')
    raise ValueError('needs "golden_answers" (or "answers" / "answer")')


def _read_jsonl(path: Path, data_source: str) -> list[QAExample]:
    examples = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("is not a JSON object")
                examples.append(
                    QAExample.from_mapping(record, f"{data_source}-{line_number}", data_source)
                )
            except ValueError as error:  # json.JSONDecodeError is a ValueError
                raise DatasetFormatError(
                    f"dataset file {path}: line {line_number}: {error}"
                ) from error
    return examples


def _question_from_prompt(prompt: Any) -> str:
    """The question inside a verl prompt: the text after the last "Question:" of the last
    message (Search-R1 wraps it in its template), or the whole message (DeepResearcher)."""
    messages = list(prompt) if not isinstance(prompt, str) else [prompt]
    last = messages[-1]
    content = str(last["content"] if isinstance(last, Mapping) else last)
    marker = content.rfind("Question:")
    return content[marker + len("Question:") :].strip() if marker >= 0 else content.strip()


def _read_parquet(path: Path) -> list[QAExample]:
    import pandas as pd  # comes with ray[rllib]

    try:
        frame = pd.read_parquet(path)
    except Exception as error:
        raise DatasetFormatError(
            f"dataset file {path}: not a readable parquet file ({error})"
        ) from error
    examples = []
    for row_number, row in enumerate(frame.to_dict("records")):
        if "reward_model" not in row:  # FlashRAG's columns: read as a JSONL record
            try:
                record = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in row.items()}
                examples.append(
                    QAExample.from_mapping(record, f"{path.stem}-{row_number}", path.stem)
                )
            except ValueError as error:
                raise DatasetFormatError(
                    f"dataset file {path}: row {row_number}: {error}"
                ) from error
            continue
        try:
            question = (
                row["question"]
                if isinstance(row.get("question"), str)
                else _question_from_prompt(row["prompt"])
            )
            truth = row["reward_model"]["ground_truth"]
            target = truth.get("target", truth) if isinstance(truth, Mapping) else truth
            answers = (
                target.split(_ANSWER_SPLIT) if isinstance(target, str) else [str(t) for t in target]
            )
            source = str(row.get("data_source", path.stem))
            extra = row.get("extra_info") or {}
            index = extra.get("index", row_number) if isinstance(extra, Mapping) else row_number
            examples.append(
                QAExample.from_mapping(
                    {
                        "id": index if isinstance(index, str) else f"{source}-{index}",
                        "question": question,
                        "golden_answers": answers,
                    },
                    data_source=source,
                )
            )
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise DatasetFormatError(f"dataset file {path}: row {row_number}: {error!r}") from error
    return examples


@functools.cache
def _embedded_examples(name: str) -> tuple[QAExample, ...]:
    # Shipped files never change, and a rollout worker makes many envs over one dataset.
    return tuple(_read_jsonl(embedded_dataset_path(name), name))


def load_qa_dataset(source: str | Path) -> list[QAExample]:
    """Load questions from an embedded benchmark name or a ``.jsonl``/``.json``/``.parquet`` file.

    Embedded names: the seven benchmarks of the paper's table, small real subsets
    shipped with the package (see ``rexrag_env/data/SOURCES.md``), and
    ``synthwiki/{train,validation,test}`` (generated, :mod:`rexrag_env.synthwiki`).
    """
    if isinstance(source, str) and source in EMBEDDED_DATASETS:
        return list(_embedded_examples(source))
    if isinstance(source, str) and source in DATASETS:
        source = DATASETS.build(source)
    path = Path(source)
    if not path.is_file():
        names = ", ".join([*EMBEDDED_DATASETS, *DATASETS.names()])
        raise FileNotFoundError(
            f"dataset {source!r} is neither a named dataset ({names}) nor an existing file"
        )
    is_parquet = path.suffix == ".parquet"
    examples = _read_parquet(path) if is_parquet else _read_jsonl(path, path.stem)
    if not examples:
        raise DatasetFormatError(f"dataset file {path} has no records")
    return examples
