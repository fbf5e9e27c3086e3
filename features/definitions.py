"""The feature catalogue: every feature declared once, computed by one engine (``pointintime``).

Each :class:`FeatureSpec` says what a feature means (family, window, aggregation, a plain-language
description that CS people read in the API's reasons and in ``docs/features.md``) and how it is
computed, as one of a few declarative computations:

* :class:`Window`   -- aggregate a daily measure over the N days before ``as_of`` (optionally
  shifted back, for "the 30 days before that").
* :class:`Since`    -- days from the last day a measure was non-zero to ``as_of``.
* :class:`Distinct` -- distinct keys (events, users) seen in the N days before ``as_of``.
* :class:`Derived`  -- a formula over other features (ratios, trends, differences).
* :class:`Rule`     -- a business rule of :mod:`features.surveys` over other features (NPS bucket,
  CSAT x NPS quadrant, survey due), the same function the scoring API applies.
* :class:`Attribute`-- an account attribute or the state of its subscription at ``as_of``.

Windows are always ``[as_of - N days, as_of)``: rows dated on ``as_of`` or later are never used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from features import surveys
from features.surveys import DEFAULT_POLICY, SurveyPolicy

Family = Literal["usage_depth", "usage_frequency", "touchpoints", "surveys", "account"]
Dtype = Literal["float", "category"]

FAMILY_TABLE: dict[str, str] = {
    "usage_depth": "usage_events",
    "usage_frequency": "usage_events",
    "touchpoints": "touchpoints",
    "surveys": "surveys",
    "account": "accounts",
}


@dataclass(frozen=True)
class Window:
    """Sum of a daily measure of ``source`` over ``days`` days, ending ``offset`` days before as_of."""

    source: str
    measure: str
    days: int
    offset: int = 0


@dataclass(frozen=True)
class Since:
    """Days since the last day on which ``measure`` of ``source`` was non-zero."""

    source: str
    measure: str


@dataclass(frozen=True)
class Distinct:
    """Distinct values of ``key`` in ``source`` over the ``days`` days before as_of."""

    source: str
    key: str
    days: int


@dataclass(frozen=True)
class Derived:
    """A formula over other features; ``formula`` names a function in ``pointintime.FORMULAS``."""

    formula: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Attribute:
    """An account attribute, or a property of the subscription state at as_of."""

    name: str


@dataclass(frozen=True)
class Median:
    """Median of a per-row value of ``source`` over rows dated in the ``days`` days before as_of."""

    source: str
    value: str
    days: int


@dataclass(frozen=True)
class Rule:
    """A business rule over other features, applied to the computed columns (numpy arrays);
    ``policy``: the function also takes the data set's :class:`~features.surveys.SurveyPolicy`."""

    function: Callable[..., Any]
    inputs: tuple[str, ...]
    policy: bool = False


