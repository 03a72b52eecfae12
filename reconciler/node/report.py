"""Reports go home: the tick's status, signed with the node key, to the collector or the outbox.

After every tick the agent hands its ``SiteStatus`` document to a `Reporter`.
The rules, in the order they apply:

1. **Only what says something new, and at least every interval.** A report is
   queued when the status differs from the last one queued in anything but
   its timestamps (`_volatile`), or when ``spec.report.interval`` (1 h) has
   passed: headquarters tells a quiet site from a silent one by the hourly
   report.
2. **Signed, always.** The node key (``spec.identityKey``) seals the report
   (`reconciler.core.report`); an unsigned report never leaves the node for
   the collector. An air-gapped plant's outbox receives the same signed
   envelope as ``outpost-status-<site>.json``.
3. **A bounded spool.** Queued reports wait as files in
   ``<stateDir>/reports/``, written atomically; past ``spec.report.spool``
   files the oldest is dropped first and counted (``dropped``, exported as
   ``outpost_reports_dropped``). The newest report is the one that
   matters; history is a bonus.
4. **Sending never delays or fails the tick.** It runs after the tick's
   state and status are on disk, oldest report first, with short timeouts and
   a total budget (`SEND_BUDGET`). A collector that does not answer (network
   error, 429, 5xx) stops the round and sets the next attempt by exponential
   backoff with jitter (`backoff`), so a fleet does not come back at the same
   second after an outage; until then ticks do not try at all. A report the
   collector refuses for good (400, 401, 413: malformed, a key it does not
   know yet, too big) is dropped and counted as ``refused`` rather than
   blocking the spool forever. Any failure here is logged and counted, never
   raised.

The HTTP client is urllib3 (as the bundle feed's, `http`), imported only to send: TLS
verified against the system's CAs or ``spec.report.caBundle``, no redirects
(a redirect could send a signed report somewhere else), no retries of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.core.envelope import loads
from reconciler.core.errors import DocumentError, OutpostError
from reconciler.core.files import atomic_write, write_into_folder, write_json
from reconciler.core.source import read_file
from reconciler.node.config import AgentConfig, ReportConfig

if TYPE_CHECKING:  # signing loads cryptography: only a tick that reports pays for it
    from reconciler.core.report import Envelope
    from reconciler.node.identity import NodeIdentity

__all__ = [
    "SEND_BUDGET",
    "Delivery",
    "Reporter",
    "SendFailed",
    "Transport",
    "UrllibTransport",
    "backoff",
]

log = logging.getLogger("outpost.report")

SPOOL_DIR = "reports"
META_FILE = "spool.json"
MAX_META_BYTES = 64 * 1024
"""spool.json holds a handful of counters and times."""
_SPOOL = "the report spool"
SEND_BUDGET = 15.0
"""Seconds one round of sending may take, all requests together."""
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
BACKOFF_BASE = 30.0
BACKOFF_CAP = 3600.0
MAX_RESPONSE_BYTES = 64 * 1024


class SendFailed(OutpostError):
    """The collector did not take the report now; ``retry`` says whether it ever will."""

    def __init__(self, message: str, *, retry: bool, after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.after = after


class Transport(Protocol):
    """One POST to the collector; `SendFailed` for anything but a 2xx answer."""

    def post(self, url: str, body: bytes, *, timeout: float) -> None: ...


class UrllibTransport:
    """HTTPS with urllib3: verified TLS, optional CA bundle, no redirects, no retries."""

    def __init__(self, ca_bundle: Path | None = None) -> None:
        import urllib3

        self._urllib3 = urllib3
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_bundle) if ca_bundle else None,
            retries=False,
        )

    def post(self, url: str, body: bytes, *, timeout: float) -> None:
        urllib3 = self._urllib3
        try:
            response = self._pool.request(
                "POST",
                url,
                body=body,
                headers={"Content-Type": "application/json", "User-Agent": "outpost-agent"},
                timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, timeout), read=timeout),
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise SendFailed(f"{url} did not answer: {exc}", retry=True) from None
        try:
            text = response.read(MAX_RESPONSE_BYTES).decode("utf-8", "replace")
        except urllib3.exceptions.HTTPError as exc:
            raise SendFailed(f"{url} broke off its answer: {exc}", retry=True) from None
        finally:
            response.release_conn()
        status = response.status
        if 200 <= status < 300:
            return
        detail = _detail(text)
        if status in (408, 429) or status >= 500:
            after = _retry_after(response.headers.get("Retry-After"))
            raise SendFailed(f"{url} answered {status}: {detail}", retry=True, after=after)
        raise SendFailed(f"{url} refused the report ({status}): {detail}", retry=False)


def _detail(text: str) -> str:
    try:
        data = loads(text)
    except ValueError:
        return text.strip()[:200] or "no details"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])[:500]
    return text.strip()[:200]


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), BACKOFF_CAP)


def backoff(failures: int, rng: random.Random) -> float:
    """Seconds before the next attempt after ``failures`` failed rounds in a row.

    Exponential from `BACKOFF_BASE`, capped at `BACKOFF_CAP`, with "equal jitter"
    (half fixed, half random) so that a fleet cut off together does not return together.
    """
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, failures - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _volatile(status: Mapping[str, Any]) -> str:
    """A digest of what a status says, without the timestamps every tick changes."""
    body = {k: v for k, v in status.items() if k not in ("time", "sourceLastAnswered")}
    fetched = body.get("fetched")
    if isinstance(fetched, dict):
        body["fetched"] = {k: v for k, v in fetched.items() if k != "at"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Delivery:
    """What one tick did with reports, for the log and the node's metrics."""

    queued: bool = False
    sent: int = 0
    spooled: int = 0
    dropped: int = 0
    refused: int = 0
    failures: int = 0
    last_sent_at: float | None = None
    error: str | None = None

    def samples(self, site: str) -> list[tuple[str, str, Mapping[str, str], float]]:
        labels = {"site": site}
        samples: list[tuple[str, str, Mapping[str, str], float]] = [
            (
                "outpost_report_spool_reports",
                "Signed reports waiting to be sent.",
                labels,
                self.spooled,
            ),
            (
                "outpost_reports_dropped",
                "Reports dropped unsent because the spool was full (oldest first).",
                labels,
                self.dropped,
            ),
            (
                "outpost_reports_refused",
                "Reports the collector refused for good (malformed, unknown key, too big).",
                labels,
                self.refused,
            ),
            (
                "outpost_report_send_failures",
                "Failed sending rounds in a row.",
                labels,
                self.failures,
            ),
        ]
        if self.last_sent_at is not None:
            samples.append(
                (
                    "outpost_report_last_sent_timestamp_seconds",
                    "When the collector last took a report.",
                    labels,
                    self.last_sent_at,
                )
            )
        return samples


