"""Train a model end to end: compute the run (:mod:`training.run`), then record it in MLflow,
register it and gate its promotion (:mod:`training.tracking`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.contract import Tables
from features.snapshot import Snapshot
from features.sources import load_data
from training.config import TrainConfig
from training.crossval import fit_snapshot
from training.dataset import TrainingSet
from training.run import Progress, fit_run, quiet
from training.tracking import TrainResult, record


def run_training(data: str | Path | Tables | Snapshot, config: TrainConfig | None = None, *,
                 tracking: str | None = None, observed_until: str | None = None,
                 progress: Progress = quiet, show_progress: bool = False,
                 tune: int = 0, training_set: TrainingSet | None = None,
                 spark: Any = None) -> TrainResult:
    """Backtest, train, calibrate and evaluate on the latest held-out dates, log everything to
    MLflow, register the model as ``challenger`` and promote it to ``champion`` if it passes the
    gate (see :func:`training.run.fit_run` for ``tune``, ``training_set`` and ``spark``).

    A snapshot export is cross-validated instead (:func:`training.crossval.fit_snapshot`).
    """
    tables = data if isinstance(data, Tables | Snapshot) else load_data(data)
    if isinstance(tables, Snapshot):
        if tune or observed_until or training_set is not None:
            raise ValueError("a snapshot export has no dates to tune on or observe until: train "
                             "it without tune, observed_until or training_set")
        return record(fit_snapshot(tables, config, progress=progress), tracking=tracking,
                      progress=progress)
    run = fit_run(tables, config, observed_until=observed_until, progress=progress,
                  show_progress=show_progress, tune=tune, training_set=training_set, spark=spark)
    return record(run, tracking=tracking, progress=progress)
