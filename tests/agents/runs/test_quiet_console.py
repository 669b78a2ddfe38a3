"""A quiet console: `rexrag train` shows its own lines and real warnings; the libraries'
known notices go only to the run's log, which has everything."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import warnings

import pytest

from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator, cache_argument
from agents.runs.console import QuietConsole, is_known_notice, split_lines
from agents.runs.run_directory import LOG_FILE

#: What the libraries print on their own in a run, as the issue saw them.
NOTICES = (
    "You are running RexRag on the new API stack!",
    "DeprecationWarning: `RLModule(config=[RLModuleConfig object])` has been deprecated.",
    "Install gputil for GPU system monitoring.",
    "Loading weights: 100%|",
)
#: Never on the console: the notices, and the deprecation our own code used to trigger.
NEVER_SHOWN = ("new API stack", "RLModule(config=", "gputil", "Loading weights", "past_key_values")


def test_split_lines_ends_a_line_at_a_newline_or_a_carriage_return():
    assert split_lines(b"a\nb\r\nc\rd") == ([b"a\n", b"b\r\n", b"c\r"], b"d")
    assert is_known_notice("2026-12-07 05:27:14,620\tWARNING util.py:62 -- " + NOTICES[2])
    assert not is_known_notice("iter 1/10  acc 0.31  probe-acc 0.00")


def test_notices_go_to_the_log_and_everything_else_to_the_terminal(tmp_path, capfd):
    log = tmp_path / "run" / LOG_FILE
    child = (
        "import sys; print('a child process line'); "
        "print('2026-12-07 05:27:12,457 INFO worker.py:2038 -- Started a local Ray instance.', "
        "file=sys.stderr)"
    )
    with QuietConsole(log):
        os.write(1, b"iter 1/1  acc 0.50\n")
        os.write(2, b"WARNING util.py:62 -- Install gputil for GPU system monitoring.\n")
        os.write(2, b"Loading weights:   0%|  | 0/50\rLoading weights: 100%|##| 50/50\n")
        os.write(
            2, b"WARNING rl_module.py:463 -- " + NOTICES[1].encode() + b"\n  its source line\n"
        )
        os.write(2, b"/x/y.py:3: UserWarning: a real warning\n  warnings.warn('a real warning')\n")
        subprocess.run([sys.executable, "-c", child], check=True)
    out, err = capfd.readouterr()
    assert out.splitlines() == ["iter 1/1  acc 0.50", "a child process line"]
    assert err.splitlines() == [
        "/x/y.py:3: UserWarning: a real warning",
        "  warnings.warn('a real warning')",
    ]
    logged = log.read_text()
    for line in (
        "iter 1/1",
        "gputil",
        "Loading weights: 100%",
        "its source line",
        "a real warning",
    ):
        assert line in logged
    assert "Started a local Ray instance" in logged and "a child process line" in logged


def test_generation_triggers_no_deprecation_of_our_own(tiny_model_dir):
    """The KV cache goes under the name the model's forward takes (transformers renamed
    ``past_key_values`` to ``cache``, warning at every step until 5.40 removes it)."""
    generator = HFGenerator.from_pretrained(str(tiny_model_dir))
    parameters = inspect.signature(generator.model.forward).parameters
    assert cache_argument(generator.model) in parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        (generation,) = generator.generate([[1, 2, 3]], SamplingParams(max_new_tokens=4, seed=0))
    assert len(generation.token_ids) == 4


@pytest.mark.slow  # a `rexrag train` subprocess
def test_rexrag_train_shows_our_lines_and_logs_the_notices(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "agents.cli", "train", "--stop-iters", "1"]
    command += ["questions_per_iteration=2", "group_size=2", "eval_limit=2"]
    command += ["--checkpoint-dir", str(run), "--sample-groups", "1"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "iter 1/1" in result.stdout and "before training: EM" in result.stdout
    console = result.stdout + result.stderr
    for line in console.splitlines():
        assert not is_known_notice(line), line
    for text in NEVER_SHOWN:
        assert text not in console, text
    assert result.stderr == ""
    logged = (run / LOG_FILE).read_text()
    for text in (*NOTICES[:3], "Loading weights", "iter 1/1", "after training: EM"):
        assert text in logged, text
    assert (run / "samples" / "iteration_000001.jsonl").is_file()
    assert (run / "report.html").is_file()
