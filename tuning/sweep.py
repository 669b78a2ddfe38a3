"""Ray Tune sweeps over RexRagConfig: ``tune.Tuner(RexRag, param_space=config)``, like any RLlib
algorithm, plus what a user wants out of it: a results table (printed and CSV), the best
config as a YAML preset ``rexrag train --config`` accepts, a learning-curve plot, and
``resume`` that continues an interrupted sweep without repeating finished trials.

Each trial is a whole RexRag algorithm; Tune reserves its resources from the config
(trial actor, EnvRunners, Learners and their GPUs, via RLlib's
``Algorithm.default_resource_request``), so the same sweep runs on a laptop or a cluster
(``RAY_ADDRESS``). A trial that crashes is reported with its error and the sweep goes on.

Resuming unpickles the sweep (``tuner.pkl``, the trials' checkpoints), which runs any
code they hold, so when ``tuner.fit`` returns (finished or interrupted with Ctrl-C)
the driver signs the whole experiment directory (:mod:`rexrag_env.signing`; the key
lives on the driver's machine only: remote trials write into the experiment
directory, and only the driver signs and checks it) and ``resume`` checks it first. A
sweep whose driver was killed before signing, or one from someone else, is resumed
only with ``trust_checkpoint`` (``--trust-checkpoint``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.llm.remote_code import check_engine_options
from agents.rexrag import RexRagConfig
from agents.runs.checkpoint_guard import TRUST_FLAG
from agents.runs.ray_cluster import init_ray
from rexrag_env.signing import UntrustedFileError, check_manifest, write_manifest
from tuning.loggers import logger_callbacks
from tuning.spaces import load_space, mutations, to_tune

SCHEDULERS = ("asha", "pbt", "fifo")
DEFAULT_METRIC = "rexrag/accuracy_original"
#: The signed manifest of the experiment directory, written when ``tuner.fit`` returns.
MANIFEST_FILE = "rexrag_manifest.json"


@dataclass
class SweepSummary:
    """What a finished (or resumed) sweep leaves behind."""

    rows: list[dict[str, Any]]  # one per trial, best first
    table: str  # the rows as Markdown
    csv_path: Path
    best_config_path: Path | None  # None when no trial reported the metric
    plot_path: Path


def make_scheduler(name: str, space: dict[str, Any], max_iters: int):
    """ASHA (early stopping), PBT (population based training) or FIFO (run all to the end)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if name == "asha":
        return ASHAScheduler(
            time_attr="training_iteration", max_t=max_iters, grace_period=1, reduction_factor=2
        )
    if name == "pbt":
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=max(1, max_iters // 4),
            hyperparam_mutations=mutations(space),
        )
    if name == "fifo":
        return FIFOScheduler()
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")


class SweepInterruptedError(RuntimeError):
    """The sweep stopped before every trial ended; it is saved, not summarised."""


