"""A train split and held-out sets of the shipped benchmarks, for RL on real questions.

Search-R1 and REX-RAG train on the NQ + HotpotQA training sets and report EM on the
test/dev sets of seven benchmarks. The package ships only evaluation subsets of them
(``rexrag_env/data/qa``), so a run on real questions trains on a part of those and is
scored on the rest:

- ``nq-hotpotqa/train``: the shipped NQ and HotpotQA questions except
  :data:`HELD_OUT_PER_TRAIN_BENCHMARK` of each, shuffled together (Search-R1's training
  mixture, ``nq_hotpotqa_train``, in small);
- ``heldout/<benchmark>``: for NQ and HotpotQA the held-out questions, for the other five
  the whole benchmark (never trained on).

Every split is shuffled with :data:`SPLIT_SEED`, so the first N questions of a held-out
set (``rexrag eval --limit N``) are a random sample of it, and it is the same file on
every machine. The files are written once into the cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path

from rexrag_env.embedded import EMBEDDED_DATASETS, embedded_dataset_path

#: The benchmarks training questions come from (Search-R1's training mixture).
TRAIN_BENCHMARKS: tuple[str, ...] = ("nq", "hotpotqa")
#: Questions of each training benchmark kept out of training.
HELD_OUT_PER_TRAIN_BENCHMARK = 200
SPLIT_SEED = 0
TRAIN_SPLIT = "nq-hotpotqa/train"
#: ``heldout/<benchmark>`` for the seven benchmarks, in the order of the paper's table.
HELD_OUT_SPLITS: tuple[str, ...] = tuple(f"heldout/{name}" for name in EMBEDDED_DATASETS)
SPLITS: tuple[str, ...] = (TRAIN_SPLIT, *HELD_OUT_SPLITS)
VERSION = "v1"  # bump when the split rule changes, so caches rebuild


def _shuffled_records(benchmark: str) -> list[dict]:
    lines = embedded_dataset_path(benchmark).read_text(encoding="utf-8").splitlines()
    records = [{**json.loads(line), "data_source": benchmark} for line in lines if line.strip()]
    random.Random(f"{SPLIT_SEED}-{benchmark}").shuffle(records)
    return records


def split_records() -> dict[str, list[dict]]:
    """Every split's records (the shipped records with their benchmark as ``data_source``)."""
    splits: dict[str, list[dict]] = {}
    train: list[dict] = []
    for benchmark in EMBEDDED_DATASETS:
        records = _shuffled_records(benchmark)
        if benchmark in TRAIN_BENCHMARKS:
            held_out = records[:HELD_OUT_PER_TRAIN_BENCHMARK]
            train += records[HELD_OUT_PER_TRAIN_BENCHMARK:]
        else:
            held_out = records
        splits[f"heldout/{benchmark}"] = held_out
    random.Random(f"{SPLIT_SEED}-train").shuffle(train)
    splits[TRAIN_SPLIT] = train
    return splits


@functools.cache
def _shipped_questions_digest() -> str:
    """A hash of the shipped question files (read once per process: every dataset name
    resolution asks for it, and an EnvRunner or an evaluation resolves several)."""
    sources = hashlib.sha1()
    for benchmark in EMBEDDED_DATASETS:
        sources.update(embedded_dataset_path(benchmark).read_bytes())
    return sources.hexdigest()[:10]


def split_path(split: str) -> Path:
    """The JSONL file of ``split`` (one of :data:`SPLITS`), written once into the cache."""
    from rexrag_env.cache import build_once, cache_dir

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def write(directory: Path) -> None:
        for name, records in split_records().items():
            path = directory / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records),
                encoding="utf-8",
            )

    key = f"seed{SPLIT_SEED}-{VERSION}-{_shipped_questions_digest()}"
    # named after the benchmark (heldout/nq.jsonl), as results and metrics are
    return build_once(cache_dir() / "splits" / key, write) / f"{split}.jsonl"
