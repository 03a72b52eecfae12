"""The dashboard's routes, mounted into the collector's Starlette app (same process, same tokens).

==================================  ======  ==========================================
``/dashboard/``                     GET     fleet overview: fleet × wave rows, filters,
                                            paged site list, firing alerts
``/dashboard/changes/{commit}``     GET     a change: rollout by wave, predicted vs
                                            actual chart, late sites and why
``/dashboard/sites/{site}``         GET     a site: what it runs and waits for, ticks,
                                            hardware, nodes, age of its last report
``/dashboard/login``                GET     the login form (a bearer token)
``/dashboard/login``                POST    checks the token, sets the session cookie
``/dashboard/static/dashboard.css`` GET     the one stylesheet (package data)
==================================  ======  ==========================================

**Who may look**: a request with ``Authorization: Bearer <token>`` (the API's
tokens), or the session cookie the login form sets (`session`); anything else
is sent to the login form. The pages are read-only; the only form that
changes anything is the login, and it is refused when the browser says it
comes from another origin (the cookie is ``SameSite=Strict`` besides).

**Nothing from elsewhere**: every page carries a Content-Security-Policy that
allows only this origin's stylesheet and no script at all, so a page cannot
load anything from another host even by mistake. Pages refresh themselves
every `REFRESH_SECONDS` (a ``<meta>`` refresh: wall screens need no script).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from reconciler.core.errors import ConfigError
from reconciler.core.model import NAME_RE
from reconciler.fleet.collector.store import StoreError, StoreUnavailable
from reconciler.fleet.dashboard import views
from reconciler.fleet.dashboard.chart import rollout_chart
from reconciler.fleet.dashboard.prediction import Predictions
from reconciler.fleet.dashboard.session import COOKIE, SESSION_SECONDS, SessionSigner

if TYPE_CHECKING:
    import jinja2

    from reconciler.fleet.collector.app import Collector

__all__ = ["DashboardOptions", "check_commit_url", "dashboard_routes"]

REFRESH_SECONDS = 60
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class DashboardOptions:
    session_key: bytes
    commit_url: str | None = None
    """E.g. ``https://git.example.com/ops/fleet/commit/{commit}``."""
    secure_cookie: bool = True


def check_commit_url(template: str | None) -> str | None:
    if template is None:
        return None
    if not template.startswith(("https://", "http://")) or "{commit}" not in template:
        raise ConfigError(
            f"--commit-url {template!r}: expected an http(s) URL containing {{commit}}, "
            "e.g. https://git.example.com/ops/fleet/commit/{commit}"
        )
    return template


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler.fleet.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC") if d else "—"
    env.filters["short"] = lambda s: s[:12] if s else "—"
    env.globals["states"] = views.DASHBOARD_STATES
    env.globals["refresh"] = REFRESH_SECONDS
    return env


def _stylesheet() -> bytes:
    return files("reconciler.fleet.dashboard").joinpath("static/dashboard.css").read_bytes()