def run_sweep(
    base: RexRagConfig | None,
    space: str | Path | dict[str, Any],
    *,
    out_dir: str | Path,
    scheduler: str = "asha",
    num_samples: int = 4,
    max_iters: int = 10,
    metric: str = DEFAULT_METRIC,
    mode: str = "max",
    max_concurrent_trials: int | None = None,
    loggers: Sequence[str] = ("tensorboard",),
    resume: bool = False,
    trust_checkpoint: bool = False,
    allow_remote_code: bool = False,
) -> SweepSummary:
    """Run (or, with ``resume``, continue) a sweep into ``out_dir``; summarise it there.

    ``loggers`` (``rexrag tune --logger`` names) add Tune's W&B and MLflow logger
    callbacks (:mod:`tuning.loggers`). ``resume`` takes everything (space, scheduler,
    metric, loggers) from the sweep on disk (``base`` may be None); the other arguments
    are then ignored. Finished trials are not run again; unfinished and errored ones
    continue from their last checkpoint. A sweep is resumed only if this user's key
    signed it, unless ``trust_checkpoint``. A space whose ``vllm_options`` would run
    outside code is refused unless ``allow_remote_code``.
    """
    from ray import tune

    from agents.rexrag.rexrag import RexRag

    out_dir = Path(out_dir).resolve()
    experiment = out_dir / "experiment"
    if resume and not tune.Tuner.can_restore(str(experiment)):
        raise FileNotFoundError(f"no sweep to resume in {out_dir}")
    if resume and not trust_checkpoint:
        check_sweep(experiment)
    if resume:
        settings = yaml.safe_load((out_dir / "sweep.yaml").read_text())
        metric, mode = settings["metric"], settings["mode"]
        loggers = settings.get("loggers", [])
    else:
        if experiment.exists():
            raise FileExistsError(
                f"{out_dir} already holds a sweep: pass --resume to continue it, or another --out"
            )
        space_data = load_space(space)
        check_engine_options(space_data.get("vllm_options"), space, allow_remote_code)
        if base is None:
            raise ValueError("a new sweep needs a base config")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        base.validate()
    # A missing package fails here, before any trial. A resumed sweep gets back the
    # callbacks Tune saved, but making them again also allows MLflow's file store in
    # this process.
    callbacks = logger_callbacks(loggers, out_dir)
    init_ray()
    if resume:
        tuner = tune.Tuner.restore(str(experiment), trainable=RexRag, resume_errored=True)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "base_config.yaml").write_text(yaml.safe_dump(base.to_yaml_dict()))
        (out_dir / "space.yaml").write_text(yaml.safe_dump(space_data, sort_keys=False))
        settings = {"metric": metric, "mode": mode, "scheduler": scheduler}
        settings |= {"num_samples": num_samples, "max_iters": max_iters, "loggers": list(loggers)}
        (out_dir / "sweep.yaml").write_text(yaml.safe_dump(settings))
        param_space = base.copy(copy_frozen=False)
        for name, value in to_tune(space_data).items():
            setattr(param_space, name, value)
        tuner = tune.Tuner(
            RexRag,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                scheduler=make_scheduler(scheduler, space_data, max_iters),
                num_samples=num_samples,
                max_concurrent_trials=max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name="experiment",
                storage_path=str(out_dir),
                stop={"training_iteration": max_iters},
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=1 if scheduler == "pbt" else 0,
                    checkpoint_at_end=True,
                    num_to_keep=2,
                ),
                verbose=1,
                callbacks=callbacks,
            ),
        )
    results = tuner.fit()
    write_manifest(experiment, MANIFEST_FILE)
    # Ctrl-C: Tune stops the trials (marked terminated), saves the experiment and returns
    # normally. A trial that ended by its stop criterion or the scheduler has a last
    # result marked done; one without is unfinished: an interrupted sweep, not a result.
    unfinished = sum(
        result.error is None and not (result.metrics or {}).get("done") for result in results
    )
    if unfinished:
        raise SweepInterruptedError(
            f"the sweep in {out_dir} was interrupted with {unfinished} trial(s) unfinished: "
            f"continue it with rexrag tune --resume --out {out_dir}"
        )
    return summarise(results, out_dir, metric, mode)


def check_sweep(experiment: Path) -> None:
    """Raise ``ValueError`` unless this user's key signed ``experiment`` as it is."""
    try:
        check_manifest(experiment, MANIFEST_FILE)
    except UntrustedFileError as error:
        raise UntrustedFileError(
            f"refusing to resume the sweep in {experiment.parent}: {error}. Resuming "
            "unpickles tuner.pkl and the trials' checkpoints, which runs any code they "
            "hold; a sweep whose process was killed was never signed. If you trust it, "
            f"pass {TRUST_FLAG}"
        ) from error


#: Trials are ranked by the mean of their last few results (one iteration is noisy):
#: Tune picks the best by it (``get_best_result(scope="last-5-avg")``; Tune averages 5
#: or 10) and the table shows it as ``last5_mean``.
RANKING_WINDOW = 5
RANKING_COLUMN = f"last{RANKING_WINDOW}_mean"


