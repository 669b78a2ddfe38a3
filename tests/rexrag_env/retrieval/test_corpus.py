import gzip
import json
import pickle

import pytest

from rexrag_env.embedded import embedded_corpus_path
from rexrag_env.retrieval.corpus import Corpus, CorpusFormatError


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_shipped_corpus_random_access():
    corpus = Corpus(embedded_corpus_path())
    assert len(corpus) == 23236
    first, last = corpus[0], corpus[-1]
    assert first.id == "flashrag-0" and first.title == "Evan Morris"
    assert first.title_line == '"Evan Morris"' and first.text.startswith(
        "Evan Morris Evan L. Morris"
    )
    assert last.id == corpus[len(corpus) - 1].id
    with pytest.raises(IndexError):
        corpus[len(corpus)]


def test_blank_lines_unicode_and_title_text_layout(tmp_path):
    path = write_lines(
        tmp_path / "c.jsonl",
        [
            json.dumps({"id": "a", "contents": '"Zürich"\nA city ✓'}),
            "",
            json.dumps({"title": "Bern", "text": "Capital."}),
            json.dumps({"contents": "NoId\nrow without id"}),
        ],
    )
    corpus = Corpus(path)
    assert len(corpus) == 3 and corpus[1].id == "1"  # a missing id becomes the row number
    assert corpus[0].title == "Zürich" and corpus[0].text == "A city ✓"
    assert corpus[1].contents == '"Bern"\nCapital.'
    assert corpus[2].id == "2"


def test_text_only_rows_and_parquet_corpora_are_read_like_jsonl(tmp_path):
    """Search-R1's raw-text corpora have ``text`` without a title; FlashRAG's corpora on
    the hub are parquet files with JSONL's columns (converted once, then memory-mapped)."""
    import pandas as pd

    rows = [
        {"id": "p0", "contents": '"Bern"\nCapital.'},
        {"id": "p1", "contents": None, "text": "Untitled passage ✓"},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "corpus.parquet")
    corpus = Corpus(tmp_path / "corpus.parquet")
    assert [p.id for p in corpus] == ["p0", "p1"]
    assert corpus[0].contents == '"Bern"\nCapital.'
    assert corpus[1].contents == "Untitled passage ✓"
    assert pickle.loads(pickle.dumps(corpus))[1].contents == "Untitled passage ✓"
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(CorpusFormatError, match="not a readable parquet file"):
        Corpus(tmp_path / "junk.parquet")


def test_gzip_corpus_is_read_like_plain(tmp_path):
    lines = [json.dumps({"id": str(i), "contents": f"T{i}\ntext {i}"}) for i in range(5)]
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines))  # no trailing newline
    corpus = Corpus(tmp_path / "c.jsonl.gz")
    assert len(corpus) == 5 and corpus[4].contents == "T4\ntext 4"


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2 is not JSON"),
        ("[1, 2]", "line 2 is not a JSON object"),
        (json.dumps({"id": "x", "title": "no text"}), 'line 2 needs a string "contents"'),
    ],
)
def test_malformed_lines_name_file_and_line_when_the_corpus_is_opened(tmp_path, bad_line, message):
    """Every record is checked once, on first open: a bad line stops a run before it
    trains, not when a search first returns it."""
    path = write_lines(
        tmp_path / "bad.jsonl", [json.dumps({"id": "0", "contents": "T\nx"}), "", bad_line]
    )
    message = message.replace("line 2", "line 3")  # blank lines count
    for _ in range(2):  # nothing half-built is left behind to look valid
        with pytest.raises(CorpusFormatError, match=f"{path}: {message}"):
            Corpus(path)


def test_missing_empty_and_truncated_gzip_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Corpus(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(CorpusFormatError, match="no passages"):
        Corpus(tmp_path / "empty.jsonl")
    data = gzip.compress(b'{"id": "0", "contents": "T\\nx"}\n' * 1000)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusFormatError, match="cannot decompress"):
        Corpus(tmp_path / "cut.jsonl.gz")