def dashboard_routes(
    collector: Collector,
    options: DashboardOptions,
    *,
    predictions: Predictions | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> list[Route]:
    """The dashboard's routes over ``collector``; add them to the collector's app."""
    signer = SessionSigner(options.session_key)
    source = collector.source
    predicted = predictions or Predictions(
        Path(source.path), Path(source.trust), store=collector.store
    )
    stylesheet = _stylesheet()
    for template in ("overview.html", "change.html", "site.html", "login.html", "error.html"):
        _environment().get_template(template)  # compiled now, not in somebody's first view
    collector.on_new_head.append(lambda head: predicted.ahead(head, now=collector.clock()))

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _environment().get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def who(request: Request) -> str | None:
        name = collector.token_name(request.headers.get("authorization"))
        if name is not None:
            return name
        session = signer.name(request.cookies.get(COOKIE), now=wall_clock())
        if session is not None and session in collector.token_names():
            return session
        return None

    async def guard(request: Request) -> Response | None:
        try:
            name = await run_in_threadpool(who, request)
        except (StoreError, StoreUnavailable) as exc:
            return page("error.html", 503, message=exc.message, user=None)
        if name is not None:
            request.state.user = name
            return None
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            f"/dashboard/login?next={quote(target, safe='')}", status_code=303, headers=HEADERS
        )

    def unavailable(exc: StoreError | StoreUnavailable) -> HTMLResponse:
        return page("error.html", 503, message=exc.message, user=None)

    async def overview(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        filters = views.Filters.parse(request.query_params)

        def answer() -> views.Overview:
            now = collector.clock()
            records = collector.records()
            view = source.status.view
            firing = views.alerts(records, view, now, collector.store.alerts())
            return views.overview(
                records, view, now, filters, firing=firing, problem=source.status.problem
            )

        try:
            data = await run_in_threadpool(answer)
        except (StoreError, StoreUnavailable) as exc:
            return unavailable(exc)
        return page("overview.html", o=data, user=request.state.user, now=collector.clock())

    async def change(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        commit = request.path_params["commit"]
        if not _COMMIT.match(commit):
            return page(
                "error.html",
                400,
                message="a change is named by its full 40-digit commit id",
                user=request.state.user,
            )

        def answer() -> tuple[views.ChangePage, str]:
            now = collector.clock()
            prediction = predicted.get(commit, now=now)
            data = views.change_page(
                commit,
                source.status.view,
                collector.records(),
                now=now,
                descends=source.descends,
                prediction=prediction,
                commit_url=options.commit_url,
            )
            chart = rollout_chart(
                start=prediction.start,
                now=now,
                actual=data.actual,
                predicted=data.predicted,
                total=data.scheduled or data.total,
            )
            return data, chart

        try:
            data, chart = await run_in_threadpool(answer)
        except (StoreError, StoreUnavailable) as exc:
            return unavailable(exc)
        return page(
            "change.html", c=data, chart=chart, user=request.state.user, now=collector.clock()
        )

    async def site(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        name = request.path_params["site"]
        if not NAME_RE.match(name):
            return page("error.html", 400, message="not a site id", user=request.state.user)

        def answer() -> views.SitePage | None:
            now = collector.clock()
            record, history = collector.store.site(name, history=20)
            view = source.status.view
            info = view.sites.get(name) if view else None
            if record is None and info is None:
                return None
            # a site's alerts come from its own record alone: the other sites' are not read
            mine = {name: record} if record is not None else {}
            firing = views.alerts(mine, view, now, collector.store.alerts())
            return views.site_page(name, record, info, history, now, firing)

        try:
            data = await run_in_threadpool(answer)
        except (StoreError, StoreUnavailable) as exc:
            return unavailable(exc)
        if data is None:
            return page(
                "error.html",
                404,
                message=f"no site {name!r} in the fleet repository or the store",
                user=request.state.user,
            )
        return page("site.html", s=data, user=request.state.user, now=collector.clock())

    def safe_next(value: str | None) -> str:
        if value and value.startswith("/dashboard/") and "//" not in value and "\\" not in value:
            return value
        return "/dashboard/"

    async def login_form(request: Request) -> Response:
        return page(
            "login.html", next=safe_next(request.query_params.get("next")), error=None, user=None
        )

    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return page(
                "error.html", 403, message="a login must come from this site's own form", user=None
            )
        form = await _small_form(request)
        token = form.get("token", "").strip()
        target = safe_next(form.get("next"))
        try:
            name = await run_in_threadpool(collector.token_name, f"Bearer {token}")
        except (StoreError, StoreUnavailable) as exc:
            return unavailable(exc)
        if not token or name is None:
            return page(
                "login.html",
                401,
                next=target,
                error="that token is not known here (an operator makes one with "
                "`outpost fleet token add NAME`)",
                user=None,
            )
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            signer.issue(name, now=wall_clock()),
            max_age=SESSION_SECONDS,
            path="/dashboard",
            secure=options.secure_cookie,
            httponly=True,
            samesite="strict",
        )
        return response

    async def css(request: Request) -> Response:
        return Response(
            stylesheet,
            media_type="text/css",
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    async def root(request: Request) -> Response:
        return RedirectResponse("/dashboard/", status_code=308)

    return [
        Route("/dashboard", root, methods=["GET"]),
        Route("/dashboard/", overview, methods=["GET"]),
        Route("/dashboard/changes/{commit}", change, methods=["GET"]),
        Route("/dashboard/sites/{site}", site, methods=["GET"]),
        Route("/dashboard/login", login_form, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/static/dashboard.css", css, methods=["GET"]),
    ]


async def _small_form(request: Request, limit: int = 4096) -> dict[str, str]:
    """The login form's fields (URL-encoded, at most ``limit`` bytes; else none at all).

    Parsed here rather than by Starlette's ``request.form()``, which needs the
    python-multipart package for a two-field form.
    """
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    return {key: values[0] for key, values in fields.items() if values}


def _same_origin(request: Request) -> bool:
    """False when the browser says the form was posted from another site (login CSRF)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")
