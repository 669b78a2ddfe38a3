"""The indexes FlashRAG and Search-R1 users already have, opened without re-encoding.

A FlashRAG bm25s directory is written here as FlashRAG's index builder writes it, and a
bare FAISS file with passages embedded as Search-R1's retrieval server embeds them
(transformers, mean pooling, L2 norm, E5 prefixes); each must serve what our own index
over the same corpus serves. The encoder is the packaged MiniLM in a directory named
like an E5 model, so that the E5 prefixes apply as they do for ``intfloat/e5-base-v2``.
"""

import json
import pickle
import shutil

import numpy as np
import pytest

from agents.cli import main
from rexrag_env.retrieval.base import RetrievalError
from rexrag_env.retrieval.corpus import Corpus
from rexrag_env.retrieval.dense import EncoderSettings, resolve_encoder
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.retrieval.index import build_index, load_retriever

PASSAGES = 20
QUERIES = ["Which Canadian rock band released Counterparts", "American football coach"]
#: Besides QUERIES: a stem-matched unseen word, stopwords only, empty, no known word.
EDGE_QUERIES = ["drummers marathoning", "the of and", "", "qqqzzz"]


def hits(results):
    return [[(p.id, p.score) for p in ranked] for ranked in results]


def ids(results):
    return [[p.id for p in ranked] for ranked in results]


def scores(results):
    return [[p.score for p in ranked] for ranked in results]


@pytest.fixture(scope="module")
def tiny_corpus(hotpot_slice, tmp_path_factory):
    """The first 20 passages of the HotpotQA slice."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    lines = hotpot_slice.read_text(encoding="utf-8").splitlines()[:PASSAGES]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def flashrag_bm25s_dir(tiny_corpus, tmp_path_factory):
    """A bm25s index as FlashRAG's ``Index_Builder.build_bm25_index_bm25s`` writes it:
    the index given its corpus (so bm25s saves ``corpus.jsonl`` too), the tokenizer's
    vocabulary and stopwords, none of our files."""
    import bm25s
    import Stemmer

    records = [json.loads(line) for line in tiny_corpus.read_text().splitlines()]
    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
    tokens = tokenizer.tokenize(
        [record["contents"] for record in records], return_as="tuple", show_progress=False
    )
    index = bm25s.BM25(corpus=records, backend="numba")
    index.index(tokens, show_progress=False)
    directory = tmp_path_factory.mktemp("flashrag") / "bm25"
    index.save(str(directory), corpus=None, show_progress=False)
    tokenizer.save_vocab(str(directory))
    tokenizer.save_stopwords(str(directory))
    return directory


@pytest.fixture(scope="module")
def own_bm25(tiny_corpus, tmp_path_factory):
    directory = tmp_path_factory.mktemp("own") / "bm25"
    build_index(tiny_corpus, "bm25", directory, show_progress=False)
    return load_retriever(directory)


@pytest.fixture(scope="module")
def e5_named_encoder(tmp_path_factory):
    """The packaged MiniLM in a directory whose name says E5."""
    directory = tmp_path_factory.mktemp("models") / "e5-minilm"
    shutil.copytree(resolve_encoder("minilm"), directory)
    return str(directory)


def search_r1_embeddings(model_dir, texts, prefix):
    """``[len(texts), dim]``: Search-R1's retrieval server's ``Encoder.encode``:
    transformers' AutoModel, the E5 prefix, mean pooling over the attention mask, L2
    normalisation, 256 tokens at most."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    inputs = tokenizer(
        [prefix + text for text in texts],
        max_length=256,
        padding=True,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state  # [texts, tokens, dim]
    mask = inputs["attention_mask"]  # [texts, tokens]
    pooled = hidden.masked_fill(~mask[..., None].bool(), 0.0).sum(1) / mask.sum(1)[..., None]
    return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)


