from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.loader import load_model
from serving.model import ModelLoadError, load_from_dir
from serving.scoring import score_accounts
from tests.serving.conftest import register_model_dir, train_tiny_booster, write_model_dir


def test_load_by_alias(local_registry, tiny_model):
    m = load_model("models:/churn-risk@champion", local_registry.tracking_uri)
    assert (m.name, m.version, m.alias) == ("churn-risk", local_registry.version, "champion")
    assert m.horizon_days == 90 and m.metrics["roc_auc"] == 0.75
    assert m.encoder.to_dict() == tiny_model.encoder.to_dict()
    X = m.encoder.transform_records([{"active_days_30d": 3, "plan": "starter"}, {}])
    np.testing.assert_allclose(m.predict(X), tiny_model.booster.predict(X))


def test_load_by_version_latest_run_and_dir(local_registry):
    uri = local_registry.tracking_uri
    by_version = load_model(f"models:/churn-risk/{local_registry.version}", uri)
    assert (by_version.version, by_version.alias) == (local_registry.version, None)
    assert load_model("models:/churn-risk/latest", uri).version == local_registry.version
    by_run = load_model(f"runs:/{local_registry.run_id}/model", uri)
    assert by_run.name == "churn-risk" and by_run.version is None
    local = load_model(by_version.source, uri)
    assert local.source == by_version.source
    assert load_model(Path(by_version.source).as_uri(), uri).name == "churn-risk"


def test_only_the_given_tracking_uri_is_used(local_registry, tmp_path):
    """MLflow resolves some URIs against the *global* registry; the loader must not."""
    import mlflow

    before = mlflow.get_tracking_uri()
    decoy = tmp_path / "global.db"
    mlflow.set_tracking_uri(f"sqlite:///{decoy}")
    try:
        uri = local_registry.tracking_uri
        for model_uri in ("models:/churn-risk@champion", f"models:/churn-risk/{local_registry.version}",
                          f"runs:/{local_registry.run_id}/model"):
            assert load_model(model_uri, uri).name == "churn-risk"
        assert mlflow.get_tracking_uri() == f"sqlite:///{decoy}"
    finally:
        mlflow.set_tracking_uri(before)
    assert not decoy.exists()


def test_missing_alias_says_to_train(local_registry):
    with pytest.raises(ModelLoadError, match="has no alias 'staging'.*churn train"):
        load_model("models:/churn-risk@staging", local_registry.tracking_uri)


def test_missing_registered_model_says_to_train(empty_store):
    with pytest.raises(ModelLoadError, match="No registered model named 'churn-risk'.*churn train"):
        load_model("models:/churn-risk@champion", empty_store)


def test_missing_version(local_registry):
    with pytest.raises(ModelLoadError, match="no version 99"):
        load_model("models:/churn-risk/99", local_registry.tracking_uri)


def test_missing_sqlite_store_is_not_created(tmp_path):
    db = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(ModelLoadError, match="does not exist.*churn train"):
        load_model("models:/churn-risk@champion", f"sqlite:///{db}")
    assert not db.exists()


@pytest.mark.parametrize("uri", ["models:/churn-risk", "models:/churn-risk/Production"])
def test_unsupported_model_uris(local_registry, uri):
    with pytest.raises(ModelLoadError, match="models:/churn-risk@"):
        load_model(uri, local_registry.tracking_uri)


def test_missing_or_foreign_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"), "sqlite:///unused.db")
    with pytest.raises(ModelLoadError, match="not a churn-risk model"):
        load_model(str(tmp_path), "sqlite:///unused.db")


def test_corrupt_metadata_and_booster(tiny_model_dir, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "artifacts" / "metadata.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="metadata.json"):
        load_from_dir(broken)
    (broken / "artifacts" / "metadata.json").write_text(json.dumps({"model_name": "x"}))
    with pytest.raises(ModelLoadError, match="no 'encoder'"):
        load_from_dir(broken)
    shutil.copy(tiny_model_dir / "artifacts" / "metadata.json", broken / "artifacts")
    (broken / "artifacts" / "booster.txt").write_text("garbage")
    with pytest.raises(ModelLoadError, match="LightGBM cannot parse the model"):
        load_from_dir(broken)


def test_encoder_that_does_not_match_the_booster(tiny_booster, tmp_path):
    booster, encoder = tiny_booster
    enc = encoder.to_dict()
    enc["feature_names"] = enc["feature_names"][:-1]
    enc["categorical"] = [c for c in enc["categorical"] if c in enc["feature_names"]]
    path = write_model_dir(tmp_path / "m", booster, encoder)
    meta = json.loads((path / "artifacts" / "metadata.json").read_text())
    meta["encoder"] = enc
    (path / "artifacts" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="booster takes"):
        load_from_dir(path)


def test_feature_unknown_to_serving_is_refused(tmp_path):
    booster, encoder = train_tiny_booster(seed=3)
    encoder.feature_names = [*encoder.feature_names[:-1], "future_feature"]
    path = write_model_dir(tmp_path / "m", booster, encoder)
    # The booster names its features, so rename there too: this is a model from a newer release.
    text = (path / "artifacts" / "booster.txt").read_text().replace(" segment", " future_feature")
    (path / "artifacts" / "booster.txt").write_text(text)
    with pytest.raises(ModelLoadError, match="does not know.*future_feature"):
        load_from_dir(path)


def test_newer_registered_version_behind_alias(tiny_model_dir, tmp_path):
    booster, encoder = train_tiny_booster(seed=7)
    reg = register_model_dir(tiny_model_dir, tmp_path)
    second = write_model_dir(tmp_path / "second", booster, encoder, trained_at="2026-02-02")
    reg2 = register_model_dir(second, tmp_path)
    assert int(reg2.version) == int(reg.version) + 1
    assert load_model("models:/churn-risk@champion", reg.tracking_uri).trained_at == "2026-02-02"
    assert load_model(f"models:/churn-risk/{reg.version}", reg.tracking_uri).version == reg.version



def test_features_declared_by_the_models_catalogue_are_served(mapped_model_dir):
    """A model trained through a data-set mapping (extra key-event counts, extra attributes)
    loads: its stored catalogue declares the features this build does not know."""
    model = load_from_dir(mapped_model_dir)
    assert [(n, dtype) for n, dtype, *_ in model.extra_features] == [
        ("key_report_views_30d", "float"), ("channel", "category")]
    (low, high) = score_accounts(model, [
        ("A", {"key_report_views_30d": 19.0, "channel": "partner"}),
        ("B", {"key_report_views_30d": 0.0, "channel": "web"})], reasons=3)
    assert high.churn_probability > low.churn_probability
    texts = [r["text"] for r in high.reasons]
    assert any(t.startswith("Report views in the last 30 days: 0") for t in texts), texts


def test_undeclared_type_mismatch_is_refused(mapped_model_dir, tmp_path):
    """The stored catalogue must agree with the encoding (here: channel declared numeric)."""
    path = tmp_path / "m"
    shutil.copytree(mapped_model_dir, path)
    meta = json.loads((path / "artifacts" / "metadata.json").read_text())
    for record in meta["catalogue"]:
        if record["name"] == "channel":
            record["dtype"] = "float"
    (path / "artifacts" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="different type.*channel"):
        load_from_dir(path)
