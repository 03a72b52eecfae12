"""A quiet tick in one look: a cluster that vouches for the recorded slice, its Secrets and
its health from the same reads (`LookingCluster`, what `ManagerCluster` is).

The fakes of ``test_agent_slice_record`` gain the look: recorded objects vouched for by their
digest as there, the Secret by a version of the live object (a digest here, standing in
for the uid and resourceVersion the real one compares) that `drift` saw in line. What must
still reach the full path does: a Secret edited or deleted by hand, a recorded object
changed; a record without the Secrets' versions has them decrypted and checked once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_agent_slice_record import SECRET, RecordingCluster, RecordingPipeline, _digest
from test_agent_tick import T0, Clock, Node, Source, obj

from reconciler.node.agent import LookingCluster, SliceLook
from reconciler.node.state import StateStore


@dataclass
class OneLookCluster(RecordingCluster):
    in_line: dict[str, str] = field(default_factory=dict)
    """Versions of the live objects `drift` found in line (the real one's uid + resourceVersion)."""

    def drift(self, objects: Sequence[Mapping[str, Any]]) -> Sequence[str]:
        found = super().drift(objects)
        for o in objects:
            if o["key"] in found:
                self.in_line.pop(o["key"], None)
            else:
                self.in_line[o["key"]] = _digest(self.objects[o["key"]])
        return found

    def record_secrets(self, secrets: Sequence[Mapping[str, Any]]) -> list[Any] | None:
        self.calls.append(("record_secrets", len(secrets)))
        if any(s["key"] not in self.in_line for s in secrets):
            return None
        return [[s["key"], self.in_line[s["key"]]] for s in secrets]

    def look_recorded(
        self, recorded: Sequence[Any], secrets: Sequence[Any] | None
    ) -> SliceLook | None:
        self.calls.append(("look_recorded", len(recorded)))
        for skeleton, digest in recorded:
            live = self.objects.get(skeleton["key"])
            if live is None or skeleton["key"] in self.drifted or _digest(live) != digest:
                return None
        in_line = secrets is not None and all(
            key in self.objects and key not in self.drifted and _digest(self.objects[key]) == seen
            for key, seen in secrets
        )
        healthy = self.inventory_revision not in self.unhealthy
        return SliceLook(healthy=healthy, secrets_in_line=in_line)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    source = Source(tmp_path / "source")
    pipeline = RecordingPipeline(with_secret=True)
    return Node(tmp_path, source, pipeline, OneLookCluster(), Clock(T0), str(source.path))


def _running(node: Node) -> str:
    good = node.commit("first", ["v1/ConfigMap/pos/a", "apps/v1/Deployment/pos/b"])
    assert node.tick().outcome == "applied"
    return good


def _calls(node: Node, since: tuple[int, int]) -> list[tuple[str, Any]]:
    """What the pipeline and the cluster were asked since ``since`` (`_mark`)."""
    return [*node.pipeline.calls[since[0] :], *node.cluster.calls[since[1] :]]


def _mark(node: Node) -> tuple[int, int]:
    return len(node.pipeline.calls), len(node.cluster.calls)


def _record(node: Node) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((node.tmp / "state" / "slice.json").read_text())
    return record


def test_the_fake_is_a_looking_cluster(node: Node) -> None:
    assert isinstance(node.cluster, LookingCluster)


def test_quiet_ticks_neither_render_nor_decrypt_once_the_secrets_were_seen_in_line(
    node: Node,
) -> None:
    good = _running(node)
    node.tick()  # renders, dry-runs everything (the Secret in line), records the slice
    assert _record(node)["secretVersions"] == [[SECRET, _digest(node.cluster.objects[SECRET])]]
    since = _mark(node)
    for _ in range(3):
        report = node.tick()
        assert (report.outcome, report.drift, report.health) == ("unchanged", 0, "healthy")
    done = _calls(node, since)
    assert ("look_recorded", 2) in done
    assert not [c for c in done if c[0] in ("secrets", "drift", "wait_healthy", "apply")]
    assert not [c for c in done if c[0].startswith("desired")]
    assert ("desired-unchecked", good) not in done


def test_a_secret_edited_by_hand_is_decrypted_checked_and_put_back(node: Node) -> None:
    good = _running(node)
    node.tick()
    node.cluster.objects[SECRET] = {**node.cluster.objects[SECRET], "data": "edited by hand"}
    since = _mark(node)
    report = node.tick()
    assert (report.drift, report.corrected) == (1, 1)
    done = _calls(node, since)
    assert ("secrets", good) in done  # the look could not vouch: decrypted, dry-run
    assert ("desired-unchecked", good) in done  # then the full path corrected it
    assert node.cluster.objects[SECRET]["data"] != "edited by hand"
    assert _record(node)["secretVersions"] is None  # corrected, not seen in line yet
    since = _mark(node)
    assert node.tick().drift == 0  # decrypted once more, in line: its version recorded
    assert ("secrets", good) in _calls(node, since)
    assert _record(node)["secretVersions"] == [[SECRET, _digest(node.cluster.objects[SECRET])]]
    since = _mark(node)
    assert node.tick().drift == 0
    assert ("secrets", good) not in _calls(node, since)


def test_a_deleted_secret_is_put_back(node: Node) -> None:
    _running(node)
    node.tick()
    del node.cluster.objects[SECRET]
    report = node.tick()
    assert (report.drift, report.corrected) == (1, 1)
    assert SECRET in node.cluster.objects


def test_a_changed_recorded_object_still_takes_the_full_path(node: Node) -> None:
    good = _running(node)
    node.tick()
    node.cluster.objects["v1/ConfigMap/pos/a"]["data"] = "edited by hand"
    since = _mark(node)
    report = node.tick()
    assert (report.drift, report.corrected) == (1, 1)
    assert ("desired-unchecked", good) in _calls(node, since)
    assert node.cluster.objects["v1/ConfigMap/pos/a"] == obj("v1/ConfigMap/pos/a", good)


def test_a_record_without_the_secrets_versions_has_them_checked_once_and_recorded(
    node: Node,
) -> None:
    """A record written before the versions were kept (or when a Secret was not in line)."""
    good = _running(node)
    node.tick()
    path = node.tmp / "state" / "slice.json"
    path.write_text(json.dumps({**_record(node), "secretVersions": None}))
    since = _mark(node)
    assert node.tick().drift == 0
    done = _calls(node, since)
    assert ("secrets", good) in done and ("drift", 1) in done
    assert not [c for c in done if c[0].startswith("desired")]
    assert _record(node)["secretVersions"] is not None
    since = _mark(node)
    node.tick()
    assert ("secrets", good) not in _calls(node, since)


def test_a_secret_that_cannot_be_vouched_for_is_checked_every_tick(node: Node) -> None:
    """When the cluster cannot say which version it found in line, nothing is recorded and
    the Secret is decrypted and dry-run every tick, as before the versions were kept."""
    good = _running(node)
    assert isinstance(node.cluster, OneLookCluster)
    node.cluster.in_line = _Forgetful()
    node.tick()
    assert _record(node)["secretVersions"] is None
    for _ in range(2):
        since = _mark(node)
        assert node.tick().drift == 0
        assert ("secrets", good) in _calls(node, since)


class _Forgetful(dict[str, str]):
    def __setitem__(self, key: str, value: str) -> None:
        pass


def test_health_comes_from_the_look(node: Node) -> None:
    good = _running(node)
    node.tick()
    node.cluster.unhealthy.add(good)
    since = _mark(node)
    report = node.tick()
    assert (report.outcome, report.drift, report.health) == ("unchanged", 0, "degraded")
    assert not [c for c in _calls(node, since) if c[0] == "wait_healthy"]
    assert node.status["health"] == "degraded"


def test_secret_versions_of_another_shape_are_read_as_not_recorded(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write_slice("basis", "r1", [], secrets=True, keys=["v1/Secret/pos/s"])
    record = store.read_slice("basis")
    assert record is not None and record["secretVersions"] is None
    store.write_slice_secrets(record, None)  # nothing found in line: nothing written
    assert json.loads((tmp_path / "slice.json").read_text())["secretVersions"] is None
    store.write_slice_secrets(record, [["v1", "Secret", "pos", "secrets", "u", "7"]])
    again = store.read_slice("basis")
    assert again is not None and again["secretVersions"] == [
        ["v1", "Secret", "pos", "secrets", "u", "7"]
    ]
    (tmp_path / "slice.json").write_text(json.dumps({**again, "secretVersions": "7"}))
    spoiled = store.read_slice("basis")
    assert spoiled is not None and spoiled["secretVersions"] is None
