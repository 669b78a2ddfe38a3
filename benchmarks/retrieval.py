"""Retrieval speed and quality over the corpus and questions shipped in the package.

    python benchmarks/retrieval.py [--retrievers bm25,dense] [--batch-sizes 1,16,256]
        [--corpus my_corpus.jsonl] [--datasets nq,hotpotqa,my_questions.jsonl]

Runs from a fresh clone: by default the corpus is the shipped one (23k wiki-18
passages) and the questions are the seven shipped benchmarks; ``--corpus`` and
``--datasets`` (names or JSONL/parquet files, as ``load_qa_dataset`` takes them) point
it at your own. Prints, for BM25 and dense (packaged MiniLM + flat FAISS):

- index build time (indexes are cached between runs; a cached index reports the build
  time measured when it was built);
- BM25 against its own scorer, side by side in one run (the target: the retriever
  keeps >= 0.8 of raw scoring's queries/s at batch 256). "Raw bm25s scoring" is
  ``bm25s.BM25.retrieve`` on query token ids tokenised beforehand (not timed), on the
  retriever's own loaded index (numba backend), with the same ``k`` and ``n_threads``:
  it returns row numbers and scores only. The retriever is timed on the query strings,
  for everything a caller gets: tokenising, scoring and the passages (id, contents,
  score).
  Tokenising is left out of the raw side because it is Python work done per query, and
  the question is how much such work adds to the compiled scorer; a second ratio, to
  raw scoring plus tokenising (with the retriever's tokenizer), says what the rest
  adds. Each row is the median of several repeats on questions the retriever has not
  searched: batch sizes 1, 16 and 256, and a GRPO-like batch of 52 distinct questions
  x 5 rollouts, which the retriever scores once per distinct text;
- queries/s and p50/p99 latency of one ``search`` call for batch sizes 1, 16 and 256,
  in process and through the HTTP service on loopback;
- a same-run baseline: the same queries sent one per request (how a naive client uses
  a retrieval server) against one batched request, and their ratio;
- recall@3 per benchmark: a gold answer string (SQuAD-normalised, whole tokens) occurs
  in one of the top 3 passages.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rexrag_env.cache import cache_dir, file_fingerprint
from rexrag_env.datasets import QAExample, load_qa_dataset
from rexrag_env.embedded import EMBEDDED_DATASETS, embedded_corpus_path
from rexrag_env.retrieval.base import Retriever
from rexrag_env.retrieval.bm25 import BM25Retriever
from rexrag_env.retrieval.client import HTTPRetriever
from rexrag_env.retrieval.index import build_index, load_retriever
from rexrag_env.retrieval.server import background_server
from rexrag_env.reward import normalize_answer

TOPK = 3
#: The side-by-side target: the retriever keeps this share of raw scoring's queries/s.
TARGET_RATIO = 0.8
TARGET_BATCH = 256
#: A GRPO turn: this many distinct questions, each searched by a group of rollouts.
GROUP_QUESTIONS, GROUP_SIZE = 52, 5


def load_questions(datasets: list[str]) -> dict[str, list[QAExample]]:
    """Each dataset's questions, under its name (or its file's stem)."""
    return {
        name if name in EMBEDDED_DATASETS else Path(name).stem: load_qa_dataset(name)
        for name in datasets
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


def queries_per_second(call: Callable[[list], object], batches: list[list]) -> float:
    """Queries/s of one ``call`` per batch, over all ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        call(batch)
    return sum(len(batch) for batch in batches) / (time.perf_counter() - start)


