"""One reconcile tick: from fetch to a healthy, pruned, recorded site, or back to the last good.

The tick is the product. Its rules, in the order it applies them:

1. **One at a time.** A lock in the state directory; a second agent exits at once.
2. **Fetch, never trust.** The remote (or a bundle feed, or a bundle from the inbox)
   only feeds the local mirror. An unreachable source is temporary: the site keeps running what
   it runs, and the status says how long the source has been silent.
3. **Verify everything new.** Every commit in (applied, candidate] must be signed
   by someone allowed to change what it touches; the candidate must descend from
   what was applied, and from ``spec.trust.floor`` (pinned at enrollment; history
   before it is not verified again). A refused candidate is remembered and never
   retried; only a newer commit can replace it. A source whose branch moved back
   to an ancestor of what runs holds the site back, and the status says by how
   many commits. What was applied, refused and failed is also kept in the mirror
   and the cluster's inventory (`reconciler.node.recovery`): a lost ``state.json``
   never lowers the floor.
4. **Render and check the slice** of that commit, from git objects (no checkout):
   schemas, policies, secrets decrypted in memory. A failure is permanent for
   that commit, like a refused signature.
5. **Gate.** Windows, freezes and waves decide *when*; the start time comes from
   the signed committer time of the last commit that changed this site's slice.
   Correcting drift back to the applied revision is not a change and is never gated.
   A site with nothing running yet (no applied revision, no inventory in its cluster)
   takes its first revision at once under ``spec.firstApply: immediate`` (the default).
6. **Apply, prune, wait for health.** The inventory written before applying is
   the union of old and new, so a kill mid-apply leaves nothing orphaned. If
   health fails within the deadline, the failure is recorded, then the last good
   revision is applied again; the failed commit is not retried until a newer one
   arrives, even by a run after a kill mid-rollback: that run finishes going back
   (every tick's drift correction does, for an apply or rollback cut short). A first
   install has no last good revision: what it applied is pruned again, so the site is
   left with nothing half-applied, and the status lists whatever could not be removed.
7. **Record atomically**: state, status JSON, Prometheus textfile, outbox. Times
   are read when they happen (a failure when it is found, the status when the
   tick ends), and "last success" means a tick that ended with the site on a
   revision it applied, healthy, with nothing it could not do.
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
from typing import Any, Protocol, runtime_checkable

from reconciler.core.errors import (
    OutpostError,
    PermanentError,
    SourceUnavailable,
    TemporaryError,
    VerificationError,
)
from reconciler.node.config import AgentConfig
from reconciler.node.fetch import APPLIED_REF, CANDIDATE_REF, Mirror
from reconciler.node.recovery import recover, remember
from reconciler.node.report import Reporter
from reconciler.node.state import AgentState, StateStore, prometheus_text

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

    def applied_revision(self) -> str | None:
        """The revision of the last complete apply, as the cluster's inventory records it."""
        ...

    def label_nodes(self, desired: Desired) -> Sequence[str]:
        """Label the cluster's nodes from hardware.yaml; return warnings (nodes not found)."""
        ...

    def write_inventory(self, keys: Sequence[str], revision: str) -> None: ...


@runtime_checkable
class RecordingCluster(Protocol):
    """A cluster that can vouch for a slice by the fingerprints of what it applied
    (`ManagerCluster`): a no-op tick then checks drift without rendering the slice."""

    def record(self, objects: Sequence[Mapping[str, Any]]) -> list[Any] | None:
        """What `drift_recorded` needs of ``objects`` (no value of them), or None."""
        ...

    def drift_recorded(
        self, recorded: Sequence[Any], objects: Sequence[Mapping[str, Any]]
    ) -> Sequence[str] | None:
        """``drift`` of the slice ``recorded`` + ``objects``; None when only bodies can tell."""
        ...


@dataclass(frozen=True)
class SliceLook:
    """One look at the applied slice from its record (`LookingCluster.look_recorded`)."""

    healthy: bool
    secrets_in_line: bool
    """Every Secret of the slice is still the stored object last found in line."""


@runtime_checkable
class LookingCluster(Protocol):
    """A recording cluster that answers a quiet tick in one look (`ManagerCluster`): the
    recorded objects by their fingerprints, the Secrets by the versions last found in line
    (never by anything of their value), health from the same reads."""

    def look_recorded(
        self, recorded: Sequence[Any], secrets: Sequence[Any] | None
    ) -> SliceLook | None:
        """None when a recorded object is not provably as it was applied."""
        ...

    def record_secrets(self, secrets: Sequence[Mapping[str, Any]]) -> list[Any] | None:
        """What `look_recorded` needs of ``secrets``, found in line by this run's `drift`."""
        ...

    def drift(self, objects: Sequence[Mapping[str, Any]]) -> Sequence[str]: ...


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
    pending: tuple[str, ...] = ()
    """Commits of the range that wait for approvals (then ``revision`` is the newest
    commit before the first of them, or what was applied when there is none)."""
    notes: tuple[str, ...] = ()
    """What verifying found wrong with the node's own records (an unreadable
    ``first-seen.json`` or ``trust-roots.json``), and what it did instead."""


