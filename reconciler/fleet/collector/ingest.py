"""Ingesting a signed report: check, verify against the site's node keys, rate-limit, store.

The order is the security argument:

1. **Bounded and well-formed** (`read_envelope`): a malformed envelope is
   refused (400) before any cryptography.
2. **Verified against the site's own keys** (`open_envelope` with the keys the
   verified repository lists for the site the report names): otherwise 401 and
   nothing is stored. An unknown site has no keys, so the same 401. The HTTP
   path (`Ingestor.check_async`) runs the same checks with the public-key step
   in a `VerifierPool` worker process.
3. **Per-site rate limit on verified reports only** (`RateLimiter`): counting
   unverified reports against a site would let anybody silence that site by
   sending garbage in its name. Floods of garbage are the reverse proxy's job
   (per-address limits) and cost us one bounded JSON parse and one Ed25519
   verification each.
4. **Newest wins** in the store (`Store.ingest`): a replay or an older report
   changes nothing.

Storing goes through `BatchWriter`: one thread takes whatever reports have
arrived (up to `BATCH`) and writes them in one transaction. A commit per
report would cap ingestion at the disk's fsync rate; a batch costs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from reconciler.core.errors import OutpostError, TemporaryError
from reconciler.core.report import (
    Envelope,
    ReportUnverified,
    VerifiedReport,
    check_envelope,
    open_envelope,
    read_envelope,
)
from reconciler.fleet.collector.fleetview import FleetSource, FleetView, SiteInfo
from reconciler.fleet.collector.store import IngestResult, Row, Store

if TYPE_CHECKING:
    from reconciler.fleet.collector.verifier import VerifierPool

__all__ = [
    "BATCH",
    "BatchWriter",
    "Ingestor",
    "NotReady",
    "RateLimited",
    "RateLimiter",
]

log = logging.getLogger("outpost.collector")

BATCH = 500


class NotReady(TemporaryError):
    """The collector has no verified view of the repository yet: it cannot verify anything."""


class RateLimited(TemporaryError):
    """A site sent more reports than its limit allows; ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    """A token bucket per site: ``burst`` reports at once, then one per ``every`` seconds.

    Per collector process: two replicas allow twice the rate, which only matters
    to a site that is already misbehaving.
    """

    def __init__(
        self,
        *,
        burst: int = 30,
        every: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.every = every
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, site: str) -> None:
        now = self._monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(site, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - stamp) / self.every)
            if tokens < 1:
                wait = (1 - tokens) * self.every
                self._buckets[site] = (tokens, now)
                raise RateLimited(
                    f"{site} sent more than {self.burst} reports in a burst; retry in {wait:.0f} s",
                    retry_after=wait,
                )
            self._buckets[site] = (tokens - 1, now)


class BatchWriter:
    """One writer thread; `submit` returns an asyncio future of the row's `IngestResult`.

    The answers of a batch go back to the event loop in one call
    (``call_soon_threadsafe``), not one wake-up per report.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="outpost-writer", daemon=True)
        self._thread.start()

    def submit(self, row: Row) -> asyncio.Future[IngestResult]:
        """Queue ``row``; call from a running event loop, whose future it answers."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        self._queue.put((row, loop, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            answers: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
            try:
                results = self.store.ingest([row for row, _, _ in batch])
            except Exception as exc:  # every waiting request must get an answer
                for _, loop, future in batch:
                    answers.setdefault(loop, []).append((future, exc))
            else:
                for (_, loop, future), result in zip(batch, results, strict=True):
                    answers.setdefault(loop, []).append((future, result))
            for loop, each in answers.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                    loop.call_soon_threadsafe(_answer, each)
            if stop:
                return


_Item = tuple[Row, asyncio.AbstractEventLoop, "asyncio.Future[IngestResult]"]
_Answer = tuple["asyncio.Future[IngestResult]", "IngestResult | Exception"]


def _answer(answers: list[_Answer]) -> None:
    for future, outcome in answers:
        if future.done():  # the request was cancelled (client gone)
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


@dataclass(frozen=True)
class Checked:
    """A verified report and the node whose key signed it."""

    report: VerifiedReport
    node: str
    signature: str


class Ingestor:
    """Checks and verifies reports against the current verified view; stores through a writer."""

    def __init__(
        self,
        store: Store,
        source: FleetSource,
        *,
        clock: Callable[[], datetime],
        limiter: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.clock = clock
        self.limiter = limiter
        self.counts: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def count(self, result: str) -> None:
        with self._count_lock:
            self.counts[result] = self.counts.get(result, 0) + 1

    def view(self) -> FleetView:
        view = self.source.status.view
        if view is None:
            raise NotReady(
                "the collector has not verified the fleet repository yet "
                f"({self.source.status.problem}); it cannot check any report"
            )
        return view

    def check(self, data: bytes, source: str) -> Checked:
        """Steps 1-3 of the module docstring; ReportRefused, NotReady or RateLimited."""
        envelope = read_envelope(data, source)
        info = self._site(envelope, source)
        return self._limited(info, open_envelope(envelope, info.keys, source=source), envelope)

    async def check_async(self, data: bytes, source: str, verifier: VerifierPool) -> Checked:
        """`check` with the public-key step in ``verifier``'s worker processes."""
        envelope = read_envelope(data, source)
        info = self._site(envelope, source)
        pending = check_envelope(envelope, info.keys, source=source)
        report = pending.verified(await verifier.check(pending.signed))
        return self._limited(info, report, envelope)

    def _site(self, envelope: Envelope, source: str) -> SiteInfo:
        info = self.view().sites.get(envelope.site)
        if info is None:
            raise ReportUnverified(
                f"{source}: site {envelope.site!r} is not in the fleet repository (at "
                f"{self.view().revision[:12]}); nobody can report for it"
            )
        return info

    def _limited(self, info: SiteInfo, report: VerifiedReport, envelope: Envelope) -> Checked:
        if self.limiter is not None:
            self.limiter.take(envelope.site)
        return Checked(report, info.nodes.get(report.key.blob, "?"), envelope.signature)

    def row(self, checked: Checked) -> Row:
        report = checked.report
        return Row(
            site=report.site,
            node=checked.node,
            time=report.time,
            received=self.clock(),
            digest=hashlib.sha256(report.payload).hexdigest(),
            body=report.body,
            payload=report.payload.decode("utf-8"),
            signature=checked.signature,
        )

    def ingest(self, data: bytes, source: str) -> IngestResult:
        """Check and store one report synchronously (the command line's path)."""
        try:
            row = self.row(self.check(data, source))
        except OutpostError:
            self.count("refused")
            raise
        [result] = self.store.ingest([row])
        self.count(result)
        return result