def test_corpus_pickles_by_path(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "a", "contents": "T\nx"})])
    clone = pickle.loads(pickle.dumps(Corpus(path)))
    assert clone[0].id == "a"


def test_the_store_is_built_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    from rexrag_env.retrieval import corpus as corpus_module

    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "a", "contents": "T\nx"})])
    builds = []
    write_store = corpus_module._write_store
    monkeypatch.setattr(
        corpus_module, "_write_store", lambda *a: builds.append(a) or write_store(*a)
    )
    assert Corpus(path)[0].id == Corpus(path)[0].id == "a" and len(builds) == 1
    write_lines(
        path, [json.dumps({"id": "b", "contents": "T\ny"}), json.dumps({"contents": "U\nz"})]
    )
    corpus = Corpus(path)
    assert [(p.id, p.text) for p in corpus] == [("b", "y"), ("1", "z")] and len(builds) == 2


def test_rows_round_trip_what_json_holds(tmp_path):
    """Whatever a JSON string may hold comes back as json.loads gives it: escapes, quotes,
    newlines, non-BMP characters, lone surrogates, empty ids."""
    records = [
        {"id": "", "contents": 'T\n"quoted" \\ back\tslash 🚀 \ud83d lone'},
        {"id": "ü", "contents": ""},
        {"id": 7, "contents": "seven"},
    ]
    corpus = Corpus(write_lines(tmp_path / "c.jsonl", [json.dumps(r) for r in records]))
    assert [(p.id, p.contents) for p in corpus] == [(str(r["id"]), r["contents"]) for r in records]


def test_passages_take_arrays_or_lists_and_check_rows(tmp_path):
    import numpy as np

    lines = [json.dumps({"id": f"p{i}", "contents": f"T{i}\ntext {i}"}) for i in range(4)]
    corpus = Corpus(write_lines(tmp_path / "c.jsonl", lines))
    from_arrays = corpus.passages(np.array([3, 0], dtype=np.int32), np.array([2.5, 1.0], "f4"))
    assert from_arrays == corpus.passages([3, -4], [2.5, 1.0])
    assert [(p.id, p.score, type(p.score)) for p in from_arrays] == [
        ("p3", 2.5, float),
        ("p0", 1.0, float),
    ]
    assert corpus.passages([], []) == []
    for bad_row in (4, -5):
        with pytest.raises(IndexError, match=f"passage index {bad_row} out of range"):
            corpus.passages([0, bad_row], [1.0, 1.0])
    with pytest.raises(ValueError, match="one score per index"):
        corpus.passages([0, 1], [1.0])


def test_ranked_passages_turn_a_top_k_into_lists(tmp_path):
    import numpy as np

    lines = [json.dumps({"id": f"p{i}", "contents": f"T{i}\ntext {i}"}) for i in range(4)]
    corpus = Corpus(write_lines(tmp_path / "c.jsonl", lines))
    rows = np.array([[2, 0], [1, -1]], dtype=np.int32)  # [queries, k]
    scores = np.array([[3.0, 2.0], [1.5, 0.5]], dtype=np.float32)
    ranked = corpus.ranked_passages(rows, scores)
    assert [[(p.id, p.score) for p in hits] for hits in ranked] == [
        [("p2", 3.0), ("p0", 2.0)],
        [("p1", 1.5), ("p3", 0.5)],
    ]
    assert ranked[0] == corpus.passages(rows[0], scores[0])
    assert corpus.ranked_passages(np.zeros((0, 3), int), np.zeros((0, 3))) == []
    with pytest.raises(ValueError, match=r"\[queries, k\]"):
        corpus.ranked_passages(rows[0], scores[0])
    with pytest.raises(IndexError, match="passage index 9 out of range"):
        corpus.ranked_passages(rows + 7, scores)
