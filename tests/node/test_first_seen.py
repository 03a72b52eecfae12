"""first-seen.json: the soak clock a signer cannot set, kept across ticks in the state dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.node import seen as seen_module
from reconciler.node.seen import FIRST_SEEN_FILE, FirstSeen


def test_the_first_sighting_is_kept_and_later_ones_ignored(tmp_path: Path) -> None:
    store = FirstSeen(tmp_path)
    assert store.see(["a", "b"], 100.0) == {"a": 100.0, "b": 100.0}
    assert store.see(["b", "c"], 500.0) == {"b": 100.0, "c": 500.0}
    # A new process reads the same file.
    assert FirstSeen(tmp_path).load() == {"a": 100.0, "b": 100.0, "c": 500.0}


def test_a_lost_or_corrupt_file_only_makes_commits_look_newer(tmp_path: Path) -> None:
    store = FirstSeen(tmp_path)
    store.see(["a"], 100.0)
    (tmp_path / FIRST_SEEN_FILE).write_bytes(b'{"seen": {"a": 1')
    assert store.see(["a"], 900.0) == {"a": 900.0}
    assert json.loads((tmp_path / FIRST_SEEN_FILE).read_text())["seen"] == {"a": 900.0}
    (tmp_path / FIRST_SEEN_FILE).unlink()
    assert store.see(["a"], 1000.0) == {"a": 1000.0}


def test_the_file_is_bounded_oldest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seen_module, "MAX_ENTRIES", 3)
    store = FirstSeen(tmp_path)
    store.see(["a"], 1.0)
    store.see(["b"], 2.0)
    store.see(["c"], 3.0)
    assert store.see(["d"], 4.0) == {"d": 4.0}
    assert store.load() == {"b": 2.0, "c": 3.0, "d": 4.0}
