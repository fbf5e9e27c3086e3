"""Quality floor on the shared sim-dev data (fightchurn ChurnSim), through the features mapping and
the shipped training config: train on 2020-02..05 dates, test on 2020-06-01 (docs/benchmarks.md
records the measured figures; this asserts floors, not them)."""

from __future__ import annotations

from pathlib import Path

from features.rows import feature_rows
from serving.batch import score_frame
from serving.loader import load_model
from serving.settings import ServingSettings
from tests.stores import empty_mlflow_store
from training.config import TrainConfig
from training.train import run_training

REPO = Path(__file__).resolve().parents[2]


def test_sim_dev_beats_its_baselines(sim_dev_tables, tmp_path: Path) -> None:
    tables = sim_dev_tables
    config = TrainConfig.from_yaml(REPO / "training" / "configs" / "sim-dev.yaml")
    result = run_training(tables, config, tracking=empty_mlflow_store(tmp_path / "mlflow.db"))
    assert result.test_dates == ["2020-06-01"] and result.validation_dates == ["2020-05-01"]
    assert result.metrics["rows"] > 5000
    # Measured 0.763 (0.763-0.765 over seeds); the floor is the logistic regression the data's
    # README reports (0.75), which the issue asks us to beat.
    assert result.metrics["roc_auc"] > 0.75, result.metrics
    # The rule-only health score, its inputs ranked against the training data, ranks churners
    # too; the model must still do clearly better.
    assert result.metrics["roc_auc"] > result.health_baseline_metrics["roc_auc"] + 0.05
    assert result.metrics["top_decile_lift"] > 2.5

    # The API and `churn score` serve this model although its features (key-event counts,
    # channel, country, age) are the data set's, declared by the catalogue stored with it.
    model = load_model(f"models:/{result.model_name}/{result.model_version}", result.tracking_uri)
    assert {name for name, *_ in model.extra_features} >= {"channel", "age_years"}
    scores = score_frame(model, feature_rows(tables, ["2020-06-01"]).head(200), ServingSettings())
    assert len(scores) == 200 and all(0 <= s.churn_probability <= 1 for s in scores)
    assert all(s.reasons for s in scores)


def test_a_usage_only_export_reaches_the_tuned_quality_with_the_defaults(sim_dev_tables,
                                                                         tmp_path: Path) -> None:
    """sim-dev as the five contract tables: no key events declared, no attributes, no training
    config but the README's dates. The most frequent events get their own features and the
    regularisation for few churners is chosen on the backtest, so the model beats the README's
    logistic regression (0.75) without hand work."""
    import dataclasses

    from features.definitions import FeatureConfig

    tables = dataclasses.replace(sim_dev_tables, feature_config=FeatureConfig())
    config = TrainConfig.model_validate({"label": {"first_date": "2020-02-01"},
                                         "split": {"test_dates": 1, "backtest_folds": 2}})
    result = run_training(tables, config, tracking=empty_mlflow_store(tmp_path / "mlflow.db"))
    assert result.test_dates == ["2020-06-01"]
    assert result.metrics["roc_auc"] > 0.75, result.metrics
    assert result.tuning["regularisation"] in ("moderate", "strong"), result.tuning
    # The chosen event types' own features carry the model.
    assert any(name.startswith("key_") for name in result.top_features), result.top_features
