"""Sparse BM25 retrieval with bm25s (Lucene-style scoring, English stemming and stop words).

BM25 is the retriever that needs no model: it builds over the shipped corpus in
seconds on a laptop, which is why it is the environment's default.

A search costs what bm25s's compiled (numba) scorer costs plus a little Python: each
distinct query text is tokenised and scored once per batch, and passages come from
the corpus's passage store (``benchmarks/retrieval.py`` measures it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.numba import retrieve_utils

from rexrag_env.retrieval.base import Passage, check_search_args
from rexrag_env.retrieval.corpus import Corpus
from rexrag_env.retrieval.index import IndexedRetriever, check_passage_count

_PARAMS_FILE = "rexrag_bm25.json"
#: bm25s's numba backend: a batch of 256 queries scores ~10x faster than on its NumPy
#: backend (a Python scoring loop per query), with the same scores. Where scores tie,
#: the two choose and order the tied rows differently (a heap against
#: ``np.argpartition``). The NumPy choice changes with the CPU (AVX-512 or not); the
#: numba one stayed the same when compiled for a generic x86 CPU. See docs/results.md.
_BACKEND = "numba"
#: What decides which passages tie-break into a BM25 top-k besides the index files.
#: Caches of models trained on rankings (the warm-start policies) carry it in their
#: names, so that a change of scorer rebuilds them instead of loading a stale one.
RANKING_VERSION = f"bm25s-{bm25s.__version__}-{_BACKEND}"


#: bm25s's compiled serial scorer (``None`` if a release renames it: then searches go
#: through ``BM25.retrieve``, slower but the same).
_SERIAL_SCORER = getattr(retrieve_utils, "_retrieve_internal_jitted_serial", None)


def _keep_compiled_scorer_on_disk() -> None:
    """Let numba cache bm25s's serial batch scorer on disk (bm25s does not ask for it).

    Compiling it takes about 10 s on 2 cores, and every process that searches (each Ray
    EnvRunner, each test run) would pay that on its first search; from the disk cache it
    loads in a fraction of a second. Only the serial variant (``num_threads=1``) is
    cached: bm25s's parallel variant compiles the same Python function, and numba would
    file both under one cache entry, handing one the other's code. The cache only speeds
    start-up, so where it cannot be had (a bm25s release renames the function, numba
    finds no writable place for it) searches still work, with the first-call cost.
    """
    scorer = _SERIAL_SCORER
    if hasattr(scorer, "enable_caching"):
        # RuntimeError: no writable cache location (read-only install and home).
        with contextlib.suppress(RuntimeError):
            scorer.enable_caching()


_keep_compiled_scorer_on_disk()


#: Runs of 2+ word characters: the words bm25s's default splitter, ``\b\w\w+\b``, finds
#: (a greedy run already ends at a word boundary), in half the time; tokenising is the
#: largest share of a search after scoring.
_SPLITTER = r"\w{2,}"
#: An ASCII text's bytes, lowercased, with every byte ``\w`` does not match (all but
#: letters, digits and ``_``) turned into a space: ``text.encode().translate(...).split()``
#: then yields the runs of word characters, three times faster than the regex. Runs of
#: one character are among them; the word table maps those to None.
_ASCII_WORD_BYTES = bytes(
    (ord(chr(byte).lower()) if chr(byte).isalnum() or chr(byte) == "_" else ord(" "))
    if byte < 128
    else ord(" ")
    for byte in range(256)
)


def _make_tokenizer(stemmer_language: str | None) -> bm25s.tokenization.Tokenizer:
    stemmer = Stemmer.Stemmer(stemmer_language) if stemmer_language else None
    return bm25s.tokenization.Tokenizer(stemmer=stemmer, stopwords="en", splitter=_SPLITTER)


class _WordIds(dict):
    """Query word, as UTF-8 bytes -> token id (None: a stopword, or a word whose stem the
    index lacks), decided exactly as bm25s's tokenizer decides it with
    ``update_vocab=False``: the vocabulary's word table first, then stopwords, then the
    stem. The byte-level split of an ASCII text also yields one-character runs, which
    the regex never finds: those map to None.

    Keyed by bytes because nearly every query is ASCII and split as bytes; the regex's
    words from the other queries are encoded to match, so each word has one entry (a
    table twice the size, with str keys too, was ~20% slower to look up once scoring
    had pushed it out of the CPU caches). It starts as the word table and the
    stopwords when they fit in ``max_words`` entries (a corpus of wiki-18's size has
    more words; then it fills on first sight), so that only words the corpus never had
    cost Python code. It is cleared when it reaches ``max_words``, so that a long run
    of generated queries cannot grow it without bound."""

    def __init__(self, tokenizer: bm25s.tokenization.Tokenizer, max_words: int):
        super().__init__()
        self._tokenizer = tokenizer
        self._stopwords = frozenset(tokenizer.stopwords or ())
        self._max_words = max_words
        if len(tokenizer.word_to_id) + len(self._stopwords) < max_words:
            self.update(dict.fromkeys(word.encode() for word in self._stopwords))
            self.update((word.encode(), token) for word, token in tokenizer.word_to_id.items())

    def __missing__(self, word: bytes) -> int | None:
        token = None
        if len(word) > 1:
            tokenizer, text = self._tokenizer, word.decode()
            token = tokenizer.word_to_id.get(text)
            if token is None and text not in self._stopwords and tokenizer.stemmer is not None:
                token = tokenizer.stem_to_sid.get(tokenizer.stemmer(text))
        if len(self) >= self._max_words:
            self.clear()
        self[word] = token
        return token


class QueryTokenizer:
    """Query texts to the index's token ids, exactly as bm25s's tokenizer maps them
    (``update_vocab=False``), with less Python a word.

    Tokenising is the largest cost of a search after scoring. bm25s runs each query
    through a regex and a generator that decides every word by up to four lookups
    (known word, stopword, stem, known stem); here an ASCII text (nearly every question)
    is split by one byte translation, any other by the regex, and each word's outcome
    is decided once and remembered, so a query costs a split and one C-level map over a
    dictionary.
    """

    def __init__(self, tokenizer: bm25s.tokenization.Tokenizer, max_words: int = 1 << 20):
        self._split = re.compile(_SPLITTER).findall
        self._word_ids = _WordIds(tokenizer, max_words)
        self._empty = tokenizer.word_to_id.get("")

    def __call__(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids; where no word of a text is in the vocabulary, the
        empty-token id if the vocabulary has one (as bm25s does), else an empty list."""
        split, word_id = self._split, self._word_ids.__getitem__
        ids = [
            [
                token
                for token in map(
                    word_id,
                    text.encode().translate(_ASCII_WORD_BYTES).split()
                    if text.isascii()
                    else map(str.encode, split(text.lower())),
                )
                if token is not None
            ]
            for text in texts
        ]
        if self._empty is not None:
            for tokens in ids:
                if not tokens:
                    tokens.append(self._empty)
        return ids


