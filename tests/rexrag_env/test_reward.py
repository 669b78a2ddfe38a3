import pytest

from rexrag_env.reward import (
    cover_exact_match,
    exact_match,
    extract_answer,
    normalize_answer,
    score_answer,
    substring_exact_match,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Beatles", "beatles"),
        ("  a   cat, an apple & THE dog! ", "cat apple dog"),
        ("U.S.A.", "usa"),
        ("theatre", "theatre"),  # articles only as whole words
        ("Zürich", "zürich"),  # unicode letters are kept, lower-cased
        ("«quoted»", "«quoted»"),  # only ASCII punctuation is removed (as SQuAD does)
        ("", ""),
        ("1,000", "1000"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_any_gold():
    golds = ["Barack Obama", "Obama"]
    assert exact_match("obama.", golds) == 1.0
    assert exact_match("the Barack Obama", golds) == 1.0
    assert exact_match("President Obama", golds) == 0.0
    assert exact_match("", golds) == 0.0
    assert exact_match("", [""]) == 1.0
    assert exact_match("anything", []) == 0.0


def test_cover_exact_match_is_whole_token():
    assert cover_exact_match("It was Barack Obama in 2009", ["Barack Obama"]) == 1.0
    assert cover_exact_match("not sure", ["no"]) == 0.0
    assert cover_exact_match("no, never", ["no"]) == 1.0
    assert cover_exact_match("whatever", [""]) == 0.0


def test_token_f1_hand_computed():
    # prediction tokens: [new, york, city]; gold tokens: [new, york] -> P=2/3, R=1, F1=0.8
    assert token_f1("New York City", ["New York"]) == pytest.approx(0.8)
    # best over golds: "paris" vs "paris france" -> P=1, R=1/2, F1=2/3
    assert token_f1("Paris", ["London", "Paris France"]) == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: pred [a_, a_] is "x x", gold "x" -> P=1/2, R=1
    assert token_f1("x x", ["x"]) == pytest.approx(2 / 3)
    assert token_f1("", ["Paris"]) == 0.0
    assert token_f1("the", [""]) == 1.0  # both normalise to empty


def test_extract_answer_takes_last_complete_span():
    text = "For example, <answer> Beijing </answer>. ... <answer> Paris </answer> <answer> x"
    assert extract_answer(text) == "Paris"
    assert extract_answer("<answer>\nmulti\nline </answer>") == "multi\nline"
    assert extract_answer("no answer here") is None
    assert extract_answer("<answer></answer>") == ""


def test_score_answer():
    assert score_answer(None, ["x"]) == {"em": 0.0, "f1": 0.0, "cover_em": 0.0, "sub_em": 0.0}
    scores = score_answer("the Eiffel Tower", ["Eiffel Tower"])
    assert scores == {"em": 1.0, "f1": 1.0, "cover_em": 1.0, "sub_em": 1.0}


def test_cover_em_matches_whole_tokens_and_flashrag_sub_em_any_substring():
    # FlashRAG's sub-EM is a substring test on the normalised strings
    assert substring_exact_match("it is not known", ["no"]) == 1.0
    assert cover_exact_match("it is not known", ["no"]) == 0.0
    assert substring_exact_match("Paris, France", ["paris"]) == 1.0
    assert substring_exact_match("anything", [""]) == 0.0  # an empty gold covers nothing
