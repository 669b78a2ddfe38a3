"""The retrieval service: a Search-R1-compatible HTTP front for any :class:`Retriever`.

``POST /retrieve`` takes ``{"queries": [...], "topk": 3, "return_scores": true}`` and
answers ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (with
``return_scores`` false, each inner item is the bare document), so Search-R1 and
REX-RAG clients work against it unchanged. As their trainers expect, an empty
``queries`` list (a turn in which no rollout searched) answers ``{"result": []}``,
``"topk": null`` means the service's default (``rexrag serve --topk``), and a whole
training batch of queries (1024 prompts × 5 rollouts) is one request, searched in
chunks. ``GET /health`` says what is served. Bad requests get a 4xx with a message; a
retriever failure gets a 500; the process keeps serving either way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from rexrag_env.protocol import DEFAULT_TOPK
from rexrag_env.retrieval.base import Retriever

#: Queries one request may carry: 16 × the largest batch the official trainers send
#: (1024 prompts × 5 rollouts); more gets HTTP 413 naming this bound.
MAX_QUERIES_PER_REQUEST = 81920
#: Queries per retriever call: a large request is searched in chunks of this size, so
#: its working memory stays bounded and other requests interleave between chunks.
SEARCH_CHUNK = 4096
MAX_QUERY_CHARS = 8192
MAX_TOPK = 1000


class RetrieveRequest(BaseModel):
    """Body of ``POST /retrieve`` (Search-R1's field names; ``topk`` null or absent: the
    service's default)."""

    queries: list[str]
    topk: int | None = Field(default=None, ge=1, le=MAX_TOPK)
    return_scores: bool = False


def make_app(
    retriever: Retriever, description: dict | None = None, default_topk: int = DEFAULT_TOPK
) -> FastAPI:
    """A FastAPI app serving ``retriever``; ``description`` is echoed by ``/health``;
    ``default_topk`` answers requests that give no ``topk``."""
    app = FastAPI(title="rexrag retrieval service")
    # Retrievers hold encoders and indexes that are not all safe to call from many
    # threads at once; clients get throughput by batching queries, not by concurrency.
    lock = threading.Lock()
    num_passages = len(retriever.corpus) if hasattr(retriever, "corpus") else None

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "num_passages": num_passages, **(description or {})}

    @app.post("/retrieve")
    def retrieve(request: RetrieveRequest) -> dict:
        topk = default_topk if request.topk is None else request.topk
        if len(request.queries) > MAX_QUERIES_PER_REQUEST:
            raise HTTPException(
                413,
                f"{len(request.queries)} queries exceed the limit of "
                f"{MAX_QUERIES_PER_REQUEST} per request: send the batch in parts",
            )
        if num_passages is not None and topk > num_passages:
            raise HTTPException(422, f"topk={topk} exceeds the corpus size ({num_passages})")
        too_long = [i for i, query in enumerate(request.queries) if len(query) > MAX_QUERY_CHARS]
        if too_long:
            raise HTTPException(
                422, f"queries {too_long[:5]} are longer than {MAX_QUERY_CHARS} characters"
            )
        results = []
        try:
            for start in range(0, len(request.queries), SEARCH_CHUNK):
                with lock:
                    results += retriever.search(request.queries[start : start + SEARCH_CHUNK], topk)
        except Exception as error:  # the service must outlive a failing backend
            raise HTTPException(
                500, f"retriever failed: {type(error).__name__}: {error}"
            ) from error
        documents = [
            [
                (
                    {"document": {"id": p.id, "contents": p.contents}, "score": p.score}
                    if request.return_scores
                    else {"id": p.id, "contents": p.contents}
                )
                for p in passages
            ]
            for passages in results
        ]
        return {"result": documents}

    return app


def serve(
    retriever: Retriever,
    host: str = "127.0.0.1",
    port: int = 8000,
    description: dict | None = None,
    default_topk: int = DEFAULT_TOPK,
) -> None:
    """Serve until interrupted. Binds loopback unless another host is asked for."""
    app = make_app(retriever, description, default_topk)
    uvicorn.run(app, host=host, port=port, log_level="info")


@contextmanager
def background_app(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run any ASGI ``app`` in a thread for the duration of a ``with`` block; yields its URL.

    ``port=0`` takes a free port. Used by tests and benchmarks, and handy in notebooks.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="rexrag-background-server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"server failed to start on {host}:{port}")
        thread.join(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def background_server(
    retriever: Retriever,
    host: str = "127.0.0.1",
    port: int = 0,
    description: dict | None = None,
    default_topk: int = DEFAULT_TOPK,
):
    """The retrieval service for ``retriever`` in a thread (see :func:`background_app`)."""
    return background_app(make_app(retriever, description, default_topk), host, port)
