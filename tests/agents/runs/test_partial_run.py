"""A run's claim: one launch trains it, and a launch that dies gives it up."""

from __future__ import annotations

import subprocess
import sys

from agents.runs.partial_run import RunProgress, claimed


def test_a_claimed_run_is_not_claimed_again_until_its_holder_lets_go(tmp_path):
    lock = tmp_path / "partial" / "grpo-seed4.lock"
    with claimed(lock) as first, claimed(lock) as second:  # a second open: another launch
        assert first and not second
    with claimed(lock) as again:
        assert again
    assert lock.is_file()  # the file stays; only its lock goes


def test_a_killed_launch_leaves_no_run_claimed(tmp_path):
    lock = tmp_path / "grpo-seed4.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from agents.runs.partial_run import claimed\n"
            "with claimed(Path(sys.argv[1])) as ours:\n"
            "    print(ours, flush=True)\n"
            "    time.sleep(600)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        with claimed(lock) as ours:
            assert not ours
    finally:
        holder.kill()
        holder.wait()
    with claimed(lock) as ours:
        assert ours


def test_progress_up_to_an_iteration_drops_what_came_after():
    progress = RunProgress(
        history=[{"i": 1}, {"i": 2}, {"i": 3}],
        tracked={2: 0.5, 3: 0.6},
        tracked_multi_hop={2: 0.1, 3: 0.2},
        seconds=9.0,
    )
    assert progress.up_to(2) == RunProgress(
        history=[{"i": 1}, {"i": 2}], tracked={2: 0.5}, tracked_multi_hop={2: 0.1}, seconds=9.0
    )
