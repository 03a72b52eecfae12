"""The tick's decision table, fast: every outcome of ``Agent.tick`` without a cluster.

The git side is real (a source repository made with pygit2, fetched into the agent's own
bare mirror), and so are the state directory, the lock, the status and the metrics files.
Two seams are in-memory fakes, because these tests are about the agent's rules, not about
what is behind the seams (each has its own real-thing tests):

- ``FakePipeline`` stands for trust, render and the gate (``tests/trust``, ``tests/render``,
  ``tests/schedule``): each revision's verdict, slice and gate decision are set by the test;
- ``FakeCluster`` stands for ``apply`` on the API server (``tests/cluster``): objects,
  inventory and health per revision live in dicts, and any call can be made to fail.

The cluster suite's rollback tests run the same outcomes against the real control plane.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.core.errors import (
    ApplyError,
    ClusterUnavailable,
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
    Verified,
    metrics_text,
)
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.fetch import APPLIED_REF, Mirror
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
    """Verdicts per revision: slices (``keys``), refusals, gate decisions."""

    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refuse: dict[str, PermanentError] = field(default_factory=dict)
    temporary: dict[str, TemporaryError] = field(default_factory=dict)
    gate_says: dict[str, GateDecision] = field(default_factory=dict)
    broken_render: dict[str, OutpostError] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def verify(self, mirror: Mirror, since: str | None, candidate: str, now: datetime) -> Verified:
        self.calls.append(("verify", candidate))
        assert mirror.has(candidate), "the candidate is in the agent's own mirror"
        if candidate in self.refuse:
            raise self.refuse[candidate]
        if candidate in self.temporary:
            raise self.temporary[candidate]
        return Verified(candidate, now - timedelta(hours=1), False, "", 1)

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
    unhealthy: set[str] = field(default_factory=set)
    drifted: set[str] = field(default_factory=set)
    fail: dict[str, Exception] = field(default_factory=dict)
    fail_on: dict[str, tuple[str, Exception]] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    labelled: list[str] = field(default_factory=list)

    def _maybe_fail(self, method: str, revision: str | None = None) -> None:
        if method in self.fail:
            raise self.fail.pop(method)
        if method in self.fail_on and self.fail_on[method][0] == revision:
            raise self.fail_on[method][1]

    def apply(self, objects: Sequence[Mapping[str, Any]], *, revision: str) -> Any:
        self.calls.append(("apply", revision))
        # Like ResourceManager.apply: the inventory is widened before anything is sent.
        self.inventory = sorted(set(self.inventory or ()) | {o["key"] for o in objects})
        self.inventory_revision = None  # an apply under way records no complete revision
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
        self._maybe_fail("wait_healthy", revision)
        if revision in self.unhealthy:
            return Health(False, f"Deployment pos/pos-server of {revision[:7]} is not Available")
        return Health(True)

    def read_inventory(self) -> Sequence[str] | None:
        self.calls.append(("read_inventory", None))
        self._maybe_fail("read_inventory")
        return None if self.inventory is None else list(self.inventory)

    def applied_revision(self) -> str | None:
        """Like ManagerCluster: the revision of the last complete inventory write."""
        self.calls.append(("applied_revision", None))
        self._maybe_fail("applied_revision")
        return self.inventory_revision or None

    def label_nodes(self, desired: Desired) -> Sequence[str]:
        self.calls.append(("label_nodes", desired.revision))
        self.labelled.append(desired.revision)
        return []

    def write_inventory(self, keys: Sequence[str], revision: str) -> None:
        self.calls.append(("write_inventory", revision))
        self._maybe_fail("write_inventory")
        self.inventory = list(keys)
        self.inventory_revision = revision

    def applied_revisions(self) -> list[str]:
        return [arg for name, arg in self.calls if name == "apply"]


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


def test_no_cluster_is_contacted_when_nothing_was_ever_applied(node: Node) -> None:
    node.url = str(node.tmp / "empty")
    pygit2.init_repository(str(node.tmp / "empty"), bare=True)
    report = node.tick()
    assert report.outcome == "unchanged"
    assert report.temporary  # the remote has no branch main yet
    assert node.connects == 0
    assert node.status["applied"]["revision"] is None


# -- refused ------------------------------------------------------------------------------------


def test_a_refused_candidate_is_remembered_and_never_verified_again(
    running: tuple[Node, str],
) -> None:
    node, good = running
    bad = node.commit("unsigned", ["v1/ConfigMap/pos/x"])
    node.pipeline.refuse[bad] = VerificationError(f"commit {bad[:7]} is not signed")
    report = node.tick()
    assert (report.outcome, report.applied, report.pending) == ("refused", good, bad)
    assert report.error == f"commit {bad[:7]} is not signed"
    assert node.state.refused == {bad: f"commit {bad[:7]} is not signed"}
    assert "v1/ConfigMap/pos/x" not in node.cluster.objects
    assert node.status["pending"] == {
        "revision": bad,
        "reason": f"commit {bad[:7]} is not signed",
        "until": None,
    }
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
    assert "outpost_last_success_timestamp_seconds" not in node.metrics
    assert report.health == "healthy"  # the drift check ran all the same
    del node.pipeline.temporary[newer]
    assert node.tick().applied == newer


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


# -- failed, rolled back ----------------------------------------------------------------------


def test_unhealthy_update_rolls_back_prunes_its_new_objects_and_is_not_retried(
    running: tuple[Node, str],
) -> None:
    node, good = running
    bad = node.commit("bad", ["v1/ConfigMap/pos/a", "v1/ConfigMap/pos/new"])
    node.cluster.unhealthy.add(bad)
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
    assert "outpost_last_success_timestamp_seconds" not in node.metrics
    assert 'outpost_failed_revisions{site="de-muc-0007"} 1' in node.metrics

    again = node.tick()
    assert (again.outcome, again.pending) == ("failed-before", bad)
    assert "not retried until a newer commit arrives" in str(again.pending_reason)
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
    state = node.state
    assert (state.applied, state.last_good, state.failed) == (None, None, (first,))
    # The union went on record before the apply: what the failed commit created is listed.
    assert state.inventory == ("v1/ConfigMap/pos/a",)
    status = node.status
    assert (status["outcome"], status["applied"]["revision"], status["lastGood"]) == (
        "failed",
        None,
        None,
    )
    assert status["failedRevisions"] == [first]
    assert node.tick().outcome == "failed-before"


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
    # Next tick: the candidate failed before; drift correction brings the good revision back.
    node.cluster.fail_on.clear()
    again = node.tick()
    assert (again.outcome, again.drift, again.corrected) == ("failed-before", 1, 1)
    assert node.cluster.objects["v1/ConfigMap/pos/a"]["revision"] == good
    # The failed commit's new object is listed, so the next successful apply prunes it.
    fixed = node.commit("fix", ["v1/ConfigMap/pos/a"])
    assert node.tick().applied == fixed
    assert set(node.cluster.objects) == {"v1/ConfigMap/pos/a"}


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


# -- bundles (the importer itself is tested for real in tests/airgap) --------------------------


@dataclass(frozen=True)
class FakeBundle:
    name: str
    outcome: str
    message: str = ""


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
        ]

    monkeypatch.setattr(bundle, "import_inbox", import_inbox)
    node.url = None
    node.inbox = node.tmp / "inbox"
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", first)
    assert report.warnings == [
        "bundle c.bundle refused: unknown signer",
        "bundle d.bundle not read: I/O error",
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