Computation = Window | Since | Distinct | Derived | Attribute | Median | Rule


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature."""

    name: str
    family: Family
    description: str
    compute: Computation
    window_days: int | None = None
    aggregation: str = "sum"
    dtype: Dtype = "float"
    #: Unit used when the value is shown to people ("days", "%", "events" ...).
    unit: str = ""
    #: Fat-tailed counts are log-scaled (log1p) in the health components.
    fat_tailed: bool = False
    #: An optional input column ("table.column"): when the data has no value in it at all, the
    #: feature is null rather than a misleading zero (e.g. active users without user ids).
    requires: str | None = None
    #: The behaviour the feature measures; features of one signal (the same counts over other
    #: windows, their trend) make one reason together. Empty: the feature is its own signal.
    signal: str = ""
    #: A short name for reasons, when the description explains more than a sentence holds.
    short: str = ""
    #: Values outside [low, high] cannot be true (the API answers 422); None = the rule of
    #: :attr:`bounds`.
    low: float | None = None
    high: float | None = None

    @property
    def table(self) -> str:
        return FAMILY_TABLE[self.family]

    @property
    def signal_name(self) -> str:
        return self.signal or self.name

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """The values a feature can take: declared, else counts, days and amounts >= 0, shares
        and flags 0-1; None = unbounded."""
        if self.low is not None or self.high is not None or self.dtype == "category":
            return self.low, self.high
        if self.unit in ("%", "flag") and self.aggregation in ("ratio", "flag"):
            return 0.0, 1.0
        if self.aggregation in NON_NEGATIVE:
            return 0.0, None
        return None, None


#: Aggregations whose values are never negative (counts, days, amounts).
NON_NEGATIVE = frozenset({"sum", "count", "count days", "count distinct", "recency", "median",
                          "as of", "open at as_of", "ratio", "coefficient of variation"})


def _window(name: str, family: Family, source: str, measure: str, days: int, description: str,
            unit: str, offset: int = 0, fat_tailed: bool = False,
            aggregation: str = "sum", requires: str | None = None, signal: str = "") -> FeatureSpec:
    return FeatureSpec(name, family, description, Window(source, measure, days, offset),
                       window_days=days, aggregation=aggregation, unit=unit, fat_tailed=fat_tailed,
                       requires=requires, signal=signal)


CATALOGUE: tuple[FeatureSpec, ...] = (
    # --- usage depth: how much of the product the account uses, and by how many people
    FeatureSpec("distinct_events_30d", "usage_depth",
                "Distinct product features used in the last 30 days",
                Distinct("usage_events", "event", 30), window_days=30,
                aggregation="count distinct", unit="features", signal="breadth of use"),
    FeatureSpec("distinct_events_90d", "usage_depth",
                "Distinct product features used in the last 90 days",
                Distinct("usage_events", "event", 90), window_days=90,
                aggregation="count distinct", unit="features", signal="breadth of use"),
    FeatureSpec("catalogue_share_30d", "usage_depth",
                "Share of the product's feature catalogue used in the last 30 days",
                Derived("share_of_catalogue", ("distinct_events_30d", "_catalogue_size")),
                window_days=30, aggregation="ratio", unit="%", signal="breadth of use"),
    FeatureSpec("active_users_30d", "usage_depth",
                "Distinct active users in the last 30 days",
                Distinct("usage_events", "user_id", 30), window_days=30,
                aggregation="count distinct", unit="users", fat_tailed=True,
                requires="usage_events.user_id", signal="active users"),
    FeatureSpec("active_users_per_seat_30d", "usage_depth",
                "Active users in the last 30 days per licensed seat",
                Derived("ratio", ("active_users_30d", "seats")), window_days=30,
                aggregation="ratio", unit="users per seat", requires="usage_events.user_id",
                signal="active users"),
    FeatureSpec("events_per_active_user_30d", "usage_depth",
                "Product events per active user in the last 30 days",
                Derived("ratio", ("events_30d", "active_users_30d")), window_days=30,
                aggregation="ratio", unit="events", fat_tailed=True,
                requires="usage_events.user_id", signal="active users"),
    FeatureSpec("key_features_used_30d", "usage_depth",
                "Key product features (the data set's configured most valuable features) used in "
                "the last 30 days", Derived("count_positive", ("_key_*_30d",)), window_days=30,
                aggregation="count distinct", unit="features", signal="breadth of use"),
    FeatureSpec("key_feature_adoption_30d", "usage_depth",
                "Share of the key product features used in the last 30 days",
                Derived("ratio", ("key_features_used_30d", "_key_event_count")), window_days=30,
                aggregation="ratio", unit="%", signal="breadth of use"),
    # --- usage frequency: how often the account uses the product, and the trend
    _window("events_7d", "usage_frequency", "usage_events", "events", 7,
            "Product events in the last 7 days", "events", fat_tailed=True, signal="product events"),
    _window("events_30d", "usage_frequency", "usage_events", "events", 30,
            "Product events in the last 30 days", "events", fat_tailed=True, signal="product events"),
    _window("events_90d", "usage_frequency", "usage_events", "events", 90,
            "Product events in the last 90 days", "events", fat_tailed=True, signal="product events"),
    _window("events_180d", "usage_frequency", "usage_events", "events", 180,
            "Product events in the last 180 days", "events", fat_tailed=True, signal="product events"),
    _window("events_prev_30d", "usage_frequency", "usage_events", "events", 30,
            "Product events in the 30 days before the last 30", "events", offset=30,
            fat_tailed=True, signal="product events"),
    _window("active_days_7d", "usage_frequency", "usage_events", "active", 7,
            "Days with any product use in the last 7 days", "days", aggregation="count days",
            signal="active days"),
    _window("active_days_30d", "usage_frequency", "usage_events", "active", 30,
            "Days with any product use in the last 30 days", "days", aggregation="count days",
            signal="active days"),
    _window("active_days_90d", "usage_frequency", "usage_events", "active", 90,
            "Days with any product use in the last 90 days", "days", aggregation="count days",
            signal="active days"),
    _window("active_days_180d", "usage_frequency", "usage_events", "active", 180,
            "Days with any product use in the last 180 days", "days", aggregation="count days",
            signal="active days"),
    FeatureSpec("events_trend_30d", "usage_frequency",
                "Change in product events, last 30 days vs the 30 days before",
                Derived("pct_change", ("events_30d", "events_prev_30d")), window_days=60,
                aggregation="change", unit="%", signal="product events", low=-1, high=None),
    FeatureSpec("events_slope_90d", "usage_frequency",
                "Trend of daily product events over the last 90 days: the change across the 90 "
                "days of a straight line fitted to them, as a share of the average (-1 = halving "
                "from the start to the end of the window, roughly)",
                Derived("slope_90d", ("events_90d", "_events_x_day_90d", "_day")),
                window_days=90, aggregation="least-squares slope", unit="%", signal="product events",
                short="Trend of daily product events over the last 90 days"),
    FeatureSpec("events_volatility_30d", "usage_frequency",
                "Volatility of daily product events in the last 30 days (standard deviation / "
                "mean; 0 = the same every day)",
                Derived("daily_cv_30d", ("events_30d", "_events_sq_30d")), window_days=30,
                aggregation="coefficient of variation", unit="ratio", signal="product events",
                short="Day-to-day volatility of product events in the last 30 days"),
    FeatureSpec("days_since_last_event", "usage_frequency",
                "Days since the account last used the product",
                Since("usage_events", "active"), aggregation="recency", unit="days", signal="active days"),
    # --- touchpoints: proactive success (company-initiated) vs reactive service (customer-initiated)
    _window("proactive_touchpoints_30d", "touchpoints", "touchpoints", "proactive", 30,
            "Proactive contacts from the company (check-ins, QBRs, emails) in the last 30 days",
            "contacts", aggregation="count", signal="proactive contact"),
    _window("reactive_touchpoints_30d", "touchpoints", "touchpoints", "reactive", 30,
            "Support requests from the customer (tickets, chats) in the last 30 days",
            "requests", aggregation="count", fat_tailed=True, signal="support requests"),
    _window("proactive_touchpoints_90d", "touchpoints", "touchpoints", "proactive", 90,
            "Proactive contacts from the company (check-ins, QBRs, emails) in the last 90 days",
            "contacts", aggregation="count", signal="proactive contact"),
    _window("reactive_touchpoints_90d", "touchpoints", "touchpoints", "reactive", 90,
            "Support requests from the customer (tickets, chats) in the last 90 days",
            "requests", aggregation="count", fat_tailed=True, signal="support requests"),
    FeatureSpec("days_since_last_proactive", "touchpoints",
                "Days since the company last reached out to the account proactively",
                Since("touchpoints", "proactive"), aggregation="recency", unit="days",
                signal="proactive contact"),
    FeatureSpec("check_in_gap_days", "touchpoints",
                "Days the next proactive contact is overdue against the expected check-in cadence "
                "(monthly by default; negative = not yet due)",
                Derived("difference", ("days_since_last_proactive", "_check_in_days")),
                aggregation="recency - cadence", unit="days", signal="proactive contact",
                short="Days the next proactive check-in is overdue"),
    FeatureSpec("days_since_last_review", "touchpoints",
                "Days since the last business review (QBR or review meeting) with the account",
                Since("touchpoints", "review"), aggregation="recency", unit="days",
                signal="business reviews"),
    FeatureSpec("review_gap_days", "touchpoints",
                "Days the next business review is overdue against the expected cadence (quarterly "
                "by default; negative = not yet due)",
                Derived("difference", ("days_since_last_review", "_review_days")),
                aggregation="recency - cadence", unit="days", signal="business reviews",
                short="Days the next business review is overdue"),
    FeatureSpec("open_tickets", "touchpoints",
                "Support requests opened and not yet resolved",
                Derived("difference", ("_reactive_total", "_resolved_total")),
                aggregation="open at as_of", unit="tickets", signal="support requests"),
    _window("escalated_tickets_90d", "touchpoints", "touchpoints", "escalated", 90,
            "Support requests opened in the last 90 days that were escalated", "tickets",
            aggregation="count", requires="touchpoints.escalated", signal="support requests"),
    FeatureSpec("median_resolution_hours_90d", "touchpoints",
                "Median hours to resolve the support requests resolved in the last 90 days",
                Median("touchpoints", "resolution_hours", 90), window_days=90,
                aggregation="median", unit="hours", fat_tailed=True,
                requires="touchpoints.resolved_at", signal="support requests"),
    # --- surveys: NPS (0-10) and CSAT (1-5, satisfied = 4 or 5)
    FeatureSpec("last_nps", "surveys", "Latest NPS answer (0-10)",
                Attribute("last_nps"), aggregation="last", unit="points", signal="NPS", low=0, high=10),
    FeatureSpec("nps_bucket", "surveys",
                "Latest NPS answer as detractor (0-6), passive (7-8) or promoter (9-10)",
                Rule(surveys.nps_buckets, ("last_nps",)), aggregation="last", dtype="category", signal="NPS"),
    FeatureSpec("nps_change", "surveys",
                "Change of the latest NPS answer against the one before it (points)",
                Derived("difference", ("last_nps", "_previous_nps")), aggregation="change",
                unit="points", signal="NPS", low=-10, high=10),
    FeatureSpec("days_since_last_nps", "surveys", "Days since the account last answered NPS",
                Since("surveys", "nps_answered"), aggregation="recency", unit="days", signal="NPS"),
    FeatureSpec("csat_satisfied_share_90d", "surveys",
                "Share of CSAT answers in the last 90 days that were satisfied (4 or 5 of 5)",
                Derived("ratio", ("_csat_satisfied_90d", "_csat_answered_90d")),
                window_days=90, aggregation="ratio", unit="%", signal="CSAT"),
    FeatureSpec("csat_satisfied_share_180d", "surveys",
                "Share of CSAT answers in the last 180 days that were satisfied (4 or 5 of 5)",
                Derived("ratio", ("_csat_satisfied_180d", "_csat_answered_180d")),
                window_days=180, aggregation="ratio", unit="%", signal="CSAT"),
    FeatureSpec("survey_response_rate_365d", "surveys",
                "Share of surveys sent in the last 365 days that were answered",
                Derived("ratio", ("_surveys_answered_365d", "_surveys_sent_365d")),
                window_days=365, aggregation="ratio", unit="%", signal="survey contact"),
    FeatureSpec("days_since_last_survey", "surveys",
                "Days since the account was last sent a survey",
                Since("surveys", "sent"), aggregation="recency", unit="days", signal="survey contact"),
    FeatureSpec("days_since_last_nps_sent", "surveys",
                "Days since the account was last sent an NPS survey (answered or not)",
                Since("surveys", "nps_sent"), aggregation="recency", unit="days", signal="survey contact"),
    FeatureSpec("nps_survey_due", "surveys",
                "NPS survey due: 1 when a customer of at least 180 days was sent no NPS survey "
                "in the last 180 days",
                Rule(surveys.nps_survey_due, ("days_since_last_nps_sent", "tenure_days"),
                     policy=True), window_days=180, aggregation="flag", unit="flag", signal="survey contact",
                short="NPS survey due"),
    FeatureSpec("onboarding_survey_due", "surveys",
                "Onboarding survey due: 1 when a new customer (14 to 180 days) has never been "
                "sent an NPS survey",
                Rule(surveys.onboarding_survey_due, ("days_since_last_nps_sent", "tenure_days"),
                     policy=True), aggregation="flag", unit="flag", signal="survey contact",
                short="Onboarding survey due"),
    FeatureSpec("csat_nps_quadrant", "surveys",
                "CSAT x NPS quadrant: Advocate (NPS 7+ and at least half of CSAT satisfied), "
                "VIP-support (NPS 7+, CSAT mostly unsatisfied: loyal but let down by support), "
                "Wildcard (detractor NPS, CSAT mostly satisfied), Churner (both low); CSAT over "
                "180 days", Rule(surveys.quadrants, ("last_nps", "csat_satisfied_share_180d"),
                                 policy=True),
                window_days=180, aggregation="last", dtype="category", signal="CSAT x NPS",
                short="CSAT x NPS quadrant"),
    # --- account: who the customer is and where its subscription stands
    FeatureSpec("tenure_days", "account", "Days since the account became a customer",
                Attribute("tenure_days"), aggregation="as of", unit="days"),
    FeatureSpec("plan", "account", "Subscription plan", Attribute("plan"), dtype="category",
                aggregation="attribute"),
    FeatureSpec("seats", "account", "Licensed seats", Attribute("seats"), aggregation="attribute",
                unit="seats", fat_tailed=True, low=0),
    FeatureSpec("mrr", "account", "Monthly recurring revenue of the current subscription",
                Attribute("mrr"), aggregation="as of", unit="currency", fat_tailed=True, signal="revenue"),
    FeatureSpec("mrr_change_90d", "account",
                "Change of monthly recurring revenue against 90 days earlier (upgrade > 0, "
                "downgrade < 0), as a share of the earlier mrr",
                Attribute("mrr_change_90d"), window_days=90, aggregation="change", unit="%",
                signal="revenue", low=-1, high=None),
    FeatureSpec("days_to_renewal", "account",
                "Days until the current subscription renews (the next chance to leave)",
                Attribute("days_to_renewal"), aggregation="as of", unit="days"),
    FeatureSpec("industry", "account", "Industry", Attribute("industry"), dtype="category",
                aggregation="attribute"),
    FeatureSpec("segment", "account", "Customer segment", Attribute("segment"), dtype="category",
                aggregation="attribute"),
)

#: Intermediate columns computed on the way (prefixed with "_", never model inputs).
HELPERS: tuple[FeatureSpec, ...] = (
    _window("_reactive_total", "touchpoints", "touchpoints", "reactive", 0, "", ""),
    _window("_resolved_total", "touchpoints", "touchpoints", "resolved", 0, "", ""),
    _window("_csat_satisfied_180d", "surveys", "surveys", "csat_satisfied", 180, "", ""),
    _window("_csat_satisfied_90d", "surveys", "surveys", "csat_satisfied", 90, "", ""),
    _window("_csat_answered_90d", "surveys", "surveys", "csat_answered", 90, "", ""),
    _window("_events_x_day_90d", "usage_frequency", "usage_events", "events_x_day", 90, "", ""),
    _window("_events_sq_30d", "usage_frequency", "usage_events", "events_sq", 30, "", ""),
    _window("_csat_answered_180d", "surveys", "surveys", "csat_answered", 180, "", ""),
    _window("_surveys_answered_365d", "surveys", "surveys", "answered", 365, "", ""),
    _window("_surveys_sent_365d", "surveys", "surveys", "sent", 365, "", ""),
)

_STATIC_NAMES = frozenset(spec.name for spec in CATALOGUE)


@dataclass(frozen=True)
class AccountAttribute:
    """An extra account column used as a feature (e.g. acquisition channel, country, birth date).

    ``kind`` is ``category`` (a label), ``number`` (used as it is) or ``years_since`` (a date column;
    the feature is the years from that date to as_of, e.g. age from a birth date).
    """

    column: str
    kind: Literal["category", "number", "years_since"] = "category"
    name: str | None = None
    description: str | None = None

    @property
    def feature(self) -> str:
        return self.name or slug(self.column)


@dataclass(frozen=True)
class FeatureConfig:
    """Data-set specific feature settings (a mapping file's ``features:`` section).

    * ``key_events``: the product's most valuable features (event names). Each gets its own event
      counts over ``key_event_windows`` days, and the catalogue's ``key_*`` features measure their
      adoption.
    * ``attributes``: extra account columns used as features.
    * ``check_in_days`` / ``review_days``: the expected cadence of proactive contact (a check-in
      every month, a business review every quarter by default); the cadence-gap features compare
      the time since the last contact with them.
    """

    key_events: tuple[str, ...] = ()
    key_event_windows: tuple[int, ...] = (30,)
    attributes: tuple[AccountAttribute, ...] = ()
    check_in_days: int = 30
    review_days: int = 91
    #: Channels that count as business reviews (for the review cadence).
    review_channels: tuple[str, ...] = ("qbr", "meeting", "review")
    #: The quadrant thresholds and the NPS survey cadence of the survey-rule features.
    survey_policy: SurveyPolicy = field(default=DEFAULT_POLICY)

    def __post_init__(self) -> None:
        if any(w < 1 for w in self.key_event_windows):
            raise ValueError("key_event_windows must be positive numbers of days")
        if self.check_in_days < 1 or self.review_days < 1:
            raise ValueError("check_in_days and review_days must be at least 1")
        names = [key_event_feature(e, w) for e in self.key_events for w in self.key_event_windows]
        names += [key_event_trend(e) for e in self.key_events]
        names += [a.feature for a in self.attributes]
        clash = sorted({n for n in names if names.count(n) > 1 or n in _STATIC_NAMES})
        if clash:
            raise ValueError(f"feature names clash: {', '.join(clash)} (rename the event or attribute)")


DEFAULT_CONFIG = FeatureConfig()


def slug(text: str) -> str:
    """A feature-name-safe form of an event or column name: lower case, ``_`` for anything else."""
    out = re.sub(r"[^0-9a-z]+", "_", str(text).lower()).strip("_")
    return out or "x"


def key_event_feature(event: str, days: int) -> str:
    return f"key_{slug(event)}_{days}d"


def key_event_measure(event: str) -> str:
    return f"kev_{slug(event)}"


def key_event_trend(event: str) -> str:
    return f"key_{slug(event)}_trend_30d"


def _dynamic_specs(config: FeatureConfig) -> list[FeatureSpec]:
    specs: list[FeatureSpec] = []
    for i, event in enumerate(config.key_events):
        signal = f"use of '{event}'"
        for days in config.key_event_windows:
            specs.append(_window(key_event_feature(event, days), "usage_depth", "usage_events",
                                 key_event_measure(event), days,
                                 f"Uses of the key feature '{event}' in the last {days} days",
                                 "events", fat_tailed=True, signal=signal))
        specs.append(FeatureSpec(
            key_event_trend(event), "usage_depth",
            f"Change in uses of the key feature '{event}', last 30 days vs the 30 days before",
            Derived("pct_change", (f"_key_{i}_30d", f"_keyprev_{i}_30d")), window_days=60,
            aggregation="change", unit="%", signal=signal, low=-1))
    for attr in config.attributes:
        if attr.kind == "category":
            desc, dtype, unit = f"Account {attr.column}", "category", ""
        elif attr.kind == "number":
            desc, dtype, unit = f"Account {attr.column}", "float", ""
        else:
            desc, dtype, unit = f"Years since the account's {attr.column}", "float", "years"
        specs.append(FeatureSpec(attr.feature, "account", attr.description or desc,
                                 Attribute(f"extra:{attr.column}:{attr.kind}"),
                                 aggregation="attribute", dtype=dtype, unit=unit))  # type: ignore[arg-type]
    return specs


def catalogue(config: FeatureConfig | None = None) -> tuple[FeatureSpec, ...]:
    """The declared catalogue plus the data set's configured features (key events, attributes)."""
    if config is None or (not config.key_events and not config.attributes):
        return CATALOGUE
    return CATALOGUE + tuple(_dynamic_specs(config))


def helper_specs(config: FeatureConfig | None = None) -> tuple[FeatureSpec, ...]:
    """Intermediate columns: the fixed helpers plus, per key event, its counts in the last 30 days
    and in the 30 days before."""
    config = config or DEFAULT_CONFIG
    extra = tuple(_window(f"_key_{i}_30d", "usage_depth", "usage_events", key_event_measure(e), 30,
                          "", "") for i, e in enumerate(config.key_events))
    previous = tuple(_window(f"_keyprev_{i}_30d", "usage_depth", "usage_events",
                             key_event_measure(e), 30, "", "", offset=30)
                     for i, e in enumerate(config.key_events))
    return HELPERS + extra + previous


def feature_names(config: FeatureConfig | None = None) -> list[str]:
    """Names of all model features, in catalogue order."""
    return [spec.name for spec in catalogue(config)]


def catalogue_by_name(config: FeatureConfig | None = None) -> dict[str, FeatureSpec]:
    return {spec.name: spec for spec in catalogue(config)}


def categorical_features(config: FeatureConfig | None = None) -> list[str]:
    return [spec.name for spec in catalogue(config) if spec.dtype == "category"]


def catalogue_records(config: FeatureConfig | None = None) -> list[dict[str, object]]:
    """The catalogue as plain records (for MLflow artifacts, the API and the docs)."""
    return spec_records(catalogue(config))


def spec_records(specs: tuple[FeatureSpec, ...] | list[FeatureSpec]) -> list[dict[str, object]]:
    """Feature declarations as plain records (stored with a model: serving reads them)."""
    return [
        {"name": s.name, "family": s.family, "table": s.table, "window_days": s.window_days,
         "aggregation": s.aggregation, "dtype": s.dtype, "unit": s.unit,
         "description": s.description, "short": s.short or s.description,
         "signal": s.signal_name, "low": s.bounds[0],
         "high": s.bounds[1]}
        for s in specs
    ]
