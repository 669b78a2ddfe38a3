"""SearchQAVectorEnv: one retriever call per step, Gymnasium's autoreset and info conventions."""

import doctest

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import DictInfoToList

import rexrag_env
import rexrag_env.env
import rexrag_env.vector
from rexrag_env.datasets import QAExample
from rexrag_env.protocol import INVALID_ACTION_NOTICE, parse_action
from rexrag_env.spaces import UnicodeText
from tests.helpers import CountingRetriever

RUSH = QAExample("rush", "Which band was Neil Peart the drummer of", ("Rush",))
WHO = QAExample("who", "Which band was Roger Daltrey the singer of", ("The Who",))


def make_vector_env(num_envs, retriever, **kwargs):
    kwargs.setdefault("dataset", [RUSH, WHO])
    return gym.make_vec(
        rexrag_env.SEARCH_QA_ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        retriever=retriever,
        **kwargs,
    )


def disabled(num_envs, retriever, **kwargs):
    return make_vector_env(
        num_envs, retriever, autoreset_mode=AutoresetMode.DISABLED, max_turns=2, **kwargs
    )


def as_python(value):
    """Vector infos as plain Python (arrays to lists), to compare them with ==."""
    if isinstance(value, dict):
        return {key: as_python(item) for key, item in value.items()}
    return value.tolist() if isinstance(value, np.ndarray) else value


def test_make_vec_builds_the_vector_env(bm25_retriever):
    envs = make_vector_env(3, bm25_retriever)
    assert isinstance(envs, rexrag_env.SearchQAVectorEnv) and envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert envs.single_action_space == envs.single_observation_space == UnicodeText()
    assert len(envs.observation_space) == len(envs.action_space) == 3
    assert all(env.retriever is bm25_retriever for env in envs.envs)  # shared, not copied
    default = gym.make_vec(rexrag_env.SEARCH_QA_ENV_ID, num_envs=2, retriever=bm25_retriever)
    assert isinstance(
        default, rexrag_env.SearchQAVectorEnv
    )  # the vector entry point is the default


def test_one_step_parses_each_action_once_and_makes_one_retriever_call(bm25_retriever, monkeypatch):
    retriever = CountingRetriever(bm25_retriever)
    envs = disabled(5, retriever)
    parsed = []

    def counting_parse(text):
        parsed.append(text)
        return parse_action(text)

    monkeypatch.setattr(rexrag_env.vector, "parse_action", counting_parse)
    monkeypatch.setattr(rexrag_env.env, "parse_action", None)  # the sub-envs must not parse
    final_turn = {"example": WHO, "turn": 2}  # a search here is not executed
    envs.reset(options={"env_options": [{"example": RUSH}] * 4 + [final_turn]})
    actions = (
        "<search> Neil Peart </search>",
        "<search> Rush band </search>",
        "<answer> Rush </answer>",
        "<search> drummer </search> and more",
        "<search> Roger Daltrey </search>",
    )
    observations, rewards, terminations, truncations, infos = envs.step(actions)
    assert retriever.calls == [["Neil Peart", "Rush band", "drummer"]]
    assert parsed == list(actions)
    assert [o.startswith("\n\n<information>Doc 1(Title: ") for o in observations] == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert rewards.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert terminations.tolist() == [False, False, True, False, False]
    assert truncations.tolist() == [False, False, False, False, True]
    assert infos["action_end"].tolist() == [parse_action(a).end for a in actions]
    assert infos["num_searches"].tolist() == [1, 1, 0, 1, 0]


def test_observations_and_infos_are_the_single_envs(bm25_retriever):
    """Each env of the vector env returns what a SearchQAEnv returns for the same action."""
    envs = DictInfoToList(disabled(3, bm25_retriever))
    singles = [
        rexrag_env.SearchQAEnv(dataset=[RUSH, WHO], retriever=bm25_retriever, max_turns=2)
        for _ in range(3)
    ]
    options = [{"example": RUSH}, {"example": WHO}, {"index": 1, "turn": 1}]
    prompts, infos = envs.reset(options={"env_options": options})
    expected = [env.reset(options=option) for env, option in zip(singles, options, strict=True)]
    assert list(zip(prompts, as_python(infos), strict=True)) == expected
    for actions in (
        ("<search> Neil Peart </search>", "bad", "<search> The Who </search>"),
        ("<search> Rush </search>", "<answer> The Who </answer>", None),
    ):
        observations, rewards, terminations, truncations, infos = envs.step(actions)
        for i, action in enumerate(actions):
            if action is None:
                assert infos[i] == {"skipped": True} and observations[i] == ""
                continue
            observation, reward, terminated, truncated, info = singles[i].step(action)
            assert (observations[i], rewards[i], terminations[i], truncations[i]) == (
                observation,
                reward,
                terminated,
                truncated,
            )
            assert as_python(infos[i]) == info
    assert observations[0].startswith("\n\n<information>")
    assert envs.env.render() == tuple(env.render() for env in singles)