def _trial_rows(results, space: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """One row per trial: sampled values, the metric (final and ranking mean), status."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        frame = result.metrics_dataframe
        history = [] if frame is None or metric not in frame else frame[metric].dropna().tolist()
        error = result.error
        rows.append(
            {
                "trial": _trial_name(result),
                **{name: result.config.get(name) for name in space},
                "final": _nested(metrics, metric),
                RANKING_COLUMN: (
                    float(sum(history[-RANKING_WINDOW:]) / len(history[-RANKING_WINDOW:]))
                    if history
                    else None
                ),
                "iterations": metrics.get("training_iteration", 0),
                "seconds": round(float(metrics.get("time_total_s", 0.0)), 1),
                "status": "ERROR" if error else "OK",
                "error": str(error).strip().splitlines()[-1][:200] if error else "",
            }
        )
    return rows


def _best_trial(results, metric: str, mode: str) -> str | None:
    """The trial Tune ranks best by its last results' mean; None when none reported it."""
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope=f"last-{RANKING_WINDOW}-avg")
    except RuntimeError:  # no trial reported a finite value of the metric
        return None
    return _trial_name(best)


def _ranked(rows: list[dict[str, Any]], best: str | None, mode: str) -> list[dict[str, Any]]:
    """The table's order: Tune's best first, then by ranking mean (missing ones last)."""
    worst = -math.inf if mode == "max" else math.inf

    def key(row):
        value = row[RANKING_COLUMN]
        value = worst if value is None or not math.isfinite(value) else value
        return row["trial"] != best, -value if mode == "max" else value

    return sorted(rows, key=key)


def _nested(metrics: dict[str, Any], path: str) -> float | None:
    value: Any = metrics
    for part in path.split("/"):
        if not isinstance(value, dict) or part not in value:
            return metrics.get(path)
        value = value[part]
    return float(value) if isinstance(value, (int, float)) else None


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)"
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_short(row[name]) for name in names) + " |" for row in rows]
    return "\n".join(lines)


def summarise(results, out_dir: str | Path, metric: str, mode: str) -> SweepSummary:
    """Write ``trials.csv``, ``best_config.yaml`` and ``curves.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    space = yaml.safe_load((out_dir / "space.yaml").read_text()) or {}
    best = _best_trial(results, metric, mode)
    rows = _ranked(_trial_rows(results, space, metric), best, mode)
    csv_path = out_dir / "trials.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    best_config_path = None
    # Tune returns a lone trial whatever it reported, and a trial that crashed is no
    # config to train
    best_row = rows[0] if rows and rows[0]["trial"] == best else None
    if best_row and best_row["status"] == "OK" and best_row[RANKING_COLUMN] is not None:
        base = yaml.safe_load((out_dir / "base_config.yaml").read_text())
        best_config_path = out_dir / "best_config.yaml"
        chosen = {name: _plain(best_row[name]) for name in space}
        best_config_path.write_text(yaml.safe_dump({**base, **chosen}, sort_keys=False))
    table = f"metric: {metric} ({mode}; ranked by the mean of each trial's last "
    table += f"{RANKING_WINDOW} iterations)\n\n" + _markdown(rows)
    if best_row and best_row["status"] == "ERROR":
        table += f"\n\nno best_config.yaml: the best trial, {best}, crashed"
    return SweepSummary(
        rows, table, csv_path, best_config_path, _plot(results, out_dir, metric, space)
    )


def _short(value: Any) -> str:
    """A table cell or legend value: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trial_name(result) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name


def _plain(value: Any) -> Any:
    """NumPy scalars as Python values, so the YAML stays plain."""
    return value.item() if hasattr(value, "item") else value


def _plot(results, out_dir: Path, metric: str, space: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(7, 4))
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or metric not in frame or frame.empty:
            continue
        values = ", ".join(f"{name}={_short(result.config.get(name))}" for name in space)
        label = f"{_trial_name(result)} {values}"
        axis.plot(frame["training_iteration"], frame[metric], marker="o", label=label)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("training iteration")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    if axis.lines:
        axis.legend(fontsize="small")
    path = out_dir / "curves.png"
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
