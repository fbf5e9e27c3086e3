"""Request and response models of the scoring API.

The request's ``features`` object is generated from the feature catalogue
(:data:`features.definitions.CATALOGUE`): one optional field per feature, numbers for numeric
features and strings for categorical ones, NaN and infinity rejected, unknown names rejected. A
feature left out (or sent as ``null``) is missing; the model handles missing values and the
response lists them in ``missing_features``. A model that declares features beyond the built-in
catalogue (a data-set mapping's key events and attributes, stored with the model) gets a request
model with those fields added (:func:`score_request_model`).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from features.definitions import CATALOGUE

#: An account id: 1-256 printable characters (no control characters such as NUL, which
#: PostgreSQL refuses in text), in request bodies and in the path of GET /v1/accounts/{id}.
ACCOUNT_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ACCOUNT_ID_MAX = 256
AccountId = Annotated[str, StringConstraints(min_length=1, max_length=ACCOUNT_ID_MAX,
                                             pattern=ACCOUNT_ID_PATTERN)]
CategoryValue = Annotated[str | None, Strict(), StringConstraints(max_length=200)]


def _value_type(spec: Any) -> Any:
    """The type of one value: a string for a category; a finite number within the feature's
    bounds (:attr:`features.definitions.FeatureSpec.bounds`) otherwise; None = missing."""
    if spec.dtype == "category":
        return CategoryValue
    low, high = spec.bounds
    return Annotated[float, Strict(), Field(allow_inf_nan=False, ge=low, le=high)] | None


def _range(spec: Any) -> str:
    low, high = spec.bounds if spec.dtype != "category" else (None, None)
    if low is None and high is None:
        return ""
    if high is None:
        return f", at least {low:g}"
    return f", {low:g} to {high:g}" if low is not None else f", at most {high:g}"


def _feature_field(spec: Any) -> tuple[Any, Any]:
    unit = f" [{spec.unit}]" if spec.unit else ""
    kind = "category" if spec.dtype == "category" else "number"
    return (_value_type(spec),
            Field(None, description=f"{spec.description}{unit} ({kind}{_range(spec)})"))


class _AnyFeature(BaseModel):
    """An account must send a value for at least one feature (else there is nothing to score)."""

    @model_validator(mode="after")
    def _some_feature(self) -> Any:
        if not any(v is not None for v in self.__dict__.values()):
            raise PydanticCustomError(
                "no_known_feature", "The account has no value for any feature the model takes "
                "(GET /v1/model lists them)")
        return self


#: ``{"active_days_30d": 12, "plan": "growth", ...}``: one optional field per catalogue feature.
AccountFeatures: type[BaseModel] = create_model(
    "AccountFeatures", __base__=_AnyFeature,
    __doc__="Feature values of one account; any feature may be left out (missing), not all.",
    **{spec.name: _feature_field(spec) for spec in CATALOGUE},
)
AccountFeatures.model_config.update(extra="forbid", allow_inf_nan=False, strict=True)
AccountFeatures.model_rebuild(force=True)


class AccountIn(BaseModel):
    """One account to score."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    account_id: AccountId
    features: AccountFeatures  # type: ignore[valid-type]


