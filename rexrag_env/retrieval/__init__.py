"""Retrieval: the corpus, BM25 and dense backends, index files, and the HTTP service.

Backends that pull heavy dependencies (``DenseRetriever``: torch, sentence-transformers,
FAISS; ``HTTPRetriever``: requests) are imported from their modules on demand.
"""

from rexrag_env.retrieval.base import (
    Passage,
    RetrievalError,
    Retriever,
    RetrieverUnavailableError,
)
from rexrag_env.retrieval.corpus import Corpus, CorpusFormatError
from rexrag_env.retrieval.factory import make_retriever
from rexrag_env.retrieval.index import RETRIEVER_KINDS, build_index, load_retriever

__all__ = [
    "RETRIEVER_KINDS",
    "Corpus",
    "CorpusFormatError",
    "Passage",
    "RetrievalError",
    "Retriever",
    "RetrieverUnavailableError",
    "build_index",
    "load_retriever",
    "make_retriever",
]
