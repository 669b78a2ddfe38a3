"""The command and commits an experiment's record carries (agents/runs/provenance.py)."""

from agents.runs.provenance import checkout_commit, stamp


def test_a_resumed_experiment_keeps_every_commit_that_added_to_it():
    current = checkout_commit()
    assert current  # a short hash (+dirty), or "not a git checkout" outside one
    first = stamp()
    assert first["commits"] == [current] and first["command"].startswith("python ")
    assert stamp({"commits": ["0000000"]})["commits"] == sorted({"0000000", current})
