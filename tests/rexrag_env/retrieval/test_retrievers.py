"""BM25 and dense retrieval on the shipped corpus, and index save/load round trips."""

import gzip
import json
import pickle
import socket
from pathlib import Path

import pytest

from rexrag_env.retrieval.base import RetrievalError
from rexrag_env.retrieval.corpus import Corpus
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.retrieval.index import build_index, load_retriever, read_index_meta


def supporting_hit_rate(retriever, questions, k=3):
    """Fraction of questions with at least one gold supporting paragraph in the top k."""
    results = retriever.search([q["question"] for q in questions], k)
    hits = [
        bool({p.title for p in passages} & set(q["supporting_titles"]))
        for q, passages in zip(questions, results, strict=True)
    ]
    return sum(hits) / len(hits)


def test_bm25_retrieves_gold_paragraphs_for_real_hotpotqa_questions(
    bm25_retriever, hotpot_questions
):
    questions = hotpot_questions[:100]
    # Measured 0.8+ here; a broken tokenizer/stemmer/scorer falls far below 0.5.
    assert supporting_hit_rate(bm25_retriever, questions) >= 0.6


def test_dense_retrieves_gold_paragraphs_for_real_hotpotqa_questions(
    dense_retriever, hotpot_slice_questions
):
    questions = hotpot_slice_questions
    assert len(questions) >= 20
    assert supporting_hit_rate(dense_retriever, questions) >= 0.6


@pytest.mark.parametrize("fixture", ["bm25_retriever", "dense_retriever"])
def test_search_contract(request, fixture):
    retriever = request.getfixturevalue(fixture)
    results = retriever.search(["Neil Peart drummer", "qqqzzz unknown words", ""], 3)
    assert len(results) == 3 and all(len(ranked) == 3 for ranked in results)
    scores = [p.score for p in results[0]]
    assert scores == sorted(scores, reverse=True)
    assert retriever.search([], 3) == []
    with pytest.raises(ValueError, match="positive"):
        retriever.search(["x"], 0)
    with pytest.raises(ValueError, match="larger than"):
        retriever.search(["x"], len(retriever.corpus) + 1)
    with pytest.raises(TypeError, match="list"):
        retriever.search("a single string", 3)


def bm25s_reference(index_dir, corpus_path, queries, k, backend="numba"):
    """Top-k the plain way: bm25s's default tokenizer and the index loaded afresh from its
    files, every query scored on its own, each hit decoded with ``json.loads`` from its
    corpus line. Returns ``(id, contents, score)`` per hit."""
    import bm25s
    import numpy as np
    import Stemmer

    tokenizer = bm25s.tokenization.Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en")
    tokenizer.load_vocab(str(index_dir))
    tokenizer.load_stopwords(str(index_dir))
    index = bm25s.BM25.load(str(index_dir), mmap=True, backend=backend)
    data = corpus_path.read_bytes()
    if corpus_path.suffix == ".gz":
        data = gzip.decompress(data)
    lines = [line for line in data.splitlines() if line.strip()]
    results = []
    for query in queries:
        ids = tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
        rows, scores = index.retrieve(ids, k=k, show_progress=False, backend_selection=backend)
        records = [json.loads(lines[row]) for row in np.asarray(rows[0]).tolist()]
        results.append(
            [
                (record["id"], record["contents"], float(score))
                for record, score in zip(records, scores[0], strict=True)
            ]
        )
    return results


def hits(results):
    return [[(p.id, p.contents, p.score) for p in ranked] for ranked in results]


def test_bm25_search_equals_plain_bm25s_and_json(bm25_retriever, hotpot_questions, monkeypatch):
    questions = [q["question"] for q in hotpot_questions[:90]]
    # Repeats (a GRPO group searches the same text), no known word, stop words only.
    queries = [*questions, *questions[:5], "qqqzzz unknown words", "", "the of and", "Rush"]
    expected = bm25s_reference(bm25_retriever.index_dir, bm25_retriever.corpus.source, queries, 5)
    assert hits(bm25_retriever.search(queries, 5)) == expected  # the compiled scorer, called
    # through bm25s's own BM25.retrieve where its serial scorer is not to be had
    monkeypatch.setattr("rexrag_env.retrieval.bm25._SERIAL_SCORER", None)
    assert hits(bm25_retriever.search(queries, 5)) == expected