@runtime_checkable
class RecordingPipeline(Protocol):
    """A pipeline whose slices can be recorded (`NodePipeline`): what a slice depends on
    besides its commit, as a digest, and the Secrets alone (always checked)."""

    def record_basis(self, revision: str) -> str: ...

    def secrets(self, mirror: Mirror, revision: str) -> tuple[Mapping[str, Any], ...]: ...


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reason: str
    until: datetime | None = None


class Pipeline(Protocol):
    """The pure-ish steps the tick wires together; the real one is `reconciler.node.pipeline`."""

    def verify(
        self, mirror: Mirror, since: str | None, candidate: str, now: datetime
    ) -> Verified: ...

    def desired(self, mirror: Mirror, revision: str, *, checks: bool = True) -> Desired: ...

    def gate(
        self, mirror: Mirror, verified: Verified, desired: Desired, now: datetime
    ) -> GateDecision: ...

    def freshness(
        self, mirror: Mirror, applied: str | None, head: str | None, now: datetime
    ) -> Any:
        """The source's signed heartbeat (`reconciler.node.heartbeat.Freshness`), or None."""
        ...


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
    error_at: str | None = None
    warnings: list[str] = field(default_factory=list)
    temporary: bool = False
    leftover: list[str] | None = None
    removed: int = 0
    kept: list[str] = field(default_factory=list)
    """Objects a failed first install's removal keeps on purpose (the facts anchor)."""
    source_behind: int = 0
    """Commits the source's branch lacks of what this site runs (it moved back)."""
    source_head: str | None = None
    approvals: list[str] = field(default_factory=list)
    """Commits of the candidate's range that wait for approvals, explained."""
    heartbeat: Any = None
    """`reconciler.node.heartbeat.Freshness` of this tick, when checked."""


KEPT_REASON = (
    "the site's policy-facts anchor stays on purpose: removing it can stop Kubernetes' "
    "ConfigMap parameter informer until the API server restarts "
    "(kubernetes/kubernetes#130887), and the next install's Pods would then be refused"
)


