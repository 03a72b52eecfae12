"""The tick's decision table, fast: every outcome of ``Agent.tick`` without a cluster.

The git side is real (a source repository made with pygit2, fetched into the agent's own
bare mirror), and so are the state directory, the lock, the status and the metrics files.
Two seams are in-memory fakes, because these tests are about the agent's rules, not about
what is behind the seams (each has its own real-thing tests):

- ``FakePipeline`` stands for trust, render, the gate and the heartbeat check (``tests/trust``,
  ``tests/render``, ``tests/schedule``, ``tests/trust/test_node_heartbeat.py``): each
  revision's verdict, slice and gate decision, and the source's heartbeat, are set by the test;
- ``FakeCluster`` stands for ``apply`` on the API server (``tests/cluster``): objects,
  inventory and health per revision live in dicts, and any call can be made to fail.

The cluster suite's rollback tests run the same outcomes against the real control plane.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.cli.agent import format_status
from reconciler.core.errors import (
    ApplyError,
    ClusterUnavailable,
    DocumentError,
    OutpostError,
    PermanentError,
    SourceUnavailable,
    TemporaryError,
    VerificationError,
)
from reconciler.node.agent import (
    Agent,
    Desired,
    GateDecision,
    JsonFormatter,
    TextFormatter,
    Verified,
    log_format,
    metrics_text,
)
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.fetch import APPLIED_REF, Mirror
from reconciler.node.heartbeat import Freshness
from reconciler.node.state import AgentState, StateStore

SITE = "de-muc-0007"
T0 = datetime(2027, 2, 2, 21, 45, tzinfo=UTC)


# -- the source: a real git repository ------------------------------------------------------


class Source:
    """A git repository the agent fetches from; each commit is one revision."""

    def __init__(self, path: Path) -> None:
        self.repo = pygit2.init_repository(str(path), bare=False, initial_head="main")
        self.path = path
        self.count = 0

    def commit(self, message: str) -> str:
        self.count += 1
        blob = self.repo.create_blob(f"{message}\n{self.count}\n".encode())
        builder = self.repo.TreeBuilder()
        builder.insert("change.txt", blob, pygit2.enums.FileMode.BLOB)
        tree = builder.write()
        when = pygit2.Signature("Test", "test@example.com", 1_800_000_000 + self.count, 0)
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        oid = self.repo.create_commit("refs/heads/main", when, when, message, tree, parents)
        return str(oid)


# -- the fakes --------------------------------------------------------------------------------


def obj(key: str, revision: str) -> dict[str, Any]:
    return {"key": key, "revision": revision}


@dataclass
class FakePipeline:
    """Verdicts per revision: slices (``keys``), refusals, approvals, gate decisions, and
    what the source's heartbeat says."""

    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refuse: dict[str, PermanentError] = field(default_factory=dict)
    temporary: dict[str, TemporaryError] = field(default_factory=dict)
    gate_says: dict[str, GateDecision] = field(default_factory=dict)
    broken_render: dict[str, OutpostError] = field(default_factory=dict)
    pending: dict[str, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)
    """candidate -> (the newest commit before the first pending one, the pending commits)."""
    max_silence: int | None = None
    """The fleets' ``heartbeat.maxSilence`` at the applied revision (None: not set)."""
    heartbeat_at: float | None = None
    """The newest signed heartbeat's time (None: no signed tag yet)."""
    heartbeat_note: str | None = None
    heartbeat_error: OutpostError | None = None
    heartbeat_unreadable: str | None = None
    """Why heartbeat.json was set aside (`Freshness.unreadable`)."""
    notes: tuple[str, ...] = ()
    """What verifying found wrong with the node's records (`Verified.notes`)."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    ranges: list[tuple[str | None, str]] = field(default_factory=list)

    def verify(self, mirror: Mirror, since: str | None, candidate: str, now: datetime) -> Verified:
        self.calls.append(("verify", candidate))
        self.ranges.append((since, candidate))
        assert mirror.has(candidate), "the candidate is in the agent's own mirror"
        if candidate in self.refuse:
            raise self.refuse[candidate]
        if candidate in self.temporary:
            raise self.temporary[candidate]
        if candidate in self.pending:
            before, waiting = self.pending[candidate]
            return Verified(before or "", now - timedelta(hours=1), False, "", 1, waiting)
        return Verified(candidate, now - timedelta(hours=1), False, "", 1, notes=self.notes)

    def freshness(
        self, mirror: Mirror, applied: str | None, head: str | None, now: datetime
    ) -> Freshness | None:
        """Like NodePipeline: nothing before the site runs a revision (its keys and limits
        are the applied revision's); then the record `check_heartbeat` keeps, the node
        watching since the first tick (T0)."""
        self.calls.append(("freshness", applied or ""))
        if applied is None:
            return None
        if self.heartbeat_error is not None:
            raise self.heartbeat_error
        since = self.heartbeat_at if self.heartbeat_at is not None else T0.timestamp()
        return Freshness(
            signed_at=self.heartbeat_at,
            target=head if self.heartbeat_at is not None else None,
            watching_since=T0.timestamp(),
            max_silence=self.max_silence,
            silence=now.timestamp() - since,
            note=self.heartbeat_note,
            unreadable=self.heartbeat_unreadable,
        )

    def desired(self, mirror: Mirror, revision: str, *, checks: bool = True) -> Desired:
        self.calls.append(("desired" if checks else "desired-unchecked", revision))
        if revision in self.broken_render:
            raise self.broken_render[revision]
        keys = self.keys[revision]
        return Desired(revision, tuple(obj(k, revision) for k in keys), keys)

    def gate(
        self, mirror: Mirror, verified: Verified, desired: Desired, now: datetime
    ) -> GateDecision:
        self.calls.append(("gate", desired.revision))
        return self.gate_says.get(desired.revision, GateDecision(True, "inside the window"))


@dataclass
class Health:
    healthy: bool
    text: str = ""

    def summary(self) -> str:
        return self.text


@dataclass
class FakeCluster:
    """The API server as dicts: live objects by key, the inventory, health per revision.

    ``fail`` maps a method name to the error its next call raises (once); ``fail_on``
    maps it to a revision whose calls raise it (every time).
    """

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    inventory: list[str] | None = None
    inventory_revision: str | None = None
    complete: bool = False
    unhealthy: set[str] = field(default_factory=set)
    drifted: set[str] = field(default_factory=set)
    fail: dict[str, Exception] = field(default_factory=dict)
    fail_on: dict[str, tuple[str, Exception]] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    labelled: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    kill_on: tuple[str, str | None, Path] | None = None
    """(method, revision, file): that call ends the agent's process at once, as SIGKILL
    would, after writing what the API server holds then to the file (it outlives the agent)."""

    def _maybe_fail(self, method: str, revision: str | None = None) -> None:
        if self.kill_on is not None and self.kill_on[:2] == (method, revision):
            held = {k: getattr(self, k) for k in ("objects", "inventory", "complete", "calls")}
            self.kill_on[2].write_text(json.dumps({**held, "revision": self.inventory_revision}))
            os._exit(KILLED)
        if method in self.fail:
            raise self.fail.pop(method)
        if method in self.fail_on and self.fail_on[method][0] == revision:
            raise self.fail_on[method][1]

    def apply(self, objects: Sequence[Mapping[str, Any]], *, revision: str) -> Any:
        self.calls.append(("apply", revision))
        # Like ResourceManager.apply: when it brings keys the inventory does not list, the
        # inventory is widened before anything is sent and holds no complete revision until
        # the apply ends with `write_inventory`; a drift correction (keys already listed)
        # leaves it as it is.
        keys = {o["key"] for o in objects}
        if self.inventory is None or not keys <= set(self.inventory):
            self.inventory = sorted(set(self.inventory or ()) | keys)
            self.complete = False
        self._maybe_fail("apply", revision)
        for o in objects:
            self.objects[o["key"]] = dict(o)
        return len(objects)

    def drift(self, objects: Sequence[Mapping[str, Any]]) -> Sequence[str]:
        self.calls.append(("drift", len(objects)))
        self._maybe_fail("drift")
        return sorted(
            o["key"]
            for o in objects
            if o["key"] in self.drifted or self.objects.get(o["key"]) != dict(o)
        )

    def prune(self, previous: Sequence[str], desired: Sequence[str]) -> Sequence[str]:
        self.calls.append(("prune", (tuple(previous), tuple(desired))))
        self._maybe_fail("prune")
        gone = [k for k in previous if k not in desired and k in self.objects]
        for key in gone:
            del self.objects[key]
        return gone

    def wait_healthy(self, objects: Sequence[Mapping[str, Any]], *, deadline_seconds: float) -> Any:
        revision = objects[0]["revision"] if objects else ""
        self.calls.append(("wait_healthy", revision))
        self.deadlines.append(deadline_seconds)
        self._maybe_fail("wait_healthy", revision)
        if revision in self.unhealthy:
            return Health(False, f"Deployment pos/pos-server of {revision[:7]} is not Available")
        return Health(True)

    def read_inventory(self) -> Sequence[str] | None:
        self.calls.append(("read_inventory", None))
        self._maybe_fail("read_inventory")
        return None if self.inventory is None else list(self.inventory)

    def applied_revision(self) -> str | None:
        """Like ManagerCluster: the inventory's revision, only when its apply completed."""
        self.calls.append(("applied_revision", None))
        self._maybe_fail("applied_revision")
        if self.inventory is None or not self.complete:
            return None
        return self.inventory_revision

    def label_nodes(self, desired: Desired) -> Sequence[str]:
        self.calls.append(("label_nodes", desired.revision))
        self.labelled.append(desired.revision)
        return list(self.unplaced)

    def write_inventory(self, keys: Sequence[str], revision: str) -> None:
        self.calls.append(("write_inventory", revision))
        self._maybe_fail("write_inventory")
        self.inventory = list(keys)
        self.inventory_revision = revision
        self.complete = True

    def applied_revisions(self) -> list[str]:
        return [arg for name, arg in self.calls if name == "apply"]


KILLED = 137


def tick_killed_at(node: Node, method: str, revision: str | None) -> None:
    """One tick in a child process that dies at the cluster call ``method`` for ``revision``:
    no ``finally``, no later write. Afterwards the fake API server holds what the child left
    in it, as a real one would; the disk holds what the child had written."""
    held = node.tmp / "cluster-at-kill.json"
    node.cluster.kill_on = (method, revision, held)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends by os._exit
        try:
            node.tick()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    node.cluster.kill_on = None
    assert os.waitstatus_to_exitcode(status) == KILLED, "the tick ended before its kill"
    found = json.loads(held.read_text())
    node.cluster.objects = found["objects"]
    node.cluster.inventory = found["inventory"]
    node.cluster.inventory_revision = found["revision"]
    node.cluster.complete = found["complete"]
    node.cluster.calls = [(name, arg) for name, arg in found["calls"]]


# -- the node -----------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Node:
    tmp: Path
    source: Source
    pipeline: FakePipeline
    cluster: FakeCluster
    clock: Clock
    url: str | None
    inbox: Path | None = None
    connects: int = 0
    unreachable: Exception | None = None
    first_apply: str = "immediate"
    floor: str | None = None

    @property
    def config(self) -> AgentConfig:
        return AgentConfig(
            path=self.tmp / "agent.yaml",
            site=SITE,
            source=SourceConfig(url=self.url, branch="main", credentials=None),
            bundle_inbox=self.inbox,
            outbox=self.tmp / "outbox",
            trust_root=self.tmp / "allowed_signers",
            age_key=None,
            kubeconfig=None,
            state_dir=self.tmp / "state",
            health_deadline=30,
            stale_after=24 * 3600,
            field_manager="outpost",
            max_commits=1000,
            metrics_dir=self.tmp / "textfile",
            first_apply=self.first_apply,
            floor=self.floor,
        )

    def connect(self) -> FakeCluster:
        self.connects += 1
        if self.unreachable is not None:
            raise self.unreachable
        return self.cluster

    def agent(self) -> Agent:
        (self.tmp / "outbox").mkdir(exist_ok=True)
        (self.tmp / "textfile").mkdir(exist_ok=True)
        return Agent(self.config, pipeline=self.pipeline, cluster=self.connect, clock=self.clock)

    def tick(self) -> Any:
        return self.agent().tick()

    def commit(self, message: str, keys: Sequence[str]) -> str:
        revision = self.source.commit(message)
        self.pipeline.keys[revision] = tuple(keys)
        return revision

    @property
    def state(self) -> AgentState:
        state, warning = StateStore(self.tmp / "state").load(SITE, now=0)
        assert warning is None
        return state

    @property
    def status(self) -> dict[str, Any]:
        status = StateStore(self.tmp / "state").read_status()
        assert status is not None
        return status

    @property
    def metrics(self) -> str:
        return (self.tmp / "textfile" / "outpost.prom").read_text()

    def applied_ref(self) -> str | None:
        return Mirror(self.config.mirror_dir).resolve(APPLIED_REF)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    source = Source(tmp_path / "source")
    return Node(tmp_path, source, FakePipeline(), FakeCluster(), Clock(T0), str(source.path))


@pytest.fixture
def running(node: Node) -> Iterator[tuple[Node, str]]:
    """A node that applied its first revision (a, b) and is healthy."""
    good = node.commit("first", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"])
    report = node.tick()
    assert report.outcome == "applied", report
    yield node, good


# -- applied ----------------------------------------------------------------------------------


def test_first_commit_is_applied_recorded_and_pinned(node: Node) -> None:
    revision = node.commit("first", ["v1/ConfigMap/pos/a", "apps/v1/Deployment/pos/b"])
    report = node.tick()
    assert (report.outcome, report.applied, report.health) == ("applied", revision, "healthy")
    assert report.error is None and not report.temporary
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a", "apps/v1/Deployment/pos/b"}
    assert node.cluster.inventory == ["v1/ConfigMap/pos/a", "apps/v1/Deployment/pos/b"]
    assert node.cluster.inventory_revision == revision
    assert node.cluster.labelled == [revision]
    state = node.state
    assert (state.applied, state.last_good, state.failed) == (revision, revision, ())
    assert state.applied_at == T0.timestamp()
    assert state.inventory == ("v1/ConfigMap/pos/a", "apps/v1/Deployment/pos/b")
    assert node.applied_ref() == revision
    status = node.status
    assert status["outcome"] == "applied"
    assert status["applied"]["revision"] == revision
    assert status["lastGood"] == revision
    assert status["pending"] is None and status["lastError"] is None
    assert status["inventory"] == 2
    assert json.loads((node.tmp / "outbox" / f"outpost-status-{SITE}.json").read_text()) == status
    assert "outpost_last_success_timestamp_seconds" in node.metrics
    assert f'outpost_applied_info{{revision="{revision}",site="{SITE}"}} 1' in node.metrics


def test_a_hardware_node_missing_from_the_cluster_is_a_warning(node: Node) -> None:
    missing = "hardware node till-2 is not in the cluster: its placement labels go nowhere"
    node.cluster.unplaced.append(missing)
    revision = node.commit("first", ["v1/ConfigMap/pos/a"])
    report = node.tick()
    assert (report.outcome, report.applied, report.warnings) == ("applied", revision, [missing])


def test_an_update_prunes_what_left_after_health(running: tuple[Node, str]) -> None:
    node, _ = running
    newer = node.commit("drop b, add c", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/c"])
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", newer)
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a", "v1/ConfigMap/pos/c"}
    assert node.cluster.objects["v1/ConfigMap/pos/a"]["revision"] == newer
    assert node.cluster.inventory == ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/c"]
    names = [name for name, _ in node.cluster.calls[-5:]]
    # Health before prune, prune before the inventory is rewritten.
    assert names.index("wait_healthy") < names.index("prune") < names.index("write_inventory")
    assert node.state.last_good == newer


def test_the_cluster_inventory_wins_over_the_state_copy(running: tuple[Node, str]) -> None:
    """After an interrupted apply the cluster's list (the union) is the truth for prune."""
    node, _ = running
    node.cluster.inventory = ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b", "v1/Secret/pos/orphan"]
    node.cluster.objects["v1/Secret/pos/orphan"] = obj("v1/Secret/pos/orphan", "older")
    newer = node.commit("only a", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == newer
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a"}


def test_no_inventory_in_the_cluster_falls_back_to_the_state_copy(
    running: tuple[Node, str],
) -> None:
    node, _ = running
    node.cluster.inventory = None  # a fresh cluster, or one whose inventory was deleted
    newer = node.commit("only a", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == newer
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a"}


# -- unchanged, drift ---------------------------------------------------------------------------


def test_nothing_new_and_nothing_drifted_is_unchanged(running: tuple[Node, str]) -> None:
    node, good = running
    report = node.tick()
    assert (report.outcome, report.applied, report.drift, report.health) == (
        "unchanged",
        good,
        0,
        "healthy",
    )
    assert ("verify", good) not in node.pipeline.calls[2:]
    assert node.status["outcome"] == "unchanged"


def test_drift_is_corrected_outside_any_window(running: tuple[Node, str]) -> None:
    node, good = running
    del node.cluster.objects["v1/ConfigMap/pos/a"]
    node.cluster.drifted.add("v1/ConfigMap/pos/b")
    newer = node.commit("waits", ["v1/ConfigMap/pos/a"])
    node.pipeline.gate_says[newer] = GateDecision(False, "outside the window")
    before = len(node.cluster.calls)
    report = node.tick()
    assert report.outcome == "waiting"  # the new commit waits ...
    assert (report.drift, report.corrected) == (2, 2)  # ... the drift is corrected anyway
    assert ("apply", good) in node.cluster.calls[before:]
    assert node.cluster.objects["v1/ConfigMap/pos/a"]["revision"] == good
    assert ("desired-unchecked", good) in node.pipeline.calls
    assert node.status["drift"] == {"objects": 2, "corrected": 2}
    assert 'outpost_drift_objects{site="de-muc-0007"} 2' in node.metrics


def test_a_drift_check_the_cluster_cannot_answer_is_temporary(running: tuple[Node, str]) -> None:
    node, _ = running
    node.cluster.fail["drift"] = ClusterUnavailable("connection refused")
    report = node.tick()
    assert report.outcome == "unchanged"
    assert report.temporary
    assert report.warnings == ["drift check skipped: connection refused"]


def test_a_drift_check_that_cannot_render_says_so_and_is_not_temporary(
    running: tuple[Node, str],
) -> None:
    node, good = running
    node.pipeline.broken_render[good] = PermanentError("the age key cannot decrypt pos/wifi")
    report = node.tick()
    assert report.outcome == "unchanged"
    assert not report.temporary
    assert report.warnings == ["drift check failed: the age key cannot decrypt pos/wifi"]
    assert node.status["warnings"] == report.warnings


def test_nothing_ever_applied_asks_the_cluster_only_what_it_runs(node: Node) -> None:
    """No applied revision on record: the cluster's inventory is asked (a lost state file
    must not make the node forget what runs), and nothing else is done on the cluster."""
    node.url = str(node.tmp / "empty")
    pygit2.init_repository(str(node.tmp / "empty"), bare=True)
    report = node.tick()
    assert report.outcome == "unchanged"
    assert report.temporary  # the remote has no branch main yet
    assert node.connects == 1
    assert node.cluster.calls == [("applied_revision", None)]
    assert node.status["applied"]["revision"] is None
    assert report.warnings and "state file was lost" not in " ".join(report.warnings)


# -- refused ------------------------------------------------------------------------------------


def test_a_refused_candidate_is_remembered_and_never_verified_again(
    running: tuple[Node, str],
) -> None:
    node, good = running
    bad = node.commit("unsigned", ["v1/ConfigMap/pos/x"])
    node.pipeline.refuse[bad] = VerificationError(f"commit {bad[:7]} is not signed")
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("refused", good, bad)
    # Refused by trust: the reason says what to do (a fix on top would not be applied).
    reason = (
        f"commit {bad[:7]} is not signed; this commit is never retried and nothing built on "
        f"it is applied: rewrite the branch without it (from {good[:12]}, every commit signed "
        "by a signer allowed to change its paths)"
    )
    assert report.error == f"commit {bad[:7]} is not signed"
    assert node.state.refused == {bad: reason}
    assert "v1/ConfigMap/pos/x" not in node.cluster.objects
    assert node.status["pending"] == {"revision": bad, "reason": reason, "until": None}
    assert 'outpost_pending_change{site="de-muc-0007"} 1' in node.metrics
    verified = node.pipeline.calls.count(("verify", bad))
    again = node.tick()
    assert (again.outcome, again.pending) == ("refused", bad)
    assert node.pipeline.calls.count(("verify", bad)) == verified  # not verified again
    # A newer commit replaces it.
    fixed = node.commit("signed fix", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == fixed


def test_refusals_are_bounded(running: tuple[Node, str]) -> None:
    node, _ = running
    state = node.state
    many = {f"{i:040x}": "old refusal" for i in range(60)}
    StateStore(node.tmp / "state").save(state.with_(refused=many))
    bad = node.commit("bad", ["x"])
    node.pipeline.refuse[bad] = VerificationError("no")
    node.tick()
    refused = node.state.refused
    assert len(refused) == 50
    assert bad in refused


def test_a_slice_that_fails_its_checks_is_refused(running: tuple[Node, str]) -> None:
    node, good = running
    bad = node.commit("schema break", ["v1/ConfigMap/pos/a"])
    node.pipeline.broken_render[bad] = PermanentError("sites/de-muc-0007/hardware.yaml:4: 32GB")
    report = node.tick()
    assert (report.outcome, report.applied) == ("refused", good)
    assert "hardware.yaml:4" in str(report.pending_reason)


def test_a_temporary_error_while_verifying_changes_nothing(running: tuple[Node, str]) -> None:
    """A temporary failure of a pipeline step is not the candidate's fault: not remembered
    as refused, retried next tick, and the tick ends with the site as it was."""
    node, good = running
    newer = node.commit("next", ["v1/ConfigMap/pos/a"])
    node.pipeline.temporary[newer] = SourceUnavailable("an object of the mirror is unreadable")
    node.clock.now = T0 + timedelta(hours=1)
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("interrupted", good, newer)
    assert report.temporary
    assert report.error == (
        f"checking {newer[:12]} was interrupted: an object of the mirror is unreadable"
    )
    assert node.state.refused == {}
    assert node.state.applied == good
    status = node.status
    assert (status["outcome"], status["lastError"]) == ("interrupted", report.error)
    assert status["pending"]["revision"] == newer
    assert node.state.last_success_at == T0.timestamp()  # the first tick's, not this one's
    assert report.health == "healthy"  # the drift check ran all the same
    del node.pipeline.temporary[newer]
    assert node.tick().applied == newer


def test_a_candidate_beside_or_before_the_enrolled_floor_is_refused(node: Node) -> None:
    """``spec.trust.floor``: verification starts at the floor, then at what runs; a
    candidate that does not descend from the floor is refused by name."""
    node.commit("before enrollment", ["v1/ConfigMap/pos/a"])
    floor = node.commit("enrolled at", ["v1/ConfigMap/pos/a"])
    node.floor = floor
    first = node.commit("first after enrollment", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"])
    assert node.tick().applied == first
    newer = node.commit("later", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == newer
    assert node.pipeline.ranges == [(floor, first), (first, newer)]

    other = Source(node.tmp / "elsewhere")
    beside = other.commit("unrelated history")
    fresh = Node(node.tmp / "fresh", other, node.pipeline, FakeCluster(), node.clock, None)
    fresh.url = str(other.path)
    fresh.tmp.mkdir()
    fresh.floor = floor
    fresh.pipeline.keys[beside] = ("v1/ConfigMap/pos/a",)
    report = fresh.tick()
    assert (report.outcome, report.applied, report.pending) == ("refused", None, beside)
    assert str(report.pending_reason).startswith(
        f"candidate {beside[:12]} does not descend from the enrolled floor {floor[:12]}"
    )
    assert fresh.cluster.applied_revisions() == []


# -- approvals pending (spec.thresholds; the counting itself: tests/trust) ---------------------


def test_a_change_waiting_for_approvals_is_pending_not_refused(running: tuple[Node, str]) -> None:
    node, good = running
    newer = node.commit("policies: new signer", ["v1/ConfigMap/pos/a"])
    why = f"{newer[:12]} (policies/signers.yaml) needs 2 root signers; has alice"
    node.pipeline.pending[newer] = (good, (why,))
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("pending-approval", good, newer)
    assert report.approvals == [why]
    assert report.pending_reason == f"waiting for approvals: {why}"
    assert node.cluster.applied_revisions().count(newer) == 0
    assert node.state.refused == {}
    assert node.status["approvalsPending"] == [why]
    assert 'outpost_approvals_pending_commits{site="de-muc-0007"} 1' in node.metrics
    assert report.health == "healthy"  # the drift check ran all the same
    # Decided again each tick: once approved, the change is applied.
    del node.pipeline.pending[newer]
    assert node.tick().applied == newer


def test_a_pending_change_with_nothing_applied_before_it_waits(node: Node) -> None:
    first = node.commit("first, under a threshold", ["v1/ConfigMap/pos/a"])
    node.pipeline.pending[first] = (None, (f"{first[:12]} needs 2 root signers",))
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("pending-approval", None, first)
    assert node.cluster.applied_revisions() == []


def test_the_newest_commit_before_the_pending_ones_is_applied(running: tuple[Node, str]) -> None:
    node, _ = running
    ready = node.commit("ready", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/c"])
    waiting = node.commit("needs approval", ["v1/ConfigMap/pos/a"])
    later = node.commit("on top of it", ["v1/ConfigMap/pos/a"])
    pending = (f"{waiting[:12]} needs 2 signers", f"{later[:12]} needs 2 signers")
    node.pipeline.pending[later] = (ready, pending)
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", ready)
    assert report.approvals == list(pending)
    assert report.pending == later
    assert report.pending_reason == (
        f"waiting for approvals: {pending[0]} (and 1 more commit waiting)"
    )
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a", "v1/ConfigMap/pos/c"}
    assert node.cluster.applied_revisions().count(waiting) == 0


def test_a_pending_change_behind_a_gate_says_both(running: tuple[Node, str]) -> None:
    node, good = running
    ready = node.commit("ready", ["v1/ConfigMap/pos/a"])
    waiting = node.commit("needs approval", ["v1/ConfigMap/pos/a"])
    node.pipeline.pending[waiting] = (ready, (f"{waiting[:12]} needs 2 signers",))
    node.pipeline.gate_says[ready] = GateDecision(False, "outside the store's window")
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("waiting", good, waiting)
    assert report.pending_reason == (
        f"outside the store's window; waiting for approvals: {waiting[:12]} needs 2 signers"
    )


def test_the_commit_before_a_pending_one_keeps_its_own_record(running: tuple[Node, str]) -> None:
    """A commit that failed its health check, or whose slice was refused, is not taken
    again because a later commit waits for approvals."""
    node, good = running
    bad = node.commit("unhealthy", ["v1/ConfigMap/pos/a"])
    node.cluster.unhealthy.add(bad)
    assert node.tick().outcome == "rolled-back"
    waiting = node.commit("needs approval", ["v1/ConfigMap/pos/a"])
    node.pipeline.pending[waiting] = (bad, (f"{waiting[:12]} needs 2 signers",))
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("failed-before", good, waiting)
    assert node.cluster.applied_revisions().count(bad) == 1

    broken = node.commit("schema break", ["v1/ConfigMap/pos/a"])
    node.pipeline.broken_render[broken] = PermanentError("apps/pos/app.yaml:3: no image")
    assert node.tick().outcome == "refused"
    also = node.commit("needs approval too", ["v1/ConfigMap/pos/a"])
    node.pipeline.pending[also] = (broken, (f"{also[:12]} needs 2 signers",))
    report = node.tick()
    assert (report.outcome, report.applied) == ("refused", good)
    assert "apps/pos/app.yaml:3: no image" in str(report.pending_reason)
    assert node.cluster.applied_revisions().count(broken) == 0


# -- the heartbeat (the tag's checks: tests/trust/test_node_heartbeat.py) ----------------------


def test_a_silent_heartbeat_warns_that_updates_may_be_withheld_and_refuses_nothing(
    running: tuple[Node, str],
) -> None:
    node, _ = running
    node.pipeline.max_silence = 6 * 3600
    node.pipeline.heartbeat_at = T0.timestamp() - 3600
    node.clock.now = T0 + timedelta(hours=4)
    report = node.tick()
    assert (report.outcome, report.warnings) == ("unchanged", [])
    assert node.status["heartbeat"]["updatesMayBeWithheld"] is False
    assert 'outpost_updates_may_be_withheld{site="de-muc-0007"} 0' in node.metrics
    assert "outpost_heartbeat_signed_timestamp_seconds" in node.metrics

    node.clock.now = T0 + timedelta(hours=8)
    newer = node.commit("later", ["v1/ConfigMap/pos/a"])
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", newer)
    [warning] = report.warnings
    assert warning.startswith(
        "updates may be withheld: the newest signed heartbeat is 9.0 h old "
        "(heartbeat.maxSilence 6 h)"
    )
    status = node.status["heartbeat"]
    assert (status["updatesMayBeWithheld"], status["silenceSeconds"]) == (True, 9 * 3600)
    assert 'outpost_updates_may_be_withheld{site="de-muc-0007"} 1' in node.metrics


def test_no_signed_heartbeat_counts_the_silence_from_when_the_node_began_watching(
    running: tuple[Node, str],
) -> None:
    node, _ = running
    node.pipeline.max_silence = 6 * 3600
    node.clock.now = T0 + timedelta(hours=7)
    [warning] = node.tick().warnings
    assert warning.startswith("updates may be withheld: no signed heartbeat in 7.0 h of watching")
    assert "outpost_heartbeat_signed_timestamp_seconds" not in node.metrics


def test_a_heartbeat_that_does_not_count_or_cannot_be_checked_is_a_warning(
    running: tuple[Node, str],
) -> None:
    node, _ = running
    note = "the heartbeat tag points at 0123456789ab, which is not the fetched head"
    node.pipeline.heartbeat_note = note
    report = node.tick()
    assert (report.outcome, report.warnings) == ("unchanged", [f"heartbeat not counted: {note}"])
    assert node.status["heartbeat"]["note"] == note

    problem = "fleets/plant.yaml:7: heartbeat.maxSilence '6 hours' is not a duration"
    node.pipeline.heartbeat_error = DocumentError(problem)
    report = node.tick()
    assert report.warnings == [f"the heartbeat could not be checked: {problem}"]
    assert (report.outcome, report.heartbeat, report.temporary) == ("unchanged", None, False)
    assert node.status["heartbeat"] is None


def test_records_set_aside_while_verifying_or_checking_the_heartbeat_are_warnings(
    running: tuple[Node, str],
) -> None:
    """The pipeline's word on an unreadable first-seen.json, trust-roots.json or
    heartbeat.json (tests/node/test_state_records.py) reaches the status."""
    node, _ = running
    seen = "/var/lib/outpost/first-seen.json: not JSON (Expecting value: line 1 column 1 (char 0)); moved it to first-seen.json.corrupt"
    beat = "/var/lib/outpost/heartbeat.json: is a named pipe (FIFO), not a regular file"
    node.pipeline.notes = (seen,)
    node.pipeline.heartbeat_unreadable = beat
    node.commit("second", ["v1/ConfigMap/pos/a"])
    report = node.tick()
    assert report.outcome == "applied", report
    assert seen in report.warnings and beat in report.warnings
    assert seen in node.status["warnings"] and beat in node.status["warnings"]


# -- waiting ------------------------------------------------------------------------------------


def test_a_gated_change_waits_with_its_reason_and_time(running: tuple[Node, str]) -> None:
    node, good = running
    newer = node.commit("later", ["v1/ConfigMap/pos/a"])
    until = T0 + timedelta(hours=23)
    node.pipeline.gate_says[newer] = GateDecision(False, "outside the store's window", until)
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("waiting", good, newer)
    assert report.pending_until == until.isoformat()
    assert node.status["pending"]["reason"] == "outside the store's window"
    assert node.cluster.applied_revisions().count(newer) == 0
    assert "outpost_last_success_timestamp_seconds" in node.metrics  # waiting is not failing
    node.pipeline.gate_says[newer] = GateDecision(False, "fleet paused")
    assert node.tick().pending_until is None
    del node.pipeline.gate_says[newer]
    assert node.tick().applied == newer


# -- first apply (spec.firstApply) ------------------------------------------------------------


def test_a_site_with_nothing_running_applies_its_first_revision_outside_its_window(
    node: Node,
) -> None:
    first = node.commit("enrolled", ["v1/ConfigMap/pos/a"])
    node.pipeline.gate_says[first] = GateDecision(False, "outside the store's window")
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", first)
    # the next change is gated as usual
    newer = node.commit("later", ["v1/ConfigMap/pos/b"])
    node.pipeline.gate_says[newer] = GateDecision(False, "outside the store's window")
    assert (node.tick().outcome, node.state.applied) == ("waiting", first)


def test_first_apply_gated_waits_for_the_window(node: Node) -> None:
    node.first_apply = "gated"
    first = node.commit("enrolled", ["v1/ConfigMap/pos/a"])
    node.pipeline.gate_says[first] = GateDecision(False, "outside the store's window")
    report = node.tick()
    assert (report.outcome, report.pending, report.applied) == ("waiting", first, None)
    assert node.cluster.applied_revisions() == []


def test_a_re_enrolled_site_whose_cluster_has_an_inventory_is_gated(node: Node) -> None:
    """A replaced box on a store whose cluster still runs the site: fresh state, but the
    inventory says something runs, so the first revision waits for the window."""
    node.cluster.inventory = ["v1/ConfigMap/pos/a"]
    first = node.commit("re-enrolled", ["v1/ConfigMap/pos/a"])
    node.pipeline.gate_says[first] = GateDecision(False, "outside the store's window")
    report = node.tick()
    assert (report.outcome, report.pending) == ("waiting", first)
    assert node.cluster.applied_revisions() == []


def test_a_site_whose_cluster_cannot_list_its_inventory_is_gated(node: Node) -> None:
    """Whether something runs cannot be told: the first revision waits for the window."""
    first = node.commit("enrolled", ["v1/ConfigMap/pos/a"])
    node.pipeline.gate_says[first] = GateDecision(False, "outside the store's window")
    node.cluster.fail["read_inventory"] = ClusterUnavailable("connection refused")
    report = node.tick()
    assert (report.outcome, report.pending) == ("waiting", first)
    assert node.cluster.applied_revisions() == []


# -- failed, rolled back ----------------------------------------------------------------------


def test_unhealthy_update_rolls_back_prunes_its_new_objects_and_is_not_retried(
    running: tuple[Node, str],
) -> None:
    node, good = running
    bad = node.commit("bad", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/new"])
    node.cluster.unhealthy.add(bad)
    node.clock.now = T0 + timedelta(hours=1)
    report = node.tick()
    assert (report.outcome, report.applied, report.health) == ("rolled-back", good, "healthy")
    assert report.error == (
        f"{bad[:12]} did not become healthy: Deployment pos/pos-server of {bad[:7]} "
        "is not Available"
    )
    # The good revision is back, the failed commit's new object is gone, b is back.
    assert {k: o["revision"] for k, o in node.cluster.objects.items()} == {
        "v1/ConfigMap/pos/a": good,
        "v1/ConfigMap/pos/b": good,
    }
    assert node.cluster.inventory == ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"]
    assert node.cluster.inventory_revision == good
    state = node.state
    assert (state.applied, state.last_good, state.failed) == (good, good, (bad,))
    assert state.inventory == ("v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b")
    assert node.applied_ref() == good
    status = node.status
    assert (status["outcome"], status["health"], status["failedRevisions"]) == (
        "rolled-back",
        "healthy",
        [bad],
    )
    assert status["lastError"] == report.error
    assert node.state.last_success_at == T0.timestamp()  # the first tick's, not this one's
    assert 'outpost_failed_revisions{site="de-muc-0007"} 1' in node.metrics

    again = node.tick()
    assert (again.outcome, again.pending) == ("failed-before", bad)
    assert "this commit is not retried: commit a fix" in str(again.pending_reason)
    assert node.cluster.applied_revisions().count(bad) == 1
    fixed = node.commit("fix", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == fixed


def test_server_refusing_an_object_mid_apply_rolls_back(running: tuple[Node, str]) -> None:
    node, good = running
    bad = node.commit("invalid object", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/new"])
    node.cluster.fail_on["apply"] = (bad, ApplyError("ConfigMap pos/new: data.x: Invalid value"))
    report = node.tick()
    assert report.outcome == "rolled-back"
    assert report.error == (
        f"{bad[:12]} did not become healthy: the API server refused it: "
        "ConfigMap pos/new: data.x: Invalid value"
    )
    assert node.state.failed == (bad,)
    assert node.state.applied == good


def test_first_commit_ever_unhealthy_has_nothing_to_roll_back_to(node: Node) -> None:
    first = node.commit("first", ["v1/ConfigMap/pos/a"])
    node.cluster.unhealthy.add(first)
    report = node.tick()
    assert (report.outcome, report.applied, report.health) == ("failed", None, "failed")
    assert node.cluster.applied_revisions() == [first]  # no rollback attempt
    # What the failed first install created is removed again (nothing half-applied).
    assert node.cluster.objects == {}
    assert (report.removed, report.leftover) == (1, [])
    state = node.state
    assert (state.applied, state.last_good, state.failed) == (None, None, (first,))
    assert state.inventory == ()
    status = node.status
    assert (status["outcome"], status["applied"]["revision"], status["lastGood"]) == (
        "failed",
        None,
        None,
    )
    assert status["failedRevisions"] == [first]
    # The inventory left under the failed revision is not taken for what runs, and the
    # state was not lost: the next tick says only that the commit failed before.
    again = node.tick()
    assert (again.outcome, again.applied, again.warnings) == ("failed-before", None, [])
    assert node.cluster.objects == {}


ANCHOR = (
    "admissionregistration.k8s.io/ValidatingAdmissionPolicy//outpost-policy-facts",
    "admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding//outpost-policy-facts",
)


def test_the_removal_of_a_failed_first_install_keeps_the_facts_anchor(node: Node) -> None:
    """The anchor is the last user of Kubernetes' ConfigMap parameter informer: removing it
    can leave every later install's Pods refused until the API server restarts
    (kubernetes/kubernetes#130887). Everything else the install applied goes, the facts
    ConfigMap and the site's other policies included; the status says why the anchor stays;
    and a site running only the anchor still counts as running nothing (firstApply)."""
    facts = "v1/ConfigMap/outpost-system/outpost-policy-facts"
    other = "admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding//outpost-registry"
    first = node.commit("first", ["v1/ConfigMap/pos/a", facts, other, *ANCHOR])
    node.cluster.unhealthy.add(first)
    report = node.tick()
    assert (report.outcome, report.applied) == ("failed", None)
    assert sorted(node.cluster.objects) == sorted(ANCHOR)
    assert (report.removed, report.leftover, report.kept) == (3, [], sorted(ANCHOR))
    assert node.state.inventory == tuple(sorted(ANCHOR))
    assert (node.cluster.inventory, node.cluster.inventory_revision) == (sorted(ANCHOR), "")
    leftover = node.status["leftover"]
    assert (leftover["removed"], leftover["objects"], leftover["kept"]) == (3, [], sorted(ANCHOR))
    assert "kubernetes/kubernetes#130887" in leftover["keptReason"]
    assert f"kept:       {ANCHOR[0]} (the site's policy-facts anchor stays" in format_status(
        node.status
    )

    # The fix is outside the window, and still a first apply: only the anchor was left.
    fixed = node.commit("fix", ["v1/ConfigMap/pos/a", facts, *ANCHOR])
    node.pipeline.gate_says[fixed] = GateDecision(False, "outside the store's window")
    after = node.tick()
    assert (after.outcome, after.applied) == ("applied", fixed)
    assert sorted(node.cluster.objects) == sorted(["v1/ConfigMap/pos/a", facts, *ANCHOR])


def test_an_anchor_beside_anything_else_is_a_site_with_something_running(node: Node) -> None:
    """Only the anchor alone counts as nothing running: a leftover beside it gates the fix."""
    node.cluster.inventory = [*ANCHOR, "v1/ConfigMap/pos/kept-by-hand"]
    first = node.commit("re-enrolled", ["v1/ConfigMap/pos/a", *ANCHOR])
    node.pipeline.gate_says[first] = GateDecision(False, "outside the store's window")
    assert (node.tick().outcome, node.cluster.applied_revisions()) == ("waiting", [])


def test_a_kill_while_a_failed_first_install_is_removed_never_installs_it_again(
    node: Node,
) -> None:
    """The failure is on record before the removal starts: the run after a kill finishes
    removing what the failed first install applied, and does not install it again."""
    first = node.commit("first", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"])
    node.cluster.unhealthy.add(first)
    tick_killed_at(node, "prune", None)
    state = node.state
    assert (state.applied, state.last_good, state.failed) == (None, None, (first,))
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"}

    after = node.tick()
    assert (after.outcome, after.applied, after.pending) == ("failed-before", None, first)
    assert node.cluster.applied_revisions() == [first]  # the killed run's only
    assert node.cluster.objects == {}
    assert (after.removed, after.leftover) == (2, [])
    assert node.state.inventory == ()
    assert node.status["leftover"] == {"removed": 2, "objects": []}
    later = node.tick()
    assert (later.outcome, later.warnings, later.leftover) == ("failed-before", [], None)


def test_a_failed_first_install_whose_removal_is_cut_off_lists_what_may_remain(
    node: Node,
) -> None:
    first = node.commit("first", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"])
    node.cluster.unhealthy.add(first)
    node.cluster.fail["prune"] = ClusterUnavailable("connection reset")
    report = node.tick()
    assert (report.outcome, report.temporary) == ("failed", True)
    assert report.error is not None and report.error.endswith(
        "; removing what the failed first install applied was interrupted "
        "(connection reset): up to 2 objects of it may remain"
    )
    assert report.leftover == ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"]
    assert node.status["leftover"] == {"removed": 0, "objects": report.leftover}


def test_rollback_that_stays_unhealthy_is_degraded(running: tuple[Node, str]) -> None:
    node, good = running
    bad = node.commit("bad", ["v1/ConfigMap/pos/a"])
    node.cluster.unhealthy.update({bad, good})
    report = node.tick()
    assert (report.outcome, report.applied, report.health) == ("rolled-back", good, "degraded")
    assert node.status["health"] == "degraded"
    # The next tick has nothing new to apply and nothing drifted: still degraded while the
    # good revision is not healthy, healthy once the cluster heals (nothing is re-applied).
    later = node.tick()
    assert (later.outcome, later.health) == ("failed-before", "degraded")
    assert node.status["health"] == "degraded"
    node.cluster.unhealthy.discard(good)
    applied = node.cluster.applied_revisions()
    healed = node.tick()
    assert (healed.outcome, healed.health) == ("failed-before", "healthy")
    assert node.cluster.applied_revisions() == applied


@pytest.mark.parametrize(
    ("error", "temporary"),
    [(ClusterUnavailable("the API server went away"), True), (ApplyError("refused"), False)],
)
def test_rollback_that_fails_is_interrupted_and_says_both_errors(
    running: tuple[Node, str], error: OutpostError, temporary: bool
) -> None:
    node, good = running
    bad = node.commit("bad", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/new"])
    node.cluster.unhealthy.add(bad)
    node.cluster.fail_on["apply"] = (good, error)
    report = node.tick()
    assert report.outcome == "interrupted"
    assert report.temporary is temporary
    assert report.error is not None
    assert report.error.startswith(f"{bad[:12]} did not become healthy")
    assert report.error.endswith(f"; rolling back was interrupted: {error}")
    state = node.state
    assert state.failed == (bad,)
    assert state.last_good == good
    # Nothing is forgotten: the failed commit's objects stay listed for the next prune.
    assert set(state.inventory) == {
        "v1/ConfigMap/pos/a",
        "v1/ConfigMap/pos/b",
        "v1/ConfigMap/pos/new",
    }
    assert node.status["lastError"] == report.error
    assert node.cluster.inventory is not None and "v1/ConfigMap/pos/new" in node.cluster.inventory
    # Next tick: the candidate failed before; drift correction brings the good revision back
    # and finishes the rollback: the failed commit's new object, listed, is pruned.
    node.cluster.fail_on.clear()
    again = node.tick()
    assert (again.outcome, again.drift, again.corrected) == ("failed-before", 1, 1)
    assert {k: o["revision"] for k, o in node.cluster.objects.items()} == {
        "v1/ConfigMap/pos/a": good,
        "v1/ConfigMap/pos/b": good,
    }
    assert (node.cluster.inventory_revision, node.cluster.complete) == (good, True)
    assert node.state.inventory == ("v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b")
    assert any("v1/ConfigMap/pos/new" in w for w in again.warnings), again.warnings
    fixed = node.commit("fix", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == fixed
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a"}


@pytest.mark.parametrize("method", ["apply", "wait_healthy"])
def test_a_kill_during_the_rollback_never_applies_the_failed_commit_again(
    running: tuple[Node, str], method: str
) -> None:
    """The failure is on record before the rollback starts: the run after a kill finishes
    going back to the good revision, prunes the failed commit's new object, and does not
    take the failed commit for a new one (applying it again, failing again, rolling back)."""
    node, good = running
    bad = node.commit("bad", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/new"])
    node.cluster.unhealthy.add(bad)
    tick_killed_at(node, method, good)
    state = node.state
    assert (state.applied, state.last_good, state.failed) == (good, good, (bad,))
    assert "v1/ConfigMap/pos/new" in state.inventory  # the failed commit's objects: listed
    assert node.cluster.objects["v1/ConfigMap/pos/new"]["revision"] == bad
    assert not node.cluster.complete
    assert "refs/outpost/failed/" + bad in Mirror(node.config.mirror_dir).repo.references

    after = node.tick()
    assert (after.outcome, after.applied, after.pending) == ("failed-before", good, bad)
    assert after.health == "healthy"
    assert node.cluster.deadlines[-1] == node.config.health_deadline  # waited, as a rollback
    assert node.cluster.applied_revisions().count(bad) == 1  # the first, killed, run's
    assert {k: o["revision"] for k, o in node.cluster.objects.items()} == {
        "v1/ConfigMap/pos/a": good,
        "v1/ConfigMap/pos/b": good,
    }
    assert node.cluster.inventory == ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b"]
    assert (node.cluster.inventory_revision, node.cluster.complete) == (good, True)
    assert node.state.inventory == ("v1/ConfigMap/pos/a", "v1/ConfigMap/pos/b")
    assert node.status["failedRevisions"] == [bad]


def test_a_rollback_finished_after_a_kill_that_stays_unhealthy_is_degraded(
    running: tuple[Node, str],
) -> None:
    node, good = running
    # The bad commit adds an object, so its apply widens the inventory (complete: false),
    # as the real cluster does: the next run sees the rollback was left unfinished.
    bad = node.commit("bad", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/new"])
    node.cluster.unhealthy.add(bad)
    tick_killed_at(node, "wait_healthy", good)
    node.cluster.unhealthy.add(good)
    after = node.tick()
    assert (after.outcome, after.health) == ("failed-before", "degraded")
    assert after.warnings == [
        f"going back to {good[:12]}, the revision this site runs, after an apply or a "
        "rollback was cut short: removed 1 object(s) it does not list: v1/ConfigMap/pos/new",
        f"{good[:12]}, the revision this site runs, is not healthy after going back to it: "
        f"Deployment pos/pos-server of {good[:7]} is not Available",
    ]
    assert (node.cluster.inventory_revision, node.cluster.complete) == (good, True)
    node.cluster.unhealthy.discard(good)
    healed = node.tick()
    assert (healed.outcome, healed.health, healed.warnings) == ("failed-before", "healthy", [])
    assert node.cluster.applied_revisions().count(bad) == 1


def test_apply_cut_off_is_interrupted_and_the_next_tick_converges(
    running: tuple[Node, str],
) -> None:
    node, good = running
    newer = node.commit("next", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/c"])
    node.cluster.fail["apply"] = ClusterUnavailable("connection reset by peer")
    report = node.tick()
    assert (report.outcome, report.applied, report.temporary) == ("interrupted", good, True)
    assert report.error == f"applying {newer[:12]} was interrupted: connection reset by peer"
    state = node.state
    assert state.applied == good
    assert state.failed == ()  # temporary: not held against the commit
    assert set(state.inventory) == {
        "v1/ConfigMap/pos/a",
        "v1/ConfigMap/pos/b",
        "v1/ConfigMap/pos/c",
    }
    assert node.tick().applied == newer
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a", "v1/ConfigMap/pos/c"}


def test_cluster_unreachable_at_connect_is_interrupted(running: tuple[Node, str]) -> None:
    node, good = running
    newer = node.commit("next", ["v1/ConfigMap/pos/a"])
    node.unreachable = ClusterUnavailable("no route to the API server")
    report = node.tick()
    assert (report.outcome, report.temporary) == ("interrupted", True)
    assert node.state.applied == good
    node.unreachable = None
    assert node.tick().applied == newer


# -- the source ---------------------------------------------------------------------------------


def test_an_unreachable_source_keeps_the_site_and_warns_when_stale(
    running: tuple[Node, str],
) -> None:
    node, good = running
    node.url = str(node.tmp / "gone")
    node.clock.now = T0 + timedelta(hours=2)
    report = node.tick()
    assert (report.outcome, report.applied, report.temporary) == ("unchanged", good, True)
    assert len(report.warnings) == 1 and "failed" in report.warnings[0]
    node.clock.now = T0 + timedelta(hours=49)
    report = node.tick()
    assert report.warnings[-1].startswith("the source has not answered for 49 h (limit 24 h)")
    status = node.status
    assert status["sourceLastAnswered"] == T0.isoformat()


def test_a_corrupt_state_file_is_set_aside_and_the_cluster_inventory_used(
    running: tuple[Node, str],
) -> None:
    node, _ = running
    (node.tmp / "state" / "state.json").write_text("{not json")
    newer = node.commit("only a", ["v1/ConfigMap/pos/a"])
    report = node.tick()
    assert report.outcome == "applied"
    assert report.applied == newer
    assert any("could not be read" in w for w in report.warnings)
    assert list((node.tmp / "state").glob("state.json.corrupt-*"))
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a"}  # pruned by the cluster's list


def test_a_state_file_whose_inventory_is_not_keys_is_set_aside(node: Node) -> None:
    """Inventory keys are compared and hashed (the facts anchor, prune): a wrong type in a
    hand-edited state.json is a corrupt file, set aside, never a crash in the tick."""
    (node.tmp / "state").mkdir(parents=True, exist_ok=True)
    (node.tmp / "state" / "state.json").write_text(
        json.dumps({"schema": 1, "site": SITE, "inventory": [["v1", "ConfigMap"], {"a": 1}]})
    )
    first = node.commit("first", ["v1/ConfigMap/pos/a"])
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", first)
    assert any("inventory: expected a list of object keys" in w for w in report.warnings)
    assert list((node.tmp / "state").glob("state.json.corrupt-*"))


# -- a lost state file (the recovery rules themselves: tests/node/test_recovery.py) -------------


def lose_state(node: Node) -> None:
    (node.tmp / "state" / "state.json").unlink()


def test_a_lost_state_file_is_recovered_from_the_cluster_inventory(
    running: tuple[Node, str],
) -> None:
    node, good = running
    lose_state(node)
    Mirror(node.config.mirror_dir).repo.references.delete(APPLIED_REF)
    report = node.tick()
    assert (report.outcome, report.applied, report.drift) == ("unchanged", good, 0)
    assert report.warnings == [
        f"the state file was lost; recovered the applied revision {good[:12]} from the "
        "cluster's inventory, 0 refused and 0 failed commit(s) from the mirror"
    ]
    assert (node.state.applied, node.state.last_good) == (good, good)
    assert node.cluster.applied_revisions() == [good]  # nothing applied again


def test_a_lost_state_file_is_recovered_from_the_mirror_when_the_cluster_has_no_record(
    running: tuple[Node, str],
) -> None:
    node, good = running
    lose_state(node)
    node.cluster.complete = False  # an apply cut short: the inventory names no revision
    newer = node.commit("only a", ["v1/ConfigMap/pos/a"])
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", newer)
    assert f"{good[:12]} from the mirror's {APPLIED_REF}" in report.warnings[0]
    assert ("verify", newer) in node.pipeline.calls


def test_a_lost_state_file_and_an_unreadable_cluster_consider_no_candidate(
    running: tuple[Node, str],
) -> None:
    """Believing nothing was applied could accept an older history than what runs."""
    node, _ = running
    lose_state(node)
    Mirror(node.config.mirror_dir).repo.references.delete(APPLIED_REF)
    node.cluster.fail["applied_revision"] = ClusterUnavailable("connection refused")
    newer = node.commit("next", ["v1/ConfigMap/pos/a"])
    report = node.tick()
    assert (report.outcome, report.applied, report.temporary) == ("unchanged", None, True)
    assert report.warnings == [
        "no applied revision on record and the cluster's inventory could not be read "
        "(connection refused); no candidate is considered until it can"
    ]
    assert ("verify", newer) not in node.pipeline.calls
    assert node.tick().applied == newer  # the cluster answers again


def test_a_recovered_revision_the_mirror_lacks_is_not_applied_until_the_source_brings_it(
    running: tuple[Node, str],
) -> None:
    node, good = running
    lose_state(node)
    shutil.rmtree(node.config.mirror_dir)
    node.url = None  # the source is out of reach too
    before = len(node.cluster.calls)
    report = node.tick()
    assert (report.outcome, report.applied, report.temporary) == ("unchanged", good, True)
    assert report.warnings[-1] == (
        f"this site runs {good[:12]}, which the source has not brought (its branch does "
        "not contain it); nothing is applied until it does"
    )
    assert [name for name, _ in node.cluster.calls[before:]] == ["applied_revision"]
    node.url = str(node.source.path)
    assert (node.tick().outcome, node.state.applied) == ("unchanged", good)


# -- the source moved back ----------------------------------------------------------------------


def test_a_source_branch_moved_back_is_reported_and_the_site_keeps_what_it_runs(
    running: tuple[Node, str],
) -> None:
    node, good = running
    newer = node.commit("next", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == newer
    node.source.repo.references["refs/heads/main"].set_target(good)
    report = node.tick()
    assert (report.applied, report.source_behind, report.source_head) == (newer, 1, good)
    assert report.warnings == [
        f"the source's main is 1 commit behind what this site runs (main is at {good[:12]}, "
        f"an ancestor of {newer[:12]}); the site keeps what it runs and takes nothing from "
        "the source until its branch moves forward again"
    ]
    assert node.cluster.applied_revisions().count(good) == 1  # the first tick's only


# -- bundles (the importer itself is tested for real in tests/airgap) --------------------------


@dataclass(frozen=True)
class FakeBundle:
    name: str
    outcome: str
    message: str = ""
    note: str | None = None


def test_bundle_outcomes_feed_the_mirror_and_the_warnings(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real importer needs signed bundles from ``outpost bundle create``; here it is
    replaced by one that moves the candidate like the real one, to drive the agent's
    handling of each outcome."""
    first = node.commit("first", ["v1/ConfigMap/pos/a"])
    import reconciler.node.inbox as bundle

    def import_inbox(mirror: Mirror, inbox: Path, *, now: datetime) -> list[FakeBundle]:
        mirror.repo.remotes.create_anonymous(node.source.path.as_uri()).fetch(
            ["+refs/heads/main:refs/outpost/candidate"]
        )
        return [
            FakeBundle("a.bundle", "imported"),
            FakeBundle("b.bundle", "replay"),
            FakeBundle("c.bundle", "rejected", "unknown signer"),
            FakeBundle("d.bundle", "unavailable", "I/O error"),
            FakeBundle("e.bundle", "replay", note="older than what runs here"),
        ]

    monkeypatch.setattr(bundle, "import_inbox", import_inbox)
    node.url = None
    node.inbox = node.tmp / "inbox"
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", first)
    assert report.warnings == [
        "bundle c.bundle refused: unknown signer",
        "bundle d.bundle not read: I/O error",
        "bundle e.bundle: older than what runs here",
    ]
    assert report.temporary
    assert node.state.fetched == first
    assert node.state.source_answered_at == T0.timestamp()


def test_an_unreadable_inbox_is_temporary(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    import reconciler.node.inbox as bundle

    def import_inbox(mirror: Mirror, inbox: Path, *, now: datetime) -> list[FakeBundle]:
        raise SourceUnavailable("cannot list /media/outpost: Input/output error")

    monkeypatch.setattr(bundle, "import_inbox", import_inbox)
    node.url = None
    node.inbox = node.tmp / "inbox"
    report = node.tick()
    assert (report.outcome, report.temporary) == ("unchanged", True)
    assert report.warnings == ["cannot list /media/outpost: Input/output error"]


def test_a_refused_candidate_is_unpinned_so_a_corrected_bundle_can_import(
    running: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, good = running
    bad = node.commit("bad", ["x"])
    node.pipeline.refuse[bad] = VerificationError("unknown key")
    assert node.tick().outcome == "refused"
    import reconciler.node.inbox as bundle

    seen: list[str | None] = []

    def import_inbox(mirror: Mirror, inbox: Path, *, now: datetime) -> list[FakeBundle]:
        seen.append(mirror.resolve("refs/outpost/candidate"))
        return []

    monkeypatch.setattr(bundle, "import_inbox", import_inbox)
    node.url = None
    node.inbox = node.tmp / "inbox"
    node.tick()
    assert seen == [good]  # the refused candidate was replaced by what runs here


# -- records ------------------------------------------------------------------------------------


def test_metrics_without_any_source_answer(tmp_path: Path) -> None:
    from reconciler.node.agent import TickReport

    text = metrics_text(SITE, AgentState(site=SITE), TickReport(outcome="failed"), T0)
    assert "outpost_source_last_answer_timestamp_seconds" not in text
    assert "outpost_last_success_timestamp_seconds" not in text
    assert 'outpost_applied_info{revision="",site="de-muc-0007"} 1' in text


def test_log_lines_are_one_json_object_each() -> None:
    record = logging.makeLogRecord(
        {"name": "outpost.agent", "levelname": "INFO", "msg": "applied", "revision": "abc"}
    )
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["msg"], entry["level"], entry["revision"]) == ("applied", "info", "abc")


def test_text_log_lines_carry_their_fields_and_the_format_follows_systemd() -> None:
    record = logging.makeLogRecord(
        {"name": "outpost.agent", "levelname": "WARNING", "msg": "drift", "objects": 2}
    )
    assert TextFormatter().format(record).endswith(" warning drift  objects=2")
    bare = logging.makeLogRecord({"name": "outpost.agent", "levelname": "INFO", "msg": "done"})
    assert TextFormatter().format(bare).endswith(" info    done")
    assert log_format("text", {"JOURNAL_STREAM": "8:1"}) == "text"
    assert log_format("auto", {"INVOCATION_ID": "x"}) == "json"
    assert log_format("auto", {}) == "text"


def test_temporary_files_of_a_killed_write_are_cleared_under_the_lock(node: Node) -> None:
    """A kill between writing a temp file and renaming it leaves the temp behind; the next
    tick, holding the lock, removes it (and nothing else)."""
    state_dir = node.tmp / "state"
    state_dir.mkdir()
    stale = state_dir / ".state.json.k1ll3d.tmp"
    stale.write_text('{"half": ')
    kept = state_dir / "notes.tmp"
    kept.write_text("not ours to judge")
    node.commit("first", ["v1/ConfigMap/pos/a"])
    assert node.tick().outcome == "applied"
    assert not stale.exists()
    assert kept.exists()
    assert sorted(p.name for p in state_dir.glob(".*.tmp")) == []
