"""Gated promotion on a real MLflow store: a worse challenger is refused, a better one accepted,
the decision and its numbers are in the version tags, and `churn promote` overrides by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from features.synthetic import generate
from tests.stores import empty_mlflow_store
from training.config import TrainConfig
from training.dataset import build_training_set, resolve_label
from training.train import run_training

runner = CliRunner()


@pytest.fixture(scope="module")
def medium():
    """A seeded base big enough for a stable held-out AUC, its training rows built once."""
    tables = generate(accounts=700, months=15, seed=21)
    config = resolve_label(TrainConfig.model_validate({"split": {"backtest_folds": 0}}), tables)
    return tables, config, build_training_set(tables, config)


def _weak(config: TrainConfig) -> TrainConfig:
    # Two leaves, two rounds: a model that barely ranks.
    return config.model_copy(update={"lightgbm": config.lightgbm.model_copy(update={
        "num_leaves": 2, "num_boost_round": 2, "early_stopping_rounds": 0,
        "feature_fraction": 0.1, "learning_rate": 0.01})})


def test_gate_refuses_a_worse_challenger_and_accepts_a_better_one(medium, tmp_path: Path) -> None:
    tables, config, ts = medium
    uri = empty_mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)

    weak = run_training(tables, _weak(config), tracking=uri, training_set=ts)
    assert weak.promotion["decision"] == "first"
    assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == weak.model_version

    strong = run_training(tables, config, tracking=uri, training_set=ts)
    assert strong.metrics["roc_auc"] > weak.metrics["roc_auc"] + config.promotion.margin
    assert strong.promotion["decision"] == "promoted", strong.promotion
    assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == strong.model_version
    tags = client.get_model_version("churn-risk", strong.model_version).tags
    assert tags["promotion.decision"] == "promoted"
    assert tags["promotion.champion_version"] == weak.model_version
    # The champion was re-scored on the challenger's window: the same numbers as its own run.
    assert float(tags["promotion.champion_score"]) == pytest.approx(weak.metrics["roc_auc"], abs=1e-6)
    assert float(tags["promotion.challenger_score"]) == pytest.approx(strong.metrics["roc_auc"], abs=1e-6)
    assert tags["promotion.window"] == ",".join(strong.test_dates)
    assert tags["promotion.champion_saw_window"] == "false"  # same split: a fair contest

    worse = run_training(tables, _weak(config), tracking=uri, training_set=ts)
    assert worse.promotion["decision"] == "refused", worse.promotion
    assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == strong.model_version
    assert str(client.get_model_version_by_alias("churn-risk", "challenger").version) == worse.model_version
    tags = client.get_model_version("churn-risk", worse.model_version).tags
    assert tags["promotion.decision"] == "refused"
    assert float(tags["promotion.champion_score"]) > float(tags["promotion.challenger_score"])
    assert "does not beat" in tags["promotion.reason"]

    # A manual override needs a reason and records it.
    result = runner.invoke(app, ["promote", worse.model_version, "--reason", " ",
                                 "--tracking-uri", uri])
    assert result.exit_code == 2 and "needs a reason" in result.output
    result = runner.invoke(app, ["promote", worse.model_version, "--reason",
                                 "rollback drill", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == worse.model_version
    tags = client.get_model_version("churn-risk", worse.model_version).tags
    assert tags["promotion.decision"] == "manual" and "rollback drill" in tags["promotion.reason"]
    result = runner.invoke(app, ["promote", "99", "--reason", "typo", "--tracking-uri", uri])
    assert result.exit_code == 2


def test_a_margin_no_one_can_clear_keeps_the_champion(medium, tmp_path: Path) -> None:
    tables, config, ts = medium
    uri = empty_mlflow_store(tmp_path / "mlflow.db")
    first = run_training(tables, config, tracking=uri, training_set=ts)
    strict = config.model_copy(update={"promotion": config.promotion.model_copy(
        update={"margin": 0.5})})
    second = run_training(tables, strict, tracking=uri, training_set=ts)
    assert second.promotion["decision"] == "refused"
    # Same data and settings: the same model, so the champion's score equals the challenger's.
    assert second.promotion["champion_score"] == pytest.approx(second.promotion["challenger_score"])
    champion = MlflowClient(uri).get_model_version_by_alias("churn-risk", "champion")
    assert str(champion.version) == first.model_version


def test_gate_notes_a_champion_whose_labels_reach_into_the_window(medium, tmp_path: Path) -> None:
    tables, config, ts = medium
    uri = empty_mlflow_store(tmp_path / "mlflow.db")
    one = config.model_copy(update={"split": config.split.model_copy(update={"test_dates": 1})})
    first = run_training(tables, one, tracking=uri, training_set=ts)
    second = run_training(tables, config, tracking=uri, training_set=ts)
    # The champion tested on the last date only; its validation labels (90 days) run into the
    # challenger's two-date window.
    assert second.promotion["champion_saw_window"] is True
    assert "reach into this window" in second.promotion["reason"]
    tags = MlflowClient(uri).get_model_version("churn-risk", second.model_version).tags
    assert tags["promotion.champion_saw_window"] == "true"
    assert first.validation_dates[0] in second.promotion["reason"]
