"""``outpost fleet serve``: the collector under uvicorn, with TLS or behind a reverse proxy.

One uvicorn worker per process: the writer thread batches inserts, and the
signature checks go to `verifier` worker processes (``--verify-workers``, see
`default_verify_workers`), the one step heavy enough to be worth the messages.
More throughput beyond one machine comes from more collector processes on one
PostgreSQL (they share nothing but the database).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.core.errors import ConfigError
from reconciler.fleet.collector.fleetview import FleetSource
from reconciler.fleet.collector.store import Store

__all__ = ["ServeOptions", "default_verify_workers", "serve"]


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    tls_cert: str | None
    tls_key: str | None
    refresh: float
    history: int
    burst: int
    every: float
    webhooks: tuple[str, ...]
    webhook_format: str
    commit_url: str | None = None
    session_key: bytes | None = None
    """The dashboard's session signing key, read from ``--session-key`` (None: random)."""
    verify_workers: int = 0
    """Processes that check report signatures (`verifier`); 0: the serving process does."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        host, _, port = str(args.listen).rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT, e.g. 0.0.0.0:8443")
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        burst, _, every = str(args.rate).partition("/")
        try:
            rate = (int(burst), float(every))
        except ValueError:
            rate = (0, 0.0)
        if rate[0] < 1 or rate[1] <= 0:
            raise ConfigError(f"--rate {args.rate!r}: expected BURST/SECONDS, e.g. 30/5")
        workers = getattr(args, "verify_workers", None)
        if workers is None:
            workers = default_verify_workers()
        if not 0 <= workers <= 64:
            raise ConfigError(f"--verify-workers {workers}: expected 0 to 64")
        if args.refresh < 1 or args.history < 1:
            raise ConfigError("--refresh must be ≥ 1 second and --history ≥ 1")
        from reconciler.fleet.dashboard.session import load_key
        from reconciler.fleet.dashboard.web import check_commit_url

        commit_url = check_commit_url(getattr(args, "commit_url", None))
        for url in args.webhook:
            if not url.startswith(("https://", "http://")):
                raise ConfigError(f"--webhook {url!r}: expected an http(s) URL")
        return cls(
            host=host.strip("[]"),
            port=int(port),
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            refresh=float(args.refresh),
            history=int(args.history),
            burst=rate[0],
            every=rate[1],
            webhooks=tuple(args.webhook),
            webhook_format=args.webhook_format,
            commit_url=commit_url,
            session_key=(
                load_key(Path(args.session_key)) if getattr(args, "session_key", None) else None
            ),
            verify_workers=workers,
        )


def default_verify_workers() -> int:
    """One signature worker beside the serving process when the machine has a second core
    (`reconciler.fleet.collector.verifier`); none on one core, where it would only add
    the messages between them."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 1 if (usable or 1) > 1 else 0


def serve(store: Store, source: FleetSource, options: ServeOptions) -> int:
    """Run until interrupted; 0 on a clean stop."""
    import uvicorn

    from reconciler.fleet.collector.app import Collector, create_app
    from reconciler.fleet.collector.ingest import RateLimiter
    from reconciler.fleet.collector.notify import Notifier
    from reconciler.fleet.collector.verifier import VerifierPool
    from reconciler.fleet.dashboard.session import load_key
    from reconciler.fleet.dashboard.web import DashboardOptions

    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger("outpost").addHandler(handler)
    logging.getLogger("outpost").setLevel(logging.INFO)
    notifier = (
        Notifier(options.webhooks, style=options.webhook_format) if options.webhooks else None
    )
    collector = Collector(
        store=store,
        source=source,
        clock=lambda: datetime.now(UTC),
        limiter=RateLimiter(burst=options.burst, every=options.every),
        refresh_every=options.refresh,
        history_keep=options.history,
        on_tick=notifier.evaluate if notifier else None,
        verifier=VerifierPool(options.verify_workers) if options.verify_workers else None,
    )
    dashboard = DashboardOptions(
        session_key=options.session_key or load_key(None),
        commit_url=options.commit_url,
    )
    config = uvicorn.Config(
        create_app(collector, dashboard=dashboard),
        host=options.host,
        port=options.port,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="on",
        limit_concurrency=4096,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    scheme = "https" if options.tls_cert else "http"
    revision = source.status.view.revision[:12] if source.status.view else "?"
    print(
        f"outpost fleet serve: listening on {scheme}://{options.host}:{options.port}; "
        f"repository {source.path} at {revision}",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    return 0
