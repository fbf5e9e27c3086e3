"""``GET /v1/accounts/{account_id}`` and ``GET /v1/portfolio``: the scores ``churn score`` stored
with the served model (the model of one data set; other data sets' scores are not mixed in)."""

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from serving.api.deps import V1, ModelDep, SettingsDep, StoreDep, store_call
from serving.portfolio import portfolio_summary
from serving.schemas import ACCOUNT_ID_MAX, ACCOUNT_ID_PATTERN, Problem

router = APIRouter(prefix=V1, tags=["history"])

HISTORY_FIELDS = ("as_of", "model_name", "model_version", "scored_at", "churn_probability",
                  "risk_band", "health_score", "health_band", "quadrant", "survey_due")


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["as_of"] = row["as_of"].isoformat()
    out["scored_at"] = row["scored_at"].isoformat()
    out["model_version"] = row["model_version"] or None
    return out


@router.get("/accounts/{account_id}",
            summary="Latest stored score of an account by the served model, with reasons, and "
                    "its score history",
            responses={404: {"model": Problem, "description": "No stored score for the account"}})
def get_account(account_id: Annotated[str, Path(min_length=1, max_length=ACCOUNT_ID_MAX,
                                                pattern=ACCOUNT_ID_PATTERN)],
                store: StoreDep, model: ModelDep,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    rows = store_call(store.account, account_id, model.name, limit)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail="No stored score for this account (scores are stored by "
                                   "`churn score`).")
    return {"account_id": account_id, "latest": _stored(rows[0]),
            "history": [{k: _stored(r)[k] for k in HISTORY_FIELDS} for r in rows]}


@router.get("/portfolio",
            summary="The served model's portfolio: risk/health band and quadrant distribution, "
                    "playbook alarms, surveys due, revenue at risk",
            responses={404: {"model": Problem, "description": "No stored scores (for that date)"}})
def get_portfolio(store: StoreDep, config: SettingsDep, model: ModelDep,
                  as_of: Annotated[date | None, Query(
                      description="Scoring date [default: the latest stored]")] = None
                  ) -> dict[str, Any]:
    summary = store_call(portfolio_summary, store, model.name, config, as_of)
    if summary is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail="No stored scores (for that date); run `churn score`.")
    return summary
