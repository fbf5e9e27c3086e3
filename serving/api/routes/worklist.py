"""``GET /v1/accounts``: the served model's worklist, ranked and filtered (serving.worklist)."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from serving.api.deps import V1, ModelDep, StoreDep, store_call
from serving.schemas import Problem, Worklist
from serving.worklist import CursorError, Filters, Sort, worklist

router = APIRouter(prefix=V1, tags=["worklist"])


@router.get("/accounts", response_model=Worklist,
            summary="The worklist: the latest stored scores of the served model, ranked by "
                    "revenue at risk (or churn probability, health, change in risk) and filtered",
            responses={400: {"model": Problem, "description": "The cursor is not valid"},
                       404: {"model": Problem, "description": "No stored scores"}})
def get_accounts(
    store: StoreDep, model: ModelDep,
    sort: Annotated[Sort, Query(description="revenue_at_risk and churn_probability: highest "
                                "first; health: least healthy first; risk_change: fastest "
                                "rising first")] = "revenue_at_risk",
    risk_band: Annotated[str | None, Query(description="Only this risk band")] = None,
    health_band: Annotated[str | None, Query(description="Only this health band")] = None,
    quadrant: Annotated[str | None, Query(description="Only this CSAT x NPS quadrant")] = None,
    survey_due: Annotated[bool | None, Query(description="Only accounts due (or not due) a "
                                             "survey")] = None,
    renewal_within_days: Annotated[int | None, Query(
        ge=0, le=3660, description="Only accounts renewing within this many days of the "
        "scoring date")] = None,
    owner: Annotated[str | None, Query(description="Only the accounts of this CSM")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Worklist:
    filters = Filters(risk_band=risk_band, health_band=health_band, quadrant=quadrant,
                      survey_due=survey_due, renewal_within_days=renewal_within_days,
                      owner=owner)
    try:
        page = store_call(worklist, store, model.name, sort=sort, filters=filters, limit=limit,
                          cursor=cursor)
    except CursorError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
    if page is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail="No stored scores; run `churn score`.")
    return page  # type: ignore[return-value]
