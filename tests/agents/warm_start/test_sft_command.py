"""`rexrag sft` on SynthWiki demonstrations: loss goes down, the policy speaks the protocol."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.vector import AutoresetMode

import rexrag_env
from agents.cli import main
from agents.llm.base import SamplingParams
from agents.llm.hf import HFGenerator
from agents.llm_agent import LLMAgent


@pytest.mark.slow
def test_sft_on_synthwiki_demonstrations(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "sft"
    args = ["sft", "--model", str(tiny_model_dir), "--steps", "120", "--batch-size", "16"]
    args += ["--repeats", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "demonstrations" in printed and "loss" in printed
    losses = [
        float(line.split(",")[1]) for line in (out / "sft_losses.csv").read_text().split()[1:]
    ]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10

    agent = LLMAgent(
        HFGenerator.from_pretrained(str(out)), SamplingParams(temperature=0.0, max_new_tokens=96)
    )
    envs = gym.make_vec(
        rexrag_env.SYNTHWIKI_ENV_ID,
        num_envs=8,
        split="validation",
        autoreset_mode=AutoresetMode.DISABLED,
    )
    trajectories = agent.play(envs, [{"index": i} for i in range(8)])
    # the protocol is learnt (think, then search); copying invented names is not, yet
    assert all(t.turns[0].action.startswith("<think>") for t in trajectories)
    first_actions = [t.turns[0].action_type for t in trajectories]
    assert first_actions.count("search") >= 4, first_actions
    assert main(args) == 2  # never writes into a non-empty directory


def test_sft_needs_evidence_chains(tmp_path, tiny_model_dir, capsys):
    args = ["sft", "--model", str(tiny_model_dir), "--dataset", "musique"]
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    assert "evidence chains" in capsys.readouterr().err
