"""The CS console under ``/ui``: server-rendered pages over the score store, read-only.

* ``/ui``: the portfolio (:func:`serving.portfolio.portfolio_summary`, as ``GET /v1/portfolio``);
* ``/ui/accounts``: the worklist (:func:`serving.worklist.worklist`, as ``GET /v1/accounts``);
* ``/ui/accounts/{id}``: one account's latest score, reasons and history chart.

With API keys configured the pages need a console session (:mod:`serving.sessions`): the login
form posts a key, which is checked and forgotten. Without keys (the loopback default) they are
open, as ``/v1`` is. Templates and the style sheet ship in the package; nothing is fetched from
elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from features.definitions import CATALOGUE
from features.health import COMPONENTS
from features.surveys import QUADRANTS
from serving.api.deps import SettingsDep, StoreDep, store_unavailable
from serving.auth import key_matches
from serving.chart import history_chart
from serving.model import LoadedModel
from serving.portfolio import portfolio_summary
from serving.sessions import COOKIE, sessions_of
from serving.store import ScoreStore, StoreError
from serving.worklist import ORDERS, CursorError, Filters, worklist

PACKAGE = Path(__file__).resolve().parents[2]
STATIC = {"console.css": PACKAGE / "static" / "console.css"}
templates = Jinja2Templates(directory=PACKAGE / "templates")
templates.env.filters["money"] = lambda v: "-" if v is None else f"{v:,.0f}"
templates.env.filters["pct"] = lambda v: "-" if v is None else f"{v:.0%}"
templates.env.filters["points"] = lambda v: "-" if v is None else f"{round(100 * v, 1) or 0.0:+.1f} pts"
templates.env.filters["days"] = lambda v: ("none recorded" if v is None else
                                           "1 day" if round(v) == 1 else f"{v:,.0f} days")
templates.env.filters["num"] = lambda v: "-" if v is None else f"{v:,.0f}"
#: The plain-language name of each stored recency feature (its catalogue description).
DESCRIPTIONS = {spec.name: spec.description for spec in CATALOGUE}
SORT_LABELS = {"revenue_at_risk": "Revenue at risk", "churn_probability": "Churn probability",
               "health": "Health (least healthy first)", "risk_change": "Change in risk"}
assert set(SORT_LABELS) == set(ORDERS), "every worklist order has a label"

router = APIRouter(prefix="/ui", include_in_schema=False)


class LoginRequired(Exception):
    """No valid console session: the page answers with a redirect to the login form."""


def _keys_required(request: Request) -> bool:
    return bool(request.app.state.settings.api_key_hashes)


async def console_session(request: Request) -> str | None:
    """The request's session token; None when the console needs no login (no keys)."""
    if not _keys_required(request):
        return None
    token = request.cookies.get(COOKIE)
    if not sessions_of(request.app).valid(token):
        raise HTTPException(status.HTTP_303_SEE_OTHER, headers={"Location": "/ui/login"})
    return token


SessionDep = Annotated[str | None, Depends(console_session)]


