"""A warm start on real questions: SmolLM2 fine-tuned to search, read and answer with a span.

Zero-shot, SmolLM2-135M-Instruct does not follow the tag protocol (almost every turn
is an invalid action; docs/results.md), so RL on real questions starts, as R1-style
pipelines do, from an SFT checkpoint. Its demonstrations are played by
:class:`~agents.scripted.PassageReaderAgent` on the ``nq-hotpotqa/train`` split
(:mod:`rexrag_env.splits`) with BM25 over the shipped corpus: search the question (and,
for a multi-hop question whose answer is not in the passages, a supporting title),
quote the passage that holds a gold answer, answer with the span as it is written
there. Only episodes that end right are kept, so the policy learns to answer from what
it read, never to guess: where retrieval fails it has no demonstration, and what it
does there is RL's to shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from agents.scripted import PassageReaderAgent
from agents.trajectory import Trajectory
from agents.warm_start.sft import collect_demonstrations
from agents.warm_start.store import digest
from rexrag_env.retrieval.bm25 import RANKING_VERSION
from rexrag_env.splits import TRAIN_SPLIT
from rexrag_env.splits import VERSION as SPLITS_VERSION


@dataclass(frozen=True)
class RealQAWarmStart:
    """How the real-question warm start is made; every field is part of its cache key.

    ``max_turns``, ``topk`` and ``max_observation_tokens`` are the protocol the
    demonstrations are played under; a preset that trains this policy uses the same
    (a test pins it). ``questions`` bounds how many training questions are played
    (None: all of them).
    """

    base: str = "smollm2-135m"
    steps: int = 24
    lr: float = 1e-4
    batch_size: int = 8
    max_turns: int = 3
    topk: int = 3
    max_observation_tokens: int = 500
    questions: int | None = None
    seed: int = 0

    def key(self) -> str:
        """A short hash of the recipe, the demonstrator (what the actions say), the
        ranking (the demonstrations show BM25's passages) and the split rule (which
        questions are demonstrated)."""
        return digest(
            {
                "recipe": asdict(self),
                "demonstrator": PassageReaderAgent.VERSION,
                "ranking": RANKING_VERSION,
                "splits": SPLITS_VERSION,
            }
        )

    def demonstrations(self, tokenizer, dataset: str | None = None) -> list[Trajectory]:
        """The correct episodes of the passage reader on ``dataset`` (default
        ``nq-hotpotqa/train``), as token demonstrations."""
        from rexrag_env.datasets import load_qa_dataset
        from rexrag_env.env import SearchQAEnv

        examples = load_qa_dataset(dataset or TRAIN_SPLIT)[: self.questions]
        env = SearchQAEnv(examples, retriever="bm25", max_turns=self.max_turns, topk=self.topk)
        played = collect_demonstrations(
            env,
            lambda _rng: PassageReaderAgent(),
            tokenizer,
            seed=self.seed,
            max_observation_tokens=self.max_observation_tokens,
        )
        return [demonstration for demonstration in played if demonstration.correct]
