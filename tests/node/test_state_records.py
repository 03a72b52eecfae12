"""The node's own records on hostile disks: first-seen.json, trust-roots.json, heartbeat.json.

Each is read through the bounded reader (`reconciler.core.source.read_file`): a FIFO in its
place returns at once instead of waiting for a writer, a huge file costs a stat, a link is
refused without being followed. Whatever is wrong, the error names the file and says what
it should hold, the file is moved aside as ``<name>.corrupt``, and the node goes on in the
direction that is safe for that record:

- first-seen.json: every commit counts as first seen now — a soak restarts, none is skipped
  (shown on the real pipeline: a commit dated days ago keeps waiting);
- trust-roots.json: the rotations are derived again from the verified history (shown in
  tests/trust/test_node_trust_roots.py: the retired key stays refused);
- heartbeat.json: the signed time comes again from the tag, watching starts again, and the
  tick's status says so.

Real git and ssh-keygen signatures (tests/trust/trust_git.py) for the pipeline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from test_floor_soak import node_config
from trust_git import NOW, Key, Repo, root_line

from reconciler.core.trust.rules import EMPTY_RULES
from reconciler.node import heartbeat, roots, seen
from reconciler.node.fetch import HEARTBEAT_REF, Mirror
from reconciler.node.heartbeat import check_heartbeat
from reconciler.node.pipeline import NodePipeline, NodeVerified
from reconciler.node.roots import RootsRecord
from reconciler.node.seen import FirstSeen
from reconciler.node.state import RecordUnreadable

SHA = "a" * 40
SHA2 = "b" * 40

GOOD = {
    "first-seen.json": {"apiVersion": "outpost/v1", "kind": "FirstSeen", "seen": {SHA: 100.0}},
    "trust-roots.json": {
        "apiVersion": "outpost/v1",
        "kind": "TrustRoots",
        "enrolled": roots.digest(b"enrolled"),
        "steps": [{"effective": SHA, "rotation": SHA2, "root": "cm9vdA=="}],
    },
    "heartbeat.json": {
        "apiVersion": "outpost/v1",
        "kind": "Heartbeat",
        "signedAt": 100.0,
        "target": SHA,
        "watchingSince": 50.0,
    },
}
LIMITS = {
    "first-seen.json": seen.MAX_BYTES,
    "trust-roots.json": roots.MAX_BYTES,
    "heartbeat.json": heartbeat.MAX_BYTES,
}
WRONG_TYPES = {
    "first-seen.json": ({"seen": {SHA: "yesterday"}}, f"field seen.{SHA} is 'yesterday'"),
    "trust-roots.json": (
        {"steps": [{"effective": "HEAD", "rotation": SHA2, "root": "cm9vdA=="}]},
        "field steps[0].effective is 'HEAD'; expected a full commit id",
    ),
    "heartbeat.json": ({"signedAt": "1e400"}, "field signedAt is '1e400'; expected a unix time"),
}


def _load(state: Path, name: str) -> object:
    """The owner's reader of ``name``."""
    if name == "first-seen.json":
        return FirstSeen(state).load()
    if name == "trust-roots.json":
        return RootsRecord(state).load(b"enrolled")
    return heartbeat._load(state / name)


def _write(path: Path, value: object) -> None:
    path.write_text(json.dumps(value))


def _hostile(path: Path, case: str) -> str:
    """Put the hostile thing ``case`` at ``path``; return what the error must say."""
    name = path.name
    if case == "fifo":
        os.mkfifo(path)  # nobody writes: a plain open() for reading blocks forever
        return "is a named pipe (FIFO), not a regular file; the state directory must hold"
    if case == "huge":
        with path.open("wb") as handle:
            handle.truncate(LIMITS[name] + 1)  # sparse: nothing to read, everything to refuse
        return f"file is {LIMITS[name] + 1:,} bytes; the limit is {LIMITS[name]:,} bytes"
    if case == "symlink":
        good = path.with_name("elsewhere.json")
        _write(good, GOOD[name])  # a valid record behind the link: still not followed
        path.symlink_to(good)
        return "is a symbolic link; the state directory must hold plain files"
    if case == "truncated":
        path.write_text(json.dumps(GOOD[name])[:25])
        return "not JSON ("
    if case == "not utf-8":
        path.write_bytes(b"\xff\xfe\x00garbage")
        return "not JSON ("
    if case == "a list":
        _write(path, [GOOD[name]])
        return "expected a JSON object, found list"
    if case == "another kind":
        _write(path, {**GOOD[name], "kind": "SiteStatus"})
        return "found an object of kind 'SiteStatus'"
    assert case == "wrong types"
    fields, message = WRONG_TYPES[name]
    _write(path, {**GOOD[name], **fields})
    return message


CASES = ["fifo", "huge", "symlink", "truncated", "not utf-8", "a list", "another kind"]
CASES.append("wrong types")


pytestmark = pytest.mark.usefixtures("no_hang")


