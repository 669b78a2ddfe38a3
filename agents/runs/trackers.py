"""Experiment trackers: where a training run's metrics go besides ``metrics.csv``.

One interface (:class:`Tracker`: ``start`` with the run's config, ``log`` one
iteration's metrics at a step, ``finish``) and three backends, chosen by name with
``rexrag train --logger tensorboard,wandb,mlflow``:

- ``tensorboard`` (the default): event files in ``RUN/tensorboard/``, written with
  tensorboardX (a dependency of ``ray[rllib]``), so ``tensorboard --logdir RUN`` works.
- ``wandb``: a Weights & Biases run (``pip install 'rexrag[tracking]'``) in project
  ``$WANDB_PROJECT`` or ``rexrag``, its local files in ``RUN/wandb/``; ``WANDB_MODE=offline``
  records without a network (``wandb sync`` uploads later).
- ``mlflow``: an MLflow run (``mlflow-skinny`` of the same extra) in experiment
  ``$MLFLOW_EXPERIMENT_NAME`` or ``rexrag``, at ``$MLFLOW_TRACKING_URI`` or else in a local
  file store ``RUN/mlruns/`` (``mlflow ui --backend-store-uri RUN/mlruns``).

Each iteration's sample of groups (:mod:`agents.runs.samples`) goes to the trackers too:
a TensorBoard text summary ``samples`` (Markdown: the groups, their trajectories, each
probe from its branch point), a W&B table ``samples`` (one row a trajectory) and an
MLflow artifact ``samples/iteration_NNNNNN.jsonl`` (the file the run writes).

A run's step is its training iteration; the before-training evaluation is step 0. A
resumed run logs to the same W&B and MLflow runs (their ids are kept in
``RUN/trackers.json``) from the iteration after its checkpoint. Iterations that the
interrupted session ran past that checkpoint are trained and logged again: TensorBoard
hides the stale ones (as ``metrics.csv`` drops their rows), MLflow keeps both values of
such a step, and W&B ignores a step below the last one it recorded.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import yaml

from agents.runs.samples import sample_rows, samples_markdown

#: W&B project and MLflow experiment unless ``WANDB_PROJECT`` / ``MLFLOW_EXPERIMENT_NAME`` say.
DEFAULT_PROJECT = "rexrag"
#: ``--logger`` value that turns tracking off.
NO_TRACKER = "none"
#: ``--logger`` of ``rexrag train`` and ``rexrag tune``.
LOGGER_HELP = "comma-separated trackers: tensorboard, wandb, mlflow, or none (default tensorboard)"
#: Where W&B and MLflow run ids are kept, so that a resumed run logs to the same runs.
RUN_IDS_FILE = "trackers.json"
#: The package each backend imports and what installs it.
_INSTALL_HINTS = {
    "tensorboardX": "pip install tensorboardX (ray[rllib] installs it)",
    "wandb": "pip install 'rexrag[tracking]' (or pip install wandb)",
    "mlflow": "pip install 'rexrag[tracking]' (or pip install mlflow-skinny)",
}
#: MLflow refuses more parameters than this in one request.
_MLFLOW_PARAMS_PER_BATCH = 100


def require(module: str) -> ModuleType:
    """Import a tracking backend, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"experiment tracking with {module} needs it installed: {_INSTALL_HINTS[module]}"
        ) from error


def wandb_project() -> str:
    """The W&B project of runs and sweeps."""
    return os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT)


def mlflow_experiment() -> str:
    """The MLflow experiment of runs and sweeps."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_PROJECT)


def mlflow_tracking_uri(directory: Path) -> str:
    """``$MLFLOW_TRACKING_URI``, or a file store in ``directory/mlruns``.

    MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set (it wants a
    database, which needs the full ``mlflow`` package); a local store that needs no
    server is the point of the default, so it is allowed here unless the user said no.
    """
    if "MLFLOW_TRACKING_URI" in os.environ:
        return os.environ["MLFLOW_TRACKING_URI"]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (directory / "mlruns").resolve().as_uri()


def parse_tracker_names(text: str) -> list[str]:
    """``"tensorboard,wandb"`` -> ``["tensorboard", "wandb"]``; ``"none"`` -> ``[]``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == [NO_TRACKER]:
        return []
    if not names:
        raise ValueError(f"--logger {text!r}: choose from {', '.join(TRACKERS)}, or {NO_TRACKER}")
    check_tracker_names(names)
    return names


