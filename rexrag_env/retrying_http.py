"""One HTTP request with retries: what the retrieval client and the model-server agent share.

Connection errors, timeouts and the statuses a server may recover from are retried
with exponential backoff; any other answer is returned for the caller to judge (its
error messages name its own service).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests


class AttemptsExhaustedError(RuntimeError):
    """Every attempt failed; the message is the last failure (a caller wraps it)."""


def request_with_retries(
    session: requests.Session,
    method: str,
    url: str,
    *,
    max_retries: int,
    backoff: float,
    retryable: Callable[[int], bool] = lambda status: status >= 500,
    **request_options: Any,
) -> requests.Response:
    """``session.request(method, url, **request_options)``, tried ``max_retries + 1``
    times; sleeps ``backoff · 2^(attempt-1)`` before each retry. Returns the first
    response whose status is not ``retryable``."""
    last_error = ""
    for attempt in range(max_retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            response = session.request(method, url, **request_options)
        except (requests.ConnectionError, requests.Timeout) as error:
            last_error = f"{type(error).__name__}: {error}"
            continue
        if retryable(response.status_code):
            last_error = f"HTTP {response.status_code}: {response.text[:500]}"
            continue
        return response
    raise AttemptsExhaustedError(last_error)
