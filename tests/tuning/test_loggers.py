"""``rexrag tune --logger``: Tune's own logger callbacks, with the trackers' defaults."""

from __future__ import annotations

import pytest
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from tuning.loggers import logger_callbacks


def test_logger_callbacks_for_tune(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "WANDB_PROJECT"):
        monkeypatch.delenv(variable, raising=False)
    assert logger_callbacks(["tensorboard"], tmp_path) == []  # Tune writes TensorBoard itself
    wandb, mlflow = logger_callbacks(["tensorboard", "wandb", "mlflow"], tmp_path)
    assert isinstance(wandb, WandbLoggerCallback) and isinstance(mlflow, MLflowLoggerCallback)
    assert (wandb.project, wandb.group, wandb.kwargs) == (
        "rexrag",
        tmp_path.name,
        {"mode": "offline"},
    )
    assert mlflow.tracking_uri == (tmp_path / "mlruns").as_uri()
    with pytest.raises(ValueError, match="unknown trackers"):
        logger_callbacks(["comet"], tmp_path)