Clock = Callable[[], float]


class Reporter:
    """Queues, spools and sends one node's signed reports. See the module docstring."""

    def __init__(
        self,
        *,
        site: str,
        state_dir: Path,
        identity_key: Path | None,
        report: ReportConfig | None,
        outbox: Path | None,
        transport: Transport | None = None,
        monotonic: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.site = site
        self.spool_dir = state_dir / SPOOL_DIR
        self.identity_key = identity_key
        self.report = report
        self.outbox = outbox
        self._transport = transport
        self._identity: NodeIdentity | None = None
        import time

        self._monotonic = monotonic or time.monotonic
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    @classmethod
    def from_config(cls, config: AgentConfig) -> Reporter:
        return cls(
            site=config.site,
            state_dir=config.state_dir,
            identity_key=config.identity_key,
            report=config.report,
            outbox=config.outbox,
        )

    @property
    def signs(self) -> bool:
        """True when this node has a key: its outbox then gets only signed reports."""
        return self.identity_key is not None

    # -- the one entry point -------------------------------------------------

    def after_tick(self, status: Mapping[str, Any], now: datetime) -> Delivery:
        """Queue, write the outbox, send; never raises (a reporting failure is not a tick's)."""
        if not self.signs or (self.report is None and self.outbox is None):
            return Delivery()
        try:
            return self._after_tick(status, now)
        except Exception as exc:  # the tick is done; reporting must not undo it
            log.error("report not delivered", extra={"error": str(exc)})
            meta = self._meta_or_empty()
            return Delivery(
                spooled=len(self._spooled()),
                dropped=int(meta.get("dropped", 0)),
                refused=int(meta.get("refused", 0)),
                failures=int(meta.get("failures", 0)),
                last_sent_at=meta.get("lastSentAt"),
                error=str(exc),
            )

    def _after_tick(self, status: Mapping[str, Any], now: datetime) -> Delivery:
        meta = self._meta_or_empty()
        stamp = now.timestamp()
        digest = _volatile(status)
        interval = self.report.interval if self.report else 3600
        due = (
            digest != meta.get("digest")
            or stamp - float(meta.get("queuedAt", 0)) >= interval
            or (self.outbox is not None and not self._outbox_file().exists())
        )
        envelope: Envelope | None = None
        if due:
            from reconciler.core.report import seal

            envelope = seal(status, self._key().private_key)
            if self.outbox is not None:  # removable media: never written through a link
                write_into_folder(self.outbox, self._outbox_file().name, envelope.to_bytes())
            if self.report is not None:
                self._enqueue(envelope, meta)
            meta.update(digest=digest, queuedAt=stamp)
        error = None
        if self.report is not None:
            error = self._send(meta, stamp)
        self._save_meta(meta)
        return Delivery(
            queued=envelope is not None,
            sent=int(meta.pop("_sent", 0)),
            spooled=len(self._spooled()),
            dropped=int(meta.get("dropped", 0)),
            refused=int(meta.get("refused", 0)),
            failures=int(meta.get("failures", 0)),
            last_sent_at=meta.get("lastSentAt"),
            error=error,
        )

    # -- spool -----------------------------------------------------------------

    def _outbox_file(self) -> Path:
        assert self.outbox is not None
        return self.outbox / f"outpost-status-{self.site}.json"

    def _key(self) -> NodeIdentity:
        if self._identity is None:
            assert self.identity_key is not None
            from reconciler.node.identity import load_identity

            self._identity = load_identity(self.identity_key)
        return self._identity

    def _spooled(self) -> list[Path]:
        try:
            names = sorted(
                n for n in os.listdir(self.spool_dir) if n.endswith(".json") and n != META_FILE
            )
        except FileNotFoundError:
            return []
        return [self.spool_dir / name for name in names]

    def _enqueue(self, envelope: Envelope, meta: dict[str, Any]) -> None:
        assert self.report is not None
        # Counters read again from zero must not reuse a spooled report's number.
        highest = max((int(p.stem) for p in self._spooled() if p.stem.isdigit()), default=0)
        sequence = max(int(meta.get("sequence", 0)), highest) + 1
        meta["sequence"] = sequence
        atomic_write(self.spool_dir / f"{sequence:020d}.json", envelope.to_bytes())
        spooled = self._spooled()
        excess = len(spooled) - self.report.spool
        for path in spooled[: max(0, excess)]:
            path.unlink(missing_ok=True)
            meta["dropped"] = int(meta.get("dropped", 0)) + 1
            log.warning("spool full: dropped the oldest report", extra={"report": path.name})

    def _meta_or_empty(self) -> dict[str, Any]:
        """The spool's counters; unreadable ones start again from zero (they are counts, and
        the next save rewrites them), said in the log naming the file."""
        path = self.spool_dir / META_FILE
        if not os.path.lexists(path):
            return {}
        try:
            data = loads(read_file(path, str(path), MAX_META_BYTES, holder=_SPOOL))
        except (DocumentError, ValueError) as exc:
            log.warning(
                "spool counters unreadable; counting again from zero",
                extra={"error": f"{exc}; expected the JSON object the agent writes"},
            )
            return {}
        return data if isinstance(data, dict) else {}

    def _save_meta(self, meta: dict[str, Any]) -> None:
        write_json(self.spool_dir / META_FILE, {k: v for k, v in meta.items() if k[0] != "_"})

    # -- sending ---------------------------------------------------------------

    def _send(self, meta: dict[str, Any], now: float) -> str | None:
        assert self.report is not None
        if now < float(meta.get("nextAttempt", 0)):
            return None
        from reconciler.core.report import MAX_ENVELOPE_BYTES

        transport = self._transport or UrllibTransport(self.report.ca_bundle)
        self._transport = transport
        started = self._monotonic()
        sent = 0
        for path in self._spooled():
            left = SEND_BUDGET - (self._monotonic() - started)
            if left <= 0.5:
                break
            try:
                body = read_file(path, str(path), MAX_ENVELOPE_BYTES, holder=_SPOOL)
            except DocumentError as exc:  # a FIFO, a link, a huge file: it cannot be sent
                path.unlink(missing_ok=True)
                meta["dropped"] = int(meta.get("dropped", 0)) + 1
                log.error("spooled report unreadable; dropped", extra={"error": str(exc)})
                continue
            try:
                transport.post(self.report.url, body, timeout=min(READ_TIMEOUT, left))
            except SendFailed as exc:
                if not exc.retry:
                    path.unlink(missing_ok=True)
                    meta["refused"] = int(meta.get("refused", 0)) + 1
                    log.error("collector refused a report", extra={"error": exc.message})
                    continue
                failures = int(meta.get("failures", 0)) + 1
                wait = max(backoff(failures, self._rng), exc.after or 0.0)
                meta.update(failures=failures, nextAttempt=now + wait)
                meta["_sent"] = sent
                log.warning(
                    "collector unreachable; reports stay spooled",
                    extra={"error": exc.message, "retry_in_seconds": round(wait)},
                )
                return exc.message
            path.unlink(missing_ok=True)
            sent += 1
            meta.update(failures=0, nextAttempt=0, lastSentAt=now)
        meta["_sent"] = sent
        return None
