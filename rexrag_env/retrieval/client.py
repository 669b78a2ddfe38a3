"""Client for a Search-R1-compatible retrieval service (``rexrag serve`` or Search-R1's own)."""

from __future__ import annotations

import requests

from rexrag_env.retrieval.base import (
    Passage,
    RetrievalError,
    RetrieverUnavailableError,
    check_search_args,
)
from rexrag_env.retrying_http import AttemptsExhaustedError, request_with_retries


def passage_from_answer(item: dict) -> Passage:
    """One ranked item of a ``/retrieve`` answer, in any shape Search-R1's servers send:
    ``{"document": {...}, "score": s}`` (with ``return_scores``) or the bare document;
    the document's ``id`` is absent in its BM25 server over raw-stored documents and
    its web-search servers (then ``""``), ``score`` in the web servers (then 0).
    ``contents`` is the passage in every shape."""
    document = item.get("document", item)
    return Passage(
        str(document.get("id", "")),
        str(document["contents"]),
        float(item.get("score") or 0.0),
    )


class HTTPRetriever:
    """A :class:`Retriever` that sends each batch of queries in one ``POST /retrieve``.

    Connection failures, timeouts and 5xx answers are retried ``max_retries`` times
    with exponential back-off, then raise :class:`RetrieverUnavailableError` naming
    the URL. A 4xx answer is the caller's mistake and raises at once with the
    server's message.

    Args:
        url: service root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/retrieve`` is accepted).
        timeout: seconds to wait for one answer.
        max_retries: extra attempts after the first one fails.
        backoff: seconds before the first retry; doubled each time.
    """

    def __init__(self, url: str, timeout: float = 30.0, max_retries: int = 3, backoff: float = 0.5):
        self.url = url.rstrip("/").removesuffix("/retrieve")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._session = requests.Session()

    def health(self) -> dict:
        """The service's ``/health`` answer; raises :class:`RetrieverUnavailableError` if down."""
        return self._request("GET", "/health", None)

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        """Top-``k`` passages for each query, best first, in one request."""
        check_search_args(queries, k, max_k=k)
        if not queries:
            return []
        body = {"queries": list(queries), "topk": k, "return_scores": True}
        answer = self._request("POST", "/retrieve", body)
        try:
            result = answer["result"]
            if len(result) != len(queries):
                raise ValueError(f"{len(result)} result lists for {len(queries)} queries")
            return [[passage_from_answer(item) for item in ranked] for ranked in result]
        except (KeyError, TypeError, ValueError) as error:
            raise RetrievalError(
                f"retrieval service at {self.url} sent a malformed answer: {error}"
            ) from error

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        url = self.url + path
        try:
            response = request_with_retries(
                self._session,
                method,
                url,
                max_retries=self.max_retries,
                backoff=self.backoff,
                json=body,
                timeout=self.timeout,
            )
        except AttemptsExhaustedError as error:
            raise RetrieverUnavailableError(
                f"retrieval service at {url} is unavailable after {self.max_retries + 1} "
                f"attempts ({error}); is `rexrag serve` running there?"
            ) from error
        if response.status_code >= 400:
            raise RetrievalError(
                f"retrieval service at {url} rejected the request "
                f"(HTTP {response.status_code}): {response.text[:500]}"
            )
        try:
            return response.json()
        except ValueError as error:
            raise RetrievalError(
                f"retrieval service at {url} did not answer JSON: {response.text[:200]!r}"
            ) from error

    def __reduce__(self):
        # requests.Session is not picklable; a copy sent to a Ray worker opens its own.
        return (HTTPRetriever, (self.url, self.timeout, self.max_retries, self.backoff))
