"""Training: quality floors on seeded data, the time split, the registry and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.preprocessing import OneHotEncoder
from typer.testing import CliRunner

from cli.main import app
from features.definitions import categorical_features
from features.rows import feature_rows
from features.synthetic import generate, write_tables
from tests.stores import empty_mlflow_store
from training.config import TrainConfig
from training.dataset import build_training_set
from training.model import MAX_ONE_HOT, ChurnModel, baseline_logistic

runner = CliRunner()


def test_model_beats_floor_and_logistic_baseline(registered_model) -> None:
    metrics, baseline = registered_model.result.metrics, registered_model.result.baseline_metrics
    assert metrics["roc_auc"] > 0.72, metrics
    assert metrics["roc_auc"] > baseline["roc_auc"], (metrics, baseline)
    assert metrics["top_decile_lift"] > 2.0, metrics
    assert metrics["rows"] >= 500 and 0 < metrics["churn_rate"] < 0.5


def test_champion_alias_points_at_the_new_version(registered_model) -> None:
    client = MlflowClient(registered_model.tracking_uri)
    champion = client.get_model_version_by_alias(registered_model.model_name, "champion")
    assert str(champion.version) == registered_model.version
    run = client.get_run(registered_model.result.run_id)
    for key in ("test_roc_auc", "test_pr_auc", "test_top_decile_lift", "baseline_logreg_test_roc_auc"):
        assert key in run.data.metrics
    assert run.data.params["horizon_days"] == "90"


def test_logged_pyfunc_returns_the_models_probabilities(registered_model, default_tables) -> None:
    mlflow.set_tracking_uri(registered_model.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{registered_model.model_name}@champion")
    frame = feature_rows(default_tables).head(50)
    features = frame.drop(columns=["account_id", "as_of"])
    features = features.astype({c: object for c in features.select_dtypes("string").columns})
    proba = np.asarray(model.predict(features))
    assert proba.shape == (50,) and ((proba >= 0) & (proba <= 1)).all()
    assert len(np.unique(proba.round(6))) > 5  # real scores, not a constant


def test_churn_model_is_an_honest_estimator(small_tables) -> None:
    ts = build_training_set(small_tables, TrainConfig())
    model = ChurnModel().fit(ts.X, ts.y)
    assert model.fit(ts.X, ts.y) is model  # fit returns self
    proba = model.predict_proba(ts.X)
    assert proba.shape == (len(ts.X),) and ((proba >= 0) & (proba <= 1)).all()
    assert set(model.encoder_.categories_) == set(categorical_features())
    # Unknown categories and absent columns are missing values, not errors.
    odd = ts.X.head(3).assign(plan="platinum").drop(columns=["mrr"])
    assert np.isfinite(model.predict_proba(odd)).all()


def test_logistic_baseline_one_hot_columns_are_those_of_the_category_names() -> None:
    """The baseline encodes categories to integer codes before one-hot encoding them (for speed);
    the columns must be those a one-hot encoding of the names gives, rare values grouped alike."""
    rng = np.random.default_rng(3)
    n = 3_000
    # A wide category: 45 values with skewed and tied frequencies, some missing.
    wide = rng.choice([f"v{i:02d}" for i in range(45)], size=n,
                      p=np.r_[np.full(5, 0.1), np.full(40, 0.0125)]).astype(object)
    wide[rng.uniform(size=n) < 0.05] = None
    X = pd.DataFrame({"usage": rng.normal(size=n), "plan": rng.choice(["a", "b", "c"], size=n),
                      "wide": wide})
    y = (rng.uniform(size=n) < 0.2).astype(int)
    model = baseline_logistic(X, y, categorical=["plan", "wide"], fat_tailed=[])
    encode = model[0].named_transformers_["cat"]
    names = X[["plan", "wide"]].astype(object).where(X[["plan", "wide"]].notna(), "missing")
    reference = OneHotEncoder(handle_unknown="ignore", max_categories=MAX_ONE_HOT).fit(names)
    assert reference.infrequent_categories_[1] is not None  # the grouping is exercised
    unseen = names.head(50).assign(plan="enterprise", wide="v99")
    for frame in (X[["plan", "wide"]], unseen):
        got = encode.transform(frame)
        expected = reference.transform(frame.astype(object).where(frame.notna(), "missing"))
        assert np.array_equal(got.toarray(), expected.toarray())
    assert np.isfinite(model.predict_proba(X.head(50).assign(plan="enterprise"))).all()


def test_train_cli_prints_json(small_tables, tmp_path: Path) -> None:
    data = write_tables(small_tables, tmp_path / "data")
    uri = empty_mlflow_store(tmp_path / "mlflow.db")
    result = runner.invoke(app, ["train", "--data", str(data), "--tracking-uri", uri, "--json",
                                 "--horizon", "30"])
    assert result.exit_code == 0, result.output
    # What was understood of the data comes first (as `churn check` prints it).
    assert result.output.index("extract date:") < result.output.index("built ")
    summary = json.loads(result.stdout)
    assert summary["model_version"] == "1" and summary["model_name"] == "churn-risk"
    assert 0 <= summary["metrics"]["roc_auc"] <= 1
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the SQLite store


def test_bad_data_fails_clearly_and_writes_nothing(small_tables, tmp_path: Path) -> None:
    data = write_tables(small_tables, tmp_path / "data", fmt="csv")
    text = (data / "surveys.csv").read_text().splitlines()
    header = text[0].split(",")
    bad = text[1].split(",")
    bad[header.index("score")] = "12"
    bad[header.index("kind")] = "nps"
    (data / "surveys.csv").write_text("\n".join([text[0], ",".join(bad), *text[2:]]) + "\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["train", "--data", str(data), "--tracking-uri", uri])
    assert result.exit_code == 2
    assert "surveys.csv, column 'score': nps score 12 out of range 0-10 (rows 2)" in result.output
    assert not (tmp_path / "mlflow.db").exists()
    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert not list(tmp_path.glob(".features.parquet*"))


def test_features_cli_writes_parquet(small_tables, tmp_path: Path) -> None:
    data = write_tables(small_tables, tmp_path / "data")
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out),
                                 "--as-of", "2024-05-01,2024-06-01"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert set(frame.as_of.dt.strftime("%Y-%m-%d")) == {"2024-05-01", "2024-06-01"}
    assert not frame.duplicated(["account_id", "as_of"]).any()


@pytest.mark.parametrize("bad", ["", "not-a-date"])
def test_features_cli_rejects_bad_dates(small_tables, tmp_path: Path, bad: str) -> None:
    data = write_tables(small_tables, tmp_path / "data")
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(tmp_path / "f.parquet"),
                                 "--as-of", bad or ","])
    assert result.exit_code != 0


def test_tune_runs_optuna_on_the_backtest_and_config_is_validated(tmp_path: Path) -> None:
    data = write_tables(generate(accounts=300, months=14, seed=9), tmp_path / "data")
    uri = empty_mlflow_store(tmp_path / "mlflow.db")
    config = tmp_path / "train.yaml"
    config.write_text("label:\n  horizon_days: 60\nsplit:\n  backtest_folds: 2\n"
                      "lightgbm:\n  num_boost_round: 200\n")
    result = runner.invoke(app, ["train", "--data", str(data), "--tracking-uri", uri, "--json",
                                 "--config", str(config), "--tune", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    tuning = summary["tuning"]
    assert tuning["trials"] == 3 and 0.5 < tuning["best_value"] <= 1
    run = MlflowClient(uri).get_run(summary["run_id"])
    assert run.data.params["tune_trials"] == "3"
    assert float(run.data.params["lgbm_learning_rate"]) == pytest.approx(
        tuning["best_params"]["learning_rate"])
    assert run.data.params["horizon_days"] == "60"

    config.write_text("label:\n  horizon_days: -5\n")
    bad = runner.invoke(app, ["train", "--data", str(data), "--tracking-uri", uri,
                              "--config", str(config)])
    assert bad.exit_code == 2 and "horizon_days" in bad.output
    config.write_text("lightgbm:\n  learning_rate: 0.1\nsplitt: {}\n")
    bad = runner.invoke(app, ["train", "--data", str(data), "--tracking-uri", uri,
                              "--config", str(config)])
    assert bad.exit_code == 2 and "splitt" in bad.output


def test_feature_selection_patterns(small_tables) -> None:
    config = TrainConfig.model_validate({"features": {"include": ["events_*", "plan"],
                                                      "exclude": ["events_7d"]}})
    ts = build_training_set(small_tables, config)
    assert "plan" in ts.feature_names and "events_30d" in ts.feature_names
    assert "events_7d" not in ts.feature_names and "tenure_days" not in ts.feature_names
    assert ts.categorical == ["plan"] and [r["name"] for r in ts.catalogue] == ts.feature_names
    with pytest.raises(ValueError, match="'nope_\\*' matches no feature"):
        TrainConfig.model_validate({"features": {"include": ["nope_*"]}}).features.select(
            ts.feature_names)
