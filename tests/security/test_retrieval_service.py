"""The retrieval service (issue 29 items 2 and 8): what one client can make it hold is
bounded, and it tells clients nothing about the machine it runs on."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import uvicorn

from agents.cli import main
from rexrag_env.retrieval.server import (
    MAX_ACTIVE_REQUESTS,
    MAX_PASSAGES_PER_REQUEST,
    MAX_REQUEST_BYTES,
    RequestLimits,
    background_app,
    background_server,
)
from tests.helpers import CountingRetriever


def post(url: str, body: bytes) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    return requests.post(url + "/retrieve", data=body, headers=headers, timeout=60)


def test_queries_times_topk_is_bounded():
    """The reproduction: 300 queries × topk 1000 (a 3 KB request) made a 230 MB answer."""
    retriever = CountingRetriever()
    with background_server(retriever) as url:
        body = json.dumps({"queries": [f"q{i}" for i in range(300)], "topk": 1000}).encode()
        response = post(url, body)
        assert response.status_code == 413
        assert str(MAX_PASSAGES_PER_REQUEST) in response.json()["detail"]
        # Search-R1's trainer batch (1024 prompts × 5 rollouts at topk 3) still passes
        batch = json.dumps({"queries": ["q"] * 5120, "topk": 3}).encode()
        assert post(url, batch).status_code == 200
    assert retriever.batch_sizes == [4096, 1024]  # the too-large request was never searched


def test_the_body_is_bounded_before_it_is_parsed():
    with background_server(CountingRetriever()) as url:
        huge = b'{"queries": ["' + b"x" * MAX_REQUEST_BYTES + b'"]}'
        response = post(url, huge)
        assert response.status_code == 413 and "exceeds" in response.json()["detail"]


def test_an_invalid_body_is_not_echoed():
    with background_server(CountingRetriever()) as url:
        body = json.dumps({"queries": [[f"payload-{i}"] for i in range(20_000)]}).encode()
        response = post(url, body)
    assert response.status_code == 422
    assert len(response.content) < 2_000 and b"payload-" not in response.content


def test_requests_in_progress_are_bounded():
    """Past the bound, requests wait (bodies unread) until one finishes."""
    state = {"now": 0, "most": 0}
    release = threading.Event()

    async def slow_app(scope, receive, send):
        await receive()
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        while not release.is_set():
            await asyncio.sleep(0.01)
        state["now"] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    limited = RequestLimits(slow_app, max_body_bytes=1000, max_active=2)
    with background_app(limited) as url, ThreadPoolExecutor(5) as pool:
        answers = [pool.submit(post, url, b"{}") for _ in range(5)]
        while state["most"] < 2:
            threading.Event().wait(0.05)
        threading.Event().wait(0.3)  # would let a third request in, were it unbounded
        assert state["most"] == 2
        release.set()
        assert [answer.result().status_code for answer in answers] == [200] * 5
    assert state["most"] == 2


def test_the_service_applies_the_bounds():
    from rexrag_env.retrieval.server import MAX_CONNECTIONS, _server_config, make_app

    app = make_app(CountingRetriever())
    (limits,) = [m for m in app.user_middleware if m.cls is RequestLimits]
    assert limits.kwargs == {"max_body_bytes": MAX_REQUEST_BYTES, "max_active": MAX_ACTIVE_REQUESTS}
    assert _server_config(app, "127.0.0.1", 0, "info").limit_concurrency == MAX_CONNECTIONS


def test_a_retriever_failure_is_a_generic_500_logged_on_the_server(caplog):
    class LeakyRetriever:
        def search(self, queries, k):
            raise RuntimeError("cannot read /home/alice/secret-index/data.npy")

    with background_server(LeakyRetriever()) as url, caplog.at_level(logging.ERROR):
        response = post(url, json.dumps({"queries": ["q"]}).encode())
    assert response.status_code == 500 and "/home/alice" not in response.text
    assert "/home/alice/secret-index" in caplog.text


def test_no_docs_no_schema_and_health_names_no_path():
    with background_server(CountingRetriever()) as url:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert requests.get(url + path, timeout=10).status_code == 404, path
        assert requests.get(url + "/health", timeout=10).json() == {
            "status": "ok",
            "num_passages": None,
        }


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--topk", "0"], "default topk 0"), (["--port", "70000"], "--port must be")],
)
def test_bad_startup_flags_are_refused(flags, message, capsys, monkeypatch):
    """`serve --topk 0` was accepted, then every request without topk was a 500."""

    def serve_forever(self):
        raise AssertionError("the service started with bad flags")

    monkeypatch.setattr(uvicorn.Server, "run", serve_forever)
    assert main(["serve", "--index", "bm25", *flags]) == 2
    assert message in capsys.readouterr().err
