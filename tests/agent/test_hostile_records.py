"""The agent's own records, damaged the ways a full disk, a crash or a hand with root damages
them: the applied-slice record (slice.json) and the config-checked record.

Both are caches: whatever is wrong, the agent reads no record (renders the slice again,
checks the config again) instead of hanging on a FIFO, reading a sparse gigabyte or following
a link. A case that would hang runs in a thread with a deadline so it fails, not blocks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_fetch_config import GOOD, write

from reconciler.node.config import CHECKED_FILE, load_config
from reconciler.node.state import MAX_SLICE_BYTES, SLICE_FILE, StateStore

BASIS = "b" * 40
DEADLINE = 20.0


def within_deadline(call: Callable[[], Any]) -> Any:
    """``call()``, failing the test if it has not returned in `DEADLINE` seconds (a read
    blocked on a FIFO never does; the thread is a daemon and dies with the run)."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), f"still reading after {DEADLINE} s"
    if errors:
        raise errors[0]
    return result[0]


def damage(path: Path, case: str, good: bytes) -> None:
    path.unlink(missing_ok=True)
    if case == "fifo":
        os.mkfifo(path)  # nobody writes: a plain open() for reading blocks for ever
    elif case == "huge":
        with path.open("wb") as handle:
            handle.truncate(1 << 30)  # sparse: nothing on disk, everything to refuse
    elif case == "symlink":
        elsewhere = path.parent.parent / f"elsewhere-{path.name}"
        elsewhere.write_bytes(good)  # a good record, but not in the state directory
        path.symlink_to(elsewhere)
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case == "nested 600":
        path.write_bytes(b"[" * 600 + b"]" * 600)
    elif case == "not utf-8":
        path.write_bytes(b"\xff\xfe" + good)
    elif case == "wrong types":
        path.write_bytes(
            b'{"basis": "%s", "revision": 9999, "secrets": "yes", "objects": {}, "keys": [1]}'
            % BASIS.encode()
        )
    else:
        raise AssertionError(case)


SLICE_CASES = ["fifo", "huge", "symlink", "truncated", "nested 600", "not utf-8", "wrong types"]


@pytest.mark.parametrize("case", SLICE_CASES)
def test_a_damaged_slice_record_is_no_record(tmp_path: Path, case: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = StateStore(state)
    store.write_slice(BASIS, BASIS, [{"k": "v"}], secrets=False, keys=["v1/ConfigMap/a/b"])
    good = store.read_slice(BASIS)
    assert good is not None and good["revision"] == BASIS  # the control: a good record reads

    damage(state / SLICE_FILE, case, (state / SLICE_FILE).read_bytes())
    assert within_deadline(lambda: store.read_slice(BASIS)) is None


def test_the_huge_case_is_over_the_slice_cap() -> None:
    assert MAX_SLICE_BYTES < 1 << 30


def test_a_slice_record_nested_past_the_recursion_limit_is_no_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / SLICE_FILE).write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert within_deadline(lambda: StateStore(state).read_slice(BASIS)) is None


CHECKED_CASES = ["fifo", "huge", "symlink", "truncated", "not utf-8"]


@pytest.mark.parametrize("case", CHECKED_CASES)
def test_a_damaged_config_checked_record_makes_the_config_checked_again(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = write(tmp_path, GOOD)
    first = load_config(path, remember=True)
    record = state / CHECKED_FILE
    damage(record, case, record.read_bytes())

    import reconciler.core.schemas as schemas

    calls: list[str] = []
    real = schemas.validator
    monkeypatch.setattr(schemas, "validator", lambda kind: calls.append(kind) or real(kind))
    assert within_deadline(lambda: load_config(path, remember=True)) == first
    # The record was not believed (not even the good one behind a link): the schema ran.
    assert calls == ["AgentConfig"]
