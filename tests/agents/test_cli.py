"""The `rexrag` command, run in a subprocess as a user runs it."""

import json
import os
import subprocess
import sys

import pytest
import requests

from tests.helpers import needs_vllm

# every test runs `python -m agents.cli` in a subprocess: ~8 s of imports on 2 cores
pytestmark = pytest.mark.slow


def rexrag(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},  # hub names fail at once, as offline
    )


def test_index_then_search_json(tmp_path, hotpot_slice):
    built = rexrag(
        "index",
        "--corpus",
        str(hotpot_slice),
        "--retriever",
        "bm25",
        "--out",
        str(tmp_path / "idx"),
    )
    assert built.returncode == 0, built.stderr
    assert "indexed 250 passages with bm25" in built.stdout
    found = rexrag("search", "--index", str(tmp_path / "idx"), "-k", "2", "--json", "Neil Peart")
    assert found.returncode == 0, found.stderr
    record = json.loads(found.stdout)
    assert record["query"] == "Neil Peart" and len(record["passages"]) == 2


def test_search_prints_the_agents_view_of_the_shipped_corpus():
    found = rexrag("search", "Neil Peart drummer")
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("# Neil Peart drummer\nDoc 1(Title: ")


@needs_vllm
def test_eval_on_the_vllm_backend_scores_as_hf(tmp_path, answering_model_dir, capital_task):
    """Greedy decoding is one answer per question: vLLM's engine and transformers give
    the same records under the same protocol."""
    summaries = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        result = rexrag(
            "eval",
            "--agent",
            "llm",
            "--model",
            str(answering_model_dir),
            "--backend",
            backend,
            "--datasets",
            str(capital_task),
            "--limit",
            "4",
            "--out",
            str(out),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        summaries[backend] = json.loads((out / "summary.json").read_text())
        records = [json.loads(line) for line in (out / "capitals.jsonl").read_text().splitlines()]
        summaries[backend]["answers"] = [record["prediction"] for record in records]
    assert summaries["vllm"] == summaries["hf"]
    assert summaries["hf"]["capitals"]["n"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "--corpus", "/no/such.jsonl", "--out", "/tmp/x"], "does not exist"),
        (["search", "--index", "/no/such/dir", "q"], "is not one of"),
        (["search", "--index", "http://127.0.0.1:9", "q"], "unavailable"),
    ],
)
def test_errors_are_one_clear_line(args, message):
    result = rexrag(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_quickstart_runs_the_main_job(tmp_path):
    result = rexrag("quickstart", "--limit", "20", "--train-iters", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "SearchOnceAgent on 20 hotpotqa questions" in result.stdout
    assert "em=" in result.stdout
    assert "iter 2/2" in result.stdout and "accuracy of originals" in result.stdout
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "baseline" / "summary.json").read_text())["hotpotqa"]["n"] == 20
    train = run / "train"
    assert (train / "metrics.csv").is_file() and (train / "iteration_000002" / "policy").is_dir()


def test_serve_binds_loopback_by_default_and_answers(free_port):
    import time

    from rexrag_env.retrieval.client import HTTPRetriever

    port = free_port
    server = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "serve", "--port", str(port), "--topk", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = HTTPRetriever(f"http://127.0.0.1:{port}", timeout=5, max_retries=0)
        deadline = time.time() + 120
        while True:
            try:
                assert client.health()["status"] == "ok"
                break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        assert len(client.search(["Neil Peart"], 3)[0]) == 3
        unset = requests.post(  # as Search-R1's trainer sends it: the service's --topk
            f"http://127.0.0.1:{port}/retrieve", json={"queries": ["Neil"], "topk": None}
        )
        assert len(unset.json()["result"][0]) == 2
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"on http://127.0.0.1:{port}/retrieve" in output


def test_eval_command_writes_records_and_table(tmp_path):
    out = tmp_path / "eval"
    result = rexrag(
        "eval",
        "--agent",
        "no-search",
        "--datasets",
        "bamboogle,nq",
        "--limit",
        "5",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "protocol: retriever=bm25 top-k=3" in result.stdout
    assert "| em |" in result.stdout and (out / "summary.md").is_file()
    assert len((out / "nq.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--agent", "gpt-9"], "invalid choice"),
        (["eval", "--datasets", "nosuchset", "--limit", "1"], "neither a named dataset"),
        (["eval", "--agent", "llm", "--limit", "1"], "needs a model (--model)"),
        (
            ["eval", "--agent", "llm", "--model", "/no/such/model", "--limit", "1"],
            "no such directory",
        ),
        (["eval", "--agent", "llm", "--model", "someone/uncached", "--limit", "1"], "offline, use"),
    ],
)
def test_eval_bad_input(tmp_path, args, message):
    result = rexrag(*args, "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
