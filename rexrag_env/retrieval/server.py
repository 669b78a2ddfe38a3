"""The retrieval service: a Search-R1-compatible HTTP front for any :class:`Retriever`.

``POST /retrieve`` takes ``{"queries": [...], "topk": 3, "return_scores": true}`` and
answers ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (with
``return_scores`` false, each inner item is the bare document), so Search-R1 and
REX-RAG clients work against it unchanged. As their trainers expect, an empty
``queries`` list (a turn in which no rollout searched) answers ``{"result": []}``,
``"topk": null`` means the service's default (``rexrag serve --topk``), and a whole
training batch of queries (1024 prompts × 5 rollouts) is one request, searched in
chunks. ``GET /health`` says the service is up and how many passages it serves (never
where they come from). Bad requests get a 4xx with a short message (never the body
echoed back); a retriever failure gets a generic 500, its details in the server's
log; the process keeps serving either way.

What one client can make the service hold is bounded: a body of at most
:data:`MAX_REQUEST_BYTES`, at most :data:`MAX_PASSAGES_PER_REQUEST` passages (queries ×
topk) in an answer, :data:`MAX_ACTIVE_REQUESTS` requests read and answered at once
(the others wait, unread) and :data:`MAX_CONNECTIONS` open connections (more get 503,
which clients retry). There is no ``/docs`` or ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from rexrag_env.protocol import DEFAULT_TOPK
from rexrag_env.retrieval.base import Retriever

#: Queries one request may carry: 16 × the largest batch the official trainers send
#: (1024 prompts × 5 rollouts); more gets HTTP 413 naming this bound.
MAX_QUERIES_PER_REQUEST = 81920
#: Passages one answer may hold (queries × topk; ~700 bytes each as JSON): bounds an
#: answer's memory while admitting Search-R1's 5,120-query trainer batches at topk 3
#: and up to 19 passages each; more gets HTTP 413 naming this bound.
MAX_PASSAGES_PER_REQUEST = 100_000
#: Bytes of one request body (a trainer batch of 5,120 queries is well under 1 MB);
#: more gets HTTP 413 before the body is parsed.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: Requests read, searched and answered at once; the others wait, their bodies unread,
#: so the memory of requests in progress stays bounded whatever the number of clients.
MAX_ACTIVE_REQUESTS = 4
#: Open connections (one per client process, kept alive between requests); more get
#: HTTP 503, which :class:`~rexrag_env.retrieval.client.HTTPRetriever` retries.
MAX_CONNECTIONS = 512
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


logger = logging.getLogger(__name__)


class RequestLimits:
    """ASGI middleware: a request's body is read here, up to ``max_body_bytes`` (413
    beyond), by at most ``max_active`` requests at once, before the app parses it."""

    def __init__(self, app, max_body_bytes: int, max_active: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.active = asyncio.Semaphore(max_active)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            await self._too_large(send)
            return
        async with self.active:
            body, more = bytearray(), True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if len(body) > self.max_body_bytes:
                    await self._too_large(send)
                    return
                more = message.get("more_body", False)
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}

            await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        detail = f"the request body exceeds {self.max_body_bytes} bytes: send the batch in parts"
        answer = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def make_app(
    retriever: Retriever, description: dict | None = None, default_topk: int = DEFAULT_TOPK
) -> FastAPI:
    """A FastAPI app serving ``retriever``; ``description`` (labels such as
    ``{"index": "bm25"}``, never paths) is added to ``/health``'s answer;
    ``default_topk`` answers requests that give no ``topk``."""
    num_passages = len(retriever.corpus) if hasattr(retriever, "corpus") else None
    largest_topk = min(MAX_TOPK, num_passages or MAX_TOPK)
    if not 1 <= default_topk <= largest_topk:
        raise ValueError(f"default topk {default_topk} is not between 1 and {largest_topk}")
    app = FastAPI(title="rexrag retrieval service", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        RequestLimits, max_body_bytes=MAX_REQUEST_BYTES, max_active=MAX_ACTIVE_REQUESTS
    )
    # Retrievers hold encoders and indexes that are not all safe to call from many
    # threads at once; clients get throughput by batching queries, not by concurrency.
    lock = threading.Lock()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer quotes each invalid value: the whole body, for a huge one
        errors = [{"loc": list(item["loc"]), "msg": item["msg"]} for item in error.errors()[:5]]
        return JSONResponse(status_code=422, content={"detail": errors})

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
        if len(request.queries) * topk > MAX_PASSAGES_PER_REQUEST:
            raise HTTPException(
                413,
                f"{len(request.queries)} queries × topk {topk} exceed the limit of "
                f"{MAX_PASSAGES_PER_REQUEST} passages per request: send the batch in parts",
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
            # its message may name files: the server's log gets it, the client does not
            logger.exception("retriever failed on a request of %d queries", len(request.queries))
            raise HTTPException(500, "the retriever failed; the server's log says why") from error
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
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    app = make_app(retriever, description, default_topk)
    uvicorn.Server(_server_config(app, host, port, "info")).run()


def _server_config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    """The uvicorn settings of every server here: the connection bound, no version banner."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        limit_concurrency=MAX_CONNECTIONS,
        server_header=False,
        lifespan="off",
    )


@contextmanager
def background_app(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run any ASGI ``app`` in a thread for the duration of a ``with`` block; yields its URL.

    ``port=0`` takes a free port. Used by tests and benchmarks, and handy in notebooks.
    """
    server = uvicorn.Server(_server_config(app, host, port, "warning"))
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
