"""OpenAIChatAgent: play SearchQA with a model served behind an OpenAI-compatible HTTP API.

Lets a user evaluate a model that runs elsewhere (``vllm serve MODEL``, or any
chat-completions server) without loading it in this process. Only ``requests`` is
needed, not the ``openai`` package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import requests

from agents.llm.base import SamplingParams
from rexrag_env.protocol import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    DEFAULT_MAX_NEW_TOKENS,
    SEARCH_CLOSE,
    SEARCH_OPEN,
    STOP_STRINGS,
)
from rexrag_env.retrying_http import AttemptsExhaustedError, request_with_retries


class ModelServerError(RuntimeError):
    """The model server refused the request or sent an answer that is not a completion."""


class ModelServerUnavailableError(ModelServerError):
    """The model server could not be reached (or kept failing); the message names its URL."""


class OpenAIChatAgent:
    """An :class:`agents.base.Agent` that asks a chat-completions server for each turn.

    Every ``act`` sends one ``POST {base_url}/chat/completions`` with the episode so far,
    ``stop=["</search>", "</answer>"]`` and the sampling settings, and returns the
    model's turn (with the stop string the server stripped put back, see
    :func:`restore_stop_string`) as the action for the environment.

    The conversation is laid out in one of two ways:

    - ``continue_final_message=True`` (vLLM only): the first turn sends the user
      prompt with the chat template's generation prompt; later turns send the user
      prompt plus *one* assistant message holding the whole trajectory so far (model
      turns and observations), with ``continue_final_message: true,
      add_generation_prompt: false``, so the server continues it. This is Search-R1's
      token layout: observations are spliced into the assistant's text, not given as
      new chat turns.
    - ``continue_final_message=False`` (any server): each model turn is an assistant
      message and each observation a following user message.

    Run the server without a reasoning parser: it would move ``<think>`` text out of
    the completion, and the transcript would lose it. Observations are sent whole:
    without the model's tokenizer the agent cannot cut them to Search-R1's 500 tokens
    as :class:`agents.llm_agent.LLMAgent` does (three passages rarely reach that).

    Connection failures, timeouts, HTTP 429 and 5xx answers are retried
    ``max_retries`` times with exponential back-off, then raise
    :class:`ModelServerUnavailableError` naming the URL. Any other 4xx (an unknown
    model name, a server that rejects vLLM's extra fields) raises
    :class:`ModelServerError` at once with the server's message, as does an answer
    that is not a chat completion.

    Args:
        base_url: the API root, as OpenAI clients take it, e.g. ``http://127.0.0.1:8000/v1``
            (``/v1`` included; a trailing slash is ignored).
        model: the served model name (``vllm serve`` uses the model path unless
            ``--served-model-name`` is given).
        api_key: sent as a bearer token; defaults to ``$OPENAI_API_KEY`` and may be None.
        temperature: 0 is greedy decoding (the default, for reproducible evaluation).
        top_p: nucleus sampling mass.
        max_tokens: new tokens per turn (500 as in the REX-RAG rollout).
        timeout: seconds to wait for one answer (a whole turn's generation).
        max_retries: extra attempts after the first one fails.
        backoff: seconds before the first retry; doubled each time.
        continue_final_message: the conversation layout (see above).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        continue_final_message: bool = True,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {backoff}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.sampling = SamplingParams(
            temperature=temperature, top_p=top_p, max_new_tokens=max_tokens
        )
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.continue_final_message = continue_final_message
        self._session: requests.Session | None = None
        self._prompt_messages: list[dict[str, str]] | None = None
        self._trajectory: list[str] = []  # model turn, observation, model turn, …

    @property
    def url(self) -> str:
        """The endpoint every turn is posted to."""
        return f"{self.base_url}/chat/completions"

    def reset(self, prompt: str, info: dict[str, Any]) -> None:
        """Start an episode from the env's chat prompt (``info["messages"]``, else ``prompt``)."""
        self._prompt_messages = list(info.get("messages") or [{"role": "user", "content": prompt}])
        self._trajectory = []

    def act(self, observation: str, info: dict[str, Any]) -> str:
        """Ask the server for the next turn; ``observation`` is the env's answer to the last one."""
        if self._prompt_messages is None:
            raise RuntimeError("OpenAIChatAgent.act was called before reset(prompt, info)")
        if self._trajectory:  # the first observation is the prompt itself
            self._trajectory.append(observation)
        answer = self._post(self._request_body())
        turn = restore_stop_string(*self._completion(answer))
        self._trajectory.append(turn)
        return turn

    def _request_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(),
            "stop": list(self.sampling.stop),
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "max_tokens": self.sampling.max_new_tokens,
        }
        if self.continue_final_message and self._trajectory:
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _messages(self) -> list[dict[str, str]]:
        prompt = list(self._prompt_messages or [])
        if not self._trajectory:
            return prompt
        if self.continue_final_message:
            return [*prompt, {"role": "assistant", "content": "".join(self._trajectory)}]
        roles = ("assistant", "user")  # model turns and observations alternate
        return prompt + [
            {"role": roles[i % 2], "content": text} for i, text in enumerate(self._trajectory)
        ]

    def _completion(self, answer: Any) -> tuple[str, Mapping[str, Any]]:
        """The text and the choice of a chat-completion answer; raises if it is not one."""
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}, not a string")
            return text, choice
        except (KeyError, IndexError, TypeError) as error:
            raise ModelServerError(
                f"model server at {self.url} sent an answer that is not a chat completion "
                f"({type(error).__name__}: {error}): {str(answer)[:300]}"
            ) from error

    def _post(self, body: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = request_with_retries(
                self.session,
                "POST",
                self.url,
                max_retries=self.max_retries,
                backoff=self.backoff,
                retryable=lambda status: status >= 500 or status == 429,  # 429: rate limited
                json=body,
                headers=headers,
                timeout=self.timeout,
            )
        except AttemptsExhaustedError as error:
            raise ModelServerUnavailableError(
                f"model server at {self.url} is unavailable after {self.max_retries + 1} "
                f"attempts ({error}); is an OpenAI-compatible server (e.g. `vllm serve "
                f"{self.model}`) running there?"
            ) from error
        if response.status_code >= 400:
            raise ModelServerError(
                f"model server at {self.url} rejected the request "
                f"(HTTP {response.status_code}): {response.text[:500]}\n{self._hint(body)}"
            )
        try:
            return response.json()
        except ValueError as error:
            raise ModelServerError(
                f"model server at {self.url} did not answer JSON: {response.text[:200]!r}"
            ) from error

    def _hint(self, body: dict[str, Any]) -> str:
        hint = (
            f"Check that base_url is the API root (ending in /v1) and that model {self.model!r} "
            f"is served there (GET {self.base_url}/models lists them)."
        )
        if body.get("continue_final_message"):
            hint += " Servers other than vLLM need OpenAIChatAgent(continue_final_message=False)."
        return hint

    @property
    def session(self) -> requests.Session:
        """The HTTP session, opened on first use (keeps one connection across turns)."""
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        # A copy sent to another process (a Ray worker) opens its own connections.
        return {**self.__dict__, "_session": None}


def restore_stop_string(text: str, choice: Mapping[str, Any]) -> str:
    """Put back the stop string an OpenAI-compatible server cut off the end of ``text``.

    The environment needs the closing tag to see a complete action. vLLM says which
    string matched in ``choice["stop_reason"]``; it is None there when the model
    stopped at its end-of-sequence token, and then nothing is added. A server that
    does not report it gets the closing tag of the action left open at the end of
    ``text`` (the only stop string that can end a turn cut there). Text that already
    ends with the stop string (a server that keeps it) is left alone.
    """
    if choice.get("finish_reason") != "stop":
        return text
    if "stop_reason" in choice:
        stop = choice["stop_reason"]
        stop = stop if stop in STOP_STRINGS else None
    else:
        stop = _unclosed_action_tag(text)
    if stop is None or text.endswith(stop):
        return text
    return text + stop


def _unclosed_action_tag(text: str) -> str | None:
    """The closing tag of the last ``<search>``/``<answer>`` opened and never closed in ``text``."""
    latest, closing = -1, None
    for open_tag, close_tag in ((SEARCH_OPEN, SEARCH_CLOSE), (ANSWER_OPEN, ANSWER_CLOSE)):
        start = text.rfind(open_tag)
        if start > latest and text.find(close_tag, start) < 0:
            latest, closing = start, close_tag
    return closing
