"""One reconcile tick: from fetch to a healthy, pruned, recorded site, or back to the last good.

The tick is the product. Its rules, in the order it applies them:

1. **One at a time.** A lock in the state directory; a second agent exits at once.
2. **Fetch, never trust.** The remote (or a bundle from the inbox) only feeds the
   local mirror. An unreachable source is temporary: the site keeps running what
   it runs, and the status says how long the source has been silent.
3. **Verify everything new.** Every commit in (applied, candidate] must be signed
   by someone allowed to change what it touches; the candidate must descend from
   what was applied. A refused candidate is remembered and never retried; only a
   newer commit can replace it.
4. **Render and check the slice** of that commit, from git objects (no checkout):
   schemas, policies, secrets decrypted in memory. A failure is permanent for
   that commit, like a refused signature.
5. **Gate.** Windows, freezes and waves decide *when*; the start time comes from
   the signed committer time of the last commit that changed this site's slice.
   Correcting drift back to the applied revision is not a change and is never gated.
6. **Apply, prune, wait for health.** The inventory written before applying is
   the union of old and new, so a kill mid-apply leaves nothing orphaned. If
   health fails within the deadline, the last good revision is applied again and
   the failed commit is not retried until a newer one arrives.
7. **Record atomically**: state, status JSON, Prometheus textfile, outbox.
8. **Report home** (`reconciler.node.report`): the status, signed with the node
   key, to the collector and the outbox, after everything else is on disk;
   sending never delays the decisions or fails the tick.

Errors are split by what the next tick should do (`errors`): permanent ones
refuse the candidate; temporary ones leave everything as it was, to be retried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from reconciler.config import AgentConfig
from reconciler.errors import (
    OutpostError,
    PermanentError,
    SourceUnavailable,
    TemporaryError,
)
from reconciler.fetch import APPLIED_REF, CANDIDATE_REF, Mirror
from reconciler.node.report import Reporter
from reconciler.state import AgentState, StateStore, prometheus_text

log = logging.getLogger("outpost.agent")

Clock = Callable[[], datetime]


class Cluster(Protocol):
    """What the tick needs from the `apply` module (only it talks to Kubernetes)."""

    def apply(self, objects: Sequence[Mapping[str, Any]], *, revision: str) -> Any: ...

    def drift(self, objects: Sequence[Mapping[str, Any]]) -> Sequence[str]:
        """Keys of the objects whose live state differs from ``objects`` (or that are gone)."""
        ...

    def prune(self, previous: Sequence[str], desired: Sequence[str]) -> Sequence[str]: ...

    def wait_healthy(
        self, objects: Sequence[Mapping[str, Any]], *, deadline_seconds: float
    ) -> Any: ...

    def read_inventory(self) -> Sequence[str] | None: ...

    def label_nodes(self, desired: Desired) -> Sequence[str]: ...

    def write_inventory(self, keys: Sequence[str], revision: str) -> None: ...


@dataclass(frozen=True)
class Desired:
    """A revision's slice, ready to apply: rendered, checked, secrets decrypted (memory only)."""

    revision: str
    objects: tuple[Mapping[str, Any], ...]
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Verified:
    """What trust says about the range (applied, candidate]."""

    revision: str
    changed_at: datetime
    emergency: bool
    emergency_reason: str
    commits: int


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reason: str
    until: datetime | None = None


class Pipeline(Protocol):
    """The pure-ish steps the tick wires together; the real one is `reconciler.pipeline`."""

    def verify(
        self, mirror: Mirror, since: str | None, candidate: str, now: datetime
    ) -> Verified: ...

    def desired(self, mirror: Mirror, revision: str, *, checks: bool = True) -> Desired: ...

    def gate(
        self, mirror: Mirror, verified: Verified, desired: Desired, now: datetime
    ) -> GateDecision: ...


@dataclass
class TickReport:
    """What one tick did, for the exit code, the status file and the log."""

    outcome: str = "unchanged"
    message: str = ""
    applied: str | None = None
    candidate: str | None = None
    pending: str | None = None
    pending_reason: str | None = None
    pending_until: str | None = None
    drift: int = 0
    corrected: int = 0
    health: str = "unknown"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    temporary: bool = False


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "none"