def _facts_anchor(key: str) -> bool:
    """Whether an inventory key (``group/Kind/namespace/name``) is the site's facts anchor."""
    from reconciler.node.apply.order import ObjectKey, is_facts_anchor  # only where asked

    try:
        return is_facts_anchor(ObjectKey.parse(key))
    except ValueError:
        return False


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

    def _error(self, report: TickReport, message: str) -> None:
        """Record a failure with the time it was found (a health wait can take minutes)."""
        report.error = message
        report.error_at = self.clock().astimezone(UTC).isoformat()

    def tick(self) -> TickReport:
        with self.store.lock():
            now = self.clock()
            state, warning = self.store.load(self.config.site, now=now.timestamp())
            loaded = state if warning is None else None
            report = TickReport(applied=state.applied)
            if warning:
                report.warnings.append(warning)
                log.warning(warning)
            try:
                state = self._tick(state, report, now)
            finally:
                self._record(state, report, now, loaded=loaded)
            return report

    def _tick(self, state: AgentState, report: TickReport, now: datetime) -> AgentState:
        mirror = Mirror(self.config.mirror_dir)
        cluster: Cluster | None = None

        def get_cluster() -> Cluster:
            nonlocal cluster
            if cluster is None:
                cluster = self.cluster_factory()
            return cluster

        recovered = True
        if state.applied is None:
            state, recovered = self._recover(mirror, state, report, get_cluster)
        state = self._fetch(mirror, state, report, now)
        candidate = mirror.resolve(CANDIDATE_REF)
        report.candidate = candidate
        self._freshness(mirror, state, report, candidate, now)
        if state.applied is not None and not mirror.has(state.applied):
            message = (
                f"this site runs {_short(state.applied)}, which the source has not brought "
                "(its branch does not contain it); nothing is applied until it does"
            )
            report.warnings.append(message)
            report.temporary = True
            log.warning("applied revision missing", extra={"revision": state.applied})
        elif candidate and candidate != state.applied and recovered:
            state = self._consider(mirror, state, report, candidate, now, get_cluster)
        if (
            report.outcome not in ("applied", "rolled-back")
            and state.applied
            and mirror.has(state.applied)
        ):
            state = self._correct_drift(mirror, state, report, get_cluster)
        remember(mirror, state.refused, state.failed)
        return state

    def _freshness(
        self,
        mirror: Mirror,
        state: AgentState,
        report: TickReport,
        head: str | None,
        now: datetime,
    ) -> None:
        """The heartbeat: a source that stopped moving it is reported, nothing is refused."""
        try:
            fresh = self.pipeline.freshness(mirror, state.applied, head, now)
        except OutpostError as exc:
            report.warnings.append(f"the heartbeat could not be checked: {exc}")
            return
        if fresh is None:
            return
        report.heartbeat = fresh
        if fresh.unreadable:
            report.warnings.append(fresh.unreadable)
            log.warning("heartbeat record unreadable", extra={"detail": fresh.unreadable})
        if fresh.note:
            report.warnings.append(f"heartbeat not counted: {fresh.note}")
        warning = fresh.warning()
        if warning:
            report.warnings.append(warning)
            log.warning("updates may be withheld", extra={"silence": int(fresh.silence)})

    def _recover(
        self,
        mirror: Mirror,
        state: AgentState,
        report: TickReport,
        get_cluster: Callable[[], Cluster],
    ) -> tuple[AgentState, bool]:
        """No applied revision on record: ask the mirror and the cluster (`recovery`).

        A node that cannot ask the cluster considers no candidate this tick: believing
        it applied nothing could let it accept an older history than what runs.
        """
        cluster_revision: str | None = None
        answered = True
        try:
            cluster_revision = get_cluster().applied_revision()
        except OutpostError as exc:
            answered = False
            cluster_error = str(exc)
        found = recover(mirror, cluster_revision=cluster_revision, floor=self.config.floor)
        # After a failed first install the state itself lists what the mirror holds:
        # nothing was lost, and saying so every tick would send the operator astray.
        known = (
            found.applied is None
            and set(found.failed) <= set(state.failed)
            and set(found.refused) <= set(state.refused)
        )
        for note in () if known else found.notes:
            report.warnings.append(note)
            log.warning("state recovered", extra={"detail": note})
        state = state.with_(
            applied=found.applied,
            last_good=state.last_good or found.applied,
            refused={**found.refused, **state.refused},
            failed=tuple(dict.fromkeys((*found.failed, *state.failed))),
        )
        report.applied = found.applied
        if not answered and found.applied is None:
            report.warnings.append(
                "no applied revision on record and the cluster's inventory could not be read "
                f"({cluster_error}); no candidate is considered until it can"
            )
            report.temporary = True
            return state, False
        return state, True

    def _fetch(
        self, mirror: Mirror, state: AgentState, report: TickReport, now: datetime
    ) -> AgentState:
        source = self.config.source
        if source.url:
            try:
                fetched = mirror.fetch(
                    source.url,
                    source.branch,
                    source.credentials,
                    max_bytes=self.config.fetch_max_bytes,
                    max_objects=self.config.fetch_max_objects,
                )
            except SourceUnavailable as exc:
                report.warnings.append(str(exc))
                report.temporary = True
                log.warning("source unavailable", extra={"error": str(exc)})
            else:
                state = state.with_(
                    fetched=fetched, fetched_at=now.timestamp(), source_answered_at=now.timestamp()
                )
                self._behind(mirror, state, report, fetched)
        if self.config.feed is not None:
            state = self._follow_feed(mirror, state, report, now)
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

    def _behind(self, mirror: Mirror, state: AgentState, report: TickReport, head: str) -> None:
        """A branch that moved back to an ancestor of what runs holds the site back: say so."""
        applied = state.applied
        report.source_head = head
        if applied is None or head == applied or not mirror.descends(applied, head):
            return
        behind = mirror.count(head, applied)
        report.source_behind = behind
        branch = self.config.source.branch
        message = (
            f"the source's {branch} is {behind} commit{'s' if behind != 1 else ''} behind what "
            f"this site runs ({branch} is at {_short(head)}, an ancestor of {_short(applied)}); "
            "the site keeps what it runs and takes nothing from the source until its branch "
            "moves forward again"
        )
        report.warnings.append(message)
        log.warning("source behind", extra={"behind": behind, "source": head, "applied": applied})

    def _import_bundles(
        self, mirror: Mirror, state: AgentState, report: TickReport, now: datetime
    ) -> AgentState:
        """Bundles from the inbox feed the mirror; they are verified like fetched commits."""
        from reconciler.node.inbox import import_inbox

        assert self.config.bundle_inbox is not None
        _unpin_refused(mirror, state)
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
            if result.note:
                report.warnings.append(f"bundle {result.name}: {result.note}")
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

    def _follow_feed(
        self, mirror: Mirror, state: AgentState, report: TickReport, now: datetime
    ) -> AgentState:
        """The bundle feed: one conditional request, then only the bundles this node lacks,
        imported like the inbox's. Its commits are verified like fetched ones."""
        from reconciler.node.feed import follow_feed

        assert self.config.feed is not None
        _unpin_refused(mirror, state)
        try:
            result = follow_feed(mirror, self.config.feed, self.config.state_dir / "feed", now=now)
        except TemporaryError as exc:
            report.warnings.append(f"feed unavailable: {exc}")
            report.temporary = True
            log.warning("feed unavailable", extra={"error": str(exc)})
            return state
        except PermanentError as exc:
            report.warnings.append(f"feed refused: {exc}")
            log.error("feed refused", extra={"error": str(exc)})
            return state
        log.info("feed", extra={"outcome": result.outcome, "detail": result.message})
        for bundle in result.bundles:
            log.info(
                "bundle",
                extra={"bundle": bundle.name, "outcome": bundle.outcome, "detail": bundle.message},
            )
            if bundle.outcome == "rejected":
                report.warnings.append(f"feed bundle {bundle.name} refused: {bundle.message}")
        if result.error is not None:
            report.warnings.append(f"feed: {result.error}")
            report.temporary = report.temporary or isinstance(result.error, TemporaryError)
        return state.with_(
            fetched=mirror.resolve(CANDIDATE_REF),
            fetched_at=now.timestamp(),
            source_answered_at=now.timestamp(),
        )

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
        floor = self.config.floor
        since = state.applied
        if candidate in state.failed:
            report.outcome = "failed-before"
            report.pending = candidate
            why = state.failed_reasons.get(candidate)
            report.pending_reason = (
                f"{_short(candidate)} failed its health check before"
                + (f" ({why})" if why else "")
                + "; this commit is not retried: commit a fix (or a revert) and the node "
                "takes the newer commit"
            )
            if state.applied is None and state.last_good is None and state.inventory:
                # A failed first install whose removal a kill cut short: finish removing it.
                return self._remove_first_install(
                    state, report, get_cluster, state.inventory, candidate
                )
            return state
        target = candidate
        try:
            if floor is not None:
                since = self._since_floor(mirror, state.applied, candidate, floor)
            verified = self.pipeline.verify(mirror, since, candidate, now)
            for note in verified.notes:
                report.warnings.append(note)
                log.warning("state record unreadable", extra={"detail": note})
            if verified.pending:
                self._approvals_pending(report, candidate, verified)
                if not verified.revision or verified.revision in (since, state.applied):
                    report.outcome = "pending-approval"
                    return state
                target = verified.revision
                # The newest commit before the pending one: judged on its own record.
                if target in state.failed:
                    report.outcome = "failed-before"
                    return state
                if target in state.refused:
                    report.outcome = "refused"
                    report.pending_reason = state.refused[target]
                    return state
            desired = self.pipeline.desired(mirror, target)
            decision = self.pipeline.gate(mirror, verified, desired, now)
        except PermanentError as exc:
            # A refusal by trust is the candidate's; a revision's content, the revision's.
            refused = dict(state.refused)
            refused[target] = _refused_reason(exc, state.applied)
            report.outcome = "refused"
            report.pending = target
            report.pending_reason = refused[target]
            self._error(report, str(exc))
            log.error("candidate refused", extra={"revision": target, "error": str(exc)})
            return state.with_(refused=_bounded(refused))
        except TemporaryError as exc:
            # Not the candidate's fault (a mirror object unreadable, say): not remembered,
            # checked again next tick, and the status does not call the tick a success.
            report.outcome = "interrupted"
            report.pending = candidate
            report.pending_reason = f"checking {_short(candidate)} was interrupted: {exc}"
            report.error = report.pending_reason
            report.temporary = True
            log.warning("checking interrupted", extra={"revision": candidate, "error": str(exc)})
            return state
        if not decision.allowed and self._first_apply(state, get_cluster):
            log.info(
                "first apply",
                extra={
                    "revision": candidate,
                    "reason": "nothing runs at this site yet (spec.firstApply: immediate); "
                    f"not held back by: {decision.reason}",
                },
            )
            decision = GateDecision(True, "first apply of a site with nothing running")
        if not decision.allowed:
            report.outcome = "waiting"
            report.pending = candidate
            report.pending_reason = decision.reason + (
                f"; {report.pending_reason}" if report.approvals else ""
            )
            report.pending_until = decision.until.isoformat() if decision.until else None
            log.info("change waits", extra={"revision": candidate, "reason": decision.reason})
            return state
        return self._roll_out(mirror, state, report, desired, get_cluster)

    def _approvals_pending(self, report: TickReport, candidate: str, verified: Verified) -> None:
        """Commits that wait for approvals: not refused, re-evaluated every tick; the node
        may meanwhile take the newest commit before the first of them."""
        report.approvals = list(verified.pending)
        report.pending = candidate
        first = verified.pending[0]
        more = len(verified.pending) - 1
        report.pending_reason = f"waiting for approvals: {first}" + (
            f" (and {more} more commit{'s' if more != 1 else ''} waiting)" if more else ""
        )
        log.info("approvals pending", extra={"revision": candidate, "pending": first})

    def _first_apply(self, state: AgentState, get_cluster: Callable[[], Cluster]) -> bool:
        """True when ``spec.firstApply: immediate`` lets this site skip its gate: nothing was
        ever applied here, by this state or by the cluster's inventory (a re-enrolled site
        with its inventory present is gated as usual; so is one whose cluster cannot say)."""
        if self.config.first_apply != "immediate":
            return False
        if state.applied is not None or state.last_good is not None:
            return False
        if any(not _facts_anchor(key) for key in state.inventory):
            return False
        try:
            inventory = get_cluster().read_inventory()
        except OutpostError:
            return False
        # The facts anchor a failed first install's removal kept is not something running.
        return all(_facts_anchor(key) for key in inventory or ())

    def _since_floor(self, mirror: Mirror, applied: str | None, candidate: str, floor: str) -> str:
        """Where verification starts under ``spec.trust.floor``; refuses what is not above it."""
        if candidate != floor and not mirror.descends(candidate, floor):
            raise VerificationError(
                f"candidate {_short(candidate)} does not descend from the enrolled floor "
                f"{_short(floor)} (spec.trust.floor in {self.config.path}): nothing older than "
                "the floor, or beside it, is ever accepted"
            )
        if applied is not None and (applied == floor or mirror.descends(applied, floor)):
            return applied
        return floor

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
            for warning in cluster.label_nodes(desired):
                report.warnings.append(warning)
                log.warning(warning)
            cluster.apply(desired.objects, revision=revision)
            health = cluster.wait_healthy(
                desired.objects, deadline_seconds=self.config.health_deadline
            )
            if _healthy(health):
                cluster.prune(previous, list(desired.keys))
                cluster.write_inventory(list(desired.keys), revision)
        except TemporaryError as exc:
            report.outcome = "interrupted"
            self._error(report, f"applying {_short(revision)} was interrupted: {exc}")
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
        self._error(report, f"{_short(revision)} did not become healthy: {reason}")
        report.health = "failed"
        kept = (*state.failed[-20:], revision)
        state = state.with_(
            failed=kept,
            failed_reasons={
                **{r: m for r, m in state.failed_reasons.items() if r in kept},
                revision: reason,
            },
        )
        # The failure goes on record before anything is undone: a run killed while it rolls
        # back must leave a state in which the next run finishes going back, instead of
        # taking the failed commit for a new one and applying it again.
        self.store.save(state)
        remember(mirror, state.refused, state.failed)
        log.error("rollout failed", extra={"revision": revision, "reason": reason})
        if state.last_good is None:
            return self._undo_first_install(state, report, get_cluster, desired)
        return self._roll_back(mirror, state, report, get_cluster, desired)

    def _undo_first_install(
        self,
        state: AgentState,
        report: TickReport,
        get_cluster: Callable[[], Cluster],
        failed: Desired,
    ) -> AgentState:
        """No last good revision to go back to: prune what the failed install applied."""
        report.outcome = "failed"
        return self._remove_first_install(state, report, get_cluster, failed.keys, failed.revision)

    def _remove_first_install(
        self,
        state: AgentState,
        report: TickReport,
        get_cluster: Callable[[], Cluster],
        keys: Sequence[str],
        revision: str,
    ) -> AgentState:
        """Prune what a failed first install (``revision``) applied, here or in a run a kill
        cut short (the state lists it: the failure is recorded before the removal starts).

        Prune deletes only objects labelled as this site's — the labels every object
        of a slice is applied with — and never one marked ``outpost.io/prune: disabled``
        (the way to keep, say, a namespace an operator made by hand and then put in the
        slice). What is not deleted is listed in the status as ``leftover``.

        The site's facts anchor (the policy and binding named ``outpost-policy-facts``)
        stays, listed as ``kept``: it is the last user of Kubernetes' ConfigMap parameter
        informer, and removing it can stop that informer until the API server restarts
        (kubernetes/kubernetes#130887), after which the fix's Pods are refused by every
        policy reading the site's facts. It checks only the facts ConfigMap, is part of
        every revision's slice, and the inventory keeps listing it as this site's.
        """
        applied = sorted(set(state.inventory) | set(keys))
        kept = [key for key in applied if _facts_anchor(key)]
        try:
            cluster = get_cluster()
            deleted = set(cluster.prune(applied, kept))
            left = [key for key in applied if key not in deleted]
            # No revision: nothing was applied. Recording the failed one would make the
            # next tick recover it as what runs, call the site unchanged and put the
            # failed install back as "drift".
            cluster.write_inventory(left, "")
        except OutpostError as exc:
            report.error = (
                f"{report.error}; removing what the failed first install applied was "
                f"interrupted ({exc}): up to {len(applied)} objects of it may remain"
            )
            report.leftover = applied
            report.temporary = isinstance(exc, TemporaryError)
            return state
        report.removed = len(deleted)
        report.leftover = [key for key in left if key not in kept]
        report.kept = [key for key in left if key in kept]
        log.warning(
            "first install removed",
            extra={"revision": revision, "removed": len(deleted), "left": left},
        )
        return state.with_(inventory=tuple(left))

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
            self._error(report, f"{report.error}; rolling back was interrupted: {exc}")
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
    ) -> AgentState:
        """Bring the cluster back to the applied revision: drifted objects are applied
        again; a rollback (or an apply) that an earlier run began and did not end, killed
        or cut off, is finished (`_finish_going_back`). Returns the state it leaves."""
        assert state.applied is not None
        try:
            if self._drift_by_record(mirror, state, report, get_cluster):
                return state
            desired = self.pipeline.desired(mirror, state.applied, checks=False)
            cluster = get_cluster()
            drifted = set(cluster.drift(desired.objects))
            self._record_slice(desired, cluster)
            report.drift = len(drifted)
            # This run's own cut-off work is not finished here: the next run does it.
            unfinished = report.outcome != "interrupted" and _unfinished(cluster, state, desired)
            if unfinished:
                state = self._finish_going_back(cluster, state, report, desired)
                report.corrected = len(drifted)
            elif drifted:
                objects = [
                    o for k, o in zip(desired.keys, desired.objects, strict=True) if k in drifted
                ]
                cluster.apply(objects, revision=desired.revision)
                report.corrected = len(objects)
                log.warning("drift corrected", extra={"objects": sorted(drifted)})
            if report.health == "unknown":
                # One look, no waiting: after a degraded rollback the status must not call
                # the site healthy only because nothing drifted. A rollback finished here
                # waits for health as the rollback would have.
                look = cluster.wait_healthy(
                    desired.objects,
                    deadline_seconds=self.config.health_deadline if unfinished else 0,
                )
                report.health = "healthy" if _healthy(look) else "degraded"
                if unfinished and not _healthy(look):
                    report.warnings.append(
                        f"{_short(state.applied)}, the revision this site runs, is not healthy "
                        f"after going back to it: {_health_reason(look)}"
                    )
        except TemporaryError as exc:
            report.warnings.append(f"drift check skipped: {exc}")
            report.temporary = True
        except OutpostError as exc:
            report.warnings.append(f"drift check failed: {exc}")
        return state

    def _finish_going_back(
        self, cluster: Cluster, state: AgentState, report: TickReport, desired: Desired
    ) -> AgentState:
        """The rest of a rollback an earlier run began: the applied revision's whole slice
        applied again, what it does not list pruned, its inventory recorded.

        The failed commit is on record before a rollback starts (`_roll_out`), so the run
        after a kill does not apply it again: it comes here instead. The whole slice is
        sent, as the rollback sends it (objects untouched since are skipped by their
        fingerprints), and not only the drifted ones: an apply withdraws the admission
        bindings its objects do not list while the inventory is not complete.
        """
        listed = sorted(set(cluster.read_inventory() or ()) | set(state.inventory))
        cluster.apply(desired.objects, revision=desired.revision)
        removed = cluster.prune(listed, list(desired.keys))
        cluster.write_inventory(list(desired.keys), desired.revision)
        log.warning(
            "going back finished",
            extra={"revision": desired.revision, "removed": sorted(removed)},
        )
        if removed:
            report.warnings.append(
                f"going back to {_short(desired.revision)}, the revision this site runs, "
                f"after an apply or a rollback was cut short: removed {len(removed)} "
                f"object(s) it does not list: {', '.join(sorted(removed))}"
            )
        return state.with_(inventory=desired.keys)

    def _drift_by_record(
        self,
        mirror: Mirror,
        state: AgentState,
        report: TickReport,
        get_cluster: Callable[[], Cluster],
    ) -> bool:
        """The drift check of a tick that brought nothing new, from the slice's record.

        The applied commit cannot change; what else its slice depends on is the record's
        basis (`NodePipeline.record_basis`). Under the same basis, and when every recorded
        object is provably as it was applied (its fingerprint against live metadata), the
        answer is the one rendering would give, without rendering: only the Secrets are
        decrypted and dry-run, as always. True when that settled the check; False sends
        the tick down the full path (render, then `Cluster.drift`), which also corrects.
        """
        pipeline = self.pipeline
        if not isinstance(pipeline, RecordingPipeline):
            return False
        assert state.applied is not None
        revision = state.applied
        record = self.store.read_slice(pipeline.record_basis(revision))
        if record is None:
            return False
        cluster = get_cluster()
        if not isinstance(cluster, RecordingCluster):
            return False
        if cluster.applied_revision() != revision:
            return False  # an apply or a rollback was cut short: the full path finishes it
        if not self.store.slice_holds(record, state.inventory):
            return False  # the state lists more than the slice: a rollback left unfinished
        if isinstance(cluster, LookingCluster):
            return self._look_by_record(mirror, report, cluster, record, revision)
        secrets = pipeline.secrets(mirror, revision) if record["secrets"] else ()
        drifted = cluster.drift_recorded(record["objects"], secrets)
        if drifted is None or drifted:
            return False  # something to look at or correct: the full path does it
        report.drift = 0
        if report.health == "unknown":
            skeletons = [entry[0] for entry in record["objects"]]
            look = cluster.wait_healthy([*skeletons, *secrets], deadline_seconds=0)
            report.health = "healthy" if _healthy(look) else "degraded"
        return True

    def _look_by_record(
        self,
        mirror: Mirror,
        report: TickReport,
        cluster: LookingCluster,
        record: Mapping[str, Any],
        revision: str,
    ) -> bool:
        """`_drift_by_record` in one look (`LookingCluster.look_recorded`): the recorded
        objects by their fingerprints and their health from the same reads. The Secrets
        are in line when each is still the stored object this node last found in line (its
        uid and resourceVersion, recorded with the slice: nothing of its value); when one
        is not, or none was recorded, they are decrypted and dry-run as before, and what
        that finds in line is recorded for the next ticks."""
        assert isinstance(self.pipeline, RecordingPipeline)
        versions = record.get("secretVersions") if record["secrets"] else []
        look = cluster.look_recorded(record["objects"], versions)
        if look is None:
            return False
        if not look.secrets_in_line:
            secrets = self.pipeline.secrets(mirror, revision)
            if cluster.drift(secrets):
                return False  # the full path corrects it
            self.store.write_slice_secrets(record, cluster.record_secrets(secrets))
        report.drift = 0
        if report.health == "unknown":
            report.health = "healthy" if look.healthy else "degraded"
        return True

    def _record_slice(self, desired: Desired, cluster: Cluster) -> None:
        """Record the slice for the next ticks' `_drift_by_record` (no Secret's value in it)."""
        pipeline = self.pipeline
        if not (isinstance(pipeline, RecordingPipeline) and isinstance(cluster, RecordingCluster)):
            return
        secrets = int(getattr(desired, "secrets", 0))
        split = len(desired.objects) - secrets
        entries = cluster.record(desired.objects[:split])
        if entries is not None:
            basis = pipeline.record_basis(desired.revision)
            versions = (
                cluster.record_secrets(desired.objects[split:])
                if secrets and isinstance(cluster, LookingCluster)
                else None
            )
            self.store.write_slice(
                basis,
                desired.revision,
                entries,
                secrets=secrets > 0,
                keys=desired.keys,
                secret_versions=versions,
            )

    # -- records ----------------------------------------------------------------

    def _record(
        self,
        state: AgentState,
        report: TickReport,
        started: datetime,
        *,
        loaded: AgentState | None = None,
    ) -> None:
        """State, status, metrics and report at the end of a tick. The state is flushed to
        disk unless it differs from ``loaded`` (what the tick began with, as read) only in
        its clock readings (`AgentState.lasting`; see `reconciler.node.state`)."""
        ended = self.clock()
        state = state.with_(site=self.config.site)
        if succeeded(state, report):
            state = state.with_(last_success_at=ended.timestamp())
        self.store.save(state, durable=loaded is None or state.lasting() != loaded.lasting())
        status = status_document(self.config.site, state, report, ended, started=started)
        # A node with a key writes only signed reports to its outbox (the reporter does).
        problem = self.store.write_status(
            status, None if self.reporter.signs else self.config.outbox
        )
        if problem:
            log.warning("outbox not written", extra={"detail": problem})
        delivery = self.reporter.after_tick(status, ended)
        self.store.write_metrics(
            metrics_text(self.config.site, state, report, ended)
            + (prometheus_text(delivery.samples(self.config.site)) if self.reporter.signs else ""),
            self.config.metrics_dir,
        )
        log.info("tick done", extra={"outcome": report.outcome, "applied": state.applied})


