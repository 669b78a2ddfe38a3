import pytest

from rexrag_env.protocol import (
    INVALID_ACTION_NOTICE,
    ActionType,
    format_information,
    make_prompt,
    make_prompt_messages,
    parse_action,
)
from rexrag_env.retrieval.base import Passage


def test_prompt_matches_search_r1_template():
    prompt = make_prompt("  who wrote Hamlet ")
    assert prompt.startswith("Answer the given question. You must conduct reasoning inside <think>")
    assert "You can search as many times as your want." in prompt
    assert prompt.endswith("For example, <answer> Beijing </answer>. Question: who wrote Hamlet?\n")
    assert make_prompt("Why?").endswith("Question: Why?\n")
    assert make_prompt_messages("q") == [{"role": "user", "content": make_prompt("q")}]


@pytest.mark.parametrize(
    ("action", "kind", "content"),
    [
        (
            "<think>x</think><search> capital of France </search>",
            ActionType.SEARCH,
            "capital of France",
        ),
        ("<answer> Paris </answer>", ActionType.ANSWER, "Paris"),
        ("<search>a</search><answer>b</answer>", ActionType.SEARCH, "a"),
        ("<answer>b</answer><search>a</search>", ActionType.ANSWER, "b"),
        # an unclosed search before a complete answer: the answer is the first complete span
        ("<search>never closed <answer>b</answer>", ActionType.ANSWER, "b"),
        # nested: the outer search span is complete first
        ("<search>q <answer>b</answer></search>", ActionType.SEARCH, "q <answer>b</answer>"),
        ("<answer>multi\nline</answer>", ActionType.ANSWER, "multi\nline"),
        ("<answer></answer>", ActionType.ANSWER, ""),
        ("<search>   </search>", ActionType.INVALID, ""),
        ("<Search>q</Search>", ActionType.INVALID, ""),
        ("<ANSWER>x</ANSWER>", ActionType.INVALID, ""),
        ("", ActionType.INVALID, ""),
        ("<search>unterminated", ActionType.INVALID, ""),
        ("</answer>x<answer>", ActionType.INVALID, ""),
        ("<search>北京的首都 ✓</search>", ActionType.SEARCH, "北京的首都 ✓"),
    ],
)
def test_parse_action(action, kind, content):
    parsed = parse_action(action)
    assert parsed.type is kind
    assert parsed.content == content


def test_parse_action_end_points_after_closing_tag():
    action = "<think>t</think><search>q</search> trailing text"
    assert action[: parse_action(action).end] == "<think>t</think><search>q</search>"


@pytest.mark.timeout(60)
def test_parse_action_survives_adversarial_input():
    # 200k unclosed opening tags: a backtracking regex scan is quadratic here (minutes);
    # the scan must stay linear, or the timeout fails the test.
    parsed = parse_action("<search>" * 200_000 + "<answer>x</answer>")
    assert parsed == parse_action("<answer>x</answer>").__class__(
        ActionType.ANSWER, "x", parsed.end
    )
    assert parse_action("<answer>" * 200_000).type is ActionType.INVALID


def test_format_information_is_search_r1_format():
    passages = [Passage("1", '"Paris"\nParis is the capital.'), Passage("2", "Lyon\nA city.")]
    assert format_information(passages) == (
        '\n\n<information>Doc 1(Title: "Paris") Paris is the capital.\n'
        "Doc 2(Title: Lyon) A city.</information>\n\n"
    )
    assert INVALID_ACTION_NOTICE == "\nMy action is invalid. "
