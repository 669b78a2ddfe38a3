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
def test_malformed_lines_name_file_and_line(tmp_path, bad_line, message):
    path = write_lines(
        tmp_path / "bad.jsonl", [json.dumps({"id": "0", "contents": "T\nx"}), bad_line]
    )
    corpus = Corpus(path)
    assert corpus[0].id == "0"  # the good line is still readable
    with pytest.raises(CorpusFormatError, match=f"{path}: {message}"):
        list(corpus.iter_contents())


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


def test_decoded_rows_cache_is_bounded_and_invisible(tmp_path):
    lines = [json.dumps({"id": f"p{i}", "contents": f"T{i}\ntext {i}"}) for i in range(6)]
    path = write_lines(tmp_path / "c.jsonl", lines)
    cached, uncached = Corpus(path, cache_size=2), Corpus(path, cache_size=0)
    reads = [0, 1, 2, 0, 5, -1, 5]
    assert [cached[i] for i in reads] == [uncached[i] for i in reads]
    info = cached.cache_info()
    assert (info.maxsize, info.currsize, info.hits) == (2, 2, 2)  # -1 and 5 are one row
    assert uncached.cache_info().currsize == 0
    assert pickle.loads(pickle.dumps(cached)).cache_size == 2
    with pytest.raises(ValueError, match="cache_size"):
        Corpus(path, cache_size=-1)


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
