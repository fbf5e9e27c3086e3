"""Configuration of the scoring API, read from ``CHURN_*`` environment variables.

Every field can be set with an environment variable named ``CHURN_`` + the field name in upper
case; dict fields take JSON, for example::

    CHURN_MODEL_URI=models:/churn-risk/3
    CHURN_HEALTH_WEIGHTS='{"usage": 0.4, "engagement": 0.2, "sentiment": 0.1, "risk": 0.3}'
    CHURN_RISK_BANDS='{"low": 0.0, "medium": 0.15, "high": 0.4}'

Any field can also come from a YAML file named by ``CHURN_CONFIG_FILE`` (or ``config_file=``),
keyed by field name (see ``docs/serving.md``)::

    health_weights: {usage: 0.4, engagement: 0.2, sentiment: 0.2, risk: 0.2}
    health_bands: {green: 75, amber: 45, red: 0}

Precedence: arguments > ``CHURN_*`` variables > the YAML file > defaults. Everything is validated
when the settings are built, i.e. at start-up: a bad weight, band or unknown key in the file stops
the server with a message naming it.

The tracking URI falls back to ``MLFLOW_TRACKING_URI`` and then to ``sqlite:///mlflow.db`` (the
store ``churn train`` writes by default, :mod:`features.mlflow_defaults`). The defaults of the
bands, weights, quadrant thresholds, survey cadence and alarms are the rules' own
(:mod:`features.health`, :mod:`features.surveys`). Nothing is read at import time: call
:func:`get_settings` (cached) or build a :class:`ServingSettings` yourself.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from features.health import COMPONENTS, DEFAULT_HEALTH_BANDS, DEFAULT_RISK_BANDS, DEFAULT_WEIGHTS
from features.mlflow_defaults import champion_uri, tracking_uri
from features.surveys import CHURNER_ALARM, DEFAULT_POLICY, WILDCARD_ALARM, SurveyPolicy


def _check_bands(bands: dict[str, float], upper: float, what: str) -> dict[str, float]:
    if not bands:
        raise ValueError(f"{what} must name at least one band")
    for name, low in bands.items():
        if not name:
            raise ValueError(f"{what}: band names must not be empty")
        if not (math.isfinite(low) and 0.0 <= low <= upper):
            raise ValueError(f"{what}: lower bound of '{name}' must be between 0 and {upper:g}, "
                             f"got {low}")
    if len(set(bands.values())) != len(bands):
        raise ValueError(f"{what}: two bands share a lower bound")
    if min(bands.values()) != 0.0:
        raise ValueError(f"{what}: the lowest band must start at 0 so that every score gets one")
    # Best (highest lower bound) first: how GET /v1/model lists them.
    return dict(sorted(bands.items(), key=lambda kv: -kv[1]))


def _read_config_file(path: str | Path, fields: set[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the serving config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of setting names to values")
    unknown = sorted(set(map(str, data)) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(fields)}")
    return data


class ServingSettings(BaseSettings):
    """Settings of ``churn serve`` / :func:`serving.app.create_app`."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", extra="ignore")

    tracking_uri: str = Field(
        default_factory=tracking_uri,
        description="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI or "
                    "sqlite:///mlflow.db).")
    model_uri: str = Field(
        default_factory=champion_uri,
        description="Model to serve: models:/<name>@<alias>, models:/<name>/<version>, "
                    "runs:/<run_id>/<path> or a local model directory.")
    host: str = Field("127.0.0.1", description="Bind address; anything but a loopback address "
                      "needs api_key_hashes or allow_anonymous")
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="Worker processes, each with its own "
                         "SO_REUSEPORT socket on the port (see serving.workers)")
    log_level: str = "info"
    health_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="Weight of each health component; components left out get weight 0.")
    health_bands: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_HEALTH_BANDS),
        description="Lower bounds (0-100) of the health bands, e.g. green >= 70 > amber >= 40.")
    risk_bands: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_RISK_BANDS),
        description="Lower bounds (0-1) of the churn-risk bands on the churn probability.")
    max_batch_size: int = Field(1000, ge=1, description="Most accounts in one POST /v1/scores")
    micro_batch_rows: int = Field(
        64, ge=1, description="Concurrent requests of fewer accounts than this are scored "
        "together, up to this many accounts per model call (1 = no micro-batching)")
    max_queued_accounts: int = Field(
        20_000, ge=0, description="Accounts of big requests (micro_batch_rows or more) a worker "
        "holds, scoring or waiting, before it answers 503 with Retry-After (0 = no limit)")
    max_body_bytes: int = Field(
        4_000_000, ge=1024, description="Largest request body accepted (413 above it)")
    config_file: Path | None = Field(
        None, description="YAML file with any of these settings (CHURN_* variables win)")
    reasons_top: int = Field(3, ge=0, le=200,
                             description="Reasons returned per account (0 = none)")
    quadrant_nps_high: float = Field(
        DEFAULT_POLICY.nps_high, ge=0, le=10,
        description="Latest NPS at or above this counts as loyal (NPS 0-10)")
    quadrant_csat_high: float = Field(
        DEFAULT_POLICY.csat_high, ge=0, le=1,
        description="Share of satisfied CSAT answers at or above this counts as satisfied")
    survey_due_days: int = Field(
        DEFAULT_POLICY.cadence_days, ge=1,
        description="An account sent no NPS survey for this many days is due one")
    onboarding_survey_days: int = Field(
        DEFAULT_POLICY.onboarding_days, ge=0,
        description="A new account sent no NPS survey this many days after it started is due "
                    "its first one")
    api_key_hashes: list[str] = Field(
        default_factory=list,
        description="SHA-256 hex digests of the accepted API keys; when set, /v1/* needs "
                    "'Authorization: Bearer <key>' or 'X-API-Key: <key>'. Empty = no auth.")
    allow_anonymous: bool = Field(
        False, description="Serve /v1/* without API keys on a non-loopback host (keys are "
        "required there otherwise; on 127.0.0.1 /v1/* is open without keys, with a warning)")
    console_secret: str | None = Field(
        None, description="Signs the CS console's session cookies (any long random string); "
        "default: a random one per server start, shared by its workers")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (empty = CORS closed)")
    score_store_url: str = Field(
        "sqlite:///churn-scores.db",
        description="SQLAlchemy URL of the score store (`churn score` writes, the API reads)")
    poll_seconds: float = Field(
        30.0, ge=0, description="Seconds between checks of the model alias (0 = never)")
    load_attempts: int = Field(
        5, ge=1, description="Attempts to load the model at start when the registry cannot be "
        "reached (1, 2, 4 ... s apart); the server listens meanwhile")
    load_before_listening: bool = Field(
        False, description="Accept connections only once the model load has ended (loaded or "
        "given up). Set by the supervisor for a restarted worker, whose siblings serve meanwhile; "
        "a server starting listens at once")
    registry_retries: int = Field(
        2, ge=0, description="Retries of one registry call by MLflow's client "
        "(MLFLOW_HTTP_REQUEST_MAX_RETRIES wins when set)")
    registry_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one registry call (MLFLOW_HTTP_REQUEST_TIMEOUT wins "
        "when set)")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header values accepted ('*' = any; "
        "'*.example.com' = its subdomains). Empty: only loopback names when /v1/* is open "
        "without keys (against DNS rebinding from a browser), any otherwise")
    max_header_bytes: int = Field(
        32_768, ge=1024, description="Largest request line + headers (431 above it)")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection must send a request's headers within this "
        "(idle and half-sent connections are closed)")
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request's body must arrive within this after its headers "
        "(408 otherwise)")
    keep_alive_seconds: int = Field(
        5, ge=1, description="An idle keep-alive connection is closed after this")
    max_connections: int = Field(
        1000, ge=1, description="Open connections per worker; more are answered 503 and closed "
        "(keeps file descriptors for /healthz and the model)")
    log_requests: bool = Field(True, description="One JSON log line per request")
    # serving.treeshap.Engine spelled out: importing it would load numba with the settings.
    treeshap: Literal["tables", "lightgbm"] = Field(
        "tables", description="What computes the reasons' TreeSHAP values: 'tables' (per-leaf "
        "tables, checked against LightGBM's pred_contrib when the model loads, falling back to "
        "it for models they do not support) or 'lightgbm' (always pred_contrib); same numbers")
    churner_alarm: float = Field(
        CHURNER_ALARM, ge=0, le=1, description="Portfolio alarm when Churners exceed this share")
    wildcard_alarm: float = Field(
        WILDCARD_ALARM, ge=0, le=1, description="Portfolio alarm when Wildcards exceed this share")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {}) or {}
        path = init_kwargs.get("config_file") or os.environ.get("CHURN_CONFIG_FILE")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if path:
            data = _read_config_file(path, set(cls.model_fields))
            sources += (InitSettingsSource(settings_cls, init_kwargs=data),)
        return sources

    @property
    def survey_policy(self) -> SurveyPolicy:
        """The quadrant thresholds and survey cadence configured here."""
        return SurveyPolicy(nps_high=self.quadrant_nps_high, csat_high=self.quadrant_csat_high,
                            cadence_days=self.survey_due_days,
                            onboarding_days=self.onboarding_survey_days)

    @field_validator("api_key_hashes")
    @classmethod
    def _check_key_hashes(cls, hashes: list[str]) -> list[str]:
        out = []
        for h in hashes:
            h = h.strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", h):
                raise ValueError("api_key_hashes must be SHA-256 hex digests (64 hex characters); "
                                 "hash a key with `python -m serving.auth hash`")
            out.append(h)
        return out

    def check_exposure(self) -> None:
        """Raise ``ValueError`` if serving on :attr:`host` would open ``/v1/*`` to other machines.

        Open ``/v1/*`` is fine for a demo on this machine; on an address other machines can reach
        it would hand every account's scores to anyone on the network, so it must be asked for
        (:attr:`allow_anonymous`). Checked when the server starts, not here at validation:
        ``churn score`` reads the same settings and serves nothing.
        """
        if not self.api_key_hashes and not self.allow_anonymous and not _loopback(self.host):
            raise ValueError(
                f"host {self.host!r} can be reached from other machines, and no API keys are "
                "configured, so /v1/* would be open to them: set api_key_hashes "
                "(CHURN_API_KEY_HASHES; `python -m serving.auth new` makes a key and its digest), "
                "or allow_anonymous (CHURN_ALLOW_ANONYMOUS=true) to serve it without keys anyway")

    @field_validator("health_weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown health components {unknown}; expected some of "
                             f"{list(COMPONENTS)}")
        for name, w in weights.items():
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"weight of '{name}' must be a finite number >= 0, got {w}")
        if sum(weights.values()) <= 0:
            raise ValueError("at least one health weight must be positive")
        return {c: float(weights.get(c, 0.0)) for c in COMPONENTS}

    @field_validator("health_bands")
    @classmethod
    def _check_health_bands(cls, bands: dict[str, float]) -> dict[str, float]:
        return _check_bands(bands, 100.0, "health_bands")

    @field_validator("risk_bands")
    @classmethod
    def _check_risk_bands(cls, bands: dict[str, float]) -> dict[str, float]:
        return _check_bands(bands, 1.0, "risk_bands")


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def host_allow_list(settings: ServingSettings) -> list[str]:
    """The ``Host`` header values the app accepts (see :attr:`ServingSettings.allowed_hosts`)."""
    if settings.allowed_hosts:
        return list(settings.allowed_hosts)
    if settings.api_key_hashes or settings.allow_anonymous:
        return ["*"]
    return list(LOOPBACK_HOSTS)


def open_to(client_host: str | None, settings: ServingSettings) -> bool:
    """Whether ``/v1/*`` may answer a connection from ``client_host`` without an API key.

    The one exposure rule, however the app is started: with keys configured nobody passes
    without one; without keys only this machine does, unless ``allow_anonymous``.
    """
    if settings.api_key_hashes:
        return False
    return settings.allow_anonymous or (client_host is not None and _loopback(client_host))


def _loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to any address
        return False


@lru_cache(maxsize=1)
def get_settings() -> ServingSettings:
    """The process-wide settings, read from the environment on first use."""
    return ServingSettings()