def test_bm25_tied_scores_only_reorder_what_the_numpy_backend_returned(tmp_path):
    """Duplicate and templated passages (as in SynthWiki) tie. The compiled scorer gives
    the NumPy backend's scores; where the two return different rows, those rows tie."""
    texts = ["Paris is the capital of France", "Lyon is a city in France", "A city"]
    lines = [
        json.dumps({"id": f"p{row}", "contents": f"T{row}\n{texts[row % 3]}"}) for row in range(30)
    ]
    corpus_path = tmp_path / "c.jsonl"
    corpus_path.write_text("\n".join(lines) + "\n")
    build_index(corpus_path, "bm25", tmp_path / "idx", show_progress=False)
    retriever = load_retriever(tmp_path / "idx")
    queries = ["city in France", "capital", "nothing matches", "city"]
    for k in (1, 3, 29, 30):
        found = hits(retriever.search(queries, k))
        assert found == bm25s_reference(tmp_path / "idx", corpus_path, queries, k)
        numpy_backend = bm25s_reference(tmp_path / "idx", corpus_path, queries, k, "numpy")
        for ours, theirs in zip(found, numpy_backend, strict=True):
            assert [hit[2] for hit in ours] == [hit[2] for hit in theirs]
            assert unambiguous(ours) == unambiguous(theirs)
            if k == len(lines):
                assert sorted(ours) == sorted(theirs)


def unambiguous(ranked):
    """The hits that score above the last one: in the top k however ties are broken."""
    return {hit for hit in ranked if hit[2] > ranked[-1][2]}


def test_bm25_repeated_queries_get_equal_but_separate_lists(bm25_retriever):
    queries = ["Neil Peart drummer", "Counterparts song", "Neil Peart drummer"]
    first, other, again = bm25_retriever.search(queries, 3)
    assert first == again == bm25_retriever.search(["Neil Peart drummer"], 3)[0]
    assert other == bm25_retriever.search(["Counterparts song"], 3)[0]
    again.append(None)  # a caller editing one result does not edit its twin
    assert len(first) == 3


def test_bm25_scores_with_the_compiled_scorer(bm25_retriever):
    # bm25s's NumPy backend gives the same scores ~10x slower: the speed this retriever
    # documents comes from the numba backend, whatever an index file was saved with.
    assert bm25_retriever.index.backend == "numba"


def test_bm25_query_tokenizer_maps_words_as_bm25s_does(bm25_retriever, hotpot_questions):
    """Corpus words, stopwords, unseen words whose stem the corpus has ("marathoning"),
    unseen stems, text without any known word, Unicode; the same ids as bm25s's own
    tokenizer, also after its word memo was cleared for being full."""
    from rexrag_env.retrieval.bm25 import QueryTokenizer, _make_tokenizer

    def fresh_tokenizer():
        # bm25s's own tokenize adds each stem-matched word to the word table it shares,
        # which would let ours skip the stem path: each side gets a fresh vocabulary.
        tokenizer = _make_tokenizer("english")
        tokenizer.load_vocab(str(bm25_retriever.index_dir))
        tokenizer.load_stopwords(str(bm25_retriever.index_dir))
        return tokenizer

    texts = [
        *(q["question"] for q in hotpot_questions),
        "marathoning MARATHONING drummers",
        # a lone surrogate is never a word character, so no word holds one to encode
        "drummers in Sürich, a lone surrogate \ud800 and café\ud800au",
        "the of and",
        "",
        "qqqzzz",
        "İstanbul naïve 日本語 x-ray's",
        # ASCII texts take the byte-level split: single letters, digits, underscores,
        # punctuation, control characters and mixed case must split as the regex does.
        "a b c __init__ x-ray's U.S.A. 1999s Q4\tDrummers\nmarathon\x00runner\x7fAND_Or",
        "marathon_drummers",
    ]
    ours = fresh_tokenizer()
    assert "marathoning" not in ours.word_to_id and ours.stemmer("marathoning") in ours.stem_to_sid
    seeded, small = QueryTokenizer(ours), QueryTokenizer(ours, max_words=5)
    found = [seeded(texts), small(texts), small(texts)]
    assert len(small._word_ids) <= 5
    reference = fresh_tokenizer()
    expected = [
        ids or [reference.word_to_id[""]] if "" in reference.word_to_id else ids
        for ids in reference.tokenize(texts, update_vocab=False, return_as="stream")
    ]
    assert found == [expected] * 3