class Agent:
    """One node's agent: config plus the outside world, passed in."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        pipeline: Pipeline,
        cluster: Callable[[], Cluster],
        clock: Clock = lambda: datetime.now(UTC),
        reporter: Reporter | None = None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.cluster_factory = cluster
        self.clock = clock
        self.store = StateStore(config.state_dir)
        self.reporter = reporter or Reporter.from_config(config)

    # -- the tick -------------------------------------------------------------

    def tick(self) -> TickReport:
        with self.store.lock():
            now = self.clock()
            state, warning = self.store.load(self.config.site, now=now.timestamp())
            report = TickReport(applied=state.applied)
            if warning:
                report.warnings.append(warning)
                log.warning(warning)
            try:
                state = self._tick(state, report, now)
            finally:
                self._record(state, report, now)
            return report

    def _tick(self, state: AgentState, report: TickReport, now: datetime) -> AgentState:
        mirror = Mirror(self.config.mirror_dir)
        state = self._fetch(mirror, state, report, now)
        candidate = mirror.resolve(CANDIDATE_REF)
        report.candidate = candidate
        cluster: Cluster | None = None

        def get_cluster() -> Cluster:
            nonlocal cluster
            if cluster is None:
                cluster = self.cluster_factory()
            return cluster

        if candidate and candidate != state.applied:
            state = self._consider(mirror, state, report, candidate, now, get_cluster)
        if report.outcome not in ("applied", "rolled-back") and state.applied:
            self._correct_drift(mirror, state, report, get_cluster)
        return state

    def _fetch(
        self, mirror: Mirror, state: AgentState, report: TickReport, now: datetime
    ) -> AgentState:
        source = self.config.source
        if source.url:
            try:
                fetched = mirror.fetch(source.url, source.branch, source.credentials)
            except SourceUnavailable as exc:
                report.warnings.append(str(exc))
                report.temporary = True
                log.warning("source unavailable", extra={"error": str(exc)})
            else:
                state = state.with_(
                    fetched=fetched, fetched_at=now.timestamp(), source_answered_at=now.timestamp()
                )
        if self.config.bundle_inbox is not None:
            state = self._import_bundles(mirror, state, report, now)
        silent_since = state.source_answered_at
        if silent_since is not None and now.timestamp() - silent_since > self.config.stale_after:
            hours = (now.timestamp() - silent_since) / 3600
            report.warnings.append(
                f"the source has not answered for {hours:.0f} h (limit "
                f"{self.config.stale_after / 3600:.0f} h): a broken link, or updates withheld"
            )
        return state

    def _import_bundles(
        self, mirror: Mirror, state: AgentState, report: TickReport, now: datetime
    ) -> AgentState:
        """Bundles from the inbox feed the mirror; they are verified like fetched commits."""
        from reconciler.bundle import import_inbox

        assert self.config.bundle_inbox is not None
        candidate = mirror.resolve(CANDIDATE_REF)
        if candidate in state.refused and state.applied is not None:
            # A refused commit is never applied, and neither is anything built on it: a
            # corrected history that starts again from what runs here must be importable.
            mirror.pin(CANDIDATE_REF, state.applied)
        try:
            results = import_inbox(mirror, self.config.bundle_inbox, now=now)
        except SourceUnavailable as exc:
            report.warnings.append(str(exc))
            report.temporary = True
            return state
        for result in results:
            log.info(
                "bundle",
                extra={"bundle": result.name, "outcome": result.outcome, "detail": result.message},
            )
            if result.outcome in ("imported", "replay"):
                state = state.with_(
                    fetched=mirror.resolve(CANDIDATE_REF),
                    fetched_at=now.timestamp(),
                    source_answered_at=now.timestamp(),
                )
            elif result.outcome == "rejected":
                report.warnings.append(f"bundle {result.name} refused: {result.message}")
            else:
                report.warnings.append(f"bundle {result.name} not read: {result.message}")
                report.temporary = True
        return state

    def _consider(
        self,
        mirror: Mirror,
        state: AgentState,
        report: TickReport,
        candidate: str,
        now: datetime,
        get_cluster: Callable[[], Cluster],
    ) -> AgentState:
        if candidate in state.refused:
            report.outcome = "refused"
            report.pending = candidate
            report.pending_reason = state.refused[candidate]
            return state
        if candidate in state.failed:
            report.outcome = "failed-before"
            report.pending = candidate
            report.pending_reason = (
                f"{_short(candidate)} failed its health check before; it is not retried "
                "until a newer commit arrives"
            )
            return state
        try:
            verified = self.pipeline.verify(mirror, state.applied, candidate, now)
            desired = self.pipeline.desired(mirror, candidate)
            decision = self.pipeline.gate(mirror, verified, desired, now)
        except PermanentError as exc:
            refused = dict(state.refused)
            refused[candidate] = str(exc)
            report.outcome = "refused"
            report.pending = candidate
            report.pending_reason = str(exc)
            report.error = str(exc)
            log.error("candidate refused", extra={"revision": candidate, "error": str(exc)})
            return state.with_(refused=_bounded(refused))
        if not decision.allowed:
            report.outcome = "waiting"
            report.pending = candidate
            report.pending_reason = decision.reason
            report.pending_until = decision.until.isoformat() if decision.until else None
            log.info("change waits", extra={"revision": candidate, "reason": decision.reason})
            return state
        return self._roll_out(mirror, state, report, desired, get_cluster)

    def _roll_out(
        self,
        mirror: Mirror,
        state: AgentState,
        report: TickReport,
        desired: Desired,
        get_cluster: Callable[[], Cluster],
    ) -> AgentState:
        revision = desired.revision
        try:
            cluster = get_cluster()
            # What the cluster lists is the truth after an interrupted apply (the union of
            # old and new); the state directory's copy serves when the cluster has none.
            previous = list(cluster.read_inventory() or state.inventory)
            # The union goes on record first: a kill during apply leaves nothing unlisted.
            state = state.with_(inventory=tuple(sorted(set(previous) | set(desired.keys))))
            self.store.save(state)
            cluster.label_nodes(desired)
            cluster.apply(desired.objects, revision=revision)
            health = cluster.wait_healthy(
                desired.objects, deadline_seconds=self.config.health_deadline
            )
            if _healthy(health):
                cluster.prune(previous, list(desired.keys))
                cluster.write_inventory(list(desired.keys), revision)
        except TemporaryError as exc:
            report.outcome = "interrupted"
            report.error = f"applying {_short(revision)} was interrupted: {exc}"
            report.temporary = True
            log.warning("apply interrupted", extra={"revision": revision, "error": str(exc)})
            return state
        except PermanentError as exc:
            # The API server refused the slice (invalid object, admission): like bad health.
            health = _Refused(str(exc))
        if _healthy(health):
            mirror.pin(APPLIED_REF, revision)
            report.outcome = "applied"
            report.applied = revision
            report.health = "healthy"
            log.info("applied", extra={"revision": revision, "objects": len(desired.keys)})
            return state.with_(
                applied=revision,
                applied_at=self.clock().timestamp(),
                last_good=revision,
                inventory=desired.keys,
            )
        reason = _health_reason(health)
        log.error("rollout failed", extra={"revision": revision, "reason": reason})
        report.error = f"{_short(revision)} did not become healthy: {reason}"
        report.health = "failed"
        state = state.with_(failed=(*state.failed[-20:], revision))
        if state.last_good is None:
            report.outcome = "failed"
            return state
        return self._roll_back(mirror, state, report, get_cluster, desired)

    def _roll_back(
        self,
        mirror: Mirror,
        state: AgentState,
        report: TickReport,
        get_cluster: Callable[[], Cluster],
        failed: Desired,
    ) -> AgentState:
        assert state.last_good is not None
        try:
            good = self.pipeline.desired(mirror, state.last_good, checks=False)
            cluster = get_cluster()
            cluster.apply(good.objects, revision=good.revision)
            health = cluster.wait_healthy(
                good.objects, deadline_seconds=self.config.health_deadline
            )
            cluster.prune(sorted(set(state.inventory) | set(failed.keys)), list(good.keys))
            cluster.write_inventory(list(good.keys), good.revision)
        except OutpostError as exc:
            report.outcome = "interrupted"
            report.error = f"{report.error}; rolling back was interrupted: {exc}"
            report.temporary = isinstance(exc, TemporaryError)
            return state
        mirror.pin(APPLIED_REF, good.revision)
        report.outcome = "rolled-back"
        report.applied = good.revision
        report.health = "healthy" if _healthy(health) else "degraded"
        log.warning("rolled back", extra={"failed": failed.revision, "revision": good.revision})
        return state.with_(applied=good.revision, inventory=good.keys)

    def _correct_drift(
        self,
        mirror: Mirror,
        state: AgentState,
        report: TickReport,
        get_cluster: Callable[[], Cluster],
    ) -> None:
        assert state.applied is not None
        try:
            desired = self.pipeline.desired(mirror, state.applied, checks=False)
            cluster = get_cluster()
            drifted = set(cluster.drift(desired.objects))
            report.drift = len(drifted)
            if drifted:
                objects = [
                    o for k, o in zip(desired.keys, desired.objects, strict=True) if k in drifted
                ]
                cluster.apply(objects, revision=desired.revision)
                report.corrected = len(objects)
                log.warning("drift corrected", extra={"objects": sorted(drifted)})
            report.health = report.health if report.health != "unknown" else "healthy"
        except TemporaryError as exc:
            report.warnings.append(f"drift check skipped: {exc}")
            report.temporary = True
        except OutpostError as exc:
            report.warnings.append(f"drift check failed: {exc}")

    # -- records ----------------------------------------------------------------

    def _record(self, state: AgentState, report: TickReport, now: datetime) -> None:
        state = state.with_(site=self.config.site)
        self.store.save(state)
        status = status_document(self.config.site, state, report, now)
        # A node with a key writes only signed reports to its outbox (the reporter does).
        self.store.write_status(status, None if self.reporter.signs else self.config.outbox)
        delivery = self.reporter.after_tick(status, now)
        self.store.write_metrics(
            metrics_text(self.config.site, state, report, now)
            + (prometheus_text(delivery.samples(self.config.site)) if self.reporter.signs else ""),
            self.config.metrics_dir,
        )
        log.info("tick done", extra={"outcome": report.outcome, "applied": state.applied})


@dataclass(frozen=True)
class _Refused:
    """The API server refused the slice: treated like a failed health check."""

    reason: str
    healthy: bool = False


def _bounded(refused: dict[str, str], limit: int = 50) -> dict[str, str]:
    return dict(list(refused.items())[-limit:])


def _healthy(health: Any) -> bool:
    return bool(getattr(health, "healthy", health))


def _health_reason(health: Any) -> str:
    if isinstance(health, _Refused):
        return f"the API server refused it: {health.reason}"
    summary = getattr(health, "summary", None)
    return str(summary()) if callable(summary) else "not healthy within the deadline"


def status_document(
    site: str, state: AgentState, report: TickReport, now: datetime
) -> dict[str, Any]:
    """The status report: what runs, what waits and why, how fresh the source is."""

    def iso(ts: float | None) -> str | None:
        return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None

    return {
        "apiVersion": "outpost/v1",
        "kind": "SiteStatus",
        "site": site,
        "time": now.astimezone(UTC).isoformat(),
        "outcome": report.outcome,
        "applied": {"revision": state.applied, "at": iso(state.applied_at)},
        "lastGood": state.last_good,
        "fetched": {"revision": state.fetched, "at": iso(state.fetched_at)},
        "sourceLastAnswered": iso(state.source_answered_at),
        "pending": (
            {
                "revision": report.pending,
                "reason": report.pending_reason,
                "until": report.pending_until,
            }
            if report.pending
            else None
        ),
        "health": report.health,
        "drift": {"objects": report.drift, "corrected": report.corrected},
        "lastError": report.error,
        "warnings": list(report.warnings),
        "failedRevisions": list(state.failed),
        "inventory": len(state.inventory),
    }


def metrics_text(site: str, state: AgentState, report: TickReport, now: datetime) -> str:
    """node_exporter textfile metrics for this tick."""
    labels = {"site": site}
    samples: list[tuple[str, str, Mapping[str, str], float]] = [
        (
            "outpost_applied_info",
            "The revision this site runs (value 1).",
            {**labels, "revision": state.applied or ""},
            1,
        ),
        (
            "outpost_drift_objects",
            "Objects found drifted from the applied revision at the last tick.",
            labels,
            report.drift,
        ),
        (
            "outpost_pending_change",
            "1 when a newer verified revision waits (window, freeze, wave) or was refused.",
            labels,
            1 if report.pending else 0,
        ),
        (
            "outpost_last_tick_timestamp_seconds",
            "When the last tick ended.",
            labels,
            now.timestamp(),
        ),
    ]
    if report.outcome in ("applied", "unchanged", "waiting") and not report.error:
        samples.append(
            (
                "outpost_last_success_timestamp_seconds",
                "When a tick last ended with the site on its intended revision.",
                labels,
                now.timestamp(),
            )
        )
    if state.source_answered_at is not None:
        samples.append(
            (
                "outpost_source_last_answer_timestamp_seconds",
                "When the git remote or bundle inbox last answered.",
                labels,
                state.source_answered_at,
            )
        )
    samples.append(
        (
            "outpost_failed_revisions",
            "Revisions that failed health and are not retried.",
            labels,
            len(state.failed),
        )
    )
    return prometheus_text(samples)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald."""

    _skip = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._skip:
                entry[key] = value
        return json.dumps(entry, default=str, sort_keys=True)
