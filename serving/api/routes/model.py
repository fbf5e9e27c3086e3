"""``GET /v1/model``: the served model's version, metrics, features and scoring settings."""

import math
from typing import Any

from fastapi import APIRouter

from features.definitions import catalogue_by_name
from serving.api.deps import V1, ModelDep, SettingsDep
from serving.model import LoadedModel
from serving.schemas import FeatureInfo, ModelInfo, Problem, ScoringConfig

router = APIRouter(prefix=V1, tags=["model"])


def json_safe(value: Any) -> Any:
    """Metrics as JSON can carry them: NaN/inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def feature_infos(model: LoadedModel) -> list[FeatureInfo]:
    """The model's features, described by the catalogue stored with it (else today's)."""
    recorded = {r.get("name"): r for r in model.catalogue}
    current = catalogue_by_name()
    out = []
    for name in model.encoder.feature_names:
        record = recorded.get(name)
        if record is None and name in current:
            spec = current[name]
            record = {"family": spec.family, "dtype": spec.dtype, "unit": spec.unit,
                      "description": spec.description, "window_days": spec.window_days}
        record = record or {}
        categories = model.encoder.categories_.get(name)
        out.append(FeatureInfo(
            name=name, family=record.get("family"),
            dtype=record.get("dtype") or ("category" if categories is not None else "float"),
            unit=record.get("unit") or None, description=record.get("description"),
            window_days=record.get("window_days"), categories=categories))
    return out


@router.get("/model", response_model=ModelInfo,
            summary="The served model: version, metrics and features",
            responses={503: {"model": Problem, "description": "No model is loaded (see /readyz)"}})
def get_model_info(model: ModelDep, config: SettingsDep) -> ModelInfo:
    return ModelInfo(
        name=model.name, version=model.version, alias=model.alias, uri=model.uri,
        trained_at=model.trained_at, horizon_days=model.horizon_days,
        metrics=json_safe(model.metrics), features=feature_infos(model),
        scoring=ScoringConfig(health_weights=config.health_weights,
                              health_bands=config.health_bands, risk_bands=config.risk_bands,
                              max_batch_size=config.max_batch_size),
        calibrated=model.calibrated, observed_until=model.metadata.get("observed_until"),
        run_id=model.metadata.get("run_id"), treeshap=model.treeshap_engine)