class ScoreRequest(BaseModel):
    """``POST /v1/scores`` body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"accounts": [
        {"account_id": "A1", "features": {"active_days_30d": 12, "plan": "growth",
                                          "last_nps": 8, "open_tickets": 1}}]}]})

    accounts: list[AccountIn] = Field(min_length=1)


#: ``(name, dtype, unit, description, low, high)`` of a feature outside the built-in catalogue.
ExtraFeature = tuple[str, str, str, str, float | None, float | None]


@functools.lru_cache(maxsize=32)
def score_request_model(max_batch_size: int, extra_features: tuple[ExtraFeature, ...] = ()
                        ) -> type[ScoreRequest]:
    """A :class:`ScoreRequest` that rejects more than ``max_batch_size`` accounts.

    The length is checked before any account is validated (pydantic reports a single
    ``too_long`` error), which the API turns into 413. ``extra_features`` adds the features a
    model declares beyond the built-in catalogue (see ``LoadedModel.extra_features``); anything
    else is still an unknown feature (422). Cached: one class per batch limit and feature set.
    """
    account = AccountIn
    if extra_features:
        features = create_model(
            "AccountFeatures", __base__=AccountFeatures, __doc__=AccountFeatures.__doc__,
            **{name: _feature_field(_extra(dtype, unit, text, low, high))
               for name, dtype, unit, text, low, high in extra_features})
        account = create_model("AccountIn", __base__=AccountIn, __doc__=AccountIn.__doc__,
                               features=(features, ...))
    return create_model(
        "ScoreRequest", __base__=ScoreRequest, __doc__=ScoreRequest.__doc__,
        accounts=(list[account], Field(min_length=1, max_length=max_batch_size,  # type: ignore[valid-type]
                                       description=f"1 to {max_batch_size} accounts")),
    )


def _extra(dtype: str, unit: str, text: str, low: float | None, high: float | None) -> Any:
    return SimpleNamespace(dtype=dtype, unit=unit, description=text, bounds=(low, high))


def _column_field(spec: Any) -> tuple[Any, Any]:
    unit = f" [{spec.unit}]" if spec.unit else ""
    kind = "categories" if spec.dtype == "category" else "numbers"
    return (list[_value_type(spec)] | None,  # type: ignore[valid-type]
            Field(None, description=f"{spec.description}{unit} ({kind}{_range(spec)}, one per "
                                    "account_id; null = missing)"))


#: ``{"active_days_30d": [12, 3], "plan": ["growth", null], ...}``: one optional list per feature.
FeatureColumns: type[BaseModel] = create_model(
    "FeatureColumns",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False, strict=True),
    __doc__="Feature values column by column, one per account_id in order; a feature left out "
            "is missing for every account.",
    **{spec.name: _column_field(spec) for spec in CATALOGUE},
)


class ScoreColumnsRequest(BaseModel):
    """``POST /v1/scores/columns`` body: the same accounts as ``POST /v1/scores`` takes, column by
    column. Cheaper to send and to parse for big batches (no feature names repeated per account)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True,
                              json_schema_extra={"examples": [{
                                  "account_id": ["A1", "A2"],
                                  "features": {"active_days_30d": [12, 3],
                                               "plan": ["growth", None],
                                               "last_nps": [8, None]}}]})

    account_id: list[AccountId] = Field(min_length=1)
    features: FeatureColumns = Field(default_factory=FeatureColumns)  # type: ignore[valid-type]


@functools.lru_cache(maxsize=32)
def score_columns_model(max_batch_size: int, extra_features: tuple[ExtraFeature, ...] = ()
                        ) -> type[ScoreColumnsRequest]:
    """:class:`ScoreColumnsRequest` with the batch limit on ``account_id`` (413 beyond it) and the
    features a model declares beyond the built-in catalogue, as :func:`score_request_model`."""
    features = FeatureColumns
    if extra_features:
        features = create_model(
            "FeatureColumns", __base__=FeatureColumns, __doc__=FeatureColumns.__doc__,
            **{name: _column_field(_extra(dtype, unit, text, low, high))
               for name, dtype, unit, text, low, high in extra_features})
    return create_model(
        "ScoreColumnsRequest", __base__=ScoreColumnsRequest, __doc__=ScoreColumnsRequest.__doc__,
        account_id=(list[AccountId], Field(min_length=1, max_length=max_batch_size,
                                           description=f"1 to {max_batch_size} account ids")),
        features=(features, Field(default_factory=features)),
    )


class Components(BaseModel):
    """Health components, 0-100 (100 = healthiest); null when the account has no data for it."""

    usage: float | None = Field(description="Frequency and depth of product use")
    engagement: float | None = Field(description="Proactive contact, support load, open tickets")
    sentiment: float | None = Field(description="Latest NPS and share of satisfied CSAT answers")
    risk: float | None = Field(description="100 * (1 - churn_probability)")


class Weights(BaseModel):
    """Weights applied to each component for this account (0 for components without data)."""

    usage: float
    engagement: float
    sentiment: float
    risk: float


class Reason(BaseModel):
    """One driver of the churn probability: a signal (features measuring the same behaviour),
    from the model's TreeSHAP contributions."""

    signal: str = Field(description="The behaviour, e.g. 'product events' or 'support requests'")
    feature: str = Field(description="The signal's feature that moved the score most")
    value: float | str | None = Field(description="That feature's value as sent (null = missing)")
    features: list[str] = Field(description="Every feature of the signal; their contributions "
                                "are added up")
    text: str = Field(description="The driver in plain language, from the feature catalogue, "
                      "ending with whether it raises or lowers the churn risk")
    direction: Literal["raises_risk", "lowers_risk"]
    size: Literal["strong", "moderate", "slight"] = Field(
        description="|contribution| >= 0.5 strong, >= 0.15 moderate, else slight")
    contribution: float = Field(
        description="TreeSHAP contribution of the signal on the log-odds scale; positive raises "
                    "churn risk")


