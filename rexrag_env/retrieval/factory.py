"""Turn what a user passes as ``retriever=`` into a :class:`Retriever`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from rexrag_env.registry import NameRegistry
from rexrag_env.retrieval.base import Retriever
from rexrag_env.retrieval.index import load_retriever

#: Named retrievers: name -> builder ("bm25" and "dense" over the shipped corpus,
#: "synthwiki"; registered by ``rexrag_env/__init__.py``).
RETRIEVERS = NameRegistry("retriever")
_URL_SCHEMES = ("http://", "https://")


def make_retriever(
    spec: Retriever | str | Path,
    corpus_path: str | Path | None = None,
    encoder: str | None = None,
) -> Retriever:
    """Resolve a retriever spec.

    Accepted: a :class:`Retriever` object (used as is); a name in :data:`RETRIEVERS`
    (``"bm25"`` or ``"dense"``: an index over the shipped corpus, built on first use
    and cached; ``"synthwiki"``: BM25 over the generated SynthWiki corpus); an
    ``http(s)://`` URL of a retrieval service; the path of an index
    :func:`~rexrag_env.retrieval.index.load_retriever` opens (a ``rexrag index``
    directory, a bm25s directory, a bare FAISS file), which alone takes ``corpus_path``
    and ``encoder``: its corpus and query encoder, where the index does not record them.

    Raises:
        ValueError: ``spec`` is none of these, or is not a path but comes with
            ``corpus_path``/``encoder``; for a spec that looks like a path, the message
            names this node and how to serve the index instead.
    """
    if (corpus_path is not None or encoder is not None) and not _names_a_path(spec):
        raise ValueError(
            f"a corpus or encoder goes with an index path, not with retriever {spec!r}"
        )
    if not isinstance(spec, (str, Path)):
        if not isinstance(spec, Retriever):
            raise TypeError(
                f"retriever must have a search(queries, k) method, got {type(spec).__name__}"
            )
        return spec
    text = str(spec)
    if text in RETRIEVERS:
        return RETRIEVERS.build(text)
    if text.startswith(_URL_SCHEMES):
        from rexrag_env.retrieval.client import HTTPRetriever

        return HTTPRetriever(text)
    path = Path(text).expanduser()
    if path.exists():
        return load_retriever(path, corpus_path, encoder)
    accepted = (
        f"retriever {text!r} is not one of {tuple(RETRIEVERS.names())}, an http(s):// "
        "service URL or an index path"
    )
    if _looks_like_path(text):
        raise ValueError(f"{accepted}: {_missing_index_hint(path)}")
    raise ValueError(accepted)


def _names_a_path(spec: Retriever | str | Path) -> bool:
    """Whether :func:`make_retriever` takes ``spec`` for an index path (not an object, a
    name or a URL)."""
    if not isinstance(spec, (str, Path)):
        return False
    return str(spec) not in RETRIEVERS and not str(spec).startswith(_URL_SCHEMES)


def _looks_like_path(text: str) -> bool:
    """A spec meant as a directory (``idx/bm25``, ``./idx``, ``~/idx``), not a misspelt
    name: its error says where the directory was looked for, not only the names."""
    return text.startswith((".", "~")) or "/" in text or os.sep in text


def _missing_index_hint(path: Path) -> str:
    """Why an index path that works on one machine fails on another, and the fix.

    Every EnvRunner opens the index itself, so on a cluster the path is read on each
    runner's node; a path that exists only on the driver's node fails there. Serving
    the index once and passing its URL avoids copying it to every node.
    """
    return (
        f"there is no directory {path} on node {socket.gethostname()}. An index path is "
        "read on every EnvRunner's node (each runner opens the index there), so it must "
        "exist on each of them; or serve the index from one node with `rexrag serve "
        "--index PATH --host 0.0.0.0 --port PORT` and pass its URL "
        "(retriever=http://HOST:PORT/retrieve)"
    )