def _unpin_refused(mirror: Mirror, state: AgentState) -> None:
    """A refused commit is never applied, and neither is anything built on it: a corrected
    history that starts again from what runs here must be importable (inbox and feed)."""
    candidate = mirror.resolve(CANDIDATE_REF)
    if candidate in state.refused and state.applied is not None:
        mirror.pin(CANDIDATE_REF, state.applied)


@dataclass(frozen=True)
class _Refused:
    """The API server refused the slice: treated like a failed health check."""

    reason: str
    healthy: bool = False


def _refused_reason(exc: PermanentError, applied: str | None) -> str:
    """Why a candidate is refused, and what to do: it is never retried.

    A commit refused by trust stays in every later range, so nothing built on it can
    be applied: the branch must be rewritten without it. A commit refused for its
    content (schema, policy, render) is validly signed: a fix on top of it is enough.
    """
    if isinstance(exc, VerificationError):
        base = _short(applied) if applied else "the last commit this site applied"
        return (
            f"{exc}; this commit is never retried and nothing built on it is applied: "
            f"rewrite the branch without it (from {base}, every commit signed by a signer "
            "allowed to change its paths)"
        )
    return f"{exc}; this commit is never retried: commit a fix on top of it"


def _bounded(refused: dict[str, str], limit: int = 50) -> dict[str, str]:
    return dict(list(refused.items())[-limit:])


