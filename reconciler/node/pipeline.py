"""The node's pipeline for one revision: verify, render and check, gate.

`agent` decides *what* happens in a tick; this module does the steps, each by
calling the module that owns the decision:

- verify: `trust` over (applied, candidate], from the node's own trust root;
- desired: `render` from the commit's git objects, `validate` and `policy` on
  the slice (fail closed), the policies as the site's admission objects
  (`policy.export_rendered_site`: the API server enforces them too), `secrets`
  decrypted into memory only;
- gate: `schedule.decide`, fed from signed data and the node's own memory — the
  change time of the last commit in the range that changed a path this site's
  slice is read from, which is the *later* of its committer time and the time
  this node first saw it (`reconciler.node.seen`: a signer cannot date a commit
  back to skip a wave's soak), the emergency trailer as `trust` judged it, and
  the committer time of the commit that paused a fleet, and for a fleet with gated
  waves the Promotion and Halt records of the candidate (`rollouts/<fleet>/`, signed by
  the promoter and verified with the range) for the last commit that touched the fleet.
  A commit dated at or before the enrolled floor (``spec.trust.floor``: history older
  than the node) counts by its committer time: a fresh node does not wait a wave's full
  soak for it.

A range in which no commit touched a path this site's slice is read from (another
store's edit) is not a change for this site: it is not gated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.commits import Change, paused_since
from reconciler.core.errors import (
    ConfigError,
    OutpostError,
    PolicyError,
    TemporaryError,
    ValidationError,
)
from reconciler.node.agent import Desired, GateDecision, SliceLook, Verified
from reconciler.node.config import AgentConfig
from reconciler.node.fetch import Mirror

if TYPE_CHECKING:  # findings are read only when a check fails: not on a quiet tick
    from reconciler.core.findings import Finding

# The policy check of one slice runs in a child ended after this long (node.deadline): CEL
# evaluations are costed up front, and this bounds whatever the estimate misses.
POLICY_DEADLINE_S = 120.0
NODE_LABEL_MANAGER = "outpost-placement"
_MAX_NARROWING = 16
log = logging.getLogger("outpost.agent")


@dataclass(frozen=True)
class NodeVerified(Verified):
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class NodeDesired(Desired):
    sources: tuple[str, ...] = ()
    secrets: int = 0
    """How many of ``objects`` (the last ones) are Secrets decrypted from the repository."""
    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    machine_ids: Mapping[str, str] = field(default_factory=dict)


def _first_errors(findings: Sequence[Finding], limit: int = 5) -> str:
    from reconciler.core.findings import ERROR

    errors = [f for f in findings if f.severity == ERROR]
    text = "; ".join(f"{f.location}: {f.message} [{f.rule}]" for f in errors[:limit])
    more = len(errors) - limit
    return text + (f"; and {more} more" if more > 0 else "")


class AwaitingAcceptance(TemporaryError):
    """The site's secrets are encrypted to a key that is not this node's (yet)."""


def folder_recipient(repo: Any, site: str) -> str | None:
    """``spec.sops.recipient`` of ``site`` in ``repo``."""
    recipient = repo.site(site).site.sops_recipient
    return None if recipient is None else str(recipient)


class NodePipeline:
    """The real pipeline of a node, for one site."""

    def __init__(self, config: AgentConfig, *, check_policies: bool = True) -> None:
        self.config = config
        self.site = config.site
        self.check_policies = check_policies

    @cached_property
    def enrolled(self) -> bytes:
        from reconciler.core.source import read_configured
        from reconciler.core.trust.allowed_signers import MAX_TRUST_ROOT_BYTES

        try:
            return read_configured(self.config.trust_root, "the trust root", MAX_TRUST_ROOT_BYTES)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc.message}; it is installed at enrollment (allowed_signers format)"
            ) from None

    @cached_property
    def trust(self) -> Any:
        from reconciler.core.trust import parse_allowed_signers

        return parse_allowed_signers(self.enrolled, str(self.config.trust_root))

    # -- verify -----------------------------------------------------------------

    def _roots(self, mirror: Mirror, since: str | None) -> tuple[Any, Any]:
        """The trust root in effect at ``since`` (`reconciler.node.roots`), and the record."""
        from reconciler.core.trust import parse_allowed_signers
        from reconciler.node.roots import RootsRecord, root_for
        from reconciler.node.state import RecordUnreadable, set_aside

        record = RootsRecord(self.config.state_dir)
        notes: tuple[str, ...] = ()
        try:
            steps = record.load(self.enrolled)
        except RecordUnreadable as exc:
            steps = None
            note = set_aside(
                record.path,
                exc,
                "the trust-root rotations are derived again from the verified history "
                "(never read as no rotation)",
            )
            log.warning("trust roots unreadable", extra={"detail": note})
            notes = (note,)
        if steps is None:
            steps = self._derive_roots(mirror, since)
            record.save(self.enrolled, steps)
        step = root_for(steps, since, mirror.descends)
        if step is None:
            return self.trust, (record, steps, notes)
        source = (
            f"policies/root-signers at {step.rotation[:7]} (in effect from {step.effective[:7]})"
        )
        return parse_allowed_signers(step.root, source, local_tz=UTC), (record, steps, notes)

    def _derive_roots(self, mirror: Mirror, since: str | None) -> tuple[Any, ...]:
        """The rotations between the floor (or the first commit) and ``since``, from the
        enrolled root, judged at ``since``'s own time (what the node accepted then)."""
        from datetime import timedelta

        from reconciler.core.errors import VerificationError
        from reconciler.core.trust import read_range, verify_range
        from reconciler.node.roots import RootStep

        floor = self.config.floor
        if since is None or since == floor:
            return ()
        span = read_range(mirror.repo, since, floor, max_commits=self.config.max_commits)
        result = verify_range(
            span.commits,
            trust=self.trust,
            candidate=since,
            last_applied=span.last_applied,
            now=datetime.fromtimestamp(mirror.commit_time(since), UTC) + timedelta(minutes=5),
            max_commits=self.config.max_commits,
        )
        if not result.ok:
            raise VerificationError(
                f"the record of trust-root rotations in {self.config.state_dir} is missing and "
                f"cannot be derived again: the history up to {since[:12]} does not verify from "
                f"the enrolled root {self.config.trust_root} ({result.error}); nothing is "
                "applied until it can (set spec.trust.floor to a commit signed under the "
                "current root, with that root as the enrolled one)"
            )
        log.warning(
            "trust roots derived again",
            extra={"steps": len(result.rotations), "since": since},
        )
        return tuple(RootStep(r.effective, r.commit, r.root) for r in result.rotations)

    def verify(self, mirror: Mirror, since: str | None, candidate: str, now: datetime) -> Verified:
        """Verify (since, candidate]; with approvals pending, the newest commit before the
        first pending one is the revision (verified again as its own range)."""
        from reconciler.core.trust import read_range, verify_range
        from reconciler.node.roots import RootStep

        trust, (record, steps, notes) = self._roots(mirror, since)
        target: str | None = candidate
        pending: tuple[str, ...] = ()
        for _ in range(_MAX_NARROWING):
            assert target is not None
            span = read_range(mirror.repo, target, since, max_commits=self.config.max_commits)
            result = verify_range(
                span.commits,
                trust=trust,
                candidate=target,
                last_applied=span.last_applied,
                now=now,
                max_commits=self.config.max_commits,
            )
            result.raise_for_refusal()
            if target == candidate:
                pending = tuple(item.message for item in result.pending)
            if not result.pending:
                break
            target = result.applicable
            if target is None or target == since:
                return NodeVerified(
                    revision=since or "",
                    changed_at=now,
                    emergency=False,
                    emergency_reason="",
                    commits=0,
                    pending=pending,
                    notes=notes,
                )
        else:
            return NodeVerified(since or "", now, False, "", 0, pending=pending, notes=notes)
        record.extend(
            self.enrolled,
            steps,
            [RootStep(r.effective, r.commit, r.root) for r in result.rotations],
        )
        assert target is not None
        candidate = target
        from reconciler.node.seen import FirstSeen

        first_seen = FirstSeen(self.config.state_dir)
        seen = first_seen.see((record.sha for record in span.commits), now.timestamp())
        notes = (*notes, *first_seen.warnings)
        by_sha = {v.sha: v for v in result.verdicts}
        floor_time = self._floor_time(mirror)
        changes = []
        for record in span.commits:
            verdict = by_sha[record.sha]
            paths = frozenset(p for per_parent in record.changes for p in per_parent)
            committed = verdict.committer_time or 0
            # History dated at or before the enrolled floor (a branch merged after it) is
            # older than this node: its committer time counts, not "first seen at enrollment".
            before_floor = floor_time is not None and committed <= floor_time
            changes.append(
                Change(
                    sha=record.sha,
                    committed_at=datetime.fromtimestamp(committed, UTC),
                    paths=paths,
                    emergency=verdict.emergency,
                    emergency_reason=verdict.emergency_reason,
                    first_seen=(
                        None if before_floor else datetime.fromtimestamp(seen[record.sha], UTC)
                    ),
                )
            )
        changes.sort(key=lambda c: c.committed_at)
        latest = changes[-1] if changes else None
        return NodeVerified(
            revision=candidate,
            changed_at=(
                max(latest.committed_at, latest.first_seen or latest.committed_at)
                if latest
                else now
            ),
            emergency=bool(latest and latest.emergency),
            emergency_reason=latest.emergency_reason if latest else "",
            commits=len(changes),
            changes=tuple(changes),
            pending=pending,
            notes=notes,
        )

    # -- freshness --------------------------------------------------------------

    def freshness(
        self, mirror: Mirror, applied: str | None, head: str | None, now: datetime
    ) -> Any:
        """The heartbeat check (`reconciler.node.heartbeat`), with the heartbeat keys and the
        fleets' ``heartbeat`` limits of the revision this site runs; None before it runs one.
        The keys (``policies/signers.yaml``) are read only when there is a tag to verify;
        of the site's folder only ``site.yaml`` is read (its fleets), then those fleets."""
        from reconciler.core.loader import read_document, yaml_path
        from reconciler.core.source import CommitTree
        from reconciler.node.fetch import HEARTBEAT_REF
        from reconciler.node.heartbeat import check_heartbeat

        if applied is None:
            return None
        tree = CommitTree(mirror.repo, applied)

        def rules() -> Any:
            from reconciler.core.errors import DocumentError
            from reconciler.core.trust import parse_signers
            from reconciler.core.trust.rules import EMPTY_RULES, SIGNERS_PATH

            try:
                return parse_signers(tree.read(SIGNERS_PATH))
            except DocumentError:
                return EMPTY_RULES

        site = read_document(tree, f"sites/{self.site}/site.yaml", "Site", self.site)
        fleets = site.spec.get("fleets")
        air_gapped = self.config.source.url is None and self.config.feed is None
        key = "maxSilenceAirGapped" if air_gapped else "maxSilence"
        limits = []
        for name in fleets if isinstance(fleets, list) else ():
            path = yaml_path(tree, f"fleets/{name}")
            fleet = read_document(tree, path, "Fleet", name) if path is not None else None
            settings = fleet.spec.get("heartbeat") if fleet is not None else None
            text = settings.get(key) if isinstance(settings, dict) else None
            if not isinstance(text, str):
                continue
            from reconciler.core.schedule._zones import parse_duration  # only when one is set

            limit = parse_duration(text)
            if limit is not None:
                limits.append(int(limit.total_seconds()))
        return check_heartbeat(
            mirror,
            self.config.state_dir,
            tag_ref=HEARTBEAT_REF,
            head=head,
            rules=rules,
            max_silence=min(limits) if limits else None,
            now=now.timestamp(),
        )

    def _floor_time(self, mirror: Mirror) -> int | None:
        """The committer time of ``spec.trust.floor``, when it is set and in the mirror."""
        floor = self.config.floor
        if floor is None:
            return None
        import pygit2

        try:
            return int(mirror.repo[pygit2.Oid(hex=floor)].peel(pygit2.Commit).commit_time)
        except (KeyError, ValueError, pygit2.GitError):
            return None

    # -- desired ----------------------------------------------------------------

    def desired(self, mirror: Mirror, revision: str, *, checks: bool = True) -> Desired:
        """The slice of ``revision``: rendered, checked (``checks``), secrets in memory."""
        from reconciler.core.model import Repository
        from reconciler.core.render import render_site
        from reconciler.core.source import CommitTree

        tree = CommitTree(mirror.repo, revision)
        repo = Repository(tree)
        if checks:
            self._validate(tree)
        rendered = render_site(repo, self.site)
        if checks:
            self._check_policies(tree, repo, rendered)
        from reconciler.node.apply.order import key_of

        objects: list[Mapping[str, Any]] = [o.body for o in rendered.objects]
        objects.extend(self._admission(repo, rendered, strict=checks))
        secrets = self._decrypt(tree, repo, revision) if rendered.secret_refs else ()
        objects.extend(secrets)
        keys = [key_of(obj).encode() for obj in objects]
        folder = repo.site(self.site)
        machine_ids = {
            str(node.get("name")): str((node.get("identity") or {}).get("machineId", ""))
            for node in (folder.hardware.nodes if folder.hardware is not None else ())
        }
        return NodeDesired(
            revision=revision,
            objects=tuple(objects),
            keys=tuple(keys),
            sources=rendered.sources,
            node_labels=rendered.node_labels,
            machine_ids=machine_ids,
            secrets=len(secrets),
        )

    def _decrypt(self, tree: Any, repo: Any, revision: str) -> tuple[Mapping[str, Any], ...]:
        """The site's Secrets of ``revision``, decrypted into memory with the node's key."""
        from reconciler.core.secrets import decrypt_site_secrets

        if self.config.age_key is None:
            raise ConfigError(
                f"site {self.site} has encrypted secrets but the agent config sets no "
                "ageKey; install the site's age key at enrollment"
            )
        self._check_accepted(folder_recipient(repo, self.site), revision)
        return tuple(decrypt_site_secrets(tree, self.site, self.config.age_key))

    def secrets(self, mirror: Mirror, revision: str) -> tuple[Mapping[str, Any], ...]:
        """The Secrets `desired` decrypts for ``revision``, without rendering the rest."""
        from reconciler.core.model import Repository
        from reconciler.core.source import CommitTree

        tree = CommitTree(mirror.repo, revision)
        return self._decrypt(tree, Repository(tree), revision)

    def record_basis(self, revision: str) -> str:
        """What `desired(revision, checks=False)` depends on besides the commit, as a digest.

        The commit's objects cannot change; the slice rendered from them still depends on
        the date (policy exemptions expire), the agent's config, the age key and the code
        that renders (an upgrade may render differently). A record of the slice is only
        trusted under the same basis: any change renders the slice again.
        """
        import hashlib
        import json
        import os

        import reconciler

        def stamp(path: str | Path | None) -> list[int] | None:
            try:
                info = os.stat(path) if path is not None else None
            except OSError:
                return None
            return None if info is None else [info.st_size, info.st_mtime_ns, info.st_ino]

        code = []
        package = os.path.dirname(reconciler.__file__)
        inside = len(package) + 1  # a path's part below the package: plain strings, every
        for folder, dirs, files in os.walk(package):  # tick walks about 150 files
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".json")):
                    path = os.path.join(folder, name)
                    code.append([path[inside:], stamp(path)])
        basis = [
            revision,
            datetime.now(UTC).date().isoformat(),
            self.site,
            reconciler.__version__,
            repr(self.config),
            stamp(self.config.age_key),
            code,
        ]
        return hashlib.sha256(json.dumps(basis).encode()).hexdigest()

    def _check_accepted(self, recipient: str | None, revision: str) -> None:
        """Before the site's recipient is this node's key, nothing can be decrypted: that is
        an enrollment not accepted yet (or a key rotated and not installed here), not a fault
        of the commit. It is retried every tick and never remembered as a refusal."""
        from reconciler.core.secrets import key_file_recipients

        assert self.config.age_key is not None
        own = key_file_recipients(self.config.age_key)
        if recipient is None or recipient in own:
            return
        raise AwaitingAcceptance(
            f"this node's age key ({', '.join(own)}) is not site {self.site}'s recipient at "
            f"{_short(revision)} (its site.yaml names {recipient}): this node's enrollment "
            "has not been accepted yet. Run `outpost site accept` on its enrollment request "
            "and commit the change, signed; the node checks every tick (a node whose key was "
            f"rotated elsewhere needs the new key at {self.config.age_key})"
        )

    def _validate(self, tree: Any) -> None:
        """Schemas and references first: render may assume well-formed documents."""
        from reconciler.core.findings import ERROR
        from reconciler.core.validate import validate_tree

        findings = validate_tree(tree, sites=[self.site])
        mine = [f for f in findings if not f.site or f.site == self.site]
        if any(f.severity == ERROR for f in mine):
            raise ValidationError(
                f"revision {_short(tree.revision)} does not validate: {_first_errors(mine)}"
            )

    def _admission(self, repo: Any, rendered: Any, *, strict: bool) -> list[Mapping[str, Any]]:
        """The policies as ValidatingAdmissionPolicy objects, part of the slice.

        Today's date decides which exemptions still hold, so an expired one leaves the
        site's admission chain at the next drift check of the applied revision.
        """
        from reconciler.core.policy import export_rendered_site

        today = datetime.now(UTC).date()
        export = export_rendered_site(repo, self.site, rendered, today=today, strict=strict)
        return list(export.objects)

    def _check_policies(self, tree: Any, repo: Any, rendered: Any) -> None:
        if not self.check_policies:
            return
        from reconciler.core.findings import ERROR
        from reconciler.core.policy import check_rendered_site
        from reconciler.node.deadline import call_with_deadline

        today = datetime.now(UTC).date()
        policy_findings = call_with_deadline(
            lambda: check_rendered_site(repo, self.site, rendered, today=today),
            POLICY_DEADLINE_S,
            f"the policy check of revision {_short(tree.revision)}",
        )
        if any(f.severity == ERROR for f in policy_findings):
            raise PolicyError(
                f"revision {_short(tree.revision)} breaks policy: {_first_errors(policy_findings)}"
            )

    # -- gate -------------------------------------------------------------------

    def gate(
        self, mirror: Mirror, verified: Verified, desired: Desired, now: datetime
    ) -> GateDecision:
        """The schedule's verdict; an error of the gate's own is a refusal with its reason.

        Validation refuses the dates and durations the schedule cannot compute with, so
        this is a second line: an exception here must refuse the commit (recorded, and
        drift still corrected), never crash the tick.
        """
        assert isinstance(verified, NodeVerified)
        try:
            return self._gate(mirror, verified, desired, now)
        except OutpostError:
            raise
        except Exception as exc:  # the gate's own failure refuses the commit, never the tick
            raise ValidationError(
                f"the update gate cannot decide for revision {_short(verified.revision)}: "
                f"{type(exc).__name__}: {exc}; the commit is refused (fix the windows, "
                "freezes or waves it declares)"
            ) from None

    def _gate(
        self, mirror: Mirror, verified: NodeVerified, desired: Desired, now: datetime
    ) -> GateDecision:
        from reconciler.core.model import Repository
        from reconciler.core.source import CommitTree

        sources = set(desired.sources) if isinstance(desired, NodeDesired) else set()
        repo = Repository(CommitTree(mirror.repo, verified.revision))
        return site_gate(
            mirror.repo, repo, self.site, verified.revision, verified.changes, sources, now
        )


