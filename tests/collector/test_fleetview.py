"""The collector's view of the signed repository: verified, refreshed, and kept when a head fails."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from collector_world import FLEET_TIME, Keys, signed

from reconciler.core.report import ReportUnverified
from reconciler.fleet import _child
from reconciler.fleet.collector import fleetview
from reconciler.fleet.collector.fleetview import FleetSource
from reconciler.fleet.collector.ingest import Ingestor, NotReady
from reconciler.fleet.collector.store import open_store
from reconciler.node.identity import generate
from tools.signedfleet import create

NOW = FLEET_TIME + timedelta(days=1)
SITE = "de-ham-0113"


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "in-child"])
def test_a_rotated_node_key_counts_after_a_signed_commit_and_not_before(
    tmp_path: Path, keys: Keys, in_child: bool
) -> None:
    fleet = create(tmp_path / "repo", when=FLEET_TIME)
    source = FleetSource(fleet.path, fleet.allowed_signers, in_child=in_child)
    ingestor = Ingestor(open_store(str(tmp_path / "c.db"), now=NOW), source, clock=lambda: NOW)
    with pytest.raises(NotReady, match="has not verified the fleet repository yet"):
        ingestor.check(signed(keys, SITE, NOW).to_bytes(), "r")
    status = source.refresh(NOW)
    assert status.problem is None and status.view is not None
    assert status.view.sites[SITE].waves == {"retail-eu": "all"}
    assert ingestor.ingest(signed(keys, SITE, NOW).to_bytes(), "r") == "stored"

    # The node is replaced: a new key, committed and signed. Until the refresh, it is unknown.
    new = generate(tmp_path / "new.key", comment="outpost-node@de-ham-0113/edge-1")
    old_line = next(
        line
        for line in (fleet.path / f"sites/{SITE}/hardware.yaml").read_text().splitlines()
        if "publicKey" in line
    )
    fleet.edit(
        f"sites/{SITE}/hardware.yaml",
        lambda text: text.replace(old_line, f'      publicKey: "{new.public_key.line()}"'),
    )
    fleet.commit("de-ham-0113: new edge-1", when=FLEET_TIME + timedelta(hours=1))
    from collector_world import status as site_status

    from reconciler.core.report import seal

    fresh = seal(site_status(SITE, NOW + timedelta(minutes=1)), new.private_key).to_bytes()
    with pytest.raises(ReportUnverified, match="not a node key of de-ham-0113"):
        ingestor.check(fresh, "r")
    assert source.refresh(NOW).view.revision == fleet.head()
    assert ingestor.ingest(fresh, "r") == "stored"
    with pytest.raises(ReportUnverified, match="not a node key"):
        ingestor.check(signed(keys, SITE, NOW + timedelta(minutes=2)).to_bytes(), "r")

    # An unsigned head: refused, and the last verified view stays in force.
    verified = fleet.head()
    fleet.edit(
        f"sites/{SITE}/hardware.yaml",
        lambda text: text.replace(new.public_key.line(), old_line.split('"')[1]),
    )
    fleet.commit("put the old key back, unsigned", when=FLEET_TIME + timedelta(hours=2), sign=False)
    status = source.refresh(NOW)
    assert status.problem is not None and "not signed" in status.problem
    assert status.view is not None and status.view.revision == verified
    with pytest.raises(ReportUnverified):
        ingestor.check(signed(keys, SITE, NOW + timedelta(minutes=3)).to_bytes(), "r")


def test_a_view_read_in_a_child_process_is_the_view_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = create(tmp_path / "repo", when=FLEET_TIME)
    here = FleetSource(fleet.path, fleet.allowed_signers)
    there = FleetSource(fleet.path, fleet.allowed_signers, in_child=True)
    view = there.refresh(NOW).view
    assert view is not None and view == here.refresh(NOW).view
    assert dict(view.sites) == dict(here.status.view.sites)  # type: ignore[union-attr]
    assert view.waves == here.status.view.waves  # type: ignore[union-attr]
    assert there.refresh(NOW).view is view  # the head has not moved: the same view, kept
    with monkeypatch.context() as patched:  # and no child is started to find that out
        patched.setattr(fleetview, "_view_from_child", lambda *args: pytest.fail("a child"))
        assert there.refresh(NOW).view is view and there.status.problem is None
    first = fleet.head()
    fleet.write("sites/de-ham-0113/notes.txt", "a note\n")
    fleet.commit("de-ham-0113: a note", when=FLEET_TIME + timedelta(hours=1))
    assert there.refresh(NOW).view.revision == fleet.head()  # type: ignore[union-attr]
    assert there.descends(fleet.head(), first) is True
    assert there.descends(first, fleet.head()) is False
    assert there.descends("0" * 40, first) is None  # not in the repository
    assert there.descends("--help", first) is None  # never handed to git


def test_a_repository_that_cannot_be_read_is_a_problem_from_the_child_too(tmp_path: Path) -> None:
    fleet = create(tmp_path / "repo", when=FLEET_TIME)
    missing = FleetSource(tmp_path / "nowhere", fleet.allowed_signers, in_child=True)
    here = FleetSource(tmp_path / "nowhere", fleet.allowed_signers)
    status = missing.refresh(NOW)
    assert status.view is None and status.problem == here.refresh(NOW).problem
    assert status.problem is not None and "cannot open the git repository" in status.problem


def test_a_child_that_stops_short_is_a_problem_with_its_own_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = create(tmp_path / "repo", when=FLEET_TIME)
    source = FleetSource(fleet.path, fleet.allowed_signers, in_child=True)
    dies = 'print(\'{"head": "x"}\'); raise SystemExit("gone")'  # after the head, no view
    monkeypatch.setattr(_child, "python_running", lambda *args: [sys.executable, "-c", dies])
    status = source.refresh(NOW)
    assert status.view is None and status.problem is not None
    assert "stopped (exit 1): gone" in status.problem


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # stopped before a word
        b"[" * 600 + b"]" * 600 + b"\n",  # nested past the interpreter's limit
        b'{"head": 9999}\n',  # a wrong type where a commit id belongs
        b'["not", "an", "object"]\n',
        b"\xff\xfe\n",  # not UTF-8
    ],
)
def test_a_garbled_answer_from_the_child_is_no_view(
    answer: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the child writes, the reader takes at most its limit a line and answers
    None (the child failed: its own last words then say why), never a traceback."""
    import io

    monkeypatch.setattr(fleetview, "MAX_CHILD_LINE", 100)
    assert fleetview._read_child(io.BytesIO(answer), None) is None


def test_a_line_past_the_limit_is_not_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    known = fleetview.FleetView(revision="a" * 200, sites={}, waves={})
    answer = b'{"head": "' + b"a" * 200 + b'"}\n'
    assert fleetview._read_child(io.BytesIO(answer), known) is known
    monkeypatch.setattr(fleetview, "MAX_CHILD_LINE", 100)
    assert fleetview._read_child(io.BytesIO(answer), known) is None
