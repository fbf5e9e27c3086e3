"""Gated promotion: a new version is the ``challenger``; it becomes ``champion`` only if it beats
the current champion on the challenger's own held-out window by the configured margin.

Both models are scored on exactly the same rows (the challenger's test window), with the
probabilities they would serve. The decision and its numbers go into the version's tags
(``promotion.*``) so the registry shows why every version is or is not champion. The registry is
reached through :class:`training.tracking.Registry`, which does every MLflow call.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.snapshot import CROSS_VALIDATION
from training.config import PromotionSettings
from training.metrics import classification_metrics

if TYPE_CHECKING:
    from training.tracking import Registry


@dataclass
class Decision:
    """Outcome of the gate for one version."""

    promoted: bool
    decision: str  # "promoted", "refused", "first" or "manual"
    reason: str
    metric: str
    margin: float
    challenger_version: str
    challenger_score: float | None = None
    champion_version: str | None = None
    champion_score: float | None = None
    window: str = ""
    champion_saw_window: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def champion_saw_window(metadata: dict, window: list[str]) -> list[str]:
    """The champion's training or validation dates whose label horizon ends after the window
    starts (its labels then carry outcomes from the window)."""
    if not window:
        return []
    first = pd.Timestamp(min(window))
    horizon = pd.Timedelta(days=int(metadata.get("horizon_days") or 0))
    seen = (metadata.get("train_dates") or []) + (metadata.get("validation_dates") or [])
    return sorted(d for d in seen if pd.Timestamp(d) + horizon > first)


def _fmt(value: float | None) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.6f}"


def _write_tags(registry: Registry, model_name: str, version: str, decision: Decision) -> None:
    tags = {
        "promotion.decision": decision.decision,
        "promotion.reason": decision.reason,
        "promotion.metric": decision.metric,
        "promotion.margin": str(decision.margin),
        "promotion.challenger_score": _fmt(decision.challenger_score),
        "promotion.champion_version": decision.champion_version or "",
        "promotion.champion_score": _fmt(decision.champion_score),
        "promotion.window": decision.window,
        "promotion.champion_saw_window": str(decision.champion_saw_window).lower(),
        "promotion.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    registry.tag_version(model_name, version, tags)


def identity(metadata: dict) -> tuple[str, list[str]]:
    """What a model was trained on: its data set's name ("" for the contract's own shape) and its
    feature names. Only models of the same identity can compete for a champion."""
    return str(metadata.get("dataset") or ""), list(metadata["encoder"]["feature_names"])


def _not_comparable(champion: dict, challenger: dict) -> str | None:
    """Why two models' identities differ, naming both; None when they are comparable."""
    (data_a, feats_a), (data_b, feats_b) = identity(champion), identity(challenger)
    if data_a == data_b and feats_a == feats_b:
        return None

    def name(data: str, feats: list[str]) -> str:
        return f"data set '{data or 'contract'}' with {len(feats)} features"

    detail = "" if data_a != data_b else (
        f"; features only the champion has: {sorted(set(feats_a) - set(feats_b))[:5]}, only the "
        f"challenger: {sorted(set(feats_b) - set(feats_a))[:5]}")
    return (f"not comparable: the champion was trained on {name(data_a, feats_a)}, the challenger "
            f"on {name(data_b, feats_b)}{detail}. Register models of other data under their own "
            "name (--model-name) or promote by hand (churn promote)")


def gate(registry: Registry, model_name: str, version: str, *, X_test: pd.DataFrame,  # noqa: N803
         y_test: np.ndarray, challenger_proba: np.ndarray, window: list[str],
         settings: PromotionSettings, metadata: dict) -> Decision:
    """Compare the challenger (``metadata``: its model metadata) with the champion on the
    challenger's test window (a snapshot export's models: by their cross-validated metric); promote
    if it wins by ``settings.margin``. The first version of a
    model is promoted without a contest; a champion trained on another data set or feature set is
    no contest either: the challenger is refused and the reason names both."""
    metric = settings.metric
    challenger = classification_metrics(y_test, challenger_proba)[metric]
    base = dict(metric=metric, margin=settings.margin, challenger_version=str(version),
                challenger_score=challenger, window=",".join(window))
    champion_version = registry.champion(model_name)
    if champion_version is None or champion_version == str(version):
        decision = Decision(True, "first", "no champion yet", **base)
    elif (why := _not_comparable(registry.metadata(model_name, champion_version), metadata)):
        decision = Decision(False, "refused", why, champion_version=champion_version, **base)
    elif metadata.get("validation") == CROSS_VALIDATION:
        decision = _cross_validated(registry.metadata(model_name, champion_version),
                                    champion_version, settings, base)
    else:
        scorer, meta = registry.scorer(model_name, champion_version)
        champion = classification_metrics(y_test, scorer.predict(X_test))[metric]
        wins = bool(np.isfinite(challenger) and (not np.isfinite(champion)
                                                  or challenger >= champion + settings.margin))
        verdict = "beats" if wins else "does not beat"
        reason = (f"challenger {metric} {challenger:.4f} {verdict} champion v{champion_version} "
                  f"{champion:.4f} + margin {settings.margin:g} on {base['window']}")
        seen = champion_saw_window(meta, window)
        if seen:
            # Then the contest favours the champion: worth knowing, but refusing is the safe side.
            reason += (f"; note: the champion's training or validation labels reach into this "
                       f"window ({', '.join(seen)})")
        decision = Decision(wins, "promoted" if wins else "refused", reason,
                            champion_version=champion_version, champion_score=champion,
                            champion_saw_window=bool(seen), **base)
    if decision.promoted:
        registry.set_champion(model_name, str(version))
    _write_tags(registry, model_name, str(version), decision)
    return decision


def _cross_validated(champion_meta: dict, champion_version: str, settings: PromotionSettings,
                     base: dict) -> Decision:
    """A snapshot export's models: the final model saw every row, so the champion cannot be
    scored on rows it did not train on; both are compared by their cross-validated (out-of-fold)
    metric on their own data set, recorded with each model."""
    metric, challenger = settings.metric, float(base["challenger_score"])
    champion = float((champion_meta.get("metrics") or {}).get(metric, float("nan")))
    wins = bool(np.isfinite(challenger) and (not np.isfinite(champion)
                                              or challenger >= champion + settings.margin))
    verdict = "beats" if wins else "does not beat"
    reason = (f"challenger cross-validated {metric} {challenger:.4f} {verdict} champion "
              f"v{champion_version}'s {champion:.4f} + margin {settings.margin:g} (a snapshot "
              "export: each model's out-of-fold score on its own rows)")
    return Decision(wins, "promoted" if wins else "refused", reason,
                    champion_version=champion_version, champion_score=champion, **base)


def promote(registry: Registry, model_name: str, version: str, reason: str) -> Decision:
    """Make ``version`` champion by hand (overriding the gate); the reason is recorded."""
    if not reason.strip():
        raise ValueError("a manual promotion needs a reason")
    version = registry.check_version(model_name, version)  # raises if it does not exist
    previous = registry.champion(model_name)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    decision = Decision(True, "manual", f"{reason} (by {user})", metric="", margin=0.0,
                        challenger_version=version, champion_version=previous)
    registry.set_champion(model_name, version)
    _write_tags(registry, model_name, version, decision)
    return decision
