import json

import pandas as pd
import pytest

from rexrag_env.datasets import DatasetFormatError, QAExample, load_qa_dataset
from rexrag_env.embedded import EMBEDDED_DATASETS


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("nq", 1000),
        ("triviaqa", 1000),
        ("popqa", 1000),
        ("hotpotqa", 975),
        ("2wikimultihopqa", 164),
        ("musique", 200),
        ("bamboogle", 125),
    ],
)
def test_embedded_benchmarks(name, size):
    examples = load_qa_dataset(name)
    assert len(examples) == size
    assert all(e.question and e.golden_answers and e.data_source == name for e in examples)
    assert len({e.id for e in examples}) == size


def test_embedded_names_are_in_paper_order():
    assert EMBEDDED_DATASETS == (
        "nq",
        "triviaqa",
        "popqa",
        "hotpotqa",
        "2wikimultihopqa",
        "musique",
        "bamboogle",
    )


def test_flashrag_and_plain_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {"id": "f1", "question": "q1?", "golden_answers": ["a", "b"], "extra": 1}
                ),
                "",
                json.dumps({"question": "q2", "answer": "single"}),
                json.dumps({"question": "q3", "answers": ["x"], "data_source": "custom"}),
            ]
        ),
        encoding="utf-8",
    )
    first, second, third = load_qa_dataset(path)
    assert first == QAExample("f1", "q1?", ("a", "b"), "mine")
    assert first.metadata == {"extra": 1}
    assert second.golden_answers == ("single",) and second.id == "mine-3"
    assert third.data_source == "custom"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "line 2"),
        ('["list"]', "not a JSON object"),
        ('{"golden_answers": ["a"]}', "question"),
        ('{"question": "q"}', "golden_answers"),
        ('{"question": "q", "answer": 3}', "string"),
        ('{"question": "q", "golden_answers": []}', "non-empty"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "ok", "answer": "ok"}) + "\n" + line + "\n")
    with pytest.raises(DatasetFormatError, match=message) as error:
        load_qa_dataset(path)
    assert str(path) in str(error.value) and "line 2" in str(error.value)


def test_search_r1_parquet(tmp_path):
    prompt = "Answer the given question. ... <answer> Beijing </answer>. Question: who is x?\n"
    search_r1 = pd.DataFrame(
        [
            {
                "data_source": "nq",
                "prompt": [{"role": "user", "content": prompt}],
                "reward_model": {"style": "rule", "ground_truth": {"target": ["X", "Mr X"]}},
                "extra_info": {"split": "test", "index": 7},
            },
        ]
    )
    search_r1.to_parquet(tmp_path / "search_r1.parquet")
    assert load_qa_dataset(tmp_path / "search_r1.parquet") == [
        QAExample("nq-7", "who is x?", ("X", "Mr X"), "nq")
    ]


def test_deep_researcher_parquet(tmp_path):
    # bare question as the prompt, answers joined into one ground-truth string, string ids
    frame = pd.DataFrame(
        [
            {
                "data_source": "bamboogle",
                "prompt": ["Who is y?"],
                "reward_model": {"style": "unknown", "ground_truth": "A<|answer_split|>B"},
                "extra_info": {"split": "test", "index": "bamboogle_3"},
            },
        ]
    )
    frame.to_parquet(tmp_path / "deep.parquet")
    assert load_qa_dataset(tmp_path / "deep.parquet") == [
        QAExample("bamboogle_3", "Who is y?", ("A", "B"), "bamboogle")
    ]


def test_flashrag_parquet(tmp_path):
    """FlashRAG's Hugging Face datasets: the JSONL columns in parquet, no reward_model."""
    frame = pd.DataFrame(
        [
            {
                "id": "test_0",
                "question": "who is z?",
                "golden_answers": ["Z"],
                "metadata": {"src": "nq"},
            },
            {"id": "test_1", "question": "where?", "golden_answers": ["here", "there"]},
        ]
    )
    frame.to_parquet(tmp_path / "nq-test.parquet")
    assert load_qa_dataset(tmp_path / "nq-test.parquet") == [
        QAExample("test_0", "who is z?", ("Z",), "nq-test"),
        QAExample("test_1", "where?", ("here", "there"), "nq-test"),
    ]
    pd.DataFrame([{"id": "x", "question": "q?"}]).to_parquet(tmp_path / "no_answers.parquet")
    with pytest.raises(DatasetFormatError, match=r"row 0.*golden_answers"):
        load_qa_dataset(tmp_path / "no_answers.parquet")


def test_bad_parquet_and_missing_files(tmp_path):
    frame = pd.DataFrame(
        [
            {
                "data_source": "nq",
                "prompt": [{"role": "user", "content": "q?"}],
                "reward_model": {"ground_truth": 3},
            },
        ]
    )
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DatasetFormatError, match="row 0"):
        load_qa_dataset(tmp_path / "bad.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetFormatError, match="parquet"):
        load_qa_dataset(tmp_path / "junk.parquet")
    with pytest.raises(FileNotFoundError, match="neither a named dataset"):
        load_qa_dataset("no-such-benchmark")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetFormatError, match="no records"):
        load_qa_dataset(tmp_path / "empty.jsonl")
