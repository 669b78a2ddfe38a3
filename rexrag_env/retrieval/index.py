"""Build, save and load a retrieval index, whatever the backend.

An index directory from ``rexrag index`` holds ``rexrag_index.json`` (which backend,
which corpus, how many passages) next to the backend's own files. ``load_retriever``
also opens the indexes FlashRAG and Search-R1 users already have, given what those
leave out: a bm25s directory (FlashRAG's BM25 on its bm25s backend) with its corpus,
and a bare FAISS file (``e5_Flat.index``) with its corpus and encoder;
:func:`index_format` tells which a path is. Loading checks the passage count, so an
index is not silently paired with a different corpus.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

from rexrag_env.registry import NameRegistry
from rexrag_env.retrieval.base import RetrievalError, Retriever
from rexrag_env.retrieval.corpus import Corpus

META_FILE = "rexrag_index.json"
_FORMAT_VERSION = 1
#: The index backends by kind (a ``load``/``build``/``save`` class each); named, not
#: imported, because the backends subclass :class:`IndexedRetriever` from this module.
_BACKENDS = NameRegistry("retriever kind")
_BACKENDS.register("bm25", "rexrag_env.retrieval.bm25:BM25Retriever")
_BACKENDS.register("dense", "rexrag_env.retrieval.dense:DenseRetriever")
RETRIEVER_KINDS = tuple(_BACKENDS.names())
#: The parameter file ``bm25s.BM25.save`` writes: a directory with it but without
#: :data:`META_FILE` is a bare bm25s index (FlashRAG writes those).
_BM25S_PARAMS_FILE = "params.index.json"
#: The corpus file ``bm25s.BM25.save`` writes when the index was given its corpus (as
#: FlashRAG does): the default corpus of a bm25s directory.
_BM25S_CORPUS_FILE = "corpus.jsonl"


class IndexedRetriever:
    """Base of the in-process retrievers: read-only handles to a (possibly huge) index.

    A deep copy shares the index instead of duplicating it (``gymnasium`` and RLlib
    copy environments), and a pickle (sending an env to a Ray worker) reopens the
    index from its files on the other side.
    """

    #: The ``load_retriever`` arguments (index path, corpus file, encoder) this index was
    #: opened with; set by ``load_retriever``, so that another process reopens it alike.
    load_args: tuple[str, str, str | None] | None = None

    @property
    def index_dir(self) -> str | None:
        """The index directory (or bare FAISS file) this index was loaded from, if any."""
        return self.load_args[0] if self.load_args else None

    def __deepcopy__(self, memo: dict) -> IndexedRetriever:
        return self

    def __reduce__(self):
        if self.load_args is None:
            raise TypeError(
                f"this {type(self).__name__} lives only in memory: save it with build_index(...) "
                "and open it with load_retriever(dir) to send it to another process"
            )
        return (load_retriever, self.load_args)


def build_index(
    corpus_path: str | Path,
    kind: str,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    show_progress: bool = True,
    **options: Any,
) -> Retriever:
    """Index the corpus with the chosen backend and save it to ``out_dir``.

    ``options`` go to the backend: for "bm25" ``stemmer_language``, ``k1``, ``b``; for
    "dense" ``settings`` (an EncoderSettings), ``index_type``, ``device``, ``use_gpu``.
    The directory is written completely or not at all.
    """
    if kind not in RETRIEVER_KINDS:
        raise ValueError(f"unknown retriever kind {kind!r}; choose one of {RETRIEVER_KINDS}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"index directory {out} is not empty (pass overwrite=True / --overwrite)"
        )
    corpus = Corpus(corpus_path)
    retriever = _backend(kind).build(corpus, show_progress=show_progress, **options)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_index(retriever, kind, staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return retriever


def save_index(retriever: Retriever, kind: str, directory: Path) -> None:
    """Write ``retriever``'s files and the metadata that ties them to their corpus."""
    corpus: Corpus = retriever.corpus  # type: ignore[attr-defined]
    retriever.save(directory)  # type: ignore[attr-defined]
    meta = {
        "format_version": _FORMAT_VERSION,
        "kind": kind,
        "corpus": str(corpus.source.resolve()),
        "num_passages": len(corpus),
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def read_index_meta(index_dir: str | Path) -> dict[str, Any]:
    """The metadata of an index directory, with a clear error when it is not one."""
    meta_path = Path(index_dir) / META_FILE
    if not meta_path.is_file():
        raise RetrievalError(
            f"{index_dir} is not a rexrag index (no {META_FILE}); build one with `rexrag index`"
        )
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise RetrievalError(f"{meta_path} is corrupt ({error}); rebuild the index") from error


def index_format(index_path: str | Path) -> str:
    """What ``index_path`` holds: ``"rexrag"`` (a directory from ``rexrag index``),
    ``"bm25s"`` (a bm25s directory without our metadata, as FlashRAG's bm25s backend
    writes it) or ``"faiss"`` (any other file: a bare FAISS index, as Search-R1 and
    FlashRAG write them). Anything else raises a :class:`RetrievalError` saying why."""
    path = Path(index_path)
    if path.is_file():
        return "faiss"
    if not path.is_dir():
        raise RetrievalError(f"index {path} does not exist")
    if (path / META_FILE).is_file():
        return "rexrag"
    if (path / _BM25S_PARAMS_FILE).is_file():
        return "bm25s"
    # Search-R1's and FlashRAG's default BM25 is a Lucene index: say so rather than only
    # what is missing.
    lucene = any(path.glob("segments_*"))
    hint = " It looks like a Lucene (pyserini) index, which rexrag cannot read." if lucene else ""
    raise RetrievalError(
        f"{path} is not a rexrag index (no {META_FILE}), nor a bm25s index (no "
        f"{_BM25S_PARAMS_FILE}).{hint} Build one with `rexrag index`, or pass a bare FAISS "
        "index file"
    )


def check_passage_count(index_name: str, num_indexed: int, corpus: Corpus) -> None:
    """Refuse a corpus of another length than the index's: the index's rows would name
    the wrong passages (a row is a corpus line number)."""
    if num_indexed != len(corpus):
        raise RetrievalError(
            f"{index_name} was built on a corpus of {num_indexed} passages but "
            f"{corpus.source} has {len(corpus)}: pass the corpus it was built on (--corpus / "
            "corpus_path=) or rebuild the index"
        )


def load_retriever(
    index_path: str | Path,
    corpus_path: str | Path | None = None,
    encoder: str | None = None,
    **options: Any,
) -> Retriever:
    """Open a saved index of any :func:`index_format`.

    Args:
        index_path: a ``rexrag index`` directory, a bm25s directory or a bare FAISS file.
        corpus_path: the corpus the index was built on. A rexrag index records it (this
            overrides it, for an index moved to another machine); a bm25s directory
            defaults to the ``corpus.jsonl`` bm25s saved in it, if any; a FAISS file
            needs it.
        encoder: the query encoder (name or path) of a bare FAISS file, which records
            none; the other formats record theirs and refuse one.
        options: go to the backend's loader (``num_threads`` for BM25; ``device``,
            ``use_gpu`` for dense).
    """
    path = Path(index_path)
    kind = index_format(path)
    if encoder is not None and kind != "faiss":
        raise RetrievalError(
            f"an encoder is only given for a bare FAISS index file; {path} is a {kind} index, "
            "which knows how its queries are encoded"
        )
    if kind == "rexrag":
        meta = read_index_meta(path)
        corpus = _recorded_corpus(path, meta, corpus_path)
        load = functools.partial(_backend(meta["kind"]).load, path, corpus)
    elif kind == "bm25s":
        saved_corpus = path / _BM25S_CORPUS_FILE
        if corpus_path is None and not saved_corpus.is_file():
            raise RetrievalError(
                f"{path} is a bm25s index directory without the {_BM25S_CORPUS_FILE} bm25s "
                "saves an index's corpus in: pass the JSONL corpus it was built on (--corpus "
                "wiki-18.jsonl / corpus_path=)"
            )
        corpus = Corpus(corpus_path or saved_corpus)
        load = functools.partial(_backend("bm25").load_bm25s, path, corpus)
    else:
        if corpus_path is None or encoder is None:
            raise RetrievalError(
                f"{path} is a bare FAISS index file, which records neither its corpus nor its "
                "encoder: pass the JSONL corpus it was built on and the encoder of its "
                "passages (--corpus wiki-18.jsonl --encoder intfloat/e5-base-v2 / "
                "corpus_path=, encoder=)"
            )
        corpus = Corpus(corpus_path)
        load = functools.partial(_backend("dense").load_faiss_file, path, corpus, encoder)
    try:
        retriever = load(**options)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        if isinstance(error, RetrievalError):
            raise
        raise RetrievalError(f"cannot load index {path}: {error}") from error
    retriever.load_args = (str(path.resolve()), str(corpus.source.resolve()), encoder)
    return retriever


def _recorded_corpus(
    directory: Path, meta: dict[str, Any], corpus_path: str | Path | None
) -> Corpus:
    """A rexrag index's corpus: where its metadata says, unless ``corpus_path`` moves it."""
    corpus_file = Path(corpus_path) if corpus_path else Path(meta["corpus"])
    if not corpus_file.is_file():
        raise RetrievalError(
            f"index {directory} was built on {meta['corpus']}, which does not exist here: "
            "pass the corpus file (--corpus / corpus_path=)"
        )
    corpus = Corpus(corpus_file)
    check_passage_count(f"index {directory}", meta["num_passages"], corpus)
    return corpus


def _backend(kind: str):
    if kind not in _BACKENDS:
        raise RetrievalError(f"unknown retriever kind {kind!r} in index metadata")
    return _BACKENDS.resolve(kind)
