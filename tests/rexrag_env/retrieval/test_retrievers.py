"""BM25 and dense retrieval on the shipped corpus, and index save/load round trips."""

import json
import pickle

import pytest

from rexrag_env.retrieval.base import RetrievalError
from rexrag_env.retrieval.corpus import Corpus
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


def test_in_memory_retriever_refuses_to_pickle(hotpot_slice):
    from rexrag_env.retrieval.bm25 import BM25Retriever

    retriever = BM25Retriever.build(Corpus(hotpot_slice), show_progress=False)
    with pytest.raises(TypeError, match="load_retriever"):
        pickle.dumps(retriever)