class AccountScoreOut(BaseModel):
    """The score of one account."""

    model_config = ConfigDict(from_attributes=True)

    account_id: str
    churn_probability: float = Field(
        ge=0.0, le=1.0,
        description="Estimated probability (0-1) that the account churns within the model's "
                    "horizon (horizon_days). A probability, not a churn/no-churn label.")
    risk_band: str = Field(description="Band of churn_probability (configured thresholds)")
    health_score: float | None = Field(
        ge=0.0, le=100.0,
        description="Customer health 0-100, 100 = healthiest: the weighted blend of the "
                    "available components")
    health_band: str | None = Field(description="Band of health_score (e.g. green/amber/red)")
    components: Components
    weights: Weights
    missing_features: list[str] = Field(
        description="Model features the request did not send, sent as null, or sent with a "
                    "category value the model has not seen; the model treated them as missing")
    components_without_data: list[str] = Field(
        description="Health components with no data for this account (weight 0)")
    health_note: str | None = Field(
        description="How weights were renormalised when components had no data (null if not)")
    quadrant: Literal["Advocate", "VIP-support", "Wildcard", "Churner"] | str | None = Field(
        description="CSAT x NPS quadrant; null without both an NPS answer and CSAT answers")
    survey_due: bool = Field(description="The account is due a survey")
    survey_due_reasons: list[str] = Field(description="Why it is due a survey")
    raw_score: float = Field(description="The model's raw score (log-odds, uncalibrated)")
    reasons: list[Reason] | None = Field(
        description="Top drivers of churn_probability, biggest first (null with explain=false)")
    reasons_rest: float | None = Field(
        description="Expected value plus the contributions not listed: reasons' contributions "
                    "+ reasons_rest = raw_score")


class ScoreResponse(BaseModel):
    """``POST /v1/scores`` response."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None
    horizon_days: int | None = Field(description="Churn horizon of churn_probability, in days")
    calibrated: bool = Field(
        False, description="churn_probability went through the calibration fitted in training")
    scores: list[AccountScoreOut]


class FeatureInfo(BaseModel):
    name: str
    family: str | None = None
    dtype: str
    unit: str | None = None
    description: str | None = None
    window_days: int | None = None
    categories: list[str] | None = Field(
        None, description="Known values of a categorical feature; others count as missing")


class ScoringConfig(BaseModel):
    health_weights: dict[str, float]
    health_bands: dict[str, float]
    risk_bands: dict[str, float]
    max_batch_size: int


class ModelInfo(BaseModel):
    """``GET /v1/model`` response."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str | None
    alias: str | None
    uri: str
    trained_at: str | None
    horizon_days: int | None
    metrics: dict[str, Any]
    features: list[FeatureInfo]
    scoring: ScoringConfig
    calibrated: bool = False
    observed_until: str | None = None
    run_id: str | None = None
    #: What computes the reasons' contributions: ``tables`` (serving.treeshap, checked against
    #: LightGBM at load) or ``lightgbm`` (its ``pred_contrib``); the numbers are the same.
    treeshap: Literal["tables", "lightgbm"]


class Problem(BaseModel):
    """Error body of 413 and 503 responses."""

    detail: str


class WorklistAccount(BaseModel):
    """One account of the worklist: its latest stored score and what makes it urgent."""

    account_id: str
    churn_probability: float = Field(description="Probability that the account churns within "
                                     "the model's horizon")
    risk_band: str
    health_score: float | None = Field(description="0-100, 100 = healthiest")
    health_band: str | None
    quadrant: str | None = Field(description="CSAT x NPS quadrant (None without both answers)")
    survey_due: bool
    owner: str | None = Field(description="The CSM who holds the account (accounts.owner)")
    mrr: float | None = Field(description="Monthly recurring revenue at the scoring date")
    revenue_at_risk: float | None = Field(
        description="Annualised mrr (12 x mrr) x churn probability within the model's horizon: "
                    "the yearly revenue expected to be lost with this account (None without mrr)")
    renewal_date: str | None = Field(description="Next renewal of the current subscription")
    days_to_renewal: int | None = Field(description="Days from the scoring date to the renewal")
    top_reason: str | None = Field(description="The strongest reason of the score, in words")
    previous_churn_probability: float | None = Field(
        description="Churn probability of the account's previous stored score (an earlier "
                    "scoring date); None when there is none")
    risk_change: float | None = Field(description="churn_probability - "
                                      "previous_churn_probability (> 0: risk rising)")
    trend: Literal["rising", "falling", "steady"] | None = Field(
        description="The change in words; steady = less than 1 percentage point either way")


class Worklist(BaseModel):
    """A page of the ranked worklist."""

    as_of: str = Field(description="The scoring date of the scores listed")
    model_name: str
    model_version: str | None
    sort: str
    total: int = Field(description="Accounts that pass the filters (all pages)")
    accounts: list[WorklistAccount]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; None on "
                                    "the last page")
