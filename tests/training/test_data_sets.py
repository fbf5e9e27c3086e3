"""One model per data set, never mixed: models are named after their data, the champion gate only
compares like with like, and a model refuses data that lacks most of its features."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from features.definitions import FeatureConfig
from features.scorer import FeatureCoverageError
from features.synthetic import generate, write_tables
from tests.stores import empty_mlflow_store
from training.config import TrainConfig
from training.train import run_training

runner = CliRunner()
QUICK = {"split": {"backtest_folds": 0}}


@pytest.fixture(scope="module")
def two_data_sets(tmp_path_factory):
    """One MLflow store holding the model of contract-shaped data and of a mapped data set
    ("acme": the same customers with key-event features of its own)."""
    root = tmp_path_factory.mktemp("two")
    contract = generate(accounts=400, months=14, seed=5)
    acme = dataclasses.replace(contract, name="acme",
                               feature_config=FeatureConfig(key_events=("report", "export")))
    uri = empty_mlflow_store(root / "mlflow.db")
    config = TrainConfig.model_validate(QUICK)
    first = run_training(contract, config, tracking=uri)
    second = run_training(acme, config, tracking=uri)
    return contract, acme, uri, first, second, root


def test_each_data_set_has_its_own_registered_model(two_data_sets):
    _, _, uri, first, second, _ = two_data_sets
    assert (first.model_name, second.model_name) == ("churn-risk", "acme")
    assert first.promotion["decision"] == second.promotion["decision"] == "first"
    client = MlflowClient(uri)
    for result in (first, second):
        champion = client.get_model_version_by_alias(result.model_name, "champion")
        assert str(champion.version) == result.model_version


def test_the_gate_refuses_a_champion_of_another_data_set_and_names_both(two_data_sets):
    _, acme, uri, first, _, _ = two_data_sets
    forced = run_training(acme, TrainConfig.model_validate({**QUICK, "model_name": "churn-risk"}),
                          tracking=uri)
    assert forced.promotion["decision"] == "refused"
    reason = forced.promotion["reason"]
    assert "not comparable" in reason and "data set 'contract'" in reason
    assert "data set 'acme'" in reason and "--model-name" in reason
    champion = MlflowClient(uri).get_model_version_by_alias("churn-risk", "champion")
    assert str(champion.version) == first.model_version  # untouched


def test_scoring_data_that_lacks_most_of_the_models_features_is_refused(two_data_sets):
    from serving.batch import score_data
    from serving.settings import ServingSettings

    contract, _, uri, first, _, root = two_data_sets
    bare = dataclasses.replace(contract, usage_events=None, touchpoints=None, surveys=None)
    settings = ServingSettings(tracking_uri=uri, model_uri=f"models:/churn-risk/{first.model_version}",
                               score_store_url=f"sqlite:///{root / 'scores.db'}")
    with pytest.raises(FeatureCoverageError) as info:
        score_data(bare, settings)
    assert "features of model churn-risk are absent" in str(info.value)
    from serving.store import ScoreStore

    assert not ScoreStore(settings.score_store_url).exists()  # nothing was written


def test_churn_score_picks_the_data_sets_own_model(two_data_sets, tmp_path: Path):
    """`churn score --data MAPPING.yaml` scores with the champion of the mapping's name."""
    contract, _, uri, _, _, _ = two_data_sets
    data = tmp_path / "data"
    write_tables(contract, data)
    mapping = tmp_path / "globex.yaml"
    columns = {"accounts": ["account_id", "plan", "seats", "industry", "segment"],
               "subscriptions": ["account_id", "start_date", "end_date", "mrr"]}
    mapping.write_text("name: globex\ndata: data\ntables:\n" + "".join(
        f"  {t}:\n    from: {t}\n    columns: {{{', '.join(f'{c}: {c}' for c in cols)}}}\n"
        for t, cols in columns.items()))
    store = f"sqlite:///{tmp_path / 'scores.db'}"
    result = runner.invoke(app, ["score", "--data", str(mapping), "--tracking-uri", uri,
                                 "--store-url", store])
    assert result.exit_code == 2
    assert "No registered model named 'globex'" in result.output, result.output
    acme = runner.invoke(app, ["score", "--data", str(mapping), "--tracking-uri", uri,
                               "--store-url", store, "--model-name", "acme"])
    assert acme.exit_code == 2
    assert "features of model acme are absent" in acme.output, acme.output
