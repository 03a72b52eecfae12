"""The agent reports what happened, not what it hoped: success, times, leftovers, reasons.

The tick's decision logic runs here with a real git source and mirror, and in-memory
stand-ins for the pipeline and the cluster (the two `Protocol`s the agent is written
against), so each outcome can be forced in milliseconds. The same outcomes on the real
control plane are in ``tests/cluster/test_agent_explains.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.cli import main
from reconciler.cli.agent import format_status
from reconciler.core.errors import ClusterUnavailable, ValidationError, VerificationError
from reconciler.node.agent import (
    Agent,
    Desired,
    GateDecision,
    JsonFormatter,
    TextFormatter,
    TickReport,
    Verified,
    log_format,
    metrics_text,
    status_document,
    succeeded,
)
from reconciler.node.config import load_config
from reconciler.node.state import AgentState, StateStore

T0 = datetime(2027, 2, 2, 21, 45, tzinfo=UTC)
KEYS = ("Namespace/pos", "ConfigMap/pos/pos-config", "Deployment.apps/pos/pos-server")


class TickingClock:
    """Each reading is one minute later: a tick's steps happen at different times."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@dataclass(frozen=True)
class Health:
    healthy: bool
    text: str = ""

    def summary(self) -> str:
        return self.text


class FakePipeline:
    """Every candidate verifies, renders to KEYS and passes its gate, unless told otherwise."""

    def __init__(self) -> None:
        self.unsigned: set[str] = set()
        self.invalid: set[str] = set()

    def verify(self, mirror: Any, since: str | None, candidate: str, now: datetime) -> Verified:
        if candidate in self.unsigned:
            raise VerificationError(f"commit {candidate[:7]}: not signed")
        return Verified(candidate, now, False, "", 1)

    def desired(self, mirror: Any, revision: str, *, checks: bool = True) -> Desired:
        if checks and revision in self.invalid:
            raise ValidationError("sites/x/site.yaml:3: unknown field(s) 'tmezone'")
        objects = tuple({"key": k} for k in KEYS)
        return Desired(revision, objects, KEYS)

    def gate(
        self, mirror: Any, verified: Verified, desired: Desired, now: datetime
    ) -> GateDecision:
        return GateDecision(True, "in window")

    def freshness(self, mirror: Any, applied: str | None, head: str | None, now: datetime) -> None:
        return None  # no heartbeat in these tests (tests/trust/test_node_heartbeat.py has one)


@dataclass
class FakeCluster:
    """The cluster as the agent sees it; ``healthy`` decides the health wait's verdict."""

    healthy: bool = False
    prune_fails: bool = False
    keep: tuple[str, ...] = ()  # keys prune leaves (not this site's, or prune disabled)
    missing_nodes: tuple[str, ...] = ()
    pruned: list[tuple[list[str], list[str]]] = field(default_factory=list)
    inventory: list[str] | None = None
    revision: str | None = None  # the inventory's, once an apply completed (ManagerCluster)

    def apply(self, objects: Sequence[Mapping[str, Any]], *, revision: str) -> None:
        self.revision = None  # the inventory is widened first and names no revision

    def drift(self, objects: Sequence[Mapping[str, Any]]) -> Sequence[str]:
        return []

    def prune(self, previous: Sequence[str], desired: Sequence[str]) -> Sequence[str]:
        if self.prune_fails:
            raise ClusterUnavailable("the API server at https://127.0.0.1:6443 did not answer")
        self.pruned.append((list(previous), list(desired)))
        return [k for k in previous if k not in desired and k not in self.keep]

    def wait_healthy(
        self, objects: Sequence[Mapping[str, Any]], *, deadline_seconds: float
    ) -> Health:
        if self.healthy:
            return Health(True)
        return Health(
            False,
            "1 of 3 objects not ready after 300s: Deployment.apps/pos/pos-server: 0 of 1 "
            "updated replicas available; pod pos-server-abc: Unschedulable: 0/1 nodes are "
            "available: 1 node(s) didn't match Pod's node affinity/selector.",
        )

    def read_inventory(self) -> Sequence[str] | None:
        return self.inventory

    def applied_revision(self) -> str | None:
        return self.revision

    def label_nodes(self, desired: Desired) -> Sequence[str]:
        return [f"hardware.yaml names node {n!r}, but no node in the cluster has that name"
                for n in self.missing_nodes]  # fmt: skip

    def write_inventory(self, keys: Sequence[str], revision: str) -> None:
        self.inventory = list(keys)
        self.revision = revision


class Source:
    """A real git repository the agent fetches from (a local path is a remote to git)."""

    def __init__(self, path: Path) -> None:
        self.repo = pygit2.init_repository(str(path), initial_head="main")
        self.path = path
        self.n = 0

    def commit(self) -> str:
        self.n += 1
        (self.path / "file").write_text(str(self.n))
        self.repo.index.add_all()
        self.repo.index.write()
        tree = self.repo.index.write_tree()
        sig = pygit2.Signature("t", "t@example.com", 1_800_000_000 + self.n, 0)
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        return str(self.repo.create_commit("HEAD", sig, sig, f"c{self.n}", tree, parents))


