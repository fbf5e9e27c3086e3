"""The scoring service of one app: requests scored through the micro-batcher with the configured
weights, bands, survey policy and number of reasons, answered as JSON and counted in the metrics.

``create_app`` builds one per app (``app.state.service``); the score routes call
:meth:`ScoringService.respond`.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Response, status
from pydantic_core import to_json

from serving.microbatch import MicroBatcher, Overloaded
from serving.model import LoadedModel
from serving.observability import Metrics
from serving.scoring import AccountScore, Bands, score_accounts, to_dict
from serving.settings import ServingSettings


class ScoringService:
    """Scores requests for one app (settings and metrics are the app's)."""

    def __init__(self, settings: ServingSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bands = Bands(risk=settings.risk_bands, health=settings.health_bands)
        self.policy = settings.survey_policy
        on_batch = None if metrics is None else (
            lambda requests, _: metrics.batch_requests.observe(requests))
        self.batcher = MicroBatcher(self._score, max_rows=settings.micro_batch_rows,
                                    max_queued_rows=settings.max_queued_accounts,
                                    on_batch=on_batch)

    def _score(self, model: LoadedModel, accounts: Any, top: int) -> list[AccountScore]:
        return score_accounts(model, accounts, self.settings.health_weights, self.bands,
                              reasons=top, policy=self.policy)

    async def respond(self, model: LoadedModel, accounts: Any, explain: bool,
                      reasons: int | None) -> Response:
        """The ``ScoreResponse`` of ``accounts``: small requests are scored on the event loop
        (a few LightGBM calls, no I/O: no thread hop), big ones on the batcher's thread so that
        they do not hold up the loop."""
        top = (reasons or self.settings.reasons_top) if explain else 0
        try:
            results = await self.batcher.score(model, accounts, top)
        except Overloaded as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc),
                                headers={"Retry-After": "1"}) from None
        if self.metrics is not None:
            self.metrics.observe_scores([r.churn_probability for r in results],
                                        [r.health_score for r in results])
        payload = {"model_name": model.name, "model_version": model.version,
                   "horizon_days": model.horizon_days, "calibrated": model.calibrated,
                   "scores": [to_dict(r) for r in results]}
        # pydantic-core's serializer: much faster than json.dumps on big batches.
        return Response(to_json(payload, inf_nan_mode="null"), media_type="application/json")