def test_bm25_splitter_finds_the_words_of_the_bm25s_default(hotpot_questions):
    """The faster splitter is only a speed-up: the same words as bm25s's ``\\b\\w\\w+\\b``."""
    import re

    from rexrag_env.embedded import embedded_corpus_path
    from rexrag_env.retrieval.bm25 import _SPLITTER

    corpus = Corpus(embedded_corpus_path())
    texts = [
        *(q["question"] for q in hotpot_questions),
        *(corpus[row].contents.lower() for row in range(0, len(corpus), 7)),
        "İstanbul ÇAĞ straße naïve x-ray's U.S.A. 1999 a b c __init__ ½ ٣٤ 日本語 e\u0301",
    ]
    default, faster = re.compile(r"(?u)\b\w\w+\b"), re.compile(_SPLITTER)
    assert [faster.findall(text) for text in texts] == [default.findall(text) for text in texts]


def test_bm25_index_round_trip_and_pickle(hotpot_slice, tmp_path):
    built = build_index(hotpot_slice, "bm25", tmp_path / "bm25", show_progress=False)
    loaded = load_retriever(tmp_path / "bm25")
    queries = ["Which Canadian rock band released Counterparts", "American football coach"]
    assert [[p.id for p in r] for r in built.search(queries, 5)] == [
        [p.id for p in r] for r in loaded.search(queries, 5)
    ]
    clone = pickle.loads(pickle.dumps(loaded))
    assert [p.id for p in clone.search(queries, 5)[0]] == [
        p.id for p in loaded.search(queries, 5)[0]
    ]
    assert read_index_meta(tmp_path / "bm25")["num_passages"] == len(built.corpus)


def test_dense_index_round_trip(dense_retriever, tmp_path):
    from rexrag_env.retrieval.index import save_index

    (tmp_path / "dense").mkdir()
    save_index(dense_retriever, "dense", tmp_path / "dense")
    loaded = load_retriever(tmp_path / "dense")
    assert loaded.encoder.settings == dense_retriever.encoder.settings
    queries = ["Who was the drummer of Rush"]
    original = dense_retriever.search(queries, 5)[0]
    again = loaded.search(queries, 5)[0]
    assert [p.id for p in again] == [p.id for p in original]
    assert [p.score for p in again] == pytest.approx([p.score for p in original], abs=1e-5)


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_dense_approximate_indexes_agree_with_flat_on_top1(
    dense_retriever, hotpot_slice, index_type
):
    from rexrag_env.retrieval.dense import DenseRetriever

    approximate = DenseRetriever(
        dense_retriever.corpus,
        dense_retriever.encoder,
        _reindex(dense_retriever, index_type),
        index_type,
    )
    queries = ["Neil Peart drummer", "Counterparts song", "Tottenham Hotspur nickname"]
    exact = [r[0].id for r in dense_retriever.search(queries, 1)]
    assert [r[0].id for r in approximate.search(queries, 1)] == exact


