import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import rexrag_env
from rexrag_env.datasets import QAExample
from rexrag_env.protocol import INVALID_ACTION_NOTICE, make_prompt
from rexrag_env.retrieval.base import RetrievalError

QUESTION = QAExample("q1", "Which band was Neil Peart the drummer of", ("Rush",), "test")


@pytest.fixture
def env(bm25_retriever):
    return gym.make(
        rexrag_env.SEARCH_QA_ENV_ID,
        dataset=[QUESTION],
        retriever=bm25_retriever,
        max_turns=2,
        topk=3,
    )


def test_registered_and_default_make_works_offline(bm25_retriever):
    env = gym.make("rexrag_env/SearchQA-v0")
    prompt, info = env.reset(seed=3)
    assert prompt == make_prompt(info["question"])
    assert info["messages"][0]["role"] == "user"
    assert info["data_source"] == "hotpotqa"


def test_check_env_passes(env):
    check_env(env.unwrapped, skip_render_check=False)


def test_search_then_correct_answer(env):
    _, info = env.reset(seed=0)
    assert info["golden_answers"] == ["Rush"] and info["turn"] == 0
    obs, reward, terminated, truncated, info = env.step(
        "<think>I need to search.</think>\n<search> Neil Peart drummer </search>"
    )
    assert obs.startswith("\n\n<information>Doc 1(Title: ") and obs.endswith("</information>\n\n")
    assert obs.count("\nDoc ") == 2  # three documents
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["action_type"] == "search" and info["query"] == "Neil Peart drummer"
    assert len(info["doc_ids"]) == 3 and info["num_searches"] == 1
    obs, reward, terminated, truncated, info = env.step("<answer> rush </answer> extra")
    assert (obs, reward, terminated, truncated) == ("", 1.0, True, False)
    assert info["em"] == info["f1"] == info["cover_em"] == 1.0 and info["turn"] == 1


def test_wrong_answer_gets_zero(env):
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("<answer>The Who</answer>")
    assert reward == 0.0 and terminated and info["answer"] == "The Who"


def test_turn_budget_then_final_turn_without_search(env):
    env.reset(seed=0)
    for turn in range(2):  # max_turns search-enabled turns
        obs, _, terminated, truncated, info = env.step("<search>Neil Peart</search>")
        assert "<information>" in obs and not (terminated or truncated)
        assert info["turn"] == turn and info["search_enabled"]
    obs, reward, terminated, truncated, info = env.step("<search>one more</search>")
    assert (obs, reward, terminated, truncated) == ("", 0.0, False, True)
    assert not info["search_enabled"] and info["doc_ids"] == [] and info["num_searches"] == 2
    with pytest.raises(RuntimeError, match="reset"):
        env.step("<answer>Rush</answer>")


def test_final_turn_can_still_answer(env):
    env.reset(seed=0)
    env.step("bad")
    env.step("bad")
    _, reward, terminated, truncated, _ = env.step("<answer>Rush</answer>")
    assert (reward, terminated, truncated) == (1.0, True, False)


@pytest.mark.parametrize(
    "action",
    [
        "",
        "no tags at all",
        "<search>unterminated",
        "<SEARCH>x</SEARCH>",
        "<search> </search>",
        "</answer><answer>",
        "ü" * 100_000,
        "<think>" * 10_000,
        "<search>" * 50_000 + "\x00",
    ],
)
def test_bad_actions_get_the_invalid_notice(env, action):
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs == INVALID_ACTION_NOTICE
    assert (reward, terminated, truncated, info["action_type"]) == (0.0, False, False, "invalid")


def test_non_string_action_is_a_clear_error(env):
    env.reset(seed=0)
    with pytest.raises(TypeError, match="string"):
        env.unwrapped.step(123)


def test_reset_with_question_and_resume_at_turn(bm25_retriever):
    env = rexrag_env.SearchQAEnv(dataset="hotpotqa", retriever=bm25_retriever, max_turns=3)
    question = {"id": "x", "question": "Who drummed for Rush", "golden_answers": ["Neil Peart"]}
    prompt, info = env.reset(options={"example": question, "turn": 3, "num_searches": 2})
    assert info["turn"] == 3 and prompt == make_prompt("Who drummed for Rush")
    # resumed at the final turn: a search is no longer executed
    obs, _, terminated, truncated, info = env.step("<search>Rush drummer</search>")
    assert (obs, terminated, truncated) == ("", False, True) and info["num_searches"] == 2
    env.reset(options={"example": question, "turn": 1})
    _, reward, terminated, _, info = env.step("<answer>Neil Peart</answer>")
    assert reward == 1.0 and terminated and info["turn"] == 1
    with pytest.raises(ValueError, match="turn"):
        env.reset(options={"example": question, "turn": 4})


def test_reset_by_index_and_seeded_draws_are_reproducible(bm25_retriever):
    env = rexrag_env.SearchQAEnv(dataset="musique", retriever=bm25_retriever)
    _, info = env.reset(options={"index": 5})
    assert info["id"] == env.examples[5].id
    draws = [env.reset(seed=7)[1]["id"] for _ in range(2)]
    assert draws[0] == draws[1]


def test_render_ansi_shows_the_transcript(bm25_retriever):
    env = rexrag_env.SearchQAEnv(dataset=[QUESTION], retriever=bm25_retriever, render_mode="ansi")
    env.reset(seed=0)
    env.step("<search>Neil Peart</search> ignored tail")
    text = env.render()
    assert text.startswith("Answer the given question.") and "ignored tail" not in text
    assert "<information>" in text


def test_retriever_failure_is_raised_and_the_turn_can_be_retried():
    class FlakyRetriever:
        def __init__(self):
            self.calls = 0

        def search(self, queries, k):
            self.calls += 1
            if self.calls == 1:
                raise RetrievalError("service down")
            from rexrag_env.retrieval.base import Passage

            return [[Passage("d", "T\ntext")] for _ in queries]

    env = rexrag_env.SearchQAEnv(dataset=[QUESTION], retriever=FlakyRetriever())
    env.reset(seed=0)
    with pytest.raises(RetrievalError, match="down"):
        env.step("<search>q</search>")
    _, _, _, _, info = env.step("<search>q</search>")
    assert info["turn"] == 0 and info["doc_ids"] == ["d"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_turns": -1}, "max_turns"),
        ({"topk": 0}, "topk"),
        ({"render_mode": "human"}, "render_mode"),
        ({"dataset": []}, "no questions"),
        ({"retriever": "nonsense"}, "retriever"),
        ({"retriever": object()}, "search"),
    ],
)
def test_bad_constructor_arguments(bm25_retriever, kwargs, message):
    arguments = {"dataset": [QUESTION], "retriever": bm25_retriever, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        rexrag_env.SearchQAEnv(**arguments)


def test_the_module_prefixed_id_registers_the_env_in_a_fresh_interpreter(private_cache):
    """Gymnasium 1.x has no plugin entry points: ``gym.make("rexrag_env:…")`` imports the
    package (which registers its envs) first, as a Ray worker or a user's script needs."""
    import subprocess
    import sys

    code = (
        "import gymnasium as gym, sys\n"
        "assert 'rexrag_env' not in sys.modules\n"
        "env = gym.make('rexrag_env:rexrag_env/SearchQA-v0', dataset='bamboogle')\n"
        "prompt, info = env.reset(seed=0)\n"
        "print(info['data_source'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("bamboogle")
