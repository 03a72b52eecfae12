"""The HTTP service: Starlette routes over a `Collector` (store, verified repository view, writer).

Why Starlette on uvicorn: both are maintained (Encode and the Kludex org,
monthly releases), typed, small (Starlette has no dependencies beyond anyio),
and ASGI lets one process hold thousands of idle keep-alive connections from
nodes while one writer thread batches the inserts. Django or FastAPI bring
far more than five JSON routes need; the standard library's ``http.server``
is documented as not for production.

Routes (JSON unless noted):

==========================  ======  ===============================================
``/api/v1/reports``         POST    a signed report (no token: the signature is the
                                    credential); 200 ``{"outcome": stored|replay|older}``,
                                    400 malformed, 401 not verified, 413 too big,
                                    429 rate-limited, 503 no verified repository yet
``/api/v1/sites``           GET     filters ``fleet``, ``wave``, ``state``, ``revision``
                                    (prefix), ``stale`` (true/false)
``/api/v1/sites/{site}``    GET     the site and its history (``history=N``, ≤ 500)
``/api/v1/changes/{commit}``GET     the commit's rollout by fleet and wave
``/metrics``                GET     Prometheus text
``/healthz``                GET     liveness (no token)
``/dashboard/…``            GET     the HTML dashboard (`reconciler.fleet.dashboard`)
==========================  ======  ===============================================

Every route but ingest and ``/healthz`` needs ``Authorization: Bearer <token>``;
tokens are stored as SHA-256 hashes (`outpost fleet token add`). With no token
defined at all the read API answers 401 to everyone: fail closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reconciler.core.model import NAME_RE
from reconciler.core.report import MAX_ENVELOPE_BYTES, ReportMalformed, ReportUnverified
from reconciler.fleet.collector.fleetview import FleetSource
from reconciler.fleet.collector.ingest import (
    BatchWriter,
    Ingestor,
    NotReady,
    RateLimited,
    RateLimiter,
)
from reconciler.fleet.collector.metrics import render_metrics
from reconciler.fleet.collector.rollout import (
    CHANGE_STATES,
    SITE_STATES,
    change_rollout,
    site_json,
    site_state,
    source_stale,
)
from reconciler.fleet.collector.store import SiteRecord, Store, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from reconciler.fleet.collector.verifier import VerifierPool
    from reconciler.fleet.dashboard.web import DashboardOptions

__all__ = ["Collector", "create_app", "hash_token"]

log = logging.getLogger("outpost.collector")

_REVISION = re.compile(r"^[0-9a-f]{4,40}$")
TOKEN_CACHE_SECONDS = 10.0
PREDICTIONS_KEPT = 64
"""The dashboard's predictions kept in the store (the most recently computed)."""