def _reindex(dense_retriever, index_type):
    """Copy the flat index's vectors into an approximate FAISS index."""
    import faiss

    from rexrag_env.retrieval.dense import _new_faiss_index

    vectors = dense_retriever._cpu_index.reconstruct_n(0, dense_retriever._cpu_index.ntotal)
    index = _new_faiss_index(faiss, index_type, vectors.shape[1], len(vectors))
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def test_e5_style_prefixes_are_chosen_by_model_name():
    from rexrag_env.retrieval.dense import EncoderSettings, resolve_encoder

    assert resolve_encoder("intfloat/e5-base-v2") == "intfloat/e5-base-v2"
    assert resolve_encoder("minilm").endswith("model")
    settings = EncoderSettings(model=resolve_encoder("minilm"))
    from rexrag_env.retrieval.dense import Encoder

    encoder = Encoder(settings, device="cpu")
    assert (settings.query_prefix, settings.passage_prefix) == ("", "")
    assert encoder.dimension == 384


def test_e5_model_gets_query_and_passage_prefixes(tmp_path):
    """An E5-named copy of the packaged encoder gets E5 prefixes unless told otherwise."""
    import shutil

    from rexrag_env.retrieval.dense import Encoder, EncoderSettings, resolve_encoder

    e5_copy = tmp_path / "my-e5-small"
    shutil.copytree(resolve_encoder("minilm"), e5_copy)
    settings = EncoderSettings(model=str(e5_copy))
    encoder = Encoder(settings, device="cpu")
    assert (settings.query_prefix, settings.passage_prefix) == ("query: ", "passage: ")
    explicit = EncoderSettings(model=str(e5_copy), query_prefix="q> ", passage_prefix="")
    Encoder(explicit, device="cpu")
    assert (explicit.query_prefix, explicit.passage_prefix) == ("q> ", "")
    assert encoder.encode_queries(["x"]).shape == (1, 384)


def test_load_errors_are_clear(tmp_path, hotpot_slice):
    with pytest.raises(RetrievalError, match="not a rexrag index"):
        load_retriever(tmp_path)
    build_index(hotpot_slice, "bm25", tmp_path / "idx", show_progress=False)
    with pytest.raises(FileExistsError, match="not empty"):
        build_index(hotpot_slice, "bm25", tmp_path / "idx", show_progress=False)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "1", "contents": "T\nx"}) + "\n")
    with pytest.raises(RetrievalError, match="was built on a corpus of"):
        load_retriever(tmp_path / "idx", corpus_path=other)
    with pytest.raises(RetrievalError, match="does not exist"):
        load_retriever(tmp_path / "idx", corpus_path=tmp_path / "moved.jsonl")
    (tmp_path / "idx" / "rexrag_index.json").write_text("{broken")
    with pytest.raises(RetrievalError, match="corrupt"):
        load_retriever(tmp_path / "idx")
    with pytest.raises(ValueError, match="unknown retriever kind"):
        build_index(hotpot_slice, "splade", tmp_path / "x")


@pytest.mark.parametrize("spec", ["idx/bm25", "./idx", "~/idx", "{tmp}/idx"])
def test_a_missing_index_path_names_the_node_and_how_to_serve_it(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(ValueError) as error:
        make_retriever(spec)
    message = str(error.value)
    assert f"no directory {Path(spec).expanduser()} on node {socket.gethostname()}" in message
    assert "read on every EnvRunner's node" in message
    assert "rexrag serve --index PATH" in message
    assert "retriever=http://HOST:PORT/retrieve" in message


def test_a_misspelt_name_lists_the_names_and_a_home_path_is_expanded(
    hotpot_slice, tmp_path, monkeypatch
):
    with pytest.raises(ValueError, match=r"'bm52' is not one of \('bm25'") as error:
        make_retriever("bm52")
    assert "rexrag serve" not in str(error.value)  # a name, not a path: no node hint
    monkeypatch.setenv("HOME", str(tmp_path))
    build_index(hotpot_slice, "bm25", tmp_path / "idx", show_progress=False)
    assert len(make_retriever("~/idx").corpus) == len(Corpus(hotpot_slice))


def test_in_memory_retriever_refuses_to_pickle(hotpot_slice):
    from rexrag_env.retrieval.bm25 import BM25Retriever

    retriever = BM25Retriever.build(Corpus(hotpot_slice), show_progress=False)
    with pytest.raises(TypeError, match="load_retriever"):
        pickle.dumps(retriever)
