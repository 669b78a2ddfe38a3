"""Turn what a user passes as ``retriever=`` into a :class:`Retriever`."""

from __future__ import annotations

from pathlib import Path

from rexrag_env.registry import NameRegistry
from rexrag_env.retrieval.base import Retriever
from rexrag_env.retrieval.index import load_retriever

#: Named retrievers: name -> builder ("bm25" and "dense" over the shipped corpus,
#: "synthwiki"; registered by ``rexrag_env/__init__.py``).
RETRIEVERS = NameRegistry("retriever")


def make_retriever(spec: Retriever | str | Path) -> Retriever:
    """Resolve a retriever spec.

    Accepted: a :class:`Retriever` object (used as is); a name in :data:`RETRIEVERS`
    (``"bm25"`` or ``"dense"``: an index over the shipped corpus, built on first use
    and cached; ``"synthwiki"``: BM25 over the generated SynthWiki corpus); an
    ``http(s)://`` URL of a retrieval service; the path of an index directory from
    ``rexrag index``.
    """
    if not isinstance(spec, (str, Path)):
        if not isinstance(spec, Retriever):
            raise TypeError(
                f"retriever must have a search(queries, k) method, got {type(spec).__name__}"
            )
        return spec
    text = str(spec)
    if text in RETRIEVERS:
        return RETRIEVERS.build(text)
    if text.startswith(("http://", "https://")):
        from rexrag_env.retrieval.client import HTTPRetriever

        return HTTPRetriever(text)
    if Path(text).is_dir():
        return load_retriever(text)
    raise ValueError(
        f"retriever {text!r} is not one of {tuple(RETRIEVERS.names())}, an http(s):// "
        "service URL or an index directory"
    )