def _load_index(directory: Path, corpus: Corpus) -> bm25s.BM25:
    """The bm25s index in ``directory``, memory-mapped, checked against ``corpus``."""
    # ``backend`` overrides the saved one: indexes written before the numba switch say
    # "numpy".
    index = bm25s.BM25.load(
        str(directory), mmap=True, show_progress=False, verbosity=0, backend=_BACKEND
    )
    check_passage_count(f"index {directory}", index.scores["num_docs"], corpus)
    return index


class BM25Retriever(IndexedRetriever):
    """BM25 over a :class:`Corpus`.

    Args:
        corpus: the passages the index was built on.
        index: a fitted ``bm25s.BM25``.
        tokenizer: the tokenizer whose vocabulary the index uses.
        stemmer_language: Snowball stemmer language ("english"), or None for no stemming.
        num_threads: threads bm25s's compiled scorer uses for a batch (-1 = all cores).
            1, the default, runs its serial scorer, which is thread-safe and leaves
            numba's process-wide thread settings alone. On 2 shared cores it was faster
            than the parallel one at every batch size (numba's OpenMP layer added ~16 ms
            a call there), and Ray gives each EnvRunner process its own core anyway;
            try -1 on a large idle machine serving big batches.
    """

    def __init__(
        self,
        corpus: Corpus,
        index: bm25s.BM25,
        tokenizer: bm25s.tokenization.Tokenizer,
        stemmer_language: str | None = "english",
        num_threads: int = 1,
    ):
        self.corpus = corpus
        self.index = index
        self.tokenizer = tokenizer
        self.query_tokenizer = QueryTokenizer(tokenizer)
        self.stemmer_language = stemmer_language
        self.num_threads = num_threads

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        stemmer_language: str | None = "english",
        k1: float = 1.5,
        b: float = 0.75,
        show_progress: bool = True,
    ) -> BM25Retriever:
        """Tokenise and index every passage of ``corpus`` (streamed, not held as text)."""
        tokenizer = _make_tokenizer(stemmer_language)
        token_ids = tokenizer.tokenize(
            corpus.iter_contents(),
            update_vocab=True,
            return_as="ids",
            length=len(corpus),
            show_progress=show_progress,
        )
        index = bm25s.BM25(k1=k1, b=b, backend=_BACKEND)
        index.index((token_ids, tokenizer.get_vocab_dict()), show_progress=show_progress)
        return cls(corpus, index, tokenizer, stemmer_language)

    def save(self, directory: Path) -> None:
        """Write the index, its vocabulary and its settings into ``directory``."""
        self.index.save(str(directory), show_progress=False)
        self.tokenizer.save_vocab(str(directory))
        self.tokenizer.save_stopwords(str(directory))
        (directory / _PARAMS_FILE).write_text(
            json.dumps({"stemmer_language": self.stemmer_language})
        )

    @classmethod
    def load(cls, directory: Path, corpus: Corpus, num_threads: int = 1) -> BM25Retriever:
        """Load an index written by :meth:`save`; the sparse matrix is memory-mapped.
        ``num_threads`` as in the class arguments."""
        params = json.loads((directory / _PARAMS_FILE).read_text())
        tokenizer = _make_tokenizer(params["stemmer_language"])
        tokenizer.load_vocab(str(directory))
        tokenizer.load_stopwords(str(directory))
        index = _load_index(directory, corpus)
        return cls(corpus, index, tokenizer, params["stemmer_language"], num_threads)

    @classmethod
    def load_bm25s(cls, directory: Path, corpus: Corpus, num_threads: int = 1) -> BM25Retriever:
        """Load a bare bm25s index, as FlashRAG's bm25s backend writes it, and tokenise
        queries as FlashRAG does: ``bm25s.tokenize(queries, stemmer=english)``, that is
        English stopwords and bm25s's default splitter (which ours equals), each word's
        English stem looked up in the index's own vocabulary. So the tokenizer files,
        which older FlashRAG releases do not write, are not needed.
        """
        index = _load_index(directory, corpus)
        tokenizer = _make_tokenizer("english")
        tokenizer.stem_to_sid = index.vocab_dict
        # The empty token (a corpus tokenised by bm25s has one) answers a query without
        # any indexed word, as in our own indexes; FlashRAG raises on such a query.
        empty = index.vocab_dict.get("")
        tokenizer.word_to_id = {} if empty is None else {"": empty}
        return cls(corpus, index, tokenizer, "english", num_threads)

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        """Top-``k`` passages per query by BM25 score, best first."""
        check_search_args(queries, k, len(self.corpus))
        if not queries:
            return []
        # A GRPO group searches the same text several times in one step: score it once.
        distinct = list(dict.fromkeys(queries))
        results = self.corpus.ranked_passages(*self._score(self.query_tokenizer(distinct), k))
        if len(distinct) == len(queries):
            return results
        ranked = dict(zip(distinct, results, strict=True))
        # A list per query, so that a caller editing one does not edit its twins.
        return [list(ranked[query]) for query in queries]

    def _score(self, query_ids: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)``, each ``[queries, k]``, from bm25s's compiled scorer.

        Serial scoring calls that scorer directly, with the arguments ``BM25.retrieve``
        passes it after its input checks, which walk every token id in Python (about
        5 µs a query, an eighth of the scoring). bm25s's own path serves the parallel
        scorer, and any bm25s release without that function."""
        index = self.index
        if _SERIAL_SCORER is None or self.num_threads != 1:
            return index.retrieve(query_ids, k=k, show_progress=False, n_threads=self.num_threads)
        int_dtype = np.dtype(index.int_dtype)
        pointers = np.cumsum([0, *map(len, query_ids)], dtype=int_dtype)
        flat = np.fromiter(
            itertools.chain.from_iterable(query_ids), dtype=int_dtype, count=int(pointers[-1])
        )
        scores, rows = _SERIAL_SCORER(
            flat,
            pointers,
            k,
            True,
            np.dtype(index.dtype),
            int_dtype,
            index.scores["data"],
            index.scores["indptr"],
            index.scores["indices"],
            index.scores["num_docs"],
            getattr(index, "nonoccurrence_array", None),
            None,
        )
        return rows, scores
