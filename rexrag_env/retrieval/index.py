"""Build, save and load a retrieval index directory, whatever the backend.

An index directory holds ``rexrag_index.json`` (which backend, which corpus, how many
passages) next to the backend's own files. Loading checks the passage count, so an
index is not silently paired with a different corpus.
"""

from __future__ import annotations

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


class IndexedRetriever:
    """Base of the in-process retrievers: read-only handles to a (possibly huge) index.

    A deep copy shares the index instead of duplicating it (``gymnasium`` and RLlib
    copy environments), and a pickle (sending an env to a Ray worker) reopens the
    index from its directory on the other side.
    """

    #: The directory the index was loaded from; set by ``load_retriever``.
    index_dir: str | None = None

    def __deepcopy__(self, memo: dict) -> IndexedRetriever:
        return self

    def __reduce__(self):
        if self.index_dir is None:
            raise TypeError(
                f"this {type(self).__name__} lives only in memory: save it with build_index(...) "
                "and open it with load_retriever(dir) to send it to another process"
            )
        return (load_retriever, (self.index_dir, str(self.corpus.source)))  # type: ignore[attr-defined]


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


def load_retriever(
    index_dir: str | Path, corpus_path: str | Path | None = None, **options: Any
) -> Retriever:
    """Open a saved index. ``corpus_path`` overrides the corpus location stored in it
    (for an index moved to another machine); ``options`` go to the backend's ``load``.
    """
    directory = Path(index_dir)
    meta = read_index_meta(directory)
    corpus_file = Path(corpus_path) if corpus_path else Path(meta["corpus"])
    if not corpus_file.is_file():
        raise RetrievalError(
            f"index {directory} was built on {meta['corpus']}, which does not exist here: "
            "pass the corpus file (--corpus / corpus_path=)"
        )
    corpus = Corpus(corpus_file)
    if len(corpus) != meta["num_passages"]:
        raise RetrievalError(
            f"index {directory} was built on a corpus of {meta['num_passages']} passages but "
            f"{corpus_file} has {len(corpus)}: rebuild the index"
        )
    try:
        retriever = _backend(meta["kind"]).load(directory, corpus, **options)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        if isinstance(error, RetrievalError):
            raise
        raise RetrievalError(f"cannot load index {directory}: {error}") from error
    retriever.index_dir = str(directory.resolve())
    return retriever


def _backend(kind: str):
    if kind not in _BACKENDS:
        raise RetrievalError(f"unknown retriever kind {kind!r} in index metadata")
    return _BACKENDS.resolve(kind)
