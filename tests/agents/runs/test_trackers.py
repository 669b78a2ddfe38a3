"""Each tracker writes what it should, offline: TensorBoard event files, an offline W&B
run, a local MLflow file store; a resumed run continues at the right step."""

from __future__ import annotations

import json
import math
import sys

import pytest

from agents.runs.trackers import (
    RUN_IDS_FILE,
    MLflowTracker,
    TensorBoardTracker,
    Trackers,
    WandbTracker,
    parse_tracker_names,
)
from tests.agents.runs.tracker_files import tensorboard_scalars, tensorboard_texts, wandb_run

CONFIG = {"group_size": 4, "lr": 1e-5, "probes": True, "llm": "tiny"}


def two_sessions(tracker_type, run_dir, **options):
    """A run logs iterations 1-3, is interrupted, and resumes from its checkpoint at 2."""
    with Trackers([tracker_type(**options)]) as session:
        session.start(run_dir, CONFIG, None)
        session.log({"eval_before/em": 10.0}, step=0)
        for step in (1, 2, 3):
            # a credit component absent from iteration 1 (NaN in metrics.csv)
            share = math.nan if step == 1 else step / 100
            session.log(
                {"accuracy_original": step / 10, "kl": 0.01, "credit_prefix_share": share},
                step=step,
            )
    with Trackers([tracker_type(**options)]) as session:
        session.start(run_dir, CONFIG, 2)
        session.log({"accuracy_original": 0.35, "kl": 0.02}, step=3)
        session.log({"accuracy_original": 0.4, "kl": 0.03}, step=4)


def test_parse_tracker_names():
    assert parse_tracker_names("tensorboard") == ["tensorboard"]
    assert parse_tracker_names(" tensorboard, mlflow ") == ["tensorboard", "mlflow"]
    assert parse_tracker_names("none") == []
    for bad in ("tensorbord", "none,wandb", ""):
        with pytest.raises(ValueError, match="tensorboard, wandb, mlflow"):
            parse_tracker_names(bad)
    with pytest.raises(ValueError, match=r"unknown trackers \['comet'\]"):
        Trackers(["tensorboard", "comet"])


def test_tensorboard_event_files_hide_what_a_resumed_run_repeats(tmp_path):
    two_sessions(TensorBoardTracker, tmp_path)
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["eval_before/em"] == [(0, 10.0)]
    accuracy = [(step, round(value, 4)) for step, value in scalars["accuracy_original"]]
    assert accuracy == [(1, 0.1), (2, 0.2), (3, 0.35), (4, 0.4)]  # the stale step 3 is gone
    assert [step for step, _ in scalars["credit_prefix_share"]] == [2]  # NaN: a gap
    assert "group_size: 4" in tensorboard_texts(tmp_path / "tensorboard")["config"]


def test_wandb_offline_run_holds_config_history_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    two_sessions(WandbTracker, tmp_path)
    import wandb

    wandb.teardown()  # W&B's service process writes the run files: wait for it to end
    run_id = json.loads((tmp_path / RUN_IDS_FILE).read_text())["wandb"]
    # one directory per session, both under the same run id: `wandb sync` continues it
    files = sorted((tmp_path / "wandb").glob(f"offline-run-*/run-{run_id}.wandb"))
    assert len(files) == 2
    sessions = sorted(
        ([(row["_step"], row.get("accuracy_original")) for row in run["history"]], run)
        for run in map(wandb_run, files)
    )  # by their first logged step: directory names need not sort by time
    (first_steps, first), (resumed_steps, _) = sessions
    assert {name: first["config"][name] for name in CONFIG} == CONFIG
    assert first_steps == [(0, None), (1, 0.1), (2, 0.2), (3, 0.3)]
    assert first["summary"]["accuracy_original"] == 0.3 and first["summary"]["kl"] == 0.01
    assert resumed_steps == [(3, 0.35), (4, 0.4)]


def test_mlflow_file_store_in_the_run_directory(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(variable, raising=False)  # the tracker allows its file store
    two_sessions(MLflowTracker, tmp_path)
    run_id = json.loads((tmp_path / RUN_IDS_FILE).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert client.get_experiment(run.info.experiment_id).name == "rexrag"
    assert run.data.params == {name: str(value) for name, value in CONFIG.items()}
    history = client.get_metric_history(run_id, "accuracy_original")
    # one run across both sessions; MLflow keeps the interrupted session's step 3 too
    assert sorted((m.step, m.value) for m in history) == [
        (1, 0.1),
        (2, 0.2),
        (3, 0.3),
        (3, 0.35),
        (4, 0.4),
    ]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "eval_before/em")] == [
        (0, 10.0)
    ]


def test_mlflow_honours_the_tracking_uri_variable(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    store = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweeps")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with Trackers(["mlflow"]) as session:
        session.start(run_dir, CONFIG, None)
        session.log({"accuracy_original": 0.5}, step=1)
    assert not (run_dir / "mlruns").exists()
    run_id = json.loads((run_dir / RUN_IDS_FILE).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=store.as_uri())
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "sweeps"


def test_a_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match=r"rexrag\[tracking\]"):
        Trackers(["tensorboard", "wandb"])