def hash_token(token: str) -> str:
    """Tokens are 32 random bytes: a fast hash is enough (no dictionary to guess from)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class Collector:
    """Everything one collector process holds; nothing here is state another replica needs."""

    store: Store
    source: FleetSource
    clock: Callable[[], datetime]
    limiter: RateLimiter | None = None
    refresh_every: float = 60.0
    history_keep: int = 100
    on_tick: Callable[[Collector], object] | None = None
    """Called after each background refresh (the webhook notifier)."""
    verifier: VerifierPool | None = None
    """Worker processes for the signature step (None: verify in this process)."""
    on_new_head: list[Callable[[str], object]] = field(default_factory=list)
    """Called with the revision whenever a refresh verifies a head not seen before (the
    dashboard starts computing its schedule then, ahead of the first view)."""
    ingestor: Ingestor = field(init=False)
    writer: BatchWriter = field(init=False)
    _tokens: tuple[float, dict[str, str]] = field(init=False, default=(0.0, {}))
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)
    _head: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.ingestor = Ingestor(self.store, self.source, clock=self.clock, limiter=self.limiter)
        self.writer = BatchWriter(self.store)

    # -- background work -----------------------------------------------------------

    def start(self) -> None:
        if self.verifier is not None:
            self.verifier.warm()
        self.source.refresh(self.clock())
        self._notice_head()
        self._thread = threading.Thread(target=self._loop, name="outpost-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.writer.close()
        self.store.close()
        if self.verifier is not None:
            self.verifier.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_every):
            self.background_once()

    def background_once(self) -> None:
        """Refresh the repository view, prune history, run the notifier; never raises."""
        status = self.source.refresh(self.clock())
        if status.problem:
            log.error("fleet repository not verified", extra={"error": status.problem})
        self._notice_head()
        try:
            self.store.prune_history(self.history_keep)
            self.store.prune_predictions(PREDICTIONS_KEPT)
            if self.on_tick is not None:
                self.on_tick(self)
        except Exception as exc:  # the loop must survive a database outage
            log.error("background work failed", extra={"error": str(exc)})

    def _notice_head(self) -> None:
        view = self.source.status.view
        if view is None or view.revision == self._head:
            return
        self._head = view.revision
        for watcher in self.on_new_head:
            try:
                watcher(view.revision)
            except Exception as exc:  # a watcher's defect must not stop the refresh loop
                log.error("new-head watcher failed", extra={"error": str(exc)})

    # -- reads ---------------------------------------------------------------------

    def records(self) -> dict[str, SiteRecord]:
        return {record.site: record for record in self.store.sites()}

    def _token_map(self) -> dict[str, str]:
        fetched, tokens = self._tokens
        now = time.monotonic()
        if now - fetched > TOKEN_CACHE_SECONDS:
            tokens = self.store.token_hashes()
            self._tokens = (now, tokens)
        return tokens

    def token_name(self, header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return None
        return self._token_map().get(hash_token(header[len("Bearer ") :].strip()))

    def token_names(self) -> set[str]:
        """The names of the tokens that exist now (a dashboard session names one)."""
        return set(self._token_map().values())


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _failed(
    status: int, message: str, **headers: str
) -> tuple[int, dict[str, str], dict[str, str]]:
    return status, {"error": message}, headers


class _ClientGone(Exception):
    """The client went away before sending the whole body: nobody to answer."""


async def _body(scope: Scope, receive: Receive) -> bytes | None:
    """The request body, or None once it passes the cap (read no further)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > MAX_ENVELOPE_BYTES):
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_ENVELOPE_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def create_app(
    collector: Collector, *, start: bool = True, dashboard: DashboardOptions | None = None
) -> ASGIApp:
    """The ASGI application; ``start`` runs the background refresh while it serves.

    With ``dashboard``, the HTML pages under ``/dashboard/`` are served too
    (`reconciler.fleet.dashboard.web`; needs Jinja2, in the ``fleet`` extra).
    """

    async def ingest_answer(data: bytes | None) -> tuple[int, dict[str, str], dict[str, str]]:
        """(status, JSON body, headers) for a report's bytes (None: over the size cap)."""
        if data is None:
            collector.ingestor.count("too-large")
            return _failed(413, f"a report may be at most {MAX_ENVELOPE_BYTES} bytes")
        try:
            if collector.verifier is not None:
                checked = await collector.ingestor.check_async(
                    data, "the request body", collector.verifier
                )
            else:
                checked = collector.ingestor.check(data, "the request body")
        except ReportMalformed as exc:
            collector.ingestor.count("malformed")
            return _failed(400, exc.message)
        except ReportUnverified as exc:
            collector.ingestor.count("unverified")
            log.warning("report refused", extra={"error": exc.message})
            return _failed(401, exc.message)
        except RateLimited as exc:
            collector.ingestor.count("rate-limited")
            return _failed(429, exc.message, **{"Retry-After": str(int(exc.retry_after) + 1)})
        except NotReady as exc:
            return _failed(503, exc.message, **{"Retry-After": "60"})
        try:
            result = await collector.writer.submit(collector.ingestor.row(checked))
        except StoreUnavailable as exc:
            return _failed(503, exc.message, **{"Retry-After": "30"})
        except StoreError as exc:
            return _failed(500, exc.message)
        collector.ingestor.count(result)
        return 200, {"outcome": result, "site": checked.report.site}, {}

    async def ingest(request: Request) -> Response:
        try:
            data = await _body(request.scope, request.receive)
        except _ClientGone:
            return Response(status_code=400)  # nobody reads it
        status, body, headers = await ingest_answer(data)
        return JSONResponse(body, status_code=status, headers=headers)

    async def ingest_fast(scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /api/v1/reports`` straight on ASGI: the one route called per report, so
        Starlette's request, routing and middleware objects are skipped (same answers)."""
        try:
            data = await _body(scope, receive)
        except _ClientGone:
            return
        status, body, headers = await ingest_answer(data)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        fields = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(text)).encode("ascii")),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": fields})
        await send({"type": "http.response.body", "body": text})

    def authorized(request: Request) -> Response | None:
        try:
            name = collector.token_name(request.headers.get("authorization"))
        except (StoreError, StoreUnavailable) as exc:
            return _error(503, exc.message)
        if name is None:
            return _error(
                401,
                "a bearer token is required (Authorization: Bearer …; an operator makes one "
                "with `outpost fleet token add NAME`)",
                **{"WWW-Authenticate": 'Bearer realm="outpost"'},
            )
        return None

    async def sites(request: Request) -> Response:
        if (denied := await run_in_threadpool(authorized, request)) is not None:
            return denied
        query = request.query_params
        state = query.get("state")
        if state is not None and state not in SITE_STATES:
            return _error(400, f"state {state[:40]!r} is not one of {', '.join(SITE_STATES)}")
        stale = query.get("stale")
        if stale is not None and stale not in ("true", "false"):
            return _error(400, "stale must be true or false")
        revision = query.get("revision")
        if revision is not None and not _REVISION.match(revision):
            return _error(400, "revision must be 4 to 40 lowercase hex digits")
        fleet, wave = query.get("fleet"), query.get("wave")

        def answer() -> list[dict[str, Any]]:
            now = collector.clock()
            view = collector.source.status.view
            records = collector.records()
            found = []
            for site in sorted(set(view.sites if view else ()) | set(records)):
                info = view.sites.get(site) if view else None
                record = records.get(site)
                if fleet is not None and (info is None or fleet not in info.waves):
                    continue
                if wave is not None and (info is None or wave not in info.waves.values()):
                    continue
                if fleet is not None and wave is not None and info and info.waves[fleet] != wave:
                    continue
                if state is not None and site_state(record, info, now) != state:
                    continue
                if revision is not None and not (
                    record and (record.applied or "").startswith(revision)
                ):
                    continue
                if stale is not None and (
                    record is None or source_stale(record, now) != (stale == "true")
                ):
                    continue
                found.append(site_json(site, record, info, now))
            return found

        try:
            found = await run_in_threadpool(answer)
        except (StoreError, StoreUnavailable) as exc:
            return _error(503, exc.message)
        return JSONResponse({"sites": found, "count": len(found)})

    async def one_site(request: Request) -> Response:
        if (denied := await run_in_threadpool(authorized, request)) is not None:
            return denied
        site = request.path_params["site"]
        if not NAME_RE.match(site):
            return _error(400, "not a site id")
        raw = request.query_params.get("history", "20")
        if not raw.isdigit() or not 0 <= int(raw) <= 500:
            return _error(400, "history must be a number from 0 to 500")
        try:
            record, history = await run_in_threadpool(collector.store.site, site, history=int(raw))
        except (StoreError, StoreUnavailable) as exc:
            return _error(503, exc.message)
        view = collector.source.status.view
        info = view.sites.get(site) if view else None
        if record is None and info is None:
            return _error(404, f"no site {site!r} in the fleet repository or the store")
        now = collector.clock()
        body = site_json(site, record, info, now)
        body["history"] = [
            {**site_json(site, h.record, info, now), "payload": h.payload, "signature": h.signature}
            for h in history
        ]
        return JSONResponse(body)

    async def change(request: Request) -> Response:
        if (denied := await run_in_threadpool(authorized, request)) is not None:
            return denied
        commit = request.path_params["commit"]
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            return _error(400, "a change is named by its full 40-digit commit id")

        def answer() -> dict[str, Any]:
            return change_rollout(
                commit,
                collector.source.status.view,
                collector.records(),
                now=collector.clock(),
                descends=collector.source.descends,
            )

        try:
            body = await run_in_threadpool(answer)
        except (StoreError, StoreUnavailable) as exc:
            return _error(503, exc.message)
        body["states"] = list(CHANGE_STATES)
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        if (denied := await run_in_threadpool(authorized, request)) is not None:
            return denied

        def answer() -> str:
            status = collector.source.status
            return render_metrics(
                collector.records(),
                status.view,
                now=collector.clock(),
                repository_ok=status.view is not None and status.problem is None,
                reports=dict(collector.ingestor.counts),
            )

        try:
            text = await run_in_threadpool(answer)
        except (StoreError, StoreUnavailable) as exc:
            return PlainTextResponse(f"# store unavailable: {exc.message}\n", status_code=503)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        status = collector.source.status
        return JSONResponse(
            {
                "repository": status.view.revision if status.view else None,
                "problem": status.problem,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start:
            await run_in_threadpool(collector.start)
        try:
            yield
        finally:
            await run_in_threadpool(collector.stop)

    routes = [
        Route("/api/v1/reports", ingest, methods=["POST"]),
        Route("/api/v1/sites", sites, methods=["GET"]),
        Route("/api/v1/sites/{site}", one_site, methods=["GET"]),
        Route("/api/v1/changes/{commit}", change, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    if dashboard is not None:
        from reconciler.fleet.dashboard.web import dashboard_routes

        routes.extend(dashboard_routes(collector, dashboard))
    routed = Starlette(routes=routes, lifespan=lifespan)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/api/v1/reports"
        ):
            await ingest_fast(scope, receive, send)
        else:
            await routed(scope, receive, send)

    return app
