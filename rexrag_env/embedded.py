"""The data shipped inside the package, and the default retriever built over it.

The package carries a 23k-passage Wikipedia corpus (wiki-18 passages plus the
HotpotQA, 2WikiMultiHopQA and MuSiQue context paragraphs) and real question subsets
of the seven benchmarks, so the environment works offline with no download. Indexes
over it are built on first use and cached (see :mod:`rexrag_env.cache`).
"""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

from rexrag_env.cache import INDEX_CACHE_VERSION, build_once, cache_dir, file_fingerprint

#: Benchmarks in the order of the paper's results table (spec §6.2).
EMBEDDED_DATASETS: tuple[str, ...] = (
    "nq",
    "triviaqa",
    "popqa",
    "hotpotqa",
    "2wikimultihopqa",
    "musique",
    "bamboogle",
)
DEFAULT_DATASET = "hotpotqa"


def _data_dir() -> Path:
    return Path(str(files("rexrag_env") / "data"))


def embedded_corpus_path() -> Path:
    """The shipped corpus (gzipped wiki-18 JSONL)."""
    return _data_dir() / "wiki_sample.jsonl.gz"


def embedded_dataset_path(name: str) -> Path:
    """The shipped JSONL file of one benchmark."""
    if name not in EMBEDDED_DATASETS:
        raise ValueError(f"unknown embedded dataset {name!r}; choose one of {EMBEDDED_DATASETS}")
    return _data_dir() / "qa" / f"{name}.jsonl"


@functools.cache
def embedded_retriever(kind: str = "bm25"):
    """A retriever over the shipped corpus, built once per machine and shared per process.

    BM25 takes seconds to build; the dense MiniLM index takes many minutes on a CPU
    (a progress bar shows it) and is then reused from the cache.
    """
    from rexrag_env.retrieval.index import build_index, load_retriever

    corpus = embedded_corpus_path()
    name = f"embedded-{kind}-{file_fingerprint(corpus)}-{INDEX_CACHE_VERSION}"
    target = cache_dir() / "indexes" / name
    build_once(target, lambda tmp: build_index(corpus, kind, tmp, overwrite=True))
    return load_retriever(target)