def test_next_step_autoreset_is_sync_vector_envs(bm25_retriever):
    """Same seeds and actions: the same observations, rewards, flags and infos as
    Gymnasium's SyncVectorEnv over SearchQAEnv, through episode ends and autoresets."""
    kwargs = {"dataset": "bamboogle", "retriever": bm25_retriever, "max_turns": 1, "num_envs": 3}
    ours = gym.make_vec(
        rexrag_env.SEARCH_QA_ENV_ID, vectorization_mode="vector_entry_point", **kwargs
    )
    sync = gym.make_vec(rexrag_env.SEARCH_QA_ENV_ID, vectorization_mode="sync", **kwargs)
    first, again = ours.reset(seed=7), sync.reset(seed=7)
    assert first[0] == again[0] and as_python(first[1]) == as_python(again[1])
    script = [
        ("<search> a </search>", "<answer> yes </answer>", "nonsense"),
        ("<answer> x </answer>", "<search> b </search>", "<search> c </search>"),
        ("<search> d </search>", "<search> e </search>", "<answer> y </answer>"),
        ("<answer> z </answer>", "<search> f </search>", "<search> g </search>"),
    ]
    ended = 0
    for actions in script:
        result, expected = ours.step(actions), sync.step(actions)
        assert result[0] == expected[0]
        for mine, theirs in zip(result[1:4], expected[1:4], strict=True):
            assert mine.tolist() == theirs.tolist()
        assert as_python(result[4]) == as_python(expected[4])
        ended += int(np.sum(result[2] | result[3]))
    assert ended >= 4  # the script went through episode ends and their autoresets


def test_disabled_autoreset_resumes_chosen_envs_at_a_turn(bm25_retriever):
    envs = disabled(3, bm25_retriever)
    envs.reset(options={"env_options": [{"example": RUSH}] * 3})
    _, _, terminations, _, _ = envs.step(
        ("<answer> The Who </answer>", "<search> Neil Peart </search>", "bad")
    )
    assert terminations.tolist() == [True, False, False]
    with pytest.raises(RuntimeError, match=r"env 0: .*reset_mask.*None"):
        envs.step(("<search> x </search>", "bad", "bad"))
    # the failed step moved no env: env 1 and 2 still are in their second turn
    observations, rewards, terminations, truncations, infos = envs.step(
        (None, "<answer> Rush </answer>", "bad")
    )
    assert observations == ("", "", INVALID_ACTION_NOTICE) and rewards.tolist() == [0.0, 1.0, 0.0]
    assert terminations.tolist() == [True, True, False]  # env 0's episode is still over
    assert infos["skipped"].tolist() == [True, False, False]
    assert infos["_turn"].tolist() == [False, True, True] and infos["turn"][1:].tolist() == [1, 1]

    # a probe-style resume of env 0 and 1 at turn 1 of 2 (after one search): only the
    # remaining turns are played, and a search in the final turn is not executed
    resume = {"example": RUSH, "turn": 1, "num_searches": 1}
    prompts, infos = envs.reset(
        options={
            "reset_mask": np.array([True, True, False]),
            "env_options": [resume, {**resume, "turn": 2}, None],
        }
    )
    assert prompts[2] == "" and infos["_question"].tolist() == [True, True, False]
    assert infos["turn"][:2].tolist() == [1, 2]
    search = "<search> Neil Peart </search>"
    observations, _, terminations, truncations, infos = envs.step((search, search, None))
    assert observations[0].startswith("\n\n<information>") and observations[1] == ""
    assert truncations.tolist() == [False, True, False]
    assert infos["num_searches"][:2].tolist() == [2, 1]
    observations, _, _, truncations, infos = envs.step((search, None, "bad"))
    assert observations == ("", "", "") and truncations.tolist() == [True, True, True]
    assert infos["search_enabled"].tolist() == [False, False, False]
    assert infos["doc_ids"][0] == [] and infos["skipped"].tolist() == [False, True, False]


def test_a_failing_retriever_moves_no_env(bm25_retriever):
    class FlakyRetriever:
        failures = 1

        def search(self, queries, k):
            if self.failures:
                self.failures -= 1
                raise ConnectionError("retrieval service down")
            return bm25_retriever.search(queries, k)

    envs = disabled(2, FlakyRetriever())
    envs.reset(options={"env_options": [{"example": RUSH}, {"example": WHO}]})
    actions = ("<answer> Rush </answer>", "<search> Roger Daltrey </search>")
    with pytest.raises(ConnectionError):
        envs.step(actions)
    _, rewards, terminations, _, infos = envs.step(actions)  # the retry plays the turn
    assert rewards.tolist() == [1.0, 0.0] and terminations.tolist() == [True, False]
    assert infos["turn"].tolist() == [0, 0] and infos["num_searches"].tolist() == [0, 1]


