"""OpenAIChatAgent against a scriptable fake chat-completions server over real loopback HTTP."""

from __future__ import annotations

import pickle
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from fastapi import Body, FastAPI, Header
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from agents.base import run_episode
from agents.openai_agent import (
    ModelServerError,
    ModelServerUnavailableError,
    OpenAIChatAgent,
    restore_stop_string,
)
from rexrag_env import SearchQAEnv
from rexrag_env.protocol import STOP_STRINGS, make_prompt_messages
from rexrag_env.retrieval.server import background_app

MODEL = "fake/search-r1"
QUESTION = "Which band was Neil Peart the drummer of"
SEARCH_TURN = "<think>I need the band of Neil Peart.</think>\n<search> Neil Peart </search>"
ANSWER_TURN = "<think>The passages say Rush.</think>\n<answer> Rush </answer>"


@dataclass(frozen=True)
class Slow:
    """A reply that arrives after ``seconds`` (to outlast the client's timeout)."""

    seconds: float
    text: str


class FakeChatServer:
    """An OpenAI chat-completions server whose "model" plays a script.

    Each request gets the next reply of ``script`` (the last one repeats): model text,
    which is cut at the first requested stop string as real servers do; a ``Slow``
    reply; or a ready ``Response`` (errors, garbage). Requests and their
    ``Authorization`` headers are recorded. ``report_stop_reason`` emulates vLLM (it
    says which stop string matched); without it the server is a generic one.
    """

    def __init__(self, script: list[str | Slow | Response], *, report_stop_reason: bool = True):
        self.script = list(script)
        self.report_stop_reason = report_stop_reason
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.url = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        def chat(
            body: Annotated[dict[str, Any], Body()],
            authorization: Annotated[str | None, Header()] = None,
        ) -> Any:
            self.requests.append(body)
            self.authorizations.append(authorization)
            if body["model"] != MODEL:  # vLLM's answer to an unknown model name
                message = f"The model `{body['model']}` does not exist."
                return JSONResponse({"object": "error", "message": message, "code": 404}, 404)
            reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            if isinstance(reply, Response):
                return reply
            if isinstance(reply, Slow):
                time.sleep(reply.seconds)
                reply = reply.text
            return self._completion(reply, body.get("stop") or [])

        return app

    def _completion(self, text: str, stop: list[str]) -> dict[str, Any]:
        matches = [(text.find(s), s) for s in stop if s in text]
        cut, stop_reason = min(matches) if matches else (len(text), None)  # None: EOS token
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text[:cut]},
            "finish_reason": "stop",
        }
        if self.report_stop_reason:
            choice["stop_reason"] = stop_reason
        return {"object": "chat.completion", "model": MODEL, "choices": [choice]}


@pytest.fixture
def fake_server():
    """Start a :class:`FakeChatServer` for this test: ``fake_server(script, **options)``."""
    with ExitStack() as stack:

        def start(script: list[str | Slow | Response], **options: Any) -> FakeChatServer:
            server = FakeChatServer(script, **options)
            server.url = stack.enter_context(background_app(server.app())) + "/v1"
            return server

        yield start


@pytest.fixture
def env(bm25_retriever) -> SearchQAEnv:
    dataset = [{"id": "q", "question": QUESTION, "golden_answers": ["Rush"]}]
    return SearchQAEnv(dataset=dataset, retriever=bm25_retriever)


def test_episode_continues_one_assistant_message_like_search_r1(fake_server, env):
    server = fake_server([SEARCH_TURN, ANSWER_TURN])
    result = run_episode(env, OpenAIChatAgent(server.url, MODEL))
    assert (result.reward, result.num_turns, result.answer) == (1.0, 2, "Rush")

    first, second = server.requests
    sampling = {"model": MODEL, "stop": list(STOP_STRINGS), "temperature": 0.0, "top_p": 1.0}
    assert first == {**sampling, "max_tokens": 500, "messages": make_prompt_messages(QUESTION)}
    assert second["continue_final_message"] is True
    assert second["add_generation_prompt"] is False
    user, assistant = second["messages"]
    assert user == make_prompt_messages(QUESTION)[0]
    assert assistant["role"] == "assistant"
    assert assistant["content"].startswith(SEARCH_TURN + "\n\n<information>Doc 1(Title: ")
    # The server continued exactly the transcript the environment recorded.
    assert result.transcript == user["content"] + assistant["content"] + ANSWER_TURN


def test_episode_as_chat_turns_with_a_generic_server(fake_server, env):
    server = fake_server([SEARCH_TURN, ANSWER_TURN], report_stop_reason=False)
    agent = OpenAIChatAgent(server.url, MODEL, continue_final_message=False)
    assert run_episode(env, agent).reward == 1.0  # both closing tags were put back

    first, second = server.requests
    assert "continue_final_message" not in first and "continue_final_message" not in second
    prompt, model_turn, observation = second["messages"]
    assert prompt == make_prompt_messages(QUESTION)[0]
    assert model_turn == {"role": "assistant", "content": SEARCH_TURN}
    assert observation["role"] == "user"
    assert observation["content"].startswith("\n\n<information>")


def vllm_stop(stop_reason: str | int | None) -> dict[str, Any]:
    """A vLLM choice that stopped at ``stop_reason`` (None: the EOS token; int: a stop token)."""
    return {"finish_reason": "stop", "stop_reason": stop_reason}


GENERIC_STOP = {"finish_reason": "stop"}  # a server that does not say what stopped it


