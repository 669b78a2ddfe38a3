"""The evaluation harness: pinned protocol, per-question records, resumable runs."""

import json

import pytest

from agents.base import SequentialAgents
from agents.evaluation import EvalProtocol, evaluate, read_records
from agents.scripted import OracleAgent, SearchOnceAgent

PROTOCOL = EvalProtocol(datasets=("bamboogle", "musique"), limit=6)


def run(agent, protocol, out, **options):
    """The harness, quietly."""
    return evaluate(agent, protocol, out, progress=False, log=lambda _: None, **options)


class CrashingAgents(SequentialAgents):
    """Plays `budget` episodes, then dies like a killed process would."""

    def __init__(self, budget):
        super().__init__(OracleAgent)
        self.budget = budget

    def play(self, envs, options):
        if self.budget < len(options):
            raise KeyboardInterrupt
        self.budget -= len(options)
        return super().play(envs, options)


class CountingAgents(SequentialAgents):
    def __init__(self):
        super().__init__(OracleAgent)
        self.played = []

    def play(self, envs, options):
        self.played += [option["example"].id for option in options]
        return super().play(envs, options)


def test_records_and_summary(tmp_path, bm25_retriever):
    summary = run(SequentialAgents(SearchOnceAgent), PROTOCOL, tmp_path, batch_size=4)
    records = read_records(tmp_path / "bamboogle.jsonl")
    assert len(records) == 6
    record = records[0]
    assert {
        "id",
        "question",
        "golden_answers",
        "prediction",
        "em",
        "f1",
        "cover_em",
        "sub_em",
        "num_searches",
        "turns",
        "trajectory",
    } <= set(record)
    assert (
        record["trajectory"].startswith("Answer the given question.")
        and "<information>" in record["trajectory"]
    )
    assert summary["bamboogle"]["em"] == pytest.approx(100 * sum(r["em"] for r in records) / 6)
    assert summary["average"]["n"] == 12
    assert list(summary) == ["bamboogle", "musique", "average"]
    table = (tmp_path / "summary.md").read_text()
    assert "protocol: retriever=bm25 top-k=3 max_turns=5+1" in table and "| em |" in table


def test_interrupted_run_resumes_without_losing_or_repeating(tmp_path, bm25_retriever):
    with pytest.raises(KeyboardInterrupt):
        run(CrashingAgents(budget=4), PROTOCOL, tmp_path, batch_size=2)
    kept = read_records(tmp_path / "bamboogle.jsonl")
    assert len(kept) == 4
    # a torn line from the crash is dropped and its question redone
    with (tmp_path / "bamboogle.jsonl").open("a") as handle:
        handle.write('{"id": "torn", "em": ')
    agents = CountingAgents()
    summary = run(agents, PROTOCOL, tmp_path, batch_size=2)
    assert len(agents.played) == 2 + 6  # the rest of bamboogle, all of musique
    assert not set(agents.played) & {r["id"] for r in kept}
    records = read_records(tmp_path / "bamboogle.jsonl")
    assert [r["id"] for r in records[:4]] == [r["id"] for r in kept] and len(records) == 6
    assert summary["bamboogle"]["em"] == 100.0


def test_another_protocol_in_the_same_directory_is_refused(tmp_path, bm25_retriever):
    run(SequentialAgents(OracleAgent), PROTOCOL, tmp_path)
    other = EvalProtocol(datasets=PROTOCOL.datasets, limit=6, topk=5)
    with pytest.raises(ValueError, match="another protocol"):
        run(SequentialAgents(OracleAgent), other, tmp_path)


def test_corrupt_middle_line_is_an_error_not_silently_dropped(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n{broken\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(ValueError, match="line 2 is corrupt"):
        read_records(path)