def group_batch(fresh: Iterator[str], batch_size: int, distinct: int) -> list[str]:
    """``distinct`` new questions, each ``batch_size // distinct`` times in a row, as the
    rollouts of a GRPO group search their question."""
    return [
        question
        for question in itertools.islice(fresh, distinct)
        for _ in range(batch_size // distinct)
    ]


def raw_vs_retriever(retriever: BM25Retriever, repeats: list[list[list[str]]]) -> dict[str, float]:
    """Median queries/s over the same batches (a list of batches per repeat) of raw bm25s
    scoring, of bm25s tokenising + scoring, and of ``retriever.search``; and the medians of
    the retriever's per-repeat ratios to both (paired, so that load on the machine during
    one repeat weighs on both sides)."""

    def raw_scoring(token_ids: list[list[int]]) -> object:
        return retriever.index.retrieve(
            token_ids, k=TOPK, show_progress=False, n_threads=retriever.num_threads
        )

    def tokenised(batch: list[str]) -> list[list[int]]:
        # As the retriever tokenises: a stream skips the hidden progress bar of the list.
        return list(retriever.tokenizer.tokenize(batch, update_vocab=False, return_as="stream"))

    timings = {"raw": [], "raw_tokenising": [], "ours": []}
    for batches in repeats:
        # The retriever goes first, so that the raw sides' tokenising cannot warm the
        # tokenizer's word memo for it (the raw sides only gain from going after it).
        timings["ours"].append(
            queries_per_second(lambda batch: retriever.search(batch, TOPK), batches)
        )
        token_ids = [tokenised(batch) for batch in batches]
        timings["raw"].append(queries_per_second(raw_scoring, token_ids))
        timings["raw_tokenising"].append(
            queries_per_second(lambda batch: raw_scoring(tokenised(batch)), batches)
        )
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name in ("raw", "raw_tokenising"):
        pairs = zip(timings["ours"], timings[name], strict=True)
        medians[f"ratio_{name}"] = statistics.median(ours / raw for ours, raw in pairs)
    return medians


def bm25_versus_scorer(
    retriever: BM25Retriever, questions: list[str], batch_sizes: list[int], repeats: int
) -> list[tuple[int, str, dict[str, float]]]:
    """The side-by-side table's rows, each timed on ``repeats`` x 128 questions (or one
    batch) the retriever has not searched: every batch size, then the GRPO-like batch."""
    fresh = itertools.cycle(questions)
    grpo_size = GROUP_QUESTIONS * GROUP_SIZE
    needed = repeats * (sum(max(1, 128 // size) * size for size in batch_sizes) + GROUP_QUESTIONS)
    new = "new" if needed <= len(questions) else "cycled"

    def timed(size: int, distinct: int) -> dict[str, float]:
        count = max(1, 128 // size)  # batches a repeat
        batches = [
            [group_batch(fresh, size, distinct) for _ in range(count)] for _ in range(repeats)
        ]
        return raw_vs_retriever(retriever, batches)

    rows = [(size, f"{size} {new}", timed(size, size)) for size in batch_sizes]
    label = f"{GROUP_QUESTIONS} {new} x {GROUP_SIZE}"
    rows.append((grpo_size, label, timed(grpo_size, GROUP_QUESTIONS)))
    return rows


def print_versus(num_threads: int, rows: list[tuple[int, str, dict[str, float]]]) -> None:
    print(
        f"\nBM25 against its own scorer, side by side (k={TOPK}, n_threads={num_threads}, numba "
        "backend; medians of the repeats)\n"
        "- raw bm25s scoring: bm25s.BM25.retrieve on token ids tokenised beforehand "
        "(not timed), the retriever's own index; returns row numbers and scores\n"
        "- + tokenising: the same, timed with the retriever's bm25s tokenizer turning the "
        "strings into ids\n"
        "- our retriever: BM25Retriever.search on the query strings: tokenising, scoring, "
        "passages (id, contents, score)\n"
        '- "new": questions the retriever has not searched before ("cycled": the question '
        "pool ran out, so some were)\n"
    )
    print(
        "| batch | queries | raw bm25s scoring (q/s) | + tokenising (q/s) "
        "| our retriever (q/s) | ratio to raw scoring | ratio to + tokenising |"
        "\n|---:|---|---:|---:|---:|---:|---:|"
    )
    for size, label, row in rows:
        print(
            f"| {size} | {label} | {row['raw']:.0f} | {row['raw_tokenising']:.0f} "
            f"| {row['ours']:.0f} | {row['ratio_raw']:.2f} | {row['ratio_raw_tokenising']:.2f} |"
        )
    for size, _, row in rows:
        if size == TARGET_BATCH:
            verdict = "met" if row["ratio_raw"] >= TARGET_RATIO else "NOT met"
            print(
                f"target: ratio to raw scoring >= {TARGET_RATIO} at batch {size}: "
                f"{row['ratio_raw']:.2f}, {verdict}"
            )


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
        search(batch, TOPK)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return {
        "qps": count * batch_size / sum(latencies),
        "p50": 1000 * statistics.median(latencies),
        "p99": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
    }


def recall_at_3(retriever: Retriever, questions: dict[str, list[QAExample]]) -> dict[str, float]:
    recall = {}
    for name, examples in questions.items():
        results = retriever.search([example.question for example in examples], TOPK)
        hits = 0
        for example, passages in zip(examples, results, strict=True):
            text = " " + " ".join(normalize_answer(p.contents) for p in passages) + " "
            golds = [normalize_answer(g) for g in example.golden_answers]
            hits += any(g and f" {g} " in text for g in golds)
        recall[name] = 100 * hits / len(examples)
    recall["average"] = statistics.mean(recall.values())
    return recall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=embedded_corpus_path())
    parser.add_argument(
        "--datasets",
        default=",".join(EMBEDDED_DATASETS),
        help="question sets: shipped benchmark names or JSONL/parquet files, comma-separated",
    )
    parser.add_argument("--retrievers", default="bm25,dense")
    parser.add_argument("--batch-sizes", default="1,16,256")
    parser.add_argument(
        "--queries", type=int, default=512, help="queries timed per batch size and path"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="repeats of the BM25-vs-scorer table (median)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="where built indexes are kept")
    args = parser.parse_args()

    root = args.cache_dir or (
        cache_dir() / "bench-indexes" / f"{args.corpus.name}-{file_fingerprint(args.corpus)}"
    )
    root.mkdir(parents=True, exist_ok=True)
    questions = load_questions(args.datasets.split(","))
    pool = list(dict.fromkeys(e.question for examples in questions.values() for e in examples))
    random.Random(0).shuffle(pool)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    builds, speed, recalls, naive, versus = [], [], {}, [], None
    for kind in args.retrievers.split(","):
        retriever, build_label = cached_index(args.corpus, kind, root)
        builds.append((kind, len(retriever.corpus), build_label))
        retriever.search(pool[:8], TOPK)  # warm-up (loads or compiles bm25s's scorer)
        if isinstance(retriever, BM25Retriever):
            # First, while the questions are new to the retriever: the later tables and
            # the recall pass teach its tokenizer all of their words.
            rows = bm25_versus_scorer(retriever, pool[8:], batch_sizes, args.repeats)
            versus = (retriever.num_threads, rows)
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
                client.search([query], TOPK)
            one_by_one = len(sample) / (time.perf_counter() - start)
            start = time.perf_counter()
            client.search(sample, TOPK)
            batched = len(sample) / (time.perf_counter() - start)
            naive.append((kind, one_by_one, batched))
        recalls[kind] = recall_at_3(retriever, questions)

    print(
        f"corpus: {args.corpus} ({builds[0][1]} passages); {len(pool)} distinct questions "
        f"from {args.datasets}\n"
    )
    print("| retriever | passages | index build |\n|---|---:|---|")
    for kind, size, label in builds:
        print(f"| {kind} | {size} | {label} |")
    if versus:
        print_versus(*versus)
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
    names = [*questions, "average"]
    print("\nrecall@3 (% of questions with a gold answer string in the top 3 passages)\n")
    print("| retriever | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for kind, recall in recalls.items():
        print(f"| {kind} | " + " | ".join(f"{recall[name]:.1f}" for name in names) + " |")


if __name__ == "__main__":
    main()
