"""`rexrag tune --resume` (issue 29 item 1): Tune unpickles ``tuner.pkl`` and the trials'
checkpoints, so a sweep directory this user's key did not sign is refused first.
tests/tuning/test_sweep.py resumes a signed sweep (interrupted with Ctrl-C)."""

from __future__ import annotations

import pathlib
import pickle

import pytest

from agents.cli import main


class WritesMarker:
    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.path, "unpickled"))


def test_an_unsigned_sweep_is_not_unpickled(tmp_path, capsys):
    out, marker = tmp_path / "sweep", tmp_path / "marker"
    (out / "experiment").mkdir(parents=True)
    (out / "experiment" / "tuner.pkl").write_bytes(pickle.dumps(WritesMarker(marker)))
    (out / "sweep.yaml").write_text("{metric: m, mode: max}\n")
    assert main(["tune", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume the sweep" in err and "--trust-checkpoint" in err
    assert not marker.exists()
    with pytest.raises(ValueError, match="no signed manifest"):
        from tuning.sweep import check_sweep

        check_sweep(out / "experiment")
