"""Opening a store that is already at the newest schema only reads it: `outpost fleet status`
next to a collector in the middle of a write does not wait for that write."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.fleet.collector.store import MIGRATIONS, StoreError, open_store

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_current_sqlite_store_opens_while_another_connection_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    db = tmp_path / "c.db"
    open_store(str(db), now=NOW).close()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        store = open_store(str(db), now=NOW)
        assert time.monotonic() - started < 5  # the busy timeout is 30 s
        assert store.version() == len(MIGRATIONS)
        assert store.sites() == []
        store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_empty_and_newer_stores(store_target: str) -> None:
    store = open_store(store_target, now=NOW)
    assert store.version() == len(MIGRATIONS)
    with store._transaction(write=True, what="pretending to be newer") as cur:
        cur.execute(
            store._sql("INSERT INTO outpost_schema (version, applied_us) VALUES (?, ?)"),
            (len(MIGRATIONS) + 1, 0),
        )
    store.close()
    with pytest.raises(StoreError, match="newer than this collector knows"):
        open_store(store_target, now=NOW)
