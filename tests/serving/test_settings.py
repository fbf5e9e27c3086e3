from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from features.health import DEFAULT_HEALTH_BANDS, DEFAULT_RISK_BANDS, DEFAULT_WEIGHTS
from serving import settings as settings_module
from serving.settings import ServingSettings, get_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch):
    for name in ("MLFLOW_TRACKING_URI", "CHURN_TRACKING_URI", "CHURN_MODEL_URI", "CHURN_PORT",
                 "CHURN_HEALTH_WEIGHTS", "CHURN_RISK_BANDS", "CHURN_HEALTH_BANDS",
                 "CHURN_MAX_BATCH_SIZE", "CHURN_WORKERS", "CHURN_CONFIG_FILE",
                 "CHURN_API_KEY_HASHES", "CHURN_CORS_ORIGINS", "CHURN_HOST",
                 "CHURN_ALLOW_ANONYMOUS", "CHURN_TREESHAP"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults():
    s = ServingSettings()
    assert s.tracking_uri == "sqlite:///mlflow.db"
    assert s.model_uri == "models:/churn-risk@champion"
    assert s.health_weights == DEFAULT_WEIGHTS
    assert s.health_bands == DEFAULT_HEALTH_BANDS
    assert s.risk_bands == DEFAULT_RISK_BANDS == {"high": 0.3, "medium": 0.1, "low": 0.0}
    assert s.max_batch_size == 1000
    assert s.workers == 1
    assert s.treeshap == "tables"


def test_treeshap_engine_is_one_of_two(monkeypatch):
    monkeypatch.setenv("CHURN_TREESHAP", "lightgbm")
    assert ServingSettings().treeshap == "lightgbm"
    monkeypatch.setenv("CHURN_TREESHAP", "fast")
    with pytest.raises(ValidationError, match="treeshap"):
        ServingSettings()


def test_tracking_uri_falls_back_to_mlflow_env_and_churn_prefix_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-mlflow.db")
    assert ServingSettings().tracking_uri == "sqlite:///from-mlflow.db"
    monkeypatch.setenv("CHURN_TRACKING_URI", "sqlite:///from-churn.db")
    assert ServingSettings().tracking_uri == "sqlite:///from-churn.db"


def test_env_prefix_and_json_dicts(monkeypatch):
    monkeypatch.setenv("CHURN_MODEL_URI", "models:/churn-risk/3")
    monkeypatch.setenv("CHURN_PORT", "9001")
    monkeypatch.setenv("CHURN_MAX_BATCH_SIZE", "10")
    monkeypatch.setenv("CHURN_HEALTH_WEIGHTS", '{"usage": 1, "risk": 1}')
    monkeypatch.setenv("CHURN_RISK_BANDS", '{"low": 0, "high": 0.5}')
    s = ServingSettings()
    assert (s.model_uri, s.port, s.max_batch_size) == ("models:/churn-risk/3", 9001, 10)
    # Components left out get weight 0; every component is listed.
    assert s.health_weights == {"usage": 1.0, "engagement": 0.0, "sentiment": 0.0, "risk": 1.0}
    assert list(s.risk_bands) == ["high", "low"]  # best first


@pytest.mark.parametrize("weights", [{"usage": 1, "loyalty": 1}, {"usage": -1, "risk": 1},
                                     {"usage": 0, "risk": 0}, {"usage": float("nan")}])
def test_invalid_weights(weights):
    with pytest.raises(ValidationError, match="health_weights"):
        ServingSettings(health_weights=weights)


@pytest.mark.parametrize("bands", [{}, {"low": 0.1, "high": 0.5}, {"low": 0, "high": 1.5},
                                   {"low": 0, "mid": 0.3, "high": 0.3}])
def test_invalid_risk_bands(bands):
    with pytest.raises(ValidationError, match="risk_bands"):
        ServingSettings(risk_bands=bands)


def test_invalid_health_bands():
    with pytest.raises(ValidationError, match="health_bands"):
        ServingSettings(health_bands={"green": 70, "red": 10})


def test_get_settings_is_cached_and_nothing_is_built_at_import(monkeypatch):
    assert not any(isinstance(v, ServingSettings) for v in vars(settings_module).values())
    monkeypatch.setenv("CHURN_PORT", "9100")
    first = get_settings()
    monkeypatch.setenv("CHURN_PORT", "9200")
    assert get_settings() is first and first.port == 9100
    get_settings.cache_clear()
    assert get_settings().port == 9200


def test_yaml_config_file_with_env_overrides(monkeypatch, tmp_path):
    path = tmp_path / "serving.yaml"
    path.write_text("health_weights: {usage: 0.5, risk: 0.5}\n"
                    "health_bands: {healthy: 60, at_risk: 0}\n"
                    "reasons_top: 5\n")
    monkeypatch.setenv("CHURN_CONFIG_FILE", str(path))
    s = ServingSettings()
    assert s.health_weights == {"usage": 0.5, "engagement": 0.0, "sentiment": 0.0, "risk": 0.5}
    assert s.health_bands == {"healthy": 60.0, "at_risk": 0.0} and s.reasons_top == 5
    monkeypatch.setenv("CHURN_REASONS_TOP", "2")  # the environment wins over the file
    assert ServingSettings().reasons_top == 2
    monkeypatch.delenv("CHURN_REASONS_TOP")
    assert ServingSettings(config_file=path, reasons_top=1).reasons_top == 1


@pytest.mark.parametrize(("text", "match"), [
    ("health_weights: {usage: 1, loyalty: 1}\n", "loyalty"),
    ("health_bands: {green: 70, red: 10}\n", "health_bands"),
    ("colour: blue\n", "unknown settings.*colour"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_yaml_config_is_refused_at_start(tmp_path, text, match):
    path = tmp_path / "serving.yaml"
    path.write_text(text)
    with pytest.raises((ValidationError, ValueError), match=match):
        ServingSettings(config_file=path)


def test_api_key_hashes_must_be_sha256():
    good = "a" * 64
    assert ServingSettings(api_key_hashes=[good.upper()]).api_key_hashes == [good]
    with pytest.raises(ValidationError, match="SHA-256"):
        ServingSettings(api_key_hashes=["my-plain-key"])


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_may_serve_without_keys(host):
    ServingSettings(host=host).check_exposure()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "scoring.internal"])
def test_other_hosts_need_keys_or_an_explicit_allow_anonymous(host, monkeypatch):
    with pytest.raises(ValueError, match=f"host '{host}'.*CHURN_API_KEY_HASHES"):
        ServingSettings(host=host).check_exposure()
    ServingSettings(host=host, api_key_hashes=["a" * 64]).check_exposure()
    monkeypatch.setenv("CHURN_ALLOW_ANONYMOUS", "true")
    ServingSettings(host=host).check_exposure()


def test_serve_refuses_an_open_api_off_loopback(tmp_path):
    # In a child process with a timeout: if serve() ever stopped refusing, the test fails
    # instead of serving (or exiting pytest) here.
    code = ("from serving.app import serve; from serving.settings import ServingSettings; "
            "serve(ServingSettings(host='0.0.0.0', port=0))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ValueError: host '0.0.0.0'" in result.stderr and "no API keys" in result.stderr
    assert "Started server process" not in result.stderr  # refused before uvicorn started
