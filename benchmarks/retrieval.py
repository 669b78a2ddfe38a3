"""Retrieval speed and quality on the real corpus and questions in ../shared/data.

    python benchmarks/retrieval.py [--retrievers bm25,dense] [--batch-sizes 1,16,256]

Prints, for BM25 and dense (packaged MiniLM + flat FAISS):
- index build time (indexes are cached between runs; a cached index reports the build
  time measured when it was built);
- queries/s and p50/p99 latency of one ``search`` call for batch sizes 1, 16 and 256,
  in process and through the HTTP service on loopback;
- a same-run baseline: the same queries sent one per request (how a naive client uses
  a retrieval server) against one batched request, and their ratio;
- recall@3 per benchmark: a gold answer string (SQuAD-normalised, whole tokens) occurs
  in one of the top 3 passages.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from rexrag_env.cache import cache_dir
from rexrag_env.embedded import EMBEDDED_DATASETS
from rexrag_env.retrieval.base import Retriever
from rexrag_env.retrieval.client import HTTPRetriever
from rexrag_env.retrieval.index import build_index, load_retriever
from rexrag_env.retrieval.server import background_server
from rexrag_env.reward import normalize_answer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_questions(qa_dir: Path) -> dict[str, list[dict]]:
    return {
        name: [
            json.loads(line) for line in (qa_dir / f"{name}.jsonl").read_text().splitlines() if line
        ]
        for name in EMBEDDED_DATASETS
    }


def cached_index(corpus: Path, kind: str, root: Path) -> tuple[Retriever, str]:
    """The index of ``kind`` over ``corpus``: built once (and timed), then reused."""
    directory, timing = root / kind, root / f"{kind}.build.json"
    if not (directory / "rexrag_index.json").is_file():
        start = time.perf_counter()
        build_index(corpus, kind, directory, overwrite=True)
        timing.write_text(json.dumps({"seconds": time.perf_counter() - start}))
        label = f"{json.loads(timing.read_text())['seconds']:.1f} s"
    else:
        label = (
            f"{json.loads(timing.read_text())['seconds']:.1f} s (cached)"
            if timing.is_file()
            else "cached"
        )
    return load_retriever(directory, corpus_path=corpus), label


def time_batches(
    search: Callable[[list[str], int], object],
    queries: list[str],
    batch_size: int,
    budget_queries: int,
) -> dict[str, float]:
    """Latency of each call and overall queries/s over ``budget_queries`` queries."""
    latencies = []
    count = max(budget_queries // batch_size, 3)
    for index in range(count):
        batch = [queries[(index * batch_size + j) % len(queries)] for j in range(batch_size)]
        start = time.perf_counter()
        search(batch, 3)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return {
        "qps": count * batch_size / sum(latencies),
        "p50": 1000 * statistics.median(latencies),
        "p99": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
    }


def recall_at_3(retriever: Retriever, questions: dict[str, list[dict]]) -> dict[str, float]:
    recall = {}
    for name, records in questions.items():
        results = retriever.search([r["question"] for r in records], 3)
        hits = 0
        for record, passages in zip(records, results, strict=True):
            text = " " + " ".join(normalize_answer(p.contents) for p in passages) + " "
            golds = [normalize_answer(g) for g in record["golden_answers"]]
            hits += any(g and f" {g} " in text for g in golds)
        recall[name] = 100 * hits / len(records)
    recall["average"] = statistics.mean(recall.values())
    return recall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "wiki_sample.jsonl")
    parser.add_argument("--qa-dir", type=Path, default=SHARED / "qa")
    parser.add_argument("--retrievers", default="bm25,dense")
    parser.add_argument("--batch-sizes", default="1,16,256")
    parser.add_argument(
        "--queries", type=int, default=512, help="queries timed per batch size and path"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="where built indexes are kept")
    args = parser.parse_args()

    root = args.cache_dir or cache_dir() / "bench-indexes" / args.corpus.stem
    root.mkdir(parents=True, exist_ok=True)
    questions = load_questions(args.qa_dir)
    pool = [r["question"] for records in questions.values() for r in records]
    random.Random(0).shuffle(pool)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    builds, speed, recalls, naive = [], [], {}, []
    for kind in args.retrievers.split(","):
        retriever, build_label = cached_index(args.corpus, kind, root)
        builds.append((kind, len(retriever.corpus), build_label))
        retriever.search(pool[:8], 3)  # warm-up
        with background_server(retriever) as url:
            client = HTTPRetriever(url)
            for batch_size in batch_sizes:
                for path, search in (("in-process", retriever.search), ("service", client.search)):
                    speed.append(
                        (
                            kind,
                            path,
                            batch_size,
                            time_batches(search, pool, batch_size, args.queries),
                        )
                    )
            sample = pool[:256]
            start = time.perf_counter()
            for query in sample:
                client.search([query], 3)
            one_by_one = len(sample) / (time.perf_counter() - start)
            start = time.perf_counter()
            client.search(sample, 3)
            batched = len(sample) / (time.perf_counter() - start)
            naive.append((kind, one_by_one, batched))
        recalls[kind] = recall_at_3(retriever, questions)

    print(
        f"corpus: {args.corpus} ({builds[0][1]} passages); "
        f"questions: {len(pool)} from {args.qa_dir}\n"
    )
    print("| retriever | passages | index build |\n|---|---:|---|")
    for kind, size, label in builds:
        print(f"| {kind} | {size} | {label} |")
    print(
        "\n| retriever | path | batch | queries/s | p50 ms | p99 ms |"
        "\n|---|---|---:|---:|---:|---:|"
    )
    for kind, path, batch_size, row in speed:
        print(
            f"| {kind} | {path} | {batch_size} | {row['qps']:.0f} | "
            f"{row['p50']:.1f} | {row['p99']:.1f} |"
        )
    print(
        "\n| retriever | one query per request (q/s) | one batched request of 256 (q/s) | ratio |"
    )
    print("|---|---:|---:|---:|")
    for kind, one_by_one, batched in naive:
        print(f"| {kind} | {one_by_one:.0f} | {batched:.0f} | {batched / one_by_one:.1f}x |")
    names = [*EMBEDDED_DATASETS, "average"]
    print("\nrecall@3 (% of questions with a gold answer string in the top 3 passages)\n")
    print("| retriever | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for kind, recall in recalls.items():
        print(f"| {kind} | " + " | ".join(f"{recall[name]:.1f}" for name in names) + " |")


if __name__ == "__main__":
    main()