@pytest.fixture
def source(tmp_path: Path) -> Source:
    return Source(tmp_path / "source")


def make_agent(tmp_path: Path, cluster: FakeCluster, *, url: str | None) -> Agent:
    config = tmp_path / "agent.yaml"
    spec = f'  source: {{url: "{url}", branch: main}}\n' if url else "  bundleInbox: inbox\n"
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
        f"{spec}  trustRoot: allowed_signers\n  stateDir: state\n  metricsDir: metrics\n"
    )
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return Agent(
        load_config(config), pipeline=FakePipeline(), cluster=lambda: cluster, clock=TickingClock()
    )


def status(tmp_path: Path) -> dict[str, Any]:
    found = StateStore(tmp_path / "state").read_status()
    assert found is not None
    return found


def metrics(tmp_path: Path) -> str:
    return (tmp_path / "metrics/outpost.prom").read_text()


# -- success means a revision applied and healthy ------------------------------------------


def test_a_tick_that_applied_nothing_is_not_a_success(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, FakeCluster(), url=None)  # an empty inbox: nothing to apply
    report = agent.tick()
    assert (report.outcome, report.error) == ("unchanged", None)
    assert "outpost_last_success_timestamp_seconds" not in metrics(tmp_path)
    assert status(tmp_path)["lastSuccess"] is None
    assert "success:    last never" in format_status(status(tmp_path))


def test_success_is_stamped_when_the_tick_ends_and_kept_through_failures(
    tmp_path: Path, source: Source
) -> None:
    cluster = FakeCluster(healthy=True)
    agent = make_agent(tmp_path, cluster, url=source.path.as_uri())
    source.commit()
    assert agent.tick().outcome == "applied"
    first = status(tmp_path)
    assert first["lastSuccess"] == first["time"]  # the end of the tick, not its start
    assert first["started"] < first["time"]
    stamp = datetime.fromisoformat(first["lastSuccess"]).timestamp()
    assert f'outpost_last_success_timestamp_seconds{{site="de-muc-0007"}} {int(stamp)}' in metrics(
        tmp_path
    )

    cluster.healthy = False  # the next commit fails and is rolled back
    source.commit()
    assert agent.tick().outcome == "rolled-back"
    after = status(tmp_path)
    assert after["lastSuccess"] == first["lastSuccess"]  # a rollback is not a success...
    assert f"{int(stamp)}" in metrics(tmp_path)  # ...and the last one is still exported


@pytest.mark.parametrize(
    ("applied", "outcome", "error", "temporary", "health", "expected"),
    [
        ("abc", "applied", None, False, "healthy", True),
        ("abc", "unchanged", None, False, "healthy", True),
        ("abc", "waiting", None, False, "healthy", True),
        (None, "waiting", None, False, "unknown", False),  # first install waits: nothing runs
        (None, "unchanged", None, False, "unknown", False),
        (None, "failed", "x", False, "failed", False),
        ("abc", "rolled-back", "x", False, "healthy", False),
        ("abc", "unchanged", None, True, "healthy", False),  # the source did not answer
        ("abc", "refused", "unsigned", False, "healthy", False),
        ("abc", "unchanged", None, False, "degraded", False),
    ],
)
def test_what_counts_as_success(
    applied: str | None,
    outcome: str,
    error: str | None,
    temporary: bool,
    health: str,
    expected: bool,
) -> None:
    report = TickReport(outcome=outcome, error=error, temporary=temporary, health=health)
    assert succeeded(AgentState(applied=applied), report) is expected


# -- a failed first install ---------------------------------------------------------------


def test_a_failed_first_install_is_removed_and_the_status_says_so(
    tmp_path: Path, source: Source
) -> None:
    cluster = FakeCluster(healthy=False)
    agent = make_agent(tmp_path, cluster, url=source.path.as_uri())
    bad = source.commit()
    report = agent.tick()
    assert report.outcome == "failed"
    assert cluster.pruned == [(sorted(KEYS), [])]  # everything it applied, nothing desired
    assert cluster.inventory == []
    doc = status(tmp_path)
    assert doc["applied"]["revision"] is None
    assert doc["inventory"] == 0  # nothing listed as running when nothing is
    assert doc["leftover"] == {"removed": 3, "objects": []}
    assert doc["failed"] == [
        {"revision": bad, "reason": cluster.wait_healthy([], deadline_seconds=0).text}
    ]
    # the failure was found after the tick began, and the report was written after that
    assert doc["started"] < doc["lastErrorAt"] < doc["time"]
    text = format_status(doc)
    assert (
        "applied:    nothing yet (the failed install was removed again: 3 objects deleted)" in text
    )
    assert f"failed:     {bad[:12]}: 1 of 3 objects not ready" in text
    assert "Unschedulable" in text and "(not retried)" in text

    again = agent.tick()
    assert again.outcome == "failed-before"
    assert again.pending_reason is not None
    assert "Unschedulable" in again.pending_reason
    assert "commit a fix (or a revert)" in again.pending_reason
    assert "outpost_last_success_timestamp_seconds" not in metrics(tmp_path)