def _unfinished(cluster: Cluster, state: AgentState, desired: Desired) -> bool:
    """True when an apply or a rollback was cut short: the cluster's inventory is not the
    complete record of the applied revision, or the state's copy lists more than its slice
    (both are widened to the union before an apply, and narrowed when it ends)."""
    return cluster.applied_revision() != desired.revision or not set(state.inventory) <= set(
        desired.keys
    )


def _healthy(health: Any) -> bool:
    return bool(getattr(health, "healthy", health))


def _health_reason(health: Any) -> str:
    if isinstance(health, _Refused):
        return f"the API server refused it: {health.reason}"
    summary = getattr(health, "summary", None)
    return str(summary()) if callable(summary) else "not healthy within the deadline"


def succeeded(state: AgentState, report: TickReport) -> bool:
    """A tick that ended with the site on a revision it applied, healthy, nothing left undone.

    Not a success: nothing applied yet (a first install waiting, failing or not yet
    fetched), an error, a source or cluster that did not answer, a refused or failed
    candidate, a rollback (the site is on its last good revision, not its intended one).
    """
    return (
        state.applied is not None
        and report.outcome in ("applied", "unchanged", "waiting", "pending-approval")
        and report.error is None
        and not report.temporary
        and report.health not in ("failed", "degraded")
    )