@pytest.fixture(scope="module")
def search_r1_faiss_file(tiny_corpus, e5_named_encoder, tmp_path_factory):
    """A bare flat inner-product FAISS file of the corpus, embedded Search-R1's way."""
    import faiss

    contents = list(Corpus(tiny_corpus).iter_contents())
    vectors = search_r1_embeddings(e5_named_encoder, contents, "passage: ")
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    path = tmp_path_factory.mktemp("search_r1") / "e5_Flat.index"
    faiss.write_index(index, str(path))
    return path


@pytest.fixture(scope="module")
def own_dense(tiny_corpus, e5_named_encoder, tmp_path_factory):
    directory = tmp_path_factory.mktemp("own") / "dense"
    settings = EncoderSettings(model=e5_named_encoder)
    build_index(tiny_corpus, "dense", directory, settings=settings, show_progress=False)
    return load_retriever(directory)


def test_a_flashrag_bm25s_directory_serves_what_flashrag_and_our_index_serve(
    flashrag_bm25s_dir, tiny_corpus, own_bm25
):
    import bm25s
    import Stemmer

    loaded = load_retriever(flashrag_bm25s_dir, tiny_corpus)
    queries = QUERIES + EDGE_QUERIES
    assert hits(loaded.search(queries, 3)) == hits(own_bm25.search(queries, 3))
    # FlashRAG's BM25Retriever._batch_search; it raises on a query without any word.
    flashrag = bm25s.BM25.load(str(flashrag_bm25s_dir), mmap=True, load_corpus=False)
    answerable = [*QUERIES, EDGE_QUERIES[0]]
    tokens = bm25s.tokenize(answerable, stemmer=Stemmer.Stemmer("english"), show_progress=False)
    rows, scores = flashrag.retrieve(tokens, k=3, show_progress=False, backend_selection="numba")
    row_ids = [[Corpus(tiny_corpus)[row].id for row in ranked] for ranked in rows.tolist()]
    expected = [
        list(zip(*pair, strict=True)) for pair in zip(row_ids, scores.tolist(), strict=True)
    ]
    assert hits(loaded.search(answerable, 3)) == expected


def test_a_bm25s_directory_defaults_to_the_corpus_saved_in_it(
    flashrag_bm25s_dir, tiny_corpus, own_bm25, tmp_path
):
    loaded = load_retriever(flashrag_bm25s_dir)
    assert loaded.corpus.source == flashrag_bm25s_dir / "corpus.jsonl"
    assert hits(loaded.search(QUERIES, 3)) == hits(own_bm25.search(QUERIES, 3))
    clone = pickle.loads(pickle.dumps(loaded))  # how an env reaches a Ray worker
    assert hits(clone.search(QUERIES, 3)) == hits(loaded.search(QUERIES, 3))

    bare = tmp_path / "bm25"
    shutil.copytree(flashrag_bm25s_dir, bare)
    (bare / "corpus.jsonl").unlink()
    with pytest.raises(RetrievalError, match="pass the JSONL corpus it was built on"):
        load_retriever(bare)
    longer = tmp_path / "longer.jsonl"
    longer.write_text(tiny_corpus.read_text() + '{"id": "x", "contents": "T\\nx"}\n')
    with pytest.raises(RetrievalError, match=f"corpus of {PASSAGES} passages but .* has 21"):
        load_retriever(bare, longer)


def test_a_bare_faiss_file_serves_what_our_dense_index_serves(
    search_r1_faiss_file, tiny_corpus, e5_named_encoder, own_dense
):
    loaded = load_retriever(search_r1_faiss_file, tiny_corpus, encoder=e5_named_encoder)
    assert loaded.encoder.settings.query_prefix == "query: "
    # Queries embedded as Search-R1's server embeds them.
    np.testing.assert_allclose(
        loaded.encoder.encode_queries(QUERIES),
        search_r1_embeddings(e5_named_encoder, QUERIES, "query: "),
        atol=1e-5,
    )
    found, expected = loaded.search(QUERIES, 5), own_dense.search(QUERIES, 5)
    assert ids(found) == ids(expected)
    np.testing.assert_allclose(scores(found), scores(expected), atol=1e-4)
    clone = pickle.loads(pickle.dumps(loaded))
    assert clone.encoder.settings.model == e5_named_encoder
    assert hits(clone.search(QUERIES, 3)) == hits(loaded.search(QUERIES, 3))