def test_advance_takes_the_passages_of_a_search_that_runs_and_only_then(bm25_retriever):
    """The single env's half of step that the vector env calls refuses a mismatch."""
    env = rexrag_env.SearchQAEnv(dataset=[RUSH], retriever=bm25_retriever, max_turns=1)
    env.reset()
    search = "<search> Neil Peart </search>"
    with pytest.raises(ValueError, match="runs_search"):
        env.advance(search, parse_action(search), None)
    with pytest.raises(ValueError, match="runs_search"):
        env.advance("bad", parse_action("bad"), [])
    passages = bm25_retriever.search(["Neil Peart"], 3)[0]
    assert env.advance(search, parse_action(search), passages)[4]["num_searches"] == 1


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda e: e.step(["bad"]), ValueError, "one action per env"),
        (lambda e: e.step([None, "bad"]), ValueError, "DISABLED"),
        (lambda e: e.step([b"<answer> x </answer>", "bad"]), TypeError, "env 0: .*string"),
        (
            lambda e: e.reset(options={"reset_mask": np.array([1, 0])}),
            ValueError,
            "bool array of shape",
        ),
        (
            lambda e: e.reset(
                options={"reset_mask": np.array([True, False]), "env_options": [None, {}]}
            ),
            ValueError,
            r"env_options'\]\[1\] is given but reset_mask",
        ),
        (lambda e: e.reset(options={"env_options": [{}]}), ValueError, "sequence of 2"),
        (lambda e: e.reset(seed=[1]), ValueError, "one seed per env"),
    ],
)
def test_bad_calls_are_clear_errors(bm25_retriever, call, error, message):
    envs = make_vector_env(2, bm25_retriever)
    envs.reset(seed=0)
    with pytest.raises(error, match=message):
        call(envs)


def test_unsupported_autoreset_mode_is_refused(bm25_retriever):
    with pytest.raises(ValueError, match=r"NEXT_STEP, AutoresetMode\.DISABLED"):
        make_vector_env(2, bm25_retriever, autoreset_mode=AutoresetMode.SAME_STEP)


def test_async_make_vec_on_non_ascii_text(bm25_retriever):
    """AsyncVectorEnv passes observations through shared memory: text outside ASCII
    must arrive intact, and each step's text must arrive (not the first one again)."""
    questions = [
        QAExample("a", "Veljko Čubrilović took part in which assassination", ("Sarajevo",)),
        QAExample(
            "b", "Which is a Macedonian weekly, Hänt Extra or Tea Moderna?", ("Tea Moderna",)
        ),
    ]
    kwargs = {"dataset": questions, "retriever": "bm25", "max_turns": 1, "num_envs": 2}
    sync = gym.make_vec(rexrag_env.SEARCH_QA_ENV_ID, vectorization_mode="sync", **kwargs)
    envs = gym.make_vec(rexrag_env.SEARCH_QA_ENV_ID, vectorization_mode="async", **kwargs)
    try:
        prompts = envs.reset(seed=1)[0]
        assert prompts == sync.reset(seed=1)[0]
        assert all(any(ord(char) > 127 for char in prompt) for prompt in prompts)
        script = [
            ("<search> Veljko Čubrilović </search>", "<search> Hänt Extra </search>"),
            ("<answer> Sarajevo </answer>", "<answer> Hänt Extra </answer>"),
            ("ignored: the episodes ended", "so the envs reset"),
        ]
        steps = [envs.step(actions)[0] for actions in script]
        assert steps == [sync.step(actions)[0] for actions in script]
        assert all(any(ord(char) > 127 for char in text) for text in steps[0])  # passages
        assert steps[1] == ("", "") and set(steps[2]) == set(prompts)
    finally:
        envs.close()


def test_the_docstring_example_runs(bm25_retriever):
    results = doctest.testmod(rexrag_env.vector, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0


def test_a_subclass_of_the_env_steps_in_batches_with_its_own_arguments():
    """A user's SearchQAEnv subclass (another reward) as the sub-env class: every env is
    one, built with the subclass's own keyword, over one shared retriever."""
    from tests.agents.rexrag.user_env import AnswerBonusEnv

    retriever = CountingRetriever()
    envs = rexrag_env.SearchQAVectorEnv(
        2,
        dataset=[RUSH, WHO],
        retriever=retriever,
        autoreset_mode=AutoresetMode.DISABLED,
        env_class=AnswerBonusEnv,
        env_kwargs={"answer_bonus": 0.5},
    )
    assert all(type(env) is AnswerBonusEnv and env.retriever is retriever for env in envs.envs)
    envs.reset(options={"env_options": [{"index": 0}, {"index": 1}]})
    envs.step(("<search> Neil Peart </search>", "<search> Roger Daltrey </search>"))
    assert retriever.batch_sizes == [2]
    _, rewards, *_ = envs.step(("<answer> Rush </answer>", "<answer> Queen </answer>"))
    assert rewards.tolist() == [1.5, 0.5]
    with pytest.raises(TypeError, match="subclass"):
        rexrag_env.SearchQAVectorEnv(1, dataset=[RUSH], retriever=retriever, env_class=dict)