def status_document(
    site: str,
    state: AgentState,
    report: TickReport,
    now: datetime,
    *,
    started: datetime | None = None,
) -> dict[str, Any]:
    """The status report: what runs, what waits and why, how fresh the source is.

    ``now`` is when the tick ended (the report's ``time``); ``started`` when it began.
    Keys are camelCase, like every JSON document Outpost writes.
    """

    def iso(ts: float | None) -> str | None:
        return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None

    return {
        "apiVersion": "outpost/v1",
        "kind": "SiteStatus",
        "site": site,
        "time": now.astimezone(UTC).isoformat(),
        "started": (started or now).astimezone(UTC).isoformat(),
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
        "approvalsPending": list(report.approvals),
        "heartbeat": _heartbeat_status(report.heartbeat, iso),
        "sourceBehind": (
            {"commits": report.source_behind, "revision": report.source_head}
            if report.source_behind
            else None
        ),
        "drift": {"objects": report.drift, "corrected": report.corrected},
        "lastError": report.error,
        "lastErrorAt": report.error_at,
        "lastSuccess": iso(state.last_success_at),
        "warnings": list(report.warnings),
        "failedRevisions": list(state.failed),
        "failed": [
            {"revision": r, "reason": state.failed_reasons.get(r)} for r in state.failed[-10:]
        ],
        "refused": [{"revision": r, "reason": m} for r, m in list(state.refused.items())[-10:]],
        "inventory": len(state.inventory),
        "leftover": (
            {
                "removed": report.removed,
                "objects": list(report.leftover),
                **({"kept": list(report.kept), "keptReason": KEPT_REASON} if report.kept else {}),
            }
            if report.leftover is not None
            else None
        ),
    }