def site_gate(
    git_repo: Any,
    repo: Any,
    site: str,
    revision: str,
    changes: Sequence[Change],
    sources: set[str],
    now: datetime,
    *,
    records: dict[str, Any] | None = None,
) -> GateDecision:
    """The gate of one site for the verified ``changes`` at ``revision`` (its candidate).

    ``repo`` is the `Repository` of ``revision``. A gated fleet's Promotion and Halt
    records are read from the same revision (`core.schedule.read_records`) and matched
    to the last commit that touched the fleet; ``records`` is a cache of them by fleet
    that callers judging many sites of one revision may share.
    """
    from reconciler.core.schedule import (
        PromotionState,
        Wait,
        decide,
        gate_inputs,
        promotion_state,
        read_records,
        signed_change,
    )

    folder = repo.site(site)
    fleets = [f for f in (repo.fleet(name) for name in folder.site.fleets) if f is not None]
    signed = signed_change(changes, sources, fleets, revision=revision)
    if signed is None:
        return GateDecision(True, "no commit in the range changed this site's slice")
    paused_at = {
        f.name: paused_since(git_repo, revision, f.doc.path)
        for f in fleets
        if f.doc.spec.get("paused") is True
    }
    promotions: dict[str, PromotionState] = {}
    cache = records if records is not None else {}
    gated = {f.name for f in fleets if _gated(f.doc.spec)}
    for fleet, change_sha in signed.fleet_changes:
        if fleet not in gated:
            continue  # a fleet without gates never reads rollouts/
        if fleet not in cache:
            cache[fleet] = read_records(repo.tree, fleet)
        promotions[fleet] = promotion_state(
            cache[fleet], change_sha, lambda later, earlier: _includes(git_repo, later, earlier)
        )
    change = signed.change
    calendar, rollout = gate_inputs(
        folder.site.doc,
        [f.doc for f in fleets],
        change,
        changed_fleets=signed.changed_fleets,
        paused_at={k: v for k, v in paused_at.items() if v is not None},
        promotions=promotions,
    )
    decision = decide(calendar, rollout, change, now)
    if isinstance(decision, Wait):
        return GateDecision(False, decision.reason, decision.until)
    return GateDecision(True, decision.reason)


