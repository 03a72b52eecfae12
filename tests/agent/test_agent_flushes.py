"""What a tick flushes to disk: everything it decided, and nothing on a tick that only moved
its clock readings (the status, the metrics and state.json are still replaced whole).

``os.fsync`` is watched, not faked: every write still goes to the real files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_agent_tick import T0, Clock, FakeCluster, FakePipeline, Node, Source

from reconciler.core.errors import VerificationError
from reconciler.core.files import atomic_write, write_json
from reconciler.node.state import AgentState


@pytest.fixture
def flushed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The path of every file or folder flushed, in order."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield seen


@pytest.fixture
def node(tmp_path: Path) -> Node:
    source = Source(tmp_path / "source")
    return Node(tmp_path, source, FakePipeline(), FakeCluster(), Clock(T0), str(source.path))


def _state_flushes(node: Node, flushed: list[str]) -> list[str]:
    state = str(node.tmp / "state")
    return [p for p in flushed if p == state or p.startswith(state + "/.state.json")]


def test_atomic_write_flushes_unless_told_not_to(tmp_path: Path, flushed: list[str]) -> None:
    path = tmp_path / "f.json"
    write_json(path, {"a": 1})
    assert len(flushed) == 2 and flushed[1] == str(tmp_path)  # the file, then its folder
    flushed.clear()
    atomic_write(path, b"new\n", durable=False)
    assert flushed == [] and path.read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left


def test_a_tick_that_only_moves_its_clock_flushes_nothing(node: Node, flushed: list[str]) -> None:
    node.commit("first", ["v1/ConfigMap/pos/a"])
    assert node.tick().outcome == "applied"
    assert _state_flushes(node, flushed)  # an apply is flushed
    flushed.clear()
    node.clock.now = T0.replace(hour=23)
    report = node.tick()
    assert report.outcome == "unchanged"
    outbox = str(node.tmp / "outbox")  # removable media: its copy is flushed, it may be pulled
    assert [p for p in flushed if not p.startswith(outbox)] == []
    state = json.loads((node.tmp / "state" / "state.json").read_text())
    assert state["last_success_at"] == node.clock.now.timestamp()  # written all the same
    assert node.status["time"].startswith(node.clock.now.isoformat()[:16])
    metrics = (node.tmp / "state" / "outpost.prom").read_text()
    assert str(int(node.clock.now.timestamp())) in metrics


def test_a_refusal_is_flushed(node: Node, flushed: list[str]) -> None:
    node.commit("first", ["v1/ConfigMap/pos/a"])
    node.tick()
    bad = node.commit("bad", ["v1/ConfigMap/pos/a"])
    node.pipeline.refuse[bad] = VerificationError("unsigned")
    flushed.clear()
    assert node.tick().outcome == "refused"
    assert _state_flushes(node, flushed)
    flushed.clear()
    assert node.tick().outcome == "refused"  # known already: nothing new to flush
    assert _state_flushes(node, flushed) == []


def test_a_state_set_aside_is_written_again_flushed(node: Node, flushed: list[str]) -> None:
    node.commit("first", ["v1/ConfigMap/pos/a"])
    node.tick()
    (node.tmp / "state" / "state.json").write_text("{torn")
    flushed.clear()
    report = node.tick()
    assert any("could not be read" in w for w in report.warnings)
    assert _state_flushes(node, flushed)


def test_lasting_leaves_out_only_the_clock_readings() -> None:
    state = AgentState(site="s", applied="a", applied_at=1.0, fetched="f", fetched_at=2.0)
    later = state.with_(fetched_at=3.0, source_answered_at=3.0, last_success_at=3.0)
    assert later.lasting() == state.lasting()
    assert state.with_(fetched="g").lasting() != state.lasting()
    assert state.with_(applied_at=5.0).lasting() != state.lasting()
