"""Evaluation directories (issue 29 item 4): a re-run resumes only the agent, model and
policy that wrote the records; another one is refused, naming both."""

from __future__ import annotations

import json
import shutil

import pytest

from agents.cli import main
from agents.evaluation import AgentIdentity, EvalProtocol, check_same_evaluation


def eval_args(agent, out):
    return ["eval", "--agent", agent, "--datasets", "bamboogle", "--limit", "4", "--out", str(out)]


def test_another_agent_cannot_resume_into_the_results(tmp_path, capsys):
    """The reproduction: no-search then oracle in one --out reported the oracle's EM
    as no-search's (10.0, where a fresh directory gives 100.0)."""
    out = tmp_path / "ev"
    assert main(eval_args("no-search", out)) == 0
    records = (out / "bamboogle.jsonl").read_text()
    capsys.readouterr()
    assert main(eval_args("oracle", out)) == 2
    err = capsys.readouterr().err
    assert "agent no-search" in err and "agent oracle" in err and "new --out" in err
    assert (out / "bamboogle.jsonl").read_text() == records
    assert json.loads((out / "protocol.json").read_text())["agent"]["kind"] == "no-search"
    assert main(eval_args("no-search", out)) == 0  # the same agent still resumes


def test_a_retrained_policy_at_the_same_path_is_another_agent(tmp_path, tiny_model_dir):
    policy = tmp_path / "policy"
    shutil.copytree(tiny_model_dir, policy)
    protocol = EvalProtocol(datasets=("bamboogle",), limit=2)
    before = AgentIdentity.of("llm", policy)
    (tmp_path / "protocol.json").write_text(
        json.dumps({**json.loads(json.dumps(protocol.__dict__)), "agent": before.__dict__})
    )
    check_same_evaluation(tmp_path / "protocol.json", protocol, before)  # same files: fine
    weights = next(policy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # more training, same path
    after = AgentIdentity.of("llm", policy)
    assert after.policy_digest != before.policy_digest
    with pytest.raises(ValueError, match="files sha256"):
        check_same_evaluation(tmp_path / "protocol.json", protocol, after)


def test_results_of_an_unrecorded_agent_are_not_resumed_by_a_named_one(tmp_path):
    protocol = EvalProtocol(datasets=("bamboogle",), limit=2)
    written_before = json.loads(json.dumps(protocol.__dict__))  # no "agent" key
    (tmp_path / "protocol.json").write_text(json.dumps(written_before))
    with pytest.raises(ValueError, match="did not record"):
        check_same_evaluation(tmp_path / "protocol.json", protocol, AgentIdentity.of("oracle"))