def test_what_a_failed_first_install_could_not_remove_is_listed(
    tmp_path: Path, source: Source
) -> None:
    cluster = FakeCluster(healthy=False, keep=("Namespace/pos",))
    agent = make_agent(tmp_path, cluster, url=source.path.as_uri())
    source.commit()
    agent.tick()
    doc = status(tmp_path)
    assert doc["leftover"] == {"removed": 2, "objects": ["Namespace/pos"]}
    assert doc["inventory"] == 1
    text = format_status(doc)
    assert "2 objects deleted; 1 not removed, see below" in text
    assert "left:       Namespace/pos (not removed" in text


def test_an_interrupted_removal_says_what_may_remain(tmp_path: Path, source: Source) -> None:
    cluster = FakeCluster(healthy=False, prune_fails=True)
    agent = make_agent(tmp_path, cluster, url=source.path.as_uri())
    source.commit()
    report = agent.tick()
    assert report.outcome == "failed" and report.temporary
    assert report.error is not None and "up to 3 objects of it may remain" in report.error
    assert status(tmp_path)["leftover"]["objects"] == sorted(KEYS)


# -- refused and failed revisions, with reasons -------------------------------------------


def test_text_status_lists_failed_and_refused_revisions_with_reasons() -> None:
    state = AgentState(
        site="s",
        applied="a" * 40,
        failed=("b" * 40,),
        failed_reasons={"b" * 40: "pod p: container c: ImagePullBackOff"},
        refused={"c" * 40: "commit ccccccc is not signed"},
    )
    doc = status_document("s", state, TickReport(), T0)
    text = format_status(doc)
    assert f"failed:     {'b' * 12}: pod p: container c: ImagePullBackOff (not retried)" in text
    assert f"refused:    {'c' * 12}: commit ccccccc is not signed (never retried)" in text


def test_a_refusal_says_what_to_do_and_says_it_again_next_tick(
    tmp_path: Path, source: Source
) -> None:
    agent = make_agent(tmp_path, FakeCluster(healthy=True), url=source.path.as_uri())
    pipeline = agent.pipeline
    assert isinstance(pipeline, FakePipeline)
    good = source.commit()
    agent.tick()
    invalid = source.commit()  # signed, but its content breaks a schema
    pipeline.invalid.add(invalid)
    content = agent.tick()
    assert content.outcome == "refused" and content.pending_reason is not None
    assert content.pending_reason.endswith("never retried: commit a fix on top of it")

    unsigned = source.commit()
    pipeline.unsigned.add(unsigned)
    first = agent.tick()
    assert first.outcome == "refused"
    assert first.pending_reason is not None
    assert "nothing built on it is applied: rewrite the branch without it" in first.pending_reason
    assert f"from {good[:12]}" in first.pending_reason  # a fix on top would still contain it
    assert agent.tick().pending_reason == first.pending_reason
    refused = status(tmp_path)["refused"]
    assert refused[-1] == {"revision": unsigned, "reason": first.pending_reason}


def test_a_missing_hardware_node_is_a_warning_in_the_status(tmp_path: Path, source: Source) -> None:
    cluster = FakeCluster(healthy=True, missing_nodes=("edge-1",))
    agent = make_agent(tmp_path, cluster, url=source.path.as_uri())
    source.commit()
    assert agent.tick().outcome == "applied"
    warnings = status(tmp_path)["warnings"]
    assert any("'edge-1'" in w and "no node in the cluster" in w for w in warnings)


def test_metrics_without_a_success_have_no_success_sample() -> None:
    text = metrics_text("s", AgentState(), TickReport(outcome="unchanged"), T0)
    assert "outpost_last_success_timestamp_seconds" not in text
    text = metrics_text("s", AgentState(last_success_at=123.0), TickReport(outcome="failed"), T0)
    assert 'outpost_last_success_timestamp_seconds{site="s"} 123' in text


# -- logs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "environ", "expected"),
    [
        ("auto", {}, "text"),
        ("auto", {"INVOCATION_ID": "0a1b"}, "json"),
        ("auto", {"JOURNAL_STREAM": "8:12345"}, "json"),
        ("text", {"INVOCATION_ID": "0a1b"}, "text"),
        ("json", {}, "json"),
    ],
)
def test_log_format(choice: str, environ: dict[str, str], expected: str) -> None:
    assert log_format(choice, environ) == expected


def test_log_lines_in_both_formats() -> None:
    record = logging.makeLogRecord(
        {"name": "outpost.agent", "levelname": "WARNING", "msg": "rolled back",
         "created": T0.timestamp(), "revision": "abc"}
    )  # fmt: skip
    assert TextFormatter().format(record) == "21:45:00Z warning rolled back  revision=abc"
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["msg"], entry["level"], entry["revision"]) == ("rolled back", "warning", "abc")


def test_agent_run_takes_a_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["agent", "run", "--help"])
    assert "--log-format {auto,text,json}" in capsys.readouterr().out
