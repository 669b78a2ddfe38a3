"""The device check (``benchmarks/gpu_check/``): ``--smoke`` runs every part on CPU with
what the GPU machine has installed, and the check fails where it must."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.gpu_check import command
from benchmarks.gpu_check.agreement import agreement_rows
from benchmarks.gpu_check.models import (
    MODELS,
    IdsOnlyTokenizer,
    peak_logits,
    qwen2_config,
    random_model,
    random_prompts,
)
from benchmarks.gpu_check.report import Row
from tests.device_env import run_on_device_python

RUN_THE_CHECK = "import runpy\nrunpy.run_module('benchmarks.gpu_check', run_name='__main__')"


def test_the_smoke_check_passes_with_only_what_the_device_has(tmp_path):
    """Torch, transformers, their requirements and the carried wheels: no Ray, vLLM or
    any other package. Every part runs; only the CUDA memory row has nothing to measure."""
    report_path = tmp_path / "gpu_check.json"
    result = run_on_device_python(RUN_THE_CHECK, "--smoke", "--json", str(report_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    rows = report["rows"]
    assert report["passed"] and report["environment"]["device"] == "cpu"
    assert {row["part"] for row in rows} == {
        "a learner step",
        "b generation",
        "c log-probs",
        "d pure math",
    }
    assert [row["what"] for row in rows if row["result"] != "PASS"] == [
        "peak CUDA memory of the step vs rexrag plan (fsdp, 1 GPU)"
    ]
    planted = [row for row in rows if row["what"].startswith("planted")]
    assert len(planted) == 2  # the off-by-one and the wrong temperature, both caught
    assert "| c log-probs | tiny | planted off-by-one" in result.stdout


def sampled_rows(logprobs: np.ndarray, prompt_length: int = 3):
    """A batch whose MODEL tokens were sampled with ``logprobs`` (``[rows, tokens]``)."""
    from agents.rexrag.token_batch import to_token_batch
    from agents.trajectory import Component, Trajectory

    trajectories = []
    for row, sampled in enumerate(logprobs.tolist()):
        trajectories.append(
            Trajectory(
                example_id=f"q{row}",
                question="",
                golden_answers=[],
                data_source="test",
                token_ids=list(range(1, prompt_length + len(sampled) + 1)),
                components=[int(Component.PROMPT)] * prompt_length
                + [int(Component.MODEL)] * len(sampled),
                sampling_logprobs=[0.0] * prompt_length + sampled,
                prompt_length=prompt_length,
            )
        )
    return to_token_batch(trajectories)


PEAK = {"sampled_prob": 0.5, "uniform_prob": 1 / 151936}


def results(rows: list[Row]) -> list[str]:
    return [row.result for row in rows]


def test_a_learner_that_scores_one_position_off_fails_the_check():
    """Peaked log-probs: the real row passes when the learner agrees and fails when it
    reads one position off; the planted rows are caught as long as the logits vary."""
    rng = np.random.default_rng(0)
    batch = sampled_rows(np.log(rng.uniform(0.05, 1.0, (4, 12))))
    agreeing = batch.sampling_logprobs + 1e-3 * batch.loss_mask
    assert results(agreement_rows("t", batch, agreeing, agreeing - 0.3, PEAK)) == ["PASS"] * 3

    one_off = np.zeros_like(batch.sampling_logprobs)
    one_off[:, :-1] = batch.sampling_logprobs[:, 1:]
    assert results(agreement_rows("t", batch, one_off, agreeing - 0.3, PEAK))[0] == "FAIL"


def test_near_uniform_logits_hide_the_planted_bugs():
    """What random weights give without peaking: every token at -log V, so an
    off-by-one and a wrong temperature change nothing, and the check says so."""
    batch = sampled_rows(np.full((4, 12), -np.log(151936.0)))
    rows = agreement_rows("t", batch, batch.sampling_logprobs, batch.sampling_logprobs, PEAK)
    assert results(rows) == ["PASS", "FAIL", "FAIL"]


def test_a_failed_or_raising_part_makes_the_command_exit_1(monkeypatch, tmp_path, capsys):
    def fails(name, shape, sizes, device, rows):
        rows.append(Row("b generation", name, "tokens/s", "1", "2", "FAIL"))
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(command, "check_model", fails)
    report_path = tmp_path / "report.json"
    assert command.main(["--smoke", "--json", str(report_path)]) == 1
    report = json.loads(report_path.read_text())
    assert not report["passed"]
    assert [row["what"] for row in report["rows"]] == ["tokens/s", "the check raised"]
    assert "RuntimeError('CUDA out of memory')" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "billions"), [("0.5b", 0.49), ("1.5b", 1.54), ("3b", 3.09)])
def test_the_checked_models_have_qwen25s_shapes(name, billions):
    """The published sizes; ``qwen2_config`` refuses a config whose shape differs from
    what the plan counts."""
    config = qwen2_config(MODELS[name])
    assert config.vocab_size == 151936 and config.tie_word_embeddings
    assert round(MODELS[name].num_params / 1e9, 2) == billions


def test_peaked_logits_sample_tokens_of_the_target_probability():
    """Calibrated on some prompts, the model samples tokens of about that probability
    after others too (random weights alone: about 1/V)."""
    from agents.llm.base import SamplingParams
    from agents.llm.hf import HFGenerator

    model = random_model(MODELS["tiny"], torch.device("cpu"))
    vocab = MODELS["tiny"].vocab
    calibration = random_prompts(8, 16, vocab, seed=0, vary=True)
    peak_logits(model, calibration, 0.7, sampled_prob=0.5, new_tokens=8)
    generator = HFGenerator(model, IdsOnlyTokenizer())
    params = SamplingParams(temperature=0.7, max_new_tokens=16, stop=(), seed=1)
    generations = generator.generate(random_prompts(8, 16, vocab, 1, True), params)
    sampled = np.exp(np.concatenate([g.logprobs for g in generations]))
    assert 0.3 < sampled.mean() < 0.7


def test_generation_speed_is_not_judged_on_cpu(monkeypatch):
    """On CPU (``--smoke``) the tiny shapes time the machine's load, not the generator:
    a slow HFGenerator run still passes there (every row complete); the ratio is shown."""
    from benchmarks.gpu_check import generation
    from benchmarks.gpu_check.models import SMOKE

    calls = []

    def timed(device, run):  # HFGenerator first, then generate: ratio 0.1
        calls.append(run)
        return run(), 10.0 if len(calls) % 2 else 1.0

    monkeypatch.setattr(generation, "timed", timed)
    model = random_model(MODELS["tiny"], torch.device("cpu"))
    rows = generation.generation_rows(model, "tiny", SMOKE, torch.device("cpu"))
    assert [row.result for row in rows] == ["PASS"] * len(SMOKE.generation_batches)
    assert all("ratio 0.10 (speed judged on CUDA only)" in row.expected for row in rows)