def check_tracker_names(names: Iterable[str]) -> None:
    """Refuse names that are no tracker, before anything is started."""
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(
            f"unknown trackers {unknown}: choose from {', '.join(TRACKERS)} (or {NO_TRACKER} alone)"
        )


class Tracker(ABC):
    """Receives a run's config once, then each iteration's metrics, then ``finish``.

    A backend's package is imported when the tracker is made, so a missing one fails
    before any training is done.
    """

    @abstractmethod
    def start(self, run_dir: Path, config: Mapping[str, Any], resumed_from: int | None) -> None:
        """Open the run. ``resumed_from`` is the iteration a resumed run continues after
        (steps logged past it by the interrupted session are stale), None for a new run."""

    @abstractmethod
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` (name -> number) at ``step``."""

    def log_samples(self, samples: Sequence[Mapping[str, Any]], step: int) -> None:
        """Record an iteration's sampled groups (:mod:`agents.runs.samples`) at ``step``;
        a tracker without a place for text ignores them."""
        return None

    @abstractmethod
    def finish(self) -> None:
        """Write out and close the run; does nothing if it was never started."""


class TensorBoardTracker(Tracker):
    """Scalars in TensorBoard event files (default ``RUN/tensorboard/``); the config as text."""

    def __init__(self, logdir: str | Path | None = None) -> None:
        self._tensorboardx = require("tensorboardX")
        self.logdir = None if logdir is None else Path(logdir)
        self._writer = None

    def start(self, run_dir: Path, config: Mapping[str, Any], resumed_from: int | None) -> None:
        self._writer = self._tensorboardx.SummaryWriter(
            str(self.logdir or run_dir / "tensorboard"),
            # TensorBoard hides earlier files' events from this step on, as a resumed
            # run's metrics.csv drops the rows past its checkpoint
            purge_step=None if resumed_from is None else resumed_from + 1,
            # file names have whole seconds: a second session in the same second must
            # neither truncate the first's file nor sort before it
            filename_suffix=f".{time.time_ns()}",
        )
        if resumed_from is None:
            text = yaml.safe_dump(dict(config), sort_keys=False)
            self._writer.add_text("config", f"```\n{text}```", 0)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, float(value), step)
        self._writer.flush()  # an iteration is minutes: never lose one to a crash

    def log_samples(self, samples: Sequence[Mapping[str, Any]], step: int) -> None:
        self._writer.add_text("samples", samples_markdown(samples), step)
        self._writer.flush()

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbTracker(Tracker):
    """A Weights & Biases run with the config; ``mode`` None follows ``WANDB_MODE``."""

    def __init__(self, project: str | None = None, mode: str | None = None) -> None:
        self._wandb = require("wandb")
        self.project = project
        self.mode = mode
        self._run = None

    def start(self, run_dir: Path, config: Mapping[str, Any], resumed_from: int | None) -> None:
        self._run = self._wandb.init(
            project=self.project or wandb_project(),
            dir=str(run_dir),
            config=dict(config),
            mode=self.mode,
            name=run_dir.name,
            id=_remembered_run_id(run_dir, "wandb", lambda: uuid.uuid4().hex[:12]),
            resume=None if resumed_from is None else "allow",
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._run.log({name: float(value) for name, value in metrics.items()}, step=step)

    def log_samples(self, samples: Sequence[Mapping[str, Any]], step: int) -> None:
        rows = sample_rows(samples, step)
        if rows:
            columns = list(rows[0])
            table = self._wandb.Table(columns=columns, data=[list(r.values()) for r in rows])
            self._run.log({"samples": table}, step=step)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


class MLflowTracker(Tracker):
    """An MLflow run: the config as parameters, metrics at their steps.

    ``tracking_uri`` None: ``$MLFLOW_TRACKING_URI`` or a file store in ``RUN/mlruns``;
    ``experiment`` None: ``$MLFLOW_EXPERIMENT_NAME`` or ``rexrag``. It uses an
    ``MlflowClient`` of its own, so MLflow's process-wide active run is left alone.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        self._mlflow = require("mlflow")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client = None
        self._run_id: str | None = None

    def start(self, run_dir: Path, config: Mapping[str, Any], resumed_from: int | None) -> None:
        from mlflow.entities import Param

        self._client = self._mlflow.MlflowClient(
            tracking_uri=self.tracking_uri or mlflow_tracking_uri(run_dir)
        )
        self._run_id = _remembered_run_id(run_dir, "mlflow", lambda: self._new_run(run_dir))
        if resumed_from is not None:
            self._client.update_run(self._run_id, status="RUNNING")
            return  # the parameters are logged already, and MLflow never changes one
        params = [Param(name, str(value)) for name, value in config.items()]
        for first in range(0, len(params), _MLFLOW_PARAMS_PER_BATCH):
            batch = params[first : first + _MLFLOW_PARAMS_PER_BATCH]
            self._client.log_batch(self._run_id, params=batch)

    def _new_run(self, run_dir: Path) -> str:
        name = self.experiment or mlflow_experiment()
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self._client.create_experiment(name)
        )
        return self._client.create_run(experiment_id, run_name=run_dir.name).info.run_id

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, float(value), now, step) for name, value in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch)

    def log_samples(self, samples: Sequence[Mapping[str, Any]], step: int) -> None:
        lines = "".join(
            json.dumps({"iteration": step, **group}, ensure_ascii=False) + "\n" for group in samples
        )
        self._client.log_text(self._run_id, lines, f"samples/iteration_{step:06d}.jsonl")

    def finish(self) -> None:
        if self._run_id is not None:
            self._client.set_terminated(self._run_id)
            self._run_id = None


#: ``--logger`` names.
TRACKERS: dict[str, Callable[[], Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "mlflow": MLflowTracker,
}


class Trackers(Tracker):
    """A run's trackers as one, made from names or instances; as a context manager it
    finishes them on the way out, whatever happened."""

    def __init__(self, trackers: Iterable[str | Tracker]) -> None:
        trackers = list(trackers)
        check_tracker_names(name for name in trackers if isinstance(name, str))
        self.members = [
            tracker if isinstance(tracker, Tracker) else TRACKERS[tracker]() for tracker in trackers
        ]

    def start(self, run_dir: Path, config: Mapping[str, Any], resumed_from: int | None) -> None:
        for tracker in self.members:
            tracker.start(run_dir, config, resumed_from)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Every member gets the finite ``metrics``: a NaN (a credit component with no
        token this iteration, kept as NaN in ``metrics.csv`` so its columns never shift)
        is a gap in a tracker's curve, not a point."""
        finite = {name: value for name, value in metrics.items() if math.isfinite(value)}
        for tracker in self.members:
            tracker.log(finite, step)

    def log_samples(self, samples: Sequence[Mapping[str, Any]], step: int) -> None:
        """Every member gets the iteration's sampled groups (none: nothing is logged)."""
        if samples:
            for tracker in self.members:
                tracker.log_samples(samples, step)

    def finish(self) -> None:
        for tracker in self.members:
            tracker.finish()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish()


def _remembered_run_id(run_dir: Path, backend: str, create: Callable[[], str]) -> str:
    """The ``backend``'s run id for this run directory: created on first use, then kept
    in ``RUN/trackers.json`` for a resumed run to find."""
    path = run_dir / RUN_IDS_FILE
    ids = json.loads(path.read_text()) if path.is_file() else {}
    if backend not in ids:
        ids[backend] = create()
        path.write_text(json.dumps(ids, indent=2) + "\n")
    return ids[backend]
