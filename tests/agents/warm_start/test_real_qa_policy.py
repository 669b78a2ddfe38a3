"""The warm start on real questions: its demonstrations, its key, `rexrag sft --recipe`."""

from __future__ import annotations

from dataclasses import replace

from agents.cli import main
from agents.llm.models import load_model_and_tokenizer
from agents.trajectory import Component
from agents.warm_start import real_qa_policy
from agents.warm_start.recipes import WARM_STARTS
from agents.warm_start.store import warm_start


def test_its_key_follows_the_recipe_the_demonstrator_the_ranking_and_the_split(monkeypatch):
    recipe = WARM_STARTS["smollm2-realqa"]
    key = recipe.key()
    assert key == replace(recipe).key() != replace(recipe, steps=recipe.steps + 1).key()
    monkeypatch.setattr(real_qa_policy, "SPLITS_VERSION", "v0")
    other_split = recipe.key()
    monkeypatch.setattr(real_qa_policy.PassageReaderAgent, "VERSION", 0)
    assert len({key, other_split, recipe.key()}) == 3


def test_demonstrations_search_read_and_answer_with_a_span_from_what_they_read(tiny_model_dir):
    _, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    recipe = replace(WARM_STARTS["smollm2-realqa"], questions=40)
    demonstrations = recipe.demonstrations(tokenizer)
    assert 10 <= len(demonstrations) < 40  # only the episodes that end right
    assert all(d.correct for d in demonstrations)
    searches = {sum(t.action_type == "search" for t in d.turns) for d in demonstrations}
    assert {1, 2} <= searches  # a second search for a supporting title (HotpotQA)
    for demonstration in demonstrations:
        answer = demonstration.turns[-1]
        assert " gives the answer: " in answer.action or demonstration.answer in ("yes", "no")
        assert len(answer.action.split()) < 30  # no passage copied into the answer turn
        # the answer is copied from the passages the demonstration read
        read = "".join(turn.observation for turn in demonstration.turns[:-1])
        assert demonstration.answer in read or demonstration.answer in ("yes", "no")
        trained = [
            token
            for token, component in zip(
                demonstration.token_ids, demonstration.components, strict=True
            )
            if component == Component.MODEL
        ]
        assert tokenizer.decode(trained).count("<search>") == len(demonstration.turns) - 1


def test_a_short_sft_learns_them(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    recipe = replace(WARM_STARTS["smollm2-realqa"], questions=16, steps=8, batch_size=4, lr=3e-3)
    losses = warm_start(model, tokenizer, recipe)
    assert len(losses) == 8 and losses[-1] < losses[0]


def test_sft_runs_a_registered_recipe_with_overrides(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "realqa"
    args = ["sft", "--recipe", "smollm2-realqa", "--model", str(tiny_model_dir)]
    assert (
        main([*args, "--questions", "6", "--steps", "2", "--batch-size", "2", "--out", str(out)])
        == 0
    )
    assert (out / "recipe.json").is_file() and "demonstrations" in capsys.readouterr().out
    assert main([*args, "--overconfident-share", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "recipe smollm2-realqa has no --overconfident-share" in capsys.readouterr().err
