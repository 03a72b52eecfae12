"""A tick with nothing new checks drift from the applied slice's record instead of rendering it.

The fakes of ``test_agent_tick`` gain what `NodePipeline` and `ManagerCluster` offer for it:
the record's basis and the Secrets alone (pipeline), the fingerprints of a slice and the
drift check from them (cluster, here a digest of each live object standing in for the
resourceVersion the real one compares).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_agent_tick import (
    T0,
    Clock,
    FakeCluster,
    FakePipeline,
    Node,
    Source,
    obj,
    tick_killed_at,
)

from reconciler.node.agent import Desired
from reconciler.node.fetch import Mirror
from reconciler.node.pipeline import NodeDesired

SECRET = "v1/Secret/pos/till-pin"
PIN = "hunter2-4711"


def _digest(value: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class RecordingPipeline(FakePipeline):
    """Slices as the fake's, plus one decrypted Secret per revision when ``with_secret``."""

    day: str = "2027-02-02"
    with_secret: bool = False

    def desired(self, mirror: Mirror, revision: str, *, checks: bool = True) -> Desired:
        plain = super().desired(mirror, revision, checks=checks)
        secrets = self.secrets(mirror, revision, record=False) if self.with_secret else ()
        return NodeDesired(
            revision,
            (*plain.objects, *secrets),
            (*plain.keys, *(s["key"] for s in secrets)),
            secrets=len(secrets),
        )

    def record_basis(self, revision: str) -> str:
        return f"{self.day}/{revision}"

    def secrets(
        self, mirror: Mirror, revision: str, *, record: bool = True
    ) -> tuple[Mapping[str, Any], ...]:
        if record:
            self.calls.append(("secrets", revision))
        if not self.with_secret:
            return ()
        return ({"key": SECRET, "revision": revision, "data": PIN},)


@dataclass
class RecordingCluster(FakeCluster):
    vouched: list[int] = field(default_factory=list)

    def record(self, objects: Sequence[Mapping[str, Any]]) -> list[Any] | None:
        if any(o["key"].split("/")[1] == "Secret" for o in objects):
            return None  # like the real one: a Secret has no fingerprint
        return [[{"key": o["key"], "revision": o["revision"]}, _digest(o)] for o in objects]

    def drift_recorded(
        self, recorded: Sequence[Any], objects: Sequence[Mapping[str, Any]]
    ) -> Sequence[str] | None:
        self.calls.append(("drift_recorded", len(recorded)))
        for skeleton, digest in recorded:
            live = self.objects.get(skeleton["key"])
            if live is None or skeleton["key"] in self.drifted or _digest(live) != digest:
                return None
        self.vouched.append(len(recorded))
        return self.drift(objects) if objects else []


@pytest.fixture
def node(tmp_path: Path) -> Node:
    source = Source(tmp_path / "source")
    return Node(
        tmp_path, source, RecordingPipeline(), RecordingCluster(), Clock(T0), str(source.path)
    )


def _running(node: Node) -> str:
    good = node.commit("first", ["v1/ConfigMap/pos/a", "apps/v1/Deployment/pos/b"])
    assert node.tick().outcome == "applied"
    return good


def _renders(node: Node, since: int) -> list[tuple[str, str]]:
    return [c for c in node.pipeline.calls[since:] if c[0].startswith("desired")]


def test_the_first_quiet_tick_records_and_the_next_ones_do_not_render(node: Node) -> None:
    good = _running(node)
    first = node.tick()  # renders, checks drift, records the slice
    assert (first.outcome, first.drift) == ("unchanged", 0)
    assert ("desired-unchecked", good) in node.pipeline.calls
    record = json.loads((node.tmp / "state" / "slice.json").read_text())
    assert record["revision"] == good and len(record["objects"]) == 2
    before = len(node.pipeline.calls)
    for _ in range(3):
        report = node.tick()
        assert (report.outcome, report.drift, report.health) == ("unchanged", 0, "healthy")
    assert _renders(node, before) == []
    assert isinstance(node.cluster, RecordingCluster) and node.cluster.vouched == [2, 2, 2]
    assert node.status["outcome"] == "unchanged"