@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_good_record_reads_back(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name, GOOD[name])
    assert _load(tmp_path, name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(GOOD))
def test_each_hostile_record_is_an_error_naming_the_file_and_what_it_should_hold(
    tmp_path: Path, name: str, case: str
) -> None:
    said = _hostile(tmp_path / name, case)
    with pytest.raises(RecordUnreadable) as error:
        _load(tmp_path, name)
    message = str(error.value)
    assert message.startswith(str(tmp_path / name) + ": ")
    assert said in message
    assert "; expected " in message


def test_a_record_made_for_another_enrolled_root_is_no_record(tmp_path: Path) -> None:
    _write(tmp_path / "trust-roots.json", GOOD["trust-roots.json"])
    assert RootsRecord(tmp_path).load(b"another root") is None


@pytest.mark.parametrize("case", CASES)
def test_first_seen_unreadable_makes_every_commit_seen_now_and_is_set_aside(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "first-seen.json"
    said = _hostile(path, case)
    store = FirstSeen(tmp_path)
    assert store.see([SHA, SHA2], 900.0) == {SHA: 900.0, SHA2: 900.0}
    [warning] = store.warnings
    assert str(path) in warning and said in warning
    assert "moved it to first-seen.json.corrupt" in warning
    assert "a wave's soak starts again, none is skipped" in warning
    assert (tmp_path / "first-seen.json.corrupt").exists() or case == "symlink"
    assert os.path.lexists(tmp_path / "first-seen.json.corrupt")
    # The next tick reads a good record again, without a warning.
    again = FirstSeen(tmp_path)
    assert again.see([SHA], 1000.0) == {SHA: 900.0}
    assert again.warnings == []


def test_first_seen_times_a_datetime_cannot_hold_are_refused(tmp_path: Path) -> None:
    for when in ("NaN", "Infinity", "1e300", "-5", "true"):
        (tmp_path / "first-seen.json").write_text(
            '{"kind": "FirstSeen", "seen": {"' + SHA + '": ' + when + "}}"
        )
        with pytest.raises(RecordUnreadable, match=rf"field seen\.{SHA} is .*a unix time"):
            FirstSeen(tmp_path).load()


@pytest.mark.parametrize("case", CASES)
def test_heartbeat_unreadable_starts_watching_again_and_says_so(tmp_path: Path, case: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    said = _hostile(state / "heartbeat.json", case)
    mirror = Mirror(tmp_path / "mirror.git")  # no heartbeat tag in it
    fresh = check_heartbeat(
        mirror,
        state,
        tag_ref=HEARTBEAT_REF,
        head=None,
        rules=EMPTY_RULES,
        max_silence=3600,
        now=5000.0,
    )
    assert fresh.unreadable is not None
    assert str(state / "heartbeat.json") in fresh.unreadable and said in fresh.unreadable
    assert "watching for silence starts again now" in fresh.unreadable
    assert (fresh.signed_at, fresh.watching_since, fresh.silence) == (None, 5000.0, 0.0)
    record = json.loads((state / "heartbeat.json").read_text())
    assert record["kind"] == "Heartbeat" and record["watchingSince"] == 5000.0
    assert os.path.lexists(state / "heartbeat.json.corrupt")


# -- the pipeline: a damaged first-seen.json never lets a change skip its soak ------------


@pytest.mark.parametrize("damage", ["fifo", "truncated", "wrong types"])
def test_a_damaged_first_seen_restarts_the_soak_on_the_real_pipeline(
    tmp_path: Path, keys: dict[str, Key], damage: str
) -> None:
    repo = Repo(tmp_path / "repo")
    key = keys["root"]
    base = repo.commit({"sites/st-0001/site.yaml": "a\n"}, key, "base")
    change = repo.commit({"sites/st-0001/site.yaml": "b\n"}, key, "the change")
    trust = tmp_path / "allowed_signers"
    trust.write_text(root_line("root@example.com", key) + "\n")
    pipeline = NodePipeline(node_config(tmp_path, trust))
    mirror = Mirror(repo.path / ".git")

    def verify(now: object) -> NodeVerified:
        verified = pipeline.verify(mirror, base, change, now)  # type: ignore[arg-type]
        assert isinstance(verified, NodeVerified)
        return verified

    first = verify(NOW)
    assert first.changed_at == NOW  # dated a month ago, first seen now: the soak runs from now
    assert first.notes == ()

    later = NOW + timedelta(hours=3)
    path = tmp_path / "state" / "first-seen.json"
    path.unlink()
    _hostile(path, damage)
    damaged: Callable[[], NodeVerified] = lambda: verify(later)  # noqa: E731
    second = damaged()
    # Not the committer time (a month ago: every wave open), not NOW: seen again at `later`.
    assert second.changed_at == later
    [note] = second.notes
    assert str(path) in note and "a wave's soak starts again, none is skipped" in note
    # Rewritten whole: the tick after that measures from `later`, without a warning.
    third = verify(later + timedelta(hours=1))
    assert third.changed_at == later and third.notes == ()
