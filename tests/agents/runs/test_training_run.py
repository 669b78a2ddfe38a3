"""`rexrag train` / `rexrag eval --checkpoint`: progress, checkpoints, resume, failures."""

from __future__ import annotations

import csv
import itertools
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from agents.cli import main, parse_overrides
from agents.runs.run_directory import complete_checkpoints, resolve_policy
from agents.runs.training_run import train
from tests.agents.conftest import tiny_config
from tests.agents.runs.tracker_files import tensorboard_scalars
from tests.helpers import needs_vllm


def overrides(model_dir, task, **extra):
    values = {
        "llm": model_dir,
        "dataset": task,
        "questions_per_iteration": 2,
        "group_size": 2,
        "max_new_tokens_per_turn": 24,
        "seed": 0,
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


def csv_iterations(run_dir):
    with (run_dir / "metrics.csv").open() as handle:
        return [int(row["iteration"]) for row in csv.DictReader(handle)]


def test_parse_overrides():
    assert parse_overrides(["group_size=8", "probes=false", "llm=a=b", "lr=5e-5"]) == {
        "group_size": 8,
        "probes": False,
        "llm": "a=b",
        "lr": 5e-5,  # YAML 1.1 alone would make it the string "5e-5"
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["group_size"])


def test_train_runs_the_embedded_default_unless_told_otherwise(capsys):
    from agents.cli import build_parser

    parser = build_parser()
    default = parser.parse_args(["train"])
    assert (default.config, default.default_config) == (None, "tiny-synthwiki")
    assert default.stop_iters == 10
    assert default.checkpoint_dir is None  # out/train/<config>-<time>
    assert default.logger == "tensorboard"
    assert parser.parse_args(["train", "--preset", "smollm2-cpu"]).config == "smollm2-cpu"
    assert main(["train", "--resume"]) == 2
    assert "--resume needs the --checkpoint-dir" in capsys.readouterr().err
    assert main(["train", "--logger", "tensorbord"]) == 2
    assert "unknown trackers ['tensorbord']" in capsys.readouterr().err


@pytest.mark.slow
def test_train_resume_and_evaluate_from_the_command_line(
    answering_model_dir, capital_task, ray_cluster, tmp_path, capsys
):
    run = tmp_path / "run"
    test_set = {"eval_dataset": capital_task, "eval_limit": 3}
    args = [*overrides(answering_model_dir, capital_task, **test_set), "--config", "tiny-cpu"]
    args += ["--checkpoint-dir", str(run)]
    assert main(["train", *args, "--stop-iters", "2", "--checkpoint-every", "1"]) == 0
    out = capsys.readouterr().out
    assert "iter 1/2" in out and "iter 2/2" in out and "dead-end" in out
    assert "before training: EM" in out and "after training: EM" in out
    for when in ("before", "after"):
        summary = json.loads((run / f"eval_{when}" / "summary.json").read_text())
        assert summary["capitals"]["n"] == 3
    assert (run / "curves.png").stat().st_size > 10_000
    assert [p.name for p in complete_checkpoints(run)] == ["iteration_000001", "iteration_000002"]
    AutoModelForCausalLM.from_pretrained(resolve_policy(run))  # a plain HF model directory

    assert main(["train", *args, "--stop-iters", "3"]) == 2  # never overwrites a run
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--checkpoint-dir", str(run), "--resume", "--stop-iters", "3"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert csv_iterations(run) == [1, 2, 3]
    # TensorBoard (the default --logger): the iterations as in metrics.csv, the
    # evaluations beside them (after training: at 2, then again at 3 after the resume)
    scalars = tensorboard_scalars(run / "tensorboard")
    with (run / "metrics.csv").open() as handle:
        accuracy = [float(row["accuracy_original"]) for row in csv.DictReader(handle)]
    assert scalars["accuracy_original"] == [
        (step, pytest.approx(value)) for step, value in enumerate(accuracy, start=1)
    ]
    assert [step for step, _ in scalars["eval_before/em"]] == [0]
    assert [step for step, _ in scalars["eval_after/em"]] == [2, 3]

    # `rexrag eval --checkpoint RUN` evaluates under the run's protocol (retriever,
    # top-k, turns, token limits), so it reproduces the run's own after-training number
    evaluation = ["eval", "--checkpoint", str(run), "--datasets", str(capital_task)]
    out_dir = tmp_path / "eval"
    assert main([*evaluation, "--limit", "3", "--out", str(out_dir)]) == 0
    assert f"protocol: the run's, from {run.resolve() / 'config.yaml'}" in capsys.readouterr().out
    for name in ("protocol.json", "summary.json"):
        assert json.loads((out_dir / name).read_text()) == json.loads(
            (run / "eval_after" / name).read_text()
        ), name
    overridden = tmp_path / "eval-overridden"
    assert main([*evaluation, "--limit", "2", "--max-turns", "1", "--out", str(overridden)]) == 0
    assert "(overridden: max_turns)" in capsys.readouterr().out
    protocol = json.loads((overridden / "protocol.json").read_text())
    assert (protocol["max_turns"], protocol["max_new_tokens"]) == (1, 24)


@pytest.mark.slow
def test_an_interrupted_run_keeps_its_progress_and_resumes(
    answering_model_dir, capital_task, ray_cluster, tmp_path
):
    run = tmp_path / "run"
    config = tiny_config(answering_model_dir, capital_task, questions_per_iteration=2)
    lines = []

    def interrupt_after_two(line):
        lines.append(line)
        if len(lines) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, run, stop_iters=10, checkpoint_every=5, log=interrupt_after_two)
    assert [p.name for p in complete_checkpoints(run)] == ["iteration_000002"]
    history = train(config, run, stop_iters=3, resume=True, log=lines.append)
    assert len(history) == 1 and csv_iterations(run) == [1, 2, 3]
    assert [p.name for p in complete_checkpoints(run)] == ["iteration_000002", "iteration_000003"]
    # keep_checkpoints: the newest N stay (the run still resumes from the newest)
    train(config, run, stop_iters=5, keep_checkpoints=1, resume=True, log=lines.append)
    assert [p.name for p in complete_checkpoints(run)] == ["iteration_000005"]
    assert sorted(p.name for p in run.glob("iteration_*")) == ["iteration_000005"]
    with pytest.raises(ValueError, match="keep_checkpoints must be at least 1"):
        train(config, run, stop_iters=6, keep_checkpoints=0, resume=True)


