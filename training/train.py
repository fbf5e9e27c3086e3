"""Train a model end to end: compute the run (:mod:`training.run`), then record it in MLflow,
register it and gate its promotion (:mod:`training.tracking`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.contract import Tables
from features.sources import load_tables
from training.config import TrainConfig
from training.dataset import TrainingSet
from training.run import Progress, fit_run, quiet
from training.tracking import TrainResult, record


def run_training(data: str | Path | Tables, config: TrainConfig | None = None, *,
                 tracking: str | None = None, observed_until: str | None = None,
                 progress: Progress = quiet, show_progress: bool = False,
                 tune: int = 0, training_set: TrainingSet | None = None,
                 spark: Any = None) -> TrainResult:
    """Backtest, train, calibrate and evaluate on the latest held-out dates, log everything to
    MLflow, register the model as ``challenger`` and promote it to ``champion`` if it passes the
    gate (see :func:`training.run.fit_run` for ``tune``, ``training_set`` and ``spark``)."""
    tables = data if isinstance(data, Tables) else load_tables(data)
    run = fit_run(tables, config, observed_until=observed_until, progress=progress,
                  show_progress=show_progress, tune=tune, training_set=training_set, spark=spark)
    return record(run, tracking=tracking, progress=progress)