@pytest.mark.parametrize(
    ("text", "choice", "appended"),
    [
        ("<search> a ", vllm_stop("</search>"), "</search>"),
        ("<answer> a ", vllm_stop("</answer>"), "</answer>"),
        ("<answer> a </answer>", vllm_stop("</answer>"), ""),  # the server kept it
        ("<search> a ", vllm_stop(None), ""),
        ("<search> a ", vllm_stop(151643), ""),
        ("<search> a ", {"finish_reason": "length", "stop_reason": None}, ""),
        ("<search> a ", {"finish_reason": "length"}, ""),
        ("<think>x</think><answer> Rush ", GENERIC_STOP, "</answer>"),
        ("<answer> a <search> b ", GENERIC_STOP, "</search>"),  # the tag opened last
        ("<search> a </search> fine. ", GENERIC_STOP, ""),
        ("I give up.", GENERIC_STOP, ""),
    ],
)
def test_restore_stop_string(text, choice, appended):
    assert restore_stop_string(text, choice) == text + appended


def start_episode(agent: OpenAIChatAgent) -> str:
    """Reset ``agent`` for the test question and play its first turn."""
    messages = make_prompt_messages(QUESTION)
    agent.reset(messages[0]["content"], {"messages": messages})
    return agent.act(messages[0]["content"], {})


def test_server_down_fails_after_bounded_retries(free_port):
    base_url = f"http://127.0.0.1:{free_port}/v1"
    agent = OpenAIChatAgent(base_url, MODEL, max_retries=2, backoff=0.01, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(
        ModelServerUnavailableError,
        match=rf"{base_url}/chat/completions is unavailable after 3 attempts.*vllm serve",
    ):
        start_episode(agent)
    assert time.monotonic() - started < 5


def test_unknown_model_fails_at_once_with_the_server_message(fake_server):
    server = fake_server([SEARCH_TURN])
    agent = OpenAIChatAgent(server.url, "no-such-model", max_retries=3, backoff=10.0)
    with pytest.raises(
        ModelServerError, match=r"HTTP 404.*`no-such-model` does not exist"
    ) as error:
        start_episode(agent)
    assert not isinstance(error.value, ModelServerUnavailableError)
    assert f"GET {server.url}/models" in str(error.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (PlainTextResponse("<html>oops</html>"), "did not answer JSON"),
        (JSONResponse({"object": "list", "data": []}), "not a chat completion.*KeyError"),
        (JSONResponse({"choices": []}), "not a chat completion.*IndexError"),
        (JSONResponse([1, 2]), "not a chat completion.*TypeError"),
        (JSONResponse({"choices": [{"message": {"content": None}}]}), "NoneType, not a string"),
    ],
)
def test_garbage_answers_are_clear_errors(fake_server, reply, message):
    server = fake_server([reply])
    with pytest.raises(ModelServerError, match=rf"{server.url}/chat/completions .*{message}"):
        start_episode(OpenAIChatAgent(server.url, MODEL))


def test_overload_and_server_errors_are_retried(fake_server):
    server = fake_server(
        [
            JSONResponse({"error": "busy"}, 503),
            JSONResponse({"error": "slow down"}, 429),
            SEARCH_TURN,
        ]
    )
    agent = OpenAIChatAgent(server.url, MODEL, max_retries=2, backoff=0.01)
    assert start_episode(agent) == SEARCH_TURN
    assert len(server.requests) == 3


def test_slow_server_times_out_after_retries(fake_server):
    server = fake_server([Slow(0.8, SEARCH_TURN)])
    agent = OpenAIChatAgent(server.url, MODEL, timeout=0.3, max_retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(ModelServerUnavailableError, match=r"after 2 attempts \(ReadTimeout"):
        start_episode(agent)
    assert time.monotonic() - started < 1.5
    assert len(server.requests) == 2


def test_api_key_is_sent_as_bearer_token(fake_server, monkeypatch):
    server = fake_server([SEARCH_TURN])
    start_episode(OpenAIChatAgent(server.url, MODEL, api_key="sk-explicit"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    start_episode(OpenAIChatAgent(server.url, MODEL))
    monkeypatch.delenv("OPENAI_API_KEY")
    start_episode(OpenAIChatAgent(server.url, MODEL))
    assert server.authorizations == ["Bearer sk-explicit", "Bearer sk-from-env", None]


def test_pickled_agent_opens_its_own_session(fake_server):
    server = fake_server([SEARCH_TURN])
    agent = OpenAIChatAgent(server.url, MODEL, temperature=0.7, max_tokens=64)
    start_episode(agent)  # the original now holds an open session
    clone = pickle.loads(pickle.dumps(agent))
    assert start_episode(clone) == SEARCH_TURN
    assert server.requests[-1]["temperature"] == 0.7 and server.requests[-1]["max_tokens"] == 64


def test_reset_falls_back_to_the_prompt_and_act_needs_reset(fake_server):
    server = fake_server([SEARCH_TURN])
    agent = OpenAIChatAgent(server.url + "/", MODEL)
    assert agent.url == server.url + "/chat/completions"
    with pytest.raises(RuntimeError, match="before reset"):
        agent.act("prompt", {})
    agent.reset("Answer: who?", {})
    agent.act("Answer: who?", {})
    assert server.requests[0]["messages"] == [{"role": "user", "content": "Answer: who?"}]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "http"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"backoff": -1.0}, "backoff"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_arguments_are_rejected(options, message):
    arguments = {"base_url": "http://127.0.0.1:8000/v1", "model": MODEL, **options}
    with pytest.raises(ValueError, match=message):
        OpenAIChatAgent(**arguments)