@pytest.mark.slow
def test_a_failed_iteration_exits_with_a_resume_hint(
    answering_model_dir, capital_task, ray_cluster, tmp_path, free_port, capsys
):
    url = f"http://127.0.0.1:{free_port}"
    args = [*overrides(answering_model_dir, capital_task, retriever=url), "--config", "tiny-cpu"]
    assert main(["train", *args, "--checkpoint-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{free_port}" in err and "--resume" in err


@pytest.mark.slow
@needs_vllm
def test_train_with_vllm_rollouts_in_a_remote_env_runner(
    answering_model_dir, capital_task, ray_cluster, tmp_path, capsys
):
    """vLLM's CPU build samples in one Ray EnvRunner, the learner updates, and every
    iteration's sync reaches the engine: the rollout's log-probs equal the learner's up
    to float error in each iteration, while the weights change every iteration."""
    run = tmp_path / "run"
    args = overrides(answering_model_dir, capital_task, backend="vllm", num_env_runners=1)
    args += ["vllm_max_model_len=1024", "lr=0.001", "--config", "tiny-cpu"]
    args += ["--checkpoint-dir", str(run), "--checkpoint-every", "1", "--stop-iters", "3"]
    assert main(["train", *args]) == 0, capsys.readouterr().err
    assert csv_iterations(run) == [1, 2, 3]
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        assert float(row["logprob_mismatch"]) < 1e-4, row
    policies = [
        AutoModelForCausalLM.from_pretrained(resolve_policy(checkpoint)).state_dict()
        for checkpoint in complete_checkpoints(run)
    ]
    assert len(policies) == 3
    for earlier, later in itertools.pairwise(policies):
        assert any(not torch.equal(earlier[name], later[name]) for name in earlier)
