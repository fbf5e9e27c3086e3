"""Honest evaluation: time folds without leakage, metrics, calibration, baselines and what a run
leaves in MLflow (per-fold metrics, lineage, plots, SHAP, reference distributions)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from features.scorer import calibrate
from training.calibrator import Calibrator
from training.metrics import expected_calibration_error, health_backtest, top_decile_lift
from training.splits import backtest_folds, holdout_fold, time_fold

runner = CliRunner()
MONTHS = pd.Series(pd.date_range("2024-01-01", periods=12, freq="MS").repeat(3))


@pytest.mark.parametrize("horizon", [30, 60, 90])
def test_time_folds_never_let_a_label_see_a_later_part(horizon: int) -> None:
    for fold in [holdout_fold(MONTHS, 2, horizon), *backtest_folds(MONTHS, 4, horizon)]:
        train, valid, test = (MONTHS[m] for m in (fold.train, fold.valid, fold.test))
        assert len(train) and len(valid) and len(test)
        assert (train + pd.Timedelta(days=horizon)).max() <= valid.min()
        assert (valid + pd.Timedelta(days=horizon)).max() <= test.min()
        assert not (fold.train & fold.valid).any() and not (fold.valid & fold.test).any()


def test_folds_roll_forward_one_date_each() -> None:
    folds = backtest_folds(MONTHS, 3, 30)
    assert [f.name for f in folds] == ["2024-10-01", "2024-11-01", "2024-12-01"]
    assert [f.dates(MONTHS, f.valid) for f in folds] == [["2024-09-01"], ["2024-10-01"],
                                                           ["2024-11-01"]]
    with pytest.raises(ValueError, match="earlier observation dates"):
        time_fold(MONTHS, [pd.Timestamp("2024-02-01")], 30)


def test_metrics_on_known_cases() -> None:
    y = np.array([0] * 90 + [1] * 10)
    perfect = np.r_[np.zeros(90), np.ones(10)]
    assert top_decile_lift(y, perfect) == pytest.approx(10.0)
    assert expected_calibration_error(y, perfect) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.4)
    bt = health_backtest(y, np.r_[np.full(90, 80.0), np.full(5, 80.0), np.full(5, 10.0)])
    assert bt["green_churners"] == 5 and bt["bands"]["red"]["churn_rate"] == 1.0


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibration_fixes_overconfident_scores(method: str) -> None:
    rng = np.random.default_rng(0)
    true_p = rng.beta(1, 12, size=20000)
    y = rng.random(20000) < true_p
    skewed = np.clip(true_p * 2.5, 0, 1)  # a model that overstates risk 2.5-fold
    cal = Calibrator(method).fit(skewed[:10000], y[:10000])
    after = cal.transform(skewed[10000:])
    assert expected_calibration_error(y[10000:], after) < 0.5 * expected_calibration_error(
        y[10000:], skewed[10000:])
    # The stored form (plain JSON numbers) applied by the shared pure function gives the same.
    stored = json.loads(json.dumps(cal.to_dict()))
    assert np.allclose(calibrate(skewed[10000:], stored), after)


def test_calibrated_model_has_lower_ece_than_uncalibrated(registered_model) -> None:
    result = registered_model.result
    assert result.metrics["ece"] < result.uncalibrated_metrics["ece"], (
        result.metrics, result.uncalibrated_metrics)
    assert result.calibration["method"] == "sigmoid"


def test_run_reports_baselines_backtest_and_health_bands(registered_model) -> None:
    r = registered_model.result
    assert r.metrics["roc_auc"] > r.health_baseline_metrics["roc_auc"] + 0.05
    assert r.lift_over_baselines["logreg"]["roc_auc"] == pytest.approx(
        r.metrics["roc_auc"] - r.baseline_metrics["roc_auc"])
    assert len(r.backtest) == 4
    assert all(f["model_roc_auc"] > 0.75 for f in r.backtest), r.backtest
    assert r.best_iteration < 500  # early stopping stopped early
    assert set(r.segment_auc["segment"]) == {"SMB", "MidMarket", "Enterprise"}
    bands = r.health_backtest["rules_only"]["bands"]
    # The rule-only health score must rank: red churns more than green.
    assert bands["red"]["churn_rate"] > bands["green"]["churn_rate"]
    assert r.health_backtest["rules_only"]["green_churners"] <= r.health_backtest["rules_only"]["churners"]


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning")
def test_lineage_schema_from_dtypes_equals_mlflows_own_inference() -> None:
    """The Datasets tab shows the same schema MLflow would infer value by value."""
    from mlflow.data.pandas_dataset import PandasDataset

    from training.tracking import LineageDataset

    frame = pd.DataFrame({
        "account_id": pd.array(["a", "b", "c"], dtype="string"),
        "as_of": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
        "plan": pd.array(["growth", None, "starter"], dtype="string"),
        "active_days_30d": [3.0, np.nan, 12.0], "seats": [5.0, 6.0, 7.0], "churned": [0, 1, 0]})
    source = mlflow.data.from_pandas(frame, name="rows").source
    ours = LineageDataset(frame, source=source, targets="churned", name="rows").schema
    reference_frame = frame.astype({"account_id": object, "plan": object})
    theirs = PandasDataset(reference_frame, source=source, targets="churned", name="rows").schema
    assert ours == theirs
    assert [c.required for c in ours.inputs] == [True, True, False, False, True, True]


def test_run_logs_folds_lineage_plots_and_reference(registered_model) -> None:
    client = MlflowClient(registered_model.tracking_uri)
    run_id = registered_model.result.run_id
    history = client.get_metric_history(run_id, "backtest_model_roc_auc")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    run = client.get_run(run_id)
    for key in ("test_brier", "test_ece", "test_uncalibrated_ece", "baseline_health_test_roc_auc",
                "lift_over_logreg_roc_auc", "backtest_mean_model_roc_auc"):
        assert key in run.data.metrics, key
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert {"churn-rows-training", "churn-rows-test"} <= set(inputs)
    assert inputs["churn-rows-training"].dataset.digest
    assert run.data.tags["dataset_sha256"] == registered_model.result.dataset_digest
    names = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {f"plots/{n}.png" for n in ("roc", "pr", "calibration", "lift", "shap_summary",
                                        "feature_importance")} <= names
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots/roc.png",
                                                     tracking_uri=registered_model.tracking_uri))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model_dir = Path(mlflow.artifacts.download_artifacts(
        f"models:/churn-risk/{registered_model.version}", tracking_uri=registered_model.tracking_uri))
    meta = json.loads((model_dir / "artifacts" / "metadata.json").read_text())
    for key in ("model_name", "encoder", "catalogue", "horizon_days", "trained_at",
                "observed_until", "metrics", "run_id", "calibration"):
        assert key in meta
    reference = json.loads((model_dir / "artifacts" / "reference_distributions.json").read_text())
    events = reference["features"]["events_30d"]
    assert events["kind"] == "numeric" and sum(events["shares"]) == pytest.approx(1.0)
    assert reference["features"]["plan"]["kind"] == "categorical"


def test_evaluate_cli_scores_a_registered_model(registered_model) -> None:
    result = runner.invoke(app, ["evaluate", "--data", str(registered_model.data_dir),
                                 "--model-uri", f"models:/churn-risk/{registered_model.version}",
                                 "--tracking-uri", registered_model.tracking_uri, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["horizon_days"] == 90
    # The held-out window scores as it did at training time (same rows, same model).
    for date in registered_model.result.test_dates:
        assert date in report["per_date"] and date not in report["dates_seen_in_training"]
    test_dates = registered_model.result.test_dates
    assert report["per_date"][test_dates[0]]["roc_auc"] > 0.8
    assert set(registered_model.result.train_dates) <= set(report["dates_seen_in_training"])
    missing = runner.invoke(app, ["evaluate", "--data", str(registered_model.data_dir),
                                  "--model-uri", "models:/churn-risk/42",
                                  "--tracking-uri", registered_model.tracking_uri])
    assert missing.exit_code == 2


def test_a_registered_model_is_read_from_the_store_given_whatever_mlflows_global_uri(
        registered_model, tmp_path) -> None:
    """``churn evaluate`` and the gate read the model of the store they are given, even when the
    process's global MLflow URI points at another store holding a model of the same name."""
    from tests.serving.conftest import register_model_dir, train_tiny_booster, write_model_dir
    from training.tracking import load_scorer

    other = register_model_dir(write_model_dir(tmp_path / "tiny", *train_tiny_booster()),
                               tmp_path)  # its churn-risk v1 is another model
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(other.tracking_uri)
    try:
        _, metadata = load_scorer(f"models:/churn-risk/{registered_model.version}",
                                  registered_model.tracking_uri)
        _, by_alias = load_scorer("models:/churn-risk@champion", registered_model.tracking_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    assert metadata["run_id"] == by_alias["run_id"] == registered_model.result.run_id


def test_quality_warnings_name_chance_level_and_a_better_baseline() -> None:
    from training.metrics import quality_warnings

    chance = quality_warnings({"roc_auc": 0.49}, {"roc_auc": 0.53})
    assert len(chance) == 1 and "close to chance" in chance[0] and "0.490" in chance[0]
    beaten = quality_warnings({"roc_auc": 0.70}, {"roc_auc": 0.74})
    assert len(beaten) == 1 and "0.740 against 0.700" in beaten[0]
    assert quality_warnings({"roc_auc": 0.80}, {"roc_auc": 0.74}) == []
    assert quality_warnings({"roc_auc": float("nan")}, {}) == []