def test_foreign_index_errors_say_what_to_pass(
    search_r1_faiss_file, flashrag_bm25s_dir, tiny_corpus, own_bm25, tmp_path
):
    import faiss

    with pytest.raises(RetrievalError, match="records neither its corpus nor its encoder"):
        load_retriever(search_r1_faiss_file)
    with pytest.raises(RetrievalError, match="records neither its corpus"):
        load_retriever(search_r1_faiss_file, tiny_corpus)
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("\n".join(tiny_corpus.read_text().splitlines()[:5]) + "\n")
    with pytest.raises(RetrievalError, match=f"corpus of {PASSAGES} passages but .* has 5"):
        load_retriever(search_r1_faiss_file, fewer, encoder="no/such-encoder")
    narrow = faiss.IndexFlatIP(8)
    narrow.add(np.ones((PASSAGES, 8), dtype=np.float32))
    faiss.write_index(narrow, str(tmp_path / "narrow.index"))
    with pytest.raises(RetrievalError, match="8-dimensional vectors but encoder 'minilm'"):
        load_retriever(tmp_path / "narrow.index", tiny_corpus, encoder="minilm")
    with pytest.raises(RetrievalError, match="not a readable FAISS index file"):
        load_retriever(tiny_corpus, tiny_corpus, encoder="minilm")
    with pytest.raises(RetrievalError, match="only given for a bare FAISS index file"):
        load_retriever(flashrag_bm25s_dir, encoder="minilm")
    with pytest.raises(RetrievalError, match="only given for a bare FAISS index file"):
        load_retriever(own_bm25.index_dir, encoder="minilm")
    (tmp_path / "lucene").mkdir()
    (tmp_path / "lucene" / "segments_1").write_bytes(b"")
    with pytest.raises(RetrievalError, match=r"Lucene \(pyserini\) index"):
        load_retriever(tmp_path / "lucene")
    with pytest.raises(ValueError, match="goes with an index path, not with retriever 'bm25'"):
        make_retriever("bm25", corpus_path=tiny_corpus)


def test_search_command_takes_a_corpus(flashrag_bm25s_dir, tiny_corpus, own_bm25, tmp_path, capsys):
    def search(*index_args):
        code = main(["search", *index_args, "-k", "2", "--json", QUERIES[0]])
        output = capsys.readouterr()
        assert code == 0, output.err
        return [(p["id"], p["score"]) for p in json.loads(output.out)["passages"]]

    expected = hits(own_bm25.search(QUERIES[:1], 2))[0]
    moved = tmp_path / "moved.jsonl"  # our own index, its corpus elsewhere now
    shutil.copy(tiny_corpus, moved)
    assert search("--index", own_bm25.index_dir, "--corpus", str(moved)) == expected
    assert search("--index", str(flashrag_bm25s_dir), "--corpus", str(tiny_corpus)) == expected


def test_serve_command_opens_a_bare_faiss_file(
    search_r1_faiss_file, tiny_corpus, e5_named_encoder, own_dense, monkeypatch
):
    from rexrag_env.retrieval import server

    served = {}
    monkeypatch.setattr(
        server, "serve", lambda retriever, *args, **kwargs: served.update(retriever=retriever)
    )
    index_args = ["--index", str(search_r1_faiss_file), "--corpus", str(tiny_corpus)]
    assert main(["serve", *index_args, "--encoder", e5_named_encoder]) == 0
    assert ids(served["retriever"].search(QUERIES, 3)) == ids(own_dense.search(QUERIES, 3))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "{faiss}"], "--corpus wiki-18.jsonl --encoder intfloat/e5-base-v2"),
        (["--index", "bm25", "--corpus", "{corpus}"], "goes with an index path"),
    ],
)
def test_search_command_errors_are_one_clear_line(
    args, message, search_r1_faiss_file, tiny_corpus, capsys
):
    paths = {"faiss": search_r1_faiss_file, "corpus": tiny_corpus}
    assert main(["search", *(arg.format(**paths) for arg in args), "q"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
