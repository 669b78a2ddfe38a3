"""Where a sweep's trial results go besides Tune's own files (``rexrag tune --logger``).

Tune's logger callbacks do the work, with the defaults of ``rexrag train``'s trackers
(:mod:`agents.runs.trackers`): Tune already writes each trial's ``result.json``,
``progress.csv`` and TensorBoard event files (its default ``TBXLoggerCallback``) into
the trial directory, so ``tensorboard`` (and ``none``) add nothing; ``wandb`` adds
``WandbLoggerCallback`` (one W&B run per trial, grouped by the sweep directory's name)
and ``mlflow`` adds ``MLflowLoggerCallback`` (one MLflow run per trial, by default in a
file store ``OUT/mlruns``).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from agents.runs.trackers import (
    check_tracker_names,
    mlflow_experiment,
    mlflow_tracking_uri,
    require,
    wandb_project,
)


def logger_callbacks(names: Collection[str], out_dir: Path) -> list:
    """The ``tune.RunConfig(callbacks=...)`` that log a sweep in ``out_dir`` to ``names``
    (the ``--logger`` list, as :func:`agents.runs.trackers.parse_tracker_names` gives it)."""
    check_tracker_names(names)
    callbacks = []
    if "wandb" in names:
        require("wandb")
        from ray.air.integrations.wandb import WandbLoggerCallback

        # the trials log from Ray actors, which may not see this process's WANDB_MODE
        mode = {"mode": os.environ["WANDB_MODE"]} if "WANDB_MODE" in os.environ else {}
        callbacks.append(WandbLoggerCallback(project=wandb_project(), group=out_dir.name, **mode))
    if "mlflow" in names:
        require("mlflow")
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=mlflow_tracking_uri(out_dir), experiment_name=mlflow_experiment()
            )
        )
    return callbacks
