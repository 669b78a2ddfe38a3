"""The retrieval service and its client over real HTTP on loopback."""

import json

import pytest
import requests

from rexrag_env.retrieval.base import RetrievalError, RetrieverUnavailableError
from rexrag_env.retrieval.client import HTTPRetriever
from rexrag_env.retrieval.server import (
    MAX_QUERIES_PER_REQUEST,
    SEARCH_CHUNK,
    background_app,
    background_server,
)


@pytest.fixture(scope="module")
def service(bm25_retriever):
    with background_server(bm25_retriever, description={"index": "bm25"}) as url:
        yield url


def test_health(service):
    assert service.startswith("http://127.0.0.1:")
    health = HTTPRetriever(service).health()
    assert health == {"status": "ok", "num_passages": 23236, "index": "bm25"}


def test_client_results_equal_in_process_results(service, bm25_retriever):
    queries = ["Neil Peart drummer", "Tottenham Hotspur nickname", "ünïcödé ✓ query"]
    remote = HTTPRetriever(service + "/retrieve").search(queries, 4)
    local = bm25_retriever.search(queries, 4)
    assert [[(p.id, p.contents) for p in r] for r in remote] == [
        [(p.id, p.contents) for p in r] for r in local
    ]
    assert [p.score for p in remote[0]] == pytest.approx([p.score for p in local[0]])