def _gated(spec: Mapping[str, Any]) -> bool:
    waves = spec.get("waves")
    return isinstance(waves, list) and any(isinstance(w, dict) and "gate" in w for w in waves)


def _includes(git_repo: Any, later: str, earlier: str) -> bool:
    """True when commit ``later`` descends from ``earlier``; an unknown id includes nothing."""
    try:
        return bool(git_repo.descendant_of(later, earlier))
    except (KeyError, ValueError, Exception):  # pygit2.GitError for an object not in the mirror
        return False


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "working tree"


class ManagerCluster:
    """The agent's `Cluster`, backed by `apply.ResourceManager` (keys as stored strings)."""

    def __init__(self, manager: Any, *, monotonic: Any = None, sleep: Any = None) -> None:
        import time

        self.manager = manager
        self.monotonic = monotonic or time.monotonic
        self.sleep = sleep or time.sleep

    @classmethod
    def connect(cls, config: AgentConfig) -> ManagerCluster:
        from reconciler.node.apply import Cluster, ResourceManager

        if config.kubeconfig is None:
            raise ConfigError(f"{config.path}: spec.kubeconfig is not set")
        cluster = Cluster.from_kubeconfig(config.kubeconfig)
        return cls(ResourceManager(cluster, site=config.site, field_manager=config.field_manager))

    @staticmethod
    def _keys(keys: Sequence[str]) -> list[Any]:
        from reconciler.node.apply import ObjectKey

        return [ObjectKey.parse(k) for k in keys]

    def apply(self, objects: Sequence[Mapping[str, Any]], *, revision: str) -> Any:
        return self.manager.apply(objects, revision=revision)

    def drift(self, objects: Sequence[Mapping[str, Any]]) -> Sequence[str]:
        return [d.key.encode() for d in self.manager.drift(objects)]

    def record(self, objects: Sequence[Mapping[str, Any]]) -> list[Any] | None:
        entries: list[Any] | None = self.manager.record(objects)
        return entries

    def drift_recorded(
        self, recorded: Sequence[Any], objects: Sequence[Mapping[str, Any]]
    ) -> Sequence[str] | None:
        found = self.manager.drift_recorded(recorded, objects)
        return None if found is None else [d.key.encode() for d in found]

    def record_secrets(self, secrets: Sequence[Mapping[str, Any]]) -> list[Any] | None:
        entries: list[Any] | None = self.manager.record_secrets(secrets)
        return entries

    def look_recorded(
        self, recorded: Sequence[Any], secrets: Sequence[Any] | None
    ) -> SliceLook | None:
        look = self.manager.look_recorded(recorded, secrets)
        return None if look is None else SliceLook(look.healthy, look.secrets_in_line)

    def prune(self, previous: Sequence[str], desired: Sequence[str]) -> Sequence[str]:
        deleted = self.manager.prune(self._keys(previous), self._keys(desired))
        return [k.encode() for k in deleted]

    def wait_healthy(self, objects: Sequence[Mapping[str, Any]], *, deadline_seconds: float) -> Any:
        def progress(report: Any) -> None:
            log.info("waiting for health: %s", report.progress(deadline_seconds))

        return self.manager.wait_healthy(
            objects,
            deadline_seconds=deadline_seconds,
            clock=self.monotonic,
            sleep=self.sleep,
            progress=progress,
        )

    def read_inventory(self) -> Sequence[str] | None:
        inventory = self.manager.read_inventory()
        if inventory is None:
            return None
        return sorted(k.encode() for k in inventory.keys)

    def write_inventory(self, keys: Sequence[str], revision: str) -> None:
        self.manager.write_inventory(self._keys(keys), revision)

    def applied_revision(self) -> str | None:
        inventory = self.manager.read_inventory()
        if inventory is None or not inventory.complete or not inventory.revision:
            return None
        return str(inventory.revision)

    def label_nodes(self, desired: Desired) -> Sequence[str]:
        """Put hardware.yaml's placement labels on the cluster's nodes; return warnings.

        The warnings name each hardware.yaml node found in the cluster neither by machine
        id nor by name: its placement labels go nowhere, and Pods that select them stay
        Pending (Unschedulable) until the node joins or hardware.yaml names it right.

        A hardware node is found by its machine id (what the kubelet reports from
        /etc/machine-id), else by name; a site with one node and one hardware entry needs
        neither. Only the labels are applied, under their own field manager, so nothing
        else on the Node is touched and a label that left hardware.yaml is removed.
        """
        if not isinstance(desired, NodeDesired) or not desired.node_labels:
            return []
        cluster = self.manager.cluster
        resource = cluster.resource("v1", "Node")
        nodes = cluster.list(resource)
        by_machine = {
            str(((n.get("status") or {}).get("nodeInfo") or {}).get("machineID", "")): n
            for n in nodes
        }
        by_name = {str(n["metadata"]["name"]): n for n in nodes}
        warnings = []
        for hw_name, labels in sorted(desired.node_labels.items()):
            machine = desired.machine_ids.get(hw_name, "")
            node = (by_machine.get(machine) if machine else None) or by_name.get(hw_name)
            if node is None and len(nodes) == 1 and len(desired.node_labels) == 1:
                node = nodes[0]
            if node is None:
                known = ", ".join(sorted(by_name)) or "none"
                machine_note = f" or machine id {machine}" if machine else ""
                warnings.append(
                    f"hardware.yaml names node {hw_name!r}, but no node in the cluster has that "
                    f"name{machine_note} (nodes: {known}); its placement labels were not "
                    "applied and Pods that need them will not be scheduled — rename the node "
                    "in hardware.yaml (or set its machineId) to match the cluster"
                )
                continue
            name = str(node["metadata"]["name"])
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": dict(labels)},
            }
            cluster.apply(resource, body, field_manager=NODE_LABEL_MANAGER, obj=f"Node/{name}")
        return warnings