def _heartbeat_status(fresh: Any, iso: Callable[[float | None], str | None]) -> Any:
    if fresh is None:
        return None
    return {
        "signedAt": iso(fresh.signed_at),
        "revision": fresh.target,
        "silenceSeconds": int(fresh.silence),
        "maxSilenceSeconds": fresh.max_silence,
        "updatesMayBeWithheld": fresh.withheld,
        "note": fresh.note,
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
            "outpost_source_behind_commits",
            "Commits the source's branch lacks of what this site runs (0: not behind).",
            labels,
            report.source_behind,
        ),
        (
            "outpost_pending_change",
            "1 when a newer verified revision waits (window, freeze, wave) or was refused.",
            labels,
            1 if report.pending else 0,
        ),
        (
            "outpost_approvals_pending_commits",
            "Commits of the candidate's range that wait for approvals by more principals.",
            labels,
            len(report.approvals),
        ),
        (
            "outpost_last_tick_timestamp_seconds",
            "When the last tick ended.",
            labels,
            now.timestamp(),
        ),
    ]
    fresh = report.heartbeat
    if fresh is not None:
        samples.append(
            (
                "outpost_updates_may_be_withheld",
                "1 when the newest signed heartbeat is older than the fleet's maxSilence.",
                labels,
                1 if fresh.withheld else 0,
            )
        )
        if fresh.signed_at is not None:
            samples.append(
                (
                    "outpost_heartbeat_signed_timestamp_seconds",
                    "The signed time of the newest heartbeat tag this node verified.",
                    labels,
                    fresh.signed_at,
                )
            )
    if state.last_success_at is not None:
        samples.append(
            (
                "outpost_last_success_timestamp_seconds",
                "When a tick last ended with the site on a revision it applied, healthy, "
                "with nothing left undone.",
                labels,
                state.last_success_at,
            )
        )
    if state.source_answered_at is not None:
        samples.append(
            (
                "outpost_source_last_answer_timestamp_seconds",
                "When the git remote, bundle feed or bundle inbox last answered.",
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


class TextFormatter(logging.Formatter):
    """One line for a person at a terminal: time, level, message, then key=value fields."""

    _skip = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%SZ")
        fields = " ".join(
            f"{key}={value}" for key, value in sorted(vars(record).items()) if key not in self._skip
        )
        line = f"{when} {record.levelname.lower():<7} {record.getMessage()}"
        return f"{line}  {fields}" if fields else line


def log_format(choice: str, environ: Mapping[str, str]) -> str:
    """``text`` or ``json``: ``auto`` is JSON under systemd (journald reads one object per
    line), text anywhere else. systemd sets ``INVOCATION_ID`` for every unit it starts and
    ``JOURNAL_STREAM`` when stderr goes to the journal."""
    if choice != "auto":
        return choice
    return "json" if environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID") else "text"


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