def test_search_r1_wire_format(service):
    body = {"queries": ["Neil Peart"], "topk": 2, "return_scores": True}
    result = requests.post(service + "/retrieve", json=body, timeout=10).json()["result"]
    assert len(result) == 1 and len(result[0]) == 2
    assert set(result[0][0]) == {"document", "score"}
    assert set(result[0][0]["document"]) == {"id", "contents"}
    plain = requests.post(
        service + "/retrieve", json={"queries": ["Neil Peart"]}, timeout=10
    ).json()
    assert len(plain["result"][0]) == 3 and set(plain["result"][0][0]) == {"id", "contents"}


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 422),
        (b"[]", 422),
        (b'{"topk": 3}', 422),
        (b'{"queries": "one string"}', 422),
        (b'{"queries": ["a", 5]}', 422),
        (b'{"queries": ["a"], "topk": 0}', 422),
        (b'{"queries": ["a"], "topk": 100000}', 422),
        (json.dumps({"queries": ["x" * 10_000]}).encode(), 422),
        (json.dumps({"queries": ["q"] * (MAX_QUERIES_PER_REQUEST + 1)}).encode(), 413),
    ],
)
def test_bad_requests_get_4xx_and_the_service_survives(service, payload, status):
    response = requests.post(
        service + "/retrieve",
        data=payload,
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status
    assert response.json()["detail"]
    assert HTTPRetriever(service).health()["status"] == "ok"


def test_topk_above_corpus_size_is_rejected():
    class TinyCorpusRetriever:
        corpus = ("only", "two")

        def search(self, queries, k):
            raise AssertionError("must not be called")

    with background_server(TinyCorpusRetriever(), default_topk=1) as url:
        response = requests.post(url + "/retrieve", json={"queries": ["a"], "topk": 3}, timeout=10)
    assert response.status_code == 422 and "corpus size (2)" in response.json()["detail"]


def test_client_reports_4xx_without_retrying(service):
    with pytest.raises(RetrievalError, match="rejected the request"):
        HTTPRetriever(service, max_retries=5, backoff=10.0).search(["x" * 10_000], 3)


def test_service_down_is_a_clear_error_naming_the_url(free_port):
    url = f"http://127.0.0.1:{free_port}"
    client = HTTPRetriever(url, timeout=1.0, max_retries=2, backoff=0.01)
    with pytest.raises(
        RetrieverUnavailableError, match=rf"{url}/retrieve is unavailable after 3 attempts"
    ):
        client.search(["q"], 3)
    with pytest.raises(RetrieverUnavailableError, match="rexrag serve"):
        client.health()


def test_backend_failure_is_a_500_and_the_client_retries_then_gives_up():
    class BrokenRetriever:
        calls = 0

        def search(self, queries, k):
            BrokenRetriever.calls += 1
            raise RuntimeError("index file vanished")

    with background_server(BrokenRetriever()) as url:
        client = HTTPRetriever(url, max_retries=1, backoff=0.01)
        with pytest.raises(RetrieverUnavailableError, match="the retriever failed"):
            client.search(["q"], 3)
        assert BrokenRetriever.calls == 2
        assert client.health()["status"] == "ok"


def test_garbage_answer_is_a_clear_error():
    class WrongCountRetriever:
        def search(self, queries, k):
            return []  # no result list at all

    with (
        background_server(WrongCountRetriever()) as url,
        pytest.raises(RetrievalError, match="malformed"),
    ):
        HTTPRetriever(url).search(["q"], 3)


def test_env_works_through_the_service(service):
    import rexrag_env

    env = rexrag_env.SearchQAEnv(dataset="hotpotqa", retriever=service)
    env.reset(seed=1)
    obs, *_ = env.step("<search>Neil Peart</search>")
    assert "Neil Peart" in obs


class CountingRetriever:
    """Answers every query with its own text, ``k`` times; records each call's size."""

    def __init__(self):
        self.calls: list[int] = []

    def search(self, queries, k):
        from rexrag_env.retrieval.base import Passage

        self.calls.append(len(queries))
        return [[Passage(str(rank), query, 1.0) for rank in range(k)] for query in queries]


def test_search_r1_trainers_requests_are_served():
    """What Search-R1's and REX-RAG's trainers send: an empty list on a turn where no
    rollout searched (they then read ``result``), ``topk: null``, and a whole batch of
    1024 prompts × 5 rollouts in one request (searched in chunks)."""
    retriever = CountingRetriever()
    with background_server(retriever, default_topk=2) as url:
        post = lambda body: requests.post(url + "/retrieve", json=body, timeout=60)  # noqa: E731
        assert post({"queries": [], "topk": 3, "return_scores": True}).json() == {"result": []}
        assert retriever.calls == []
        unset = post({"queries": ["a"], "topk": None, "return_scores": True}).json()["result"]
        assert len(unset[0]) == 2  # the service's default
        batch = [f"query {i}" for i in range(1024 * 5)]
        result = post({"queries": batch, "topk": 3, "return_scores": True}).json()["result"]
    assert [ranked[0]["document"]["contents"] for ranked in result] == batch
    assert retriever.calls[1:] == [SEARCH_CHUNK, len(batch) - SEARCH_CHUNK]


def _search_r1_shaped_service(shape: str):
    """A service answering as one of Search-R1's servers does (shapes from its
    documented formats: the dense/BM25 server, BM25 over raw-stored documents without
    ids, the web-search servers without ids or scores, a server ignoring return_scores)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/retrieve")
    def retrieve(body: dict) -> dict:
        def item(query: str, rank: int) -> dict:
            contents = f'"{query}"\npassage {rank}'
            return {
                "dense": {"document": {"id": str(rank), "contents": contents}, "score": 0.5},
                "raw_bm25": {"document": {"contents": contents}, "score": 0.5},
                "web": {"document": {"contents": contents}},
                "bare": {"id": str(rank), "contents": contents},
            }[shape]

        return {"result": [[item(q, r) for r in range(body["topk"])] for q in body["queries"]]}

    return background_app(app)


@pytest.mark.parametrize("shape", ["dense", "raw_bm25", "web", "bare"])
def test_client_reads_every_search_r1_answer_shape(shape):
    with _search_r1_shaped_service(shape) as url:
        (ranked,) = HTTPRetriever(url).search(["who wrote it"], 2)
    assert [p.contents for p in ranked] == [
        '"who wrote it"\npassage 0',
        '"who wrote it"\npassage 1',
    ]
    assert [p.id for p in ranked] == (["0", "1"] if shape in ("dense", "bare") else ["", ""])
    assert [p.score for p in ranked] == ([0.5, 0.5] if shape in ("dense", "raw_bm25") else [0, 0])


def search_r1_batch_search(url: str, queries: list[str], topk: int) -> list[str]:
    """Search-R1's trainer-side search (its ``_batch_search`` + ``_passages2string``),
    written from its documented behaviour: one POST with scores, then per query
    ``Doc {i}(Title: {first line}) {rest}`` lines from ``document.contents``."""
    body = {"queries": queries, "topk": topk, "return_scores": True}
    results = requests.post(url + "/retrieve", json=body, timeout=30).json()["result"]

    def passages_to_string(result: list[dict]) -> str:
        text = ""
        for index, item in enumerate(result):
            lines = item["document"]["contents"].split("\n")
            text += f"Doc {index + 1}(Title: {lines[0]}) {chr(10).join(lines[1:])}\n"
        return text

    return [passages_to_string(result) for result in results]


def test_search_r1_trainer_reads_what_our_env_shows(service, bm25_retriever):
    """A Search-R1 trainer pointed at ``rexrag serve`` builds the same information text
    that our environment puts in the observation."""
    from rexrag_env.protocol import format_passages

    queries = ["Neil Peart drummer", "Tottenham Hotspur nickname"]
    theirs = search_r1_batch_search(service, queries, 3)
    ours = [format_passages(passages) for passages in bm25_retriever.search(queries, 3)]
    assert theirs == ours