def test_a_touched_object_sends_the_tick_down_the_full_path_which_corrects_it(
    node: Node,
) -> None:
    good = _running(node)
    node.tick()
    node.cluster.objects["v1/ConfigMap/pos/a"]["data"] = "edited by hand"
    before = len(node.pipeline.calls)
    report = node.tick()
    assert (report.drift, report.corrected) == (1, 1)
    assert _renders(node, before) == [("desired-unchecked", good)]
    assert node.cluster.objects["v1/ConfigMap/pos/a"] == obj("v1/ConfigMap/pos/a", good)
    before = len(node.pipeline.calls)
    assert node.tick().drift == 0
    assert _renders(node, before) == []  # in line again: the record vouches


def test_a_deleted_object_is_not_vouched_for(node: Node) -> None:
    _running(node)
    node.tick()
    del node.cluster.objects["apps/v1/Deployment/pos/b"]
    report = node.tick()
    assert (report.drift, report.corrected) == (1, 1)
    assert "apps/v1/Deployment/pos/b" in node.cluster.objects


def test_another_basis_renders_again(node: Node) -> None:
    good = _running(node)
    node.tick()
    assert isinstance(node.pipeline, RecordingPipeline)
    node.pipeline.day = "2027-02-03"  # an exemption may have expired overnight
    before = len(node.pipeline.calls)
    node.tick()
    assert _renders(node, before) == [("desired-unchecked", good)]
    before = len(node.pipeline.calls)
    node.tick()
    assert _renders(node, before) == []


def test_a_new_revision_is_applied_and_its_slice_recorded_anew(node: Node) -> None:
    _running(node)
    node.tick()
    newer = node.commit("second", ["v1/ConfigMap/pos/a"])
    assert node.tick().outcome == "applied"
    node.tick()
    record = json.loads((node.tmp / "state" / "slice.json").read_text())
    assert record["revision"] == newer and len(record["objects"]) == 1


def test_secrets_are_checked_every_tick_and_never_recorded(node: Node) -> None:
    assert isinstance(node.pipeline, RecordingPipeline)
    node.pipeline.with_secret = True
    good = _running(node)
    node.tick()
    text = (node.tmp / "state" / "slice.json").read_text()
    assert PIN not in text and SECRET not in text and json.loads(text)["secrets"] is True
    before = len(node.pipeline.calls)
    node.tick()
    assert _renders(node, before) == []
    assert ("secrets", good) in node.pipeline.calls[before:]
    assert ("drift", 1) in node.cluster.calls  # the Secret, checked as drift checks it
    node.cluster.drifted.add(SECRET)
    before = len(node.pipeline.calls)
    report = node.tick()
    assert (report.drift, report.corrected) == (1, 1)
    assert _renders(node, before) == [("desired-unchecked", good)]


def test_an_unreadable_record_is_rendered_over(node: Node) -> None:
    good = _running(node)
    node.tick()
    (node.tmp / "state" / "slice.json").write_text("{not json")
    before = len(node.pipeline.calls)
    assert node.tick().outcome == "unchanged"
    assert _renders(node, before) == [("desired-unchecked", good)]
    assert json.loads((node.tmp / "state" / "slice.json").read_text())["revision"] == good


def test_a_rollback_cut_short_is_finished_though_the_record_vouches_for_every_object(
    node: Node,
) -> None:
    """The record lists the good slice, whose objects the rollback restored before the kill;
    the object the bad commit added is still there and the inventory is unfinished: the
    record's shortcut must not hide that, the next tick finishes going back."""
    good = _running(node)
    node.tick()  # records the good slice
    bad = node.commit(
        "bad", ["v1/ConfigMap/pos/a", "apps/v1/Deployment/pos/b", "v1/ConfigMap/pos/x"]
    )
    node.cluster.unhealthy.add(bad)
    tick_killed_at(node, "wait_healthy", good)  # the rollback's objects sent, then killed
    assert "v1/ConfigMap/pos/x" in node.cluster.objects and not node.cluster.complete
    before = len(node.pipeline.calls)
    after = node.tick()
    assert (after.outcome, after.health) == ("failed-before", "healthy")
    assert _renders(node, before) == [("desired-unchecked", good)]
    assert sorted(node.cluster.objects) == ["apps/v1/Deployment/pos/b", "v1/ConfigMap/pos/a"]
    assert (node.cluster.inventory_revision, node.cluster.complete) == (good, True)
    before = len(node.pipeline.calls)
    assert node.tick().outcome == "failed-before"
    assert _renders(node, before) == []  # finished: the record vouches again