def _same_origin(request: Request) -> bool:
    """A form post from this site (a browser sends Origin on POST; a missing one is allowed for
    clients that do not, which carry no cookie of ours across sites anyway)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _render(request: Request, name: str, token: str | None, status_code: int = 200,
            **context: Any) -> HTMLResponse:
    csrf = sessions_of(request.app).csrf(token) if token else None
    response = templates.TemplateResponse(
        request, name, {"csrf": csrf, "login": _keys_required(request), **context},
        status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response


def _model(request: Request, token: str | None) -> LoadedModel | HTMLResponse:
    model = getattr(request.app.state, "model", None)
    if model is None:  # why is in the server's log (a page never shows a path or URL)
        return _render(request, "problem.html", token, 503, title="No model is loaded",
                       message="The console shows the scores of the served model, and none is "
                               "loaded yet: see the server's log.")
    return model


def _store_problem(request: Request, token: str | None, exc: StoreError) -> HTMLResponse:
    return _render(request, "problem.html", token, 503, title="The score store cannot be read",
                   message=store_unavailable(exc))


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Not Found")
    return FileResponse(STATIC[name], headers={"Cache-Control": "max-age=3600"})


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    if not _keys_required(request):
        return RedirectResponse("/ui", status.HTTP_303_SEE_OTHER)
    return _render(request, "login.html", None, error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    if not _keys_required(request):
        return RedirectResponse("/ui", status.HTTP_303_SEE_OTHER)
    if not _same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Cross-site form post refused.")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    if not key_matches(key, request.app.state.settings.api_key_hashes):
        # The form again, with the error (200: a browser reports a 4xx page as a console error).
        return _render(request, "login.html", None, error="That key is not valid.")
    response = RedirectResponse("/ui", status.HTTP_303_SEE_OTHER)
    # No Max-Age or Expires: the cookie ends with the browser session (the token expires too).
    response.set_cookie(COOKIE, sessions_of(request.app).issue(), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request, token: SessionDep) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    if token is not None and not sessions_of(request.app).csrf_ok(
            token, (form.get("csrf") or [None])[0]):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Logout refused (stale form).")
    response = RedirectResponse("/ui/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.get("", response_class=HTMLResponse)
def portfolio_page(request: Request, token: SessionDep, store: StoreDep,
                   settings: SettingsDep) -> Response:
    model = _model(request, token)
    if isinstance(model, Response):
        return model
    try:
        summary = portfolio_summary(store, model.name, settings)
    except StoreError as exc:
        return _store_problem(request, token, exc)
    return _render(request, "portfolio.html", token, page="portfolio", model=model,
                   summary=summary, risk_order=list(settings.risk_bands),
                   health_order=list(settings.health_bands), quadrants=QUADRANTS)


@router.get("/accounts", response_class=HTMLResponse)
def worklist_page(
    request: Request, token: SessionDep, store: StoreDep, settings: SettingsDep,
    sort: Annotated[str, Query()] = "revenue_at_risk",
    risk_band: Annotated[str, Query()] = "", health_band: Annotated[str, Query()] = "",
    quadrant: Annotated[str, Query()] = "", survey_due: Annotated[str, Query()] = "",
    renewal_within_days: Annotated[str, Query()] = "", owner: Annotated[str, Query()] = "",
    cursor: Annotated[str, Query()] = "",
) -> Response:
    model = _model(request, token)
    if isinstance(model, Response):
        return model
    sort = sort if sort in ORDERS else "revenue_at_risk"
    chosen = {"risk_band": risk_band, "health_band": health_band, "quadrant": quadrant,
              "survey_due": survey_due if survey_due in ("true", "false") else "",
              "renewal_within_days": renewal_within_days if renewal_within_days.isdigit()
              else "", "owner": owner}
    filters = Filters(
        risk_band=risk_band or None, health_band=health_band or None, quadrant=quadrant or None,
        survey_due=None if not chosen["survey_due"] else chosen["survey_due"] == "true",
        renewal_within_days=int(chosen["renewal_within_days"]) if chosen["renewal_within_days"]
        else None, owner=owner or None)
    try:
        page = worklist(store, model.name, sort=sort, filters=filters, limit=50,
                        cursor=cursor or None)
        owners = _owners(store, model.name)
    except CursorError:
        return RedirectResponse("/ui/accounts?" + _query(chosen, sort), status.HTTP_303_SEE_OTHER)
    except StoreError as exc:
        return _store_problem(request, token, exc)
    query = {k: v for k, v in chosen.items() if v}
    return _render(request, "worklist.html", token, page="worklist", model=model, data=page,
                   sort=sort, sorts=SORT_LABELS, chosen=chosen, owners=owners,
                   risk_bands=list(settings.risk_bands), health_bands=list(settings.health_bands),
                   quadrants=QUADRANTS, query=query,
                   sort_url=lambda key: "/ui/accounts?" + _query(chosen, key),
                   next_url=None if not page or not page["next_cursor"] else
                   "/ui/accounts?" + urlencode({**query, "sort": sort,
                                                "cursor": page["next_cursor"]}))


def _owners(store: ScoreStore, model_name: str) -> list[str]:
    snap = store.snapshot(model_name)
    return [] if snap is None else store.owners(snap)


def _query(chosen: dict[str, str], sort: str) -> str:
    return urlencode({**{k: v for k, v in chosen.items() if v}, "sort": sort})


@router.get("/accounts/{account_id}", response_class=HTMLResponse)
def account_page(request: Request, account_id: str, token: SessionDep, store: StoreDep
                 ) -> Response:
    model = _model(request, token)
    if isinstance(model, Response):
        return model
    try:
        history = store.account(account_id, model.name, limit=100)
    except StoreError as exc:
        return _store_problem(request, token, exc)
    if not history:
        return _render(request, "problem.html", token, 404, title="No such account",
                       message="No stored score for this account by the served model.")
    latest = history[0]
    recency = [(DESCRIPTIONS.get(name, name), days)
               for name, days in (latest["recency"] or {}).items()]
    components = [(c, latest["components"].get(c), latest["weights"].get(c, 0.0))
                  for c in COMPONENTS]
    return _render(request, "account.html", token, page="account", model=model,
                   account_id=account_id, latest=latest, chart=history_chart(history),
                   components=components, recency=recency,
                   renewal_days=None if latest["renewal_date"] is None
                   else (latest["renewal_date"] - latest["as_of"]).days)
