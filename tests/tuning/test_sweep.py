"""Real Ray Tune sweeps over RexRag on CPU with the tiny sanity policy."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from agents.rexrag import RexRagConfig
from tuning.spaces import load_space, mutations, shipped_spaces, to_tune
from tuning.sweep import run_sweep


def base_overrides(policy, task):
    return {"llm": str(policy), "dataset": str(task), "seed": 0, "questions_per_iteration": 4}


def test_spaces_are_data_and_validated():
    assert shipped_spaces() == ["correction", "rexrag"]
    space = load_space("rexrag")
    assert space["correction"] == {"choice": ["rexrag", "none", "sequence"]}
    tune_space = to_tune({"lr": {"loguniform": [1e-5, 1e-3]}, "group_size": 4})
    assert tune_space["group_size"] == 4 and 1e-5 <= tune_space["lr"].sample() <= 1e-3
    assert set(mutations(load_space("correction"))) == {"correction"}
    with pytest.raises(ValueError, match="unknown RexRagConfig fields"):
        load_space({"grup_size": {"choice": [2, 4]}})
    with pytest.raises(ValueError, match="sampler"):
        load_space({"lr": {"normal": [0, 1]}})
    with pytest.raises(FileNotFoundError, match="rexrag"):
        load_space("no-such-space")


@pytest.mark.slow
def test_asha_sweep_table_best_config_and_plot(
    answering_model_dir, capital_task, tmp_path, monkeypatch
):
    import ray
    from mlflow import MlflowClient

    base = RexRagConfig.from_yaml("tiny-cpu", base_overrides(answering_model_dir, capital_task))
    space = {"lr": {"grid": [1e-5, 3e-4]}}
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(variable, raising=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(
            base,
            space,
            out_dir=tmp_path,
            num_samples=1,
            max_iters=2,
            loggers=("tensorboard", "mlflow"),
        )
    finally:
        ray.shutdown()
    assert [row["status"] for row in summary.rows] == ["OK", "OK"]
    assert sorted(row["lr"] for row in summary.rows) == [1e-5, 3e-4]
    assert all(row["iterations"] == 2 for row in summary.rows)
    assert summary.rows[0]["last5_mean"] >= summary.rows[1]["last5_mean"]  # best first
    assert "rexrag/accuracy_original" in summary.table
    with summary.csv_path.open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    best = RexRagConfig.from_yaml(summary.best_config_path)  # what `rexrag train` loads
    assert best.lr == summary.rows[0]["lr"] and best.llm == str(answering_model_dir)
    best.validate()
    assert summary.plot_path.stat().st_size > 0
    # Tune's own TensorBoard files, and one MLflow run per trial in the sweep directory
    assert len(list((tmp_path / "experiment").glob("*/events.out.tfevents.*"))) == 2
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("rexrag").experiment_id])
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    for run in runs:
        steps = client.get_metric_history(run.info.run_id, "rexrag/accuracy_original")
        assert [metric.step for metric in steps] == [1, 2]
    with pytest.raises(FileExistsError, match="--resume"):
        run_sweep(base, space, out_dir=tmp_path)


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_repeating_finished_trials(
    answering_model_dir, capital_task, tmp_path
):
    out = tmp_path / "sweep"
    overrides = [f"{k}={v}" for k, v in base_overrides(answering_model_dir, capital_task).items()]
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"lr": {"grid": [1e-5, 3e-4]}}))
    command = [sys.executable, "-m", "agents.cli", "tune", *overrides, "--space", str(space)]
    command += ["--num-samples", "1", "--max-iters", "3", "--max-concurrent", "1"]
    command += ["--scheduler", "fifo", "--out", str(out)]
    # Output goes to a file, unbuffered: an unread pipe fills up (Tune's progress tables
    # outgrow it) and blocks the sweep. Tune's driver writes each trial's result.json, a
    # line per result, into its Ray session directory (the experiment directory gets it
    # only when Tune syncs, every 10 s or more): the sweep's Ray keeps its files under a
    # directory of this test's own, short (Ray's socket paths must fit in 107 bytes).
    log_path = tmp_path / "sweep.log"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rexrag-ray-"))

    def staged_results():
        """Result lines so far per trial, as Tune's driver writes them."""
        files = ray_tmp.glob("ray/session_*/artifacts/*/experiment/driver_artifacts/*/result.json")
        return {path.parent.name: path.read_text().count("\n") for path in files}

    try:
        with log_path.open("w") as log:
            sweep = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(ray_tmp)},
            )
            # Ctrl-C once the second trial has reported a result: one trial at a time, so
            # the first has finished its 3 iterations, and the second has 2 to go. The
            # timeout only guards against a hung sweep; machine speed changes nothing else.
            guard = time.monotonic() + 600
            while not (len(counts := staged_results()) == 2 and min(counts.values()) >= 1):
                if sweep.poll() is not None or time.monotonic() > guard:
                    sweep.kill()
                    sweep.wait()
                    pytest.fail(
                        f"the second trial never reported (results per trial: {counts}):\n"
                        + log_path.read_text(errors="replace")[-5000:]
                    )
                time.sleep(0.2)
            sweep.send_signal(signal.SIGINT)  # Ctrl-C while the second trial runs
            assert sweep.wait(timeout=120) == 130  # interrupted, not summarised
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    def finished_trials():
        return [
            path.parent
            for path in (out / "experiment").glob("*/result.json")
            if len(path.read_text().splitlines()) == 3
        ]

    (done,) = finished_trials()
    assert not (out / "trials.csv").exists()  # the sweep did not finish

    resumed = subprocess.run(
        [sys.executable, "-m", "agents.cli", "tune", "--resume", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with (out / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["OK", "OK"]
    assert all(row["iterations"] == "3" for row in rows)
    first_trial_lines = (done / "result.json").read_text().splitlines()
    assert [json.loads(line)["training_iteration"] for line in first_trial_lines] == [1, 2, 3]


@pytest.mark.slow
def test_a_crashing_trial_is_reported_and_the_sweep_goes_on(
    answering_model_dir, capital_task, tmp_path, free_port
):
    import ray

    base = RexRagConfig.from_yaml("tiny-cpu", base_overrides(answering_model_dir, capital_task))
    dead = f"http://127.0.0.1:{free_port}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(
            base,
            {"retriever": {"grid": ["bm25", dead]}},
            out_dir=tmp_path,
            scheduler="fifo",
            num_samples=1,
            max_iters=1,
        )
    finally:
        ray.shutdown()
    by_retriever = {row["retriever"]: row for row in summary.rows}
    assert by_retriever["bm25"]["status"] == "OK"
    assert by_retriever[dead]["status"] == "ERROR"
    assert (
        "RolloutFailedError" in by_retriever[dead]["error"]
        or str(free_port) in (by_retriever[dead]["error"])
    )
    assert RexRagConfig.from_yaml(summary.best_config_path).retriever == "bm25"


@pytest.mark.slow
def test_the_best_trial_is_tunes_pick_by_its_last_five_results(tmp_path):
    """Tune ranks trials by their last 5 results' mean (``get_best_result(scope=
    "last-5-avg")``): a late spike does not win; a crashed trial is listed, never the
    config to train."""
    import ray
    from ray import tune

    from tuning.sweep import summarise

    curves = {1e-5: [0.5] * 6, 3e-4: [0.1] * 5 + [0.9], 1e-3: [0.2]}  # lr -> accuracies

    def trainable(config):
        for accuracy in curves[config["lr"]]:
            tune.report({"rexrag": {"accuracy_original": accuracy}})
        if config["lr"] == 1e-3:
            raise RuntimeError("diverged")

    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"lr": {"grid": list(curves)}}))
    (tmp_path / "base_config.yaml").write_text(yaml.safe_dump({"lr": 1e-4, "group_size": 4}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = tune.Tuner(
            trainable,
            param_space={"lr": tune.grid_search(list(curves))},
            run_config=tune.RunConfig(name="experiment", storage_path=str(tmp_path), verbose=0),
        ).fit()
    finally:
        ray.shutdown()

    best = summarise(results, tmp_path, "rexrag/accuracy_original", "max")
    assert [(row["lr"], row["final"], row["status"]) for row in best.rows] == [
        (1e-5, 0.5, "OK"),
        (3e-4, 0.9, "OK"),  # the best final value, but a mean of 0.26 over its last 5
        (1e-3, 0.2, "ERROR"),
    ]
    assert yaml.safe_load(best.best_config_path.read_text()) == {"lr": 1e-5, "group_size": 4}

    lowest = summarise(results, tmp_path, "rexrag/accuracy_original", "min")
    assert lowest.rows[0]["status"] == "ERROR" and lowest.best_config_path is None
    assert "the best trial" in lowest.table and "crashed" in lowest.table
