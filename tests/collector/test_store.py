"""The store on SQLite and on a real PostgreSQL: newest wins, history, migrations, concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest
from collector_world import Keys, signed

from reconciler.fleet.collector.store import MIGRATIONS, Row, StoreError, open_store

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def row(keys: Keys | None, site: str, at: datetime, **kw: object) -> Row:
    if keys is None:
        from collector_world import status

        payload = json.dumps(status(site, at, **kw)).encode()
        signature = "unsigned (store test)"
    else:
        envelope = signed(keys, site, at, **kw)
        payload, signature = envelope.payload, envelope.signature
    return Row(
        site=site,
        node="edge-1",
        time=at,
        received=NOW,
        digest=hashlib.sha256(payload).hexdigest(),
        body=json.loads(payload),
        payload=payload.decode(),
        signature=signature,
    )


def test_newest_wins_replays_and_older_reports_change_nothing(
    store_target: str, keys: Keys
) -> None:
    store = open_store(store_target, now=NOW)
    first = row(keys, "de-muc-0007", NOW, revision="a" * 40)
    assert store.ingest([first]) == ["stored"]
    assert store.ingest([first]) == ["replay"]
    older = row(keys, "de-muc-0007", NOW - timedelta(minutes=5), revision="0" * 40)
    assert store.ingest([older]) == ["older"]
    newer = row(
        keys,
        "de-muc-0007",
        NOW + timedelta(minutes=5),
        outcome="waiting",
        revision="a" * 40,
        pending={"revision": "b" * 40, "reason": "window", "until": None},
    )
    assert store.ingest([newer]) == ["stored"]
    [record] = store.sites()
    assert (record.applied, record.outcome, record.pending) == ("a" * 40, "waiting", "b" * 40)
    latest, history = store.site("de-muc-0007")
    assert latest is not None and latest.time == NOW + timedelta(minutes=5)
    assert [h.record.time for h in history] == [NOW + timedelta(minutes=5), NOW]
    assert json.loads(history[0].payload)["outcome"] == "waiting"
    assert store.count() == (1, 2)


def test_a_batch_is_applied_oldest_first_per_site(store_target: str) -> None:
    """Reports that arrive together in the wrong order all reach the history; the newest wins."""
    store = open_store(store_target, now=NOW)
    rows = [
        row(None, "b-site", NOW),
        row(None, "a-site", NOW + timedelta(seconds=1)),
        row(None, "b-site", NOW - timedelta(seconds=1)),
        row(None, "b-site", NOW),
    ]
    assert store.ingest(rows) == ["stored", "stored", "stored", "replay"]
    assert {r.site: r.time for r in store.sites()} == {
        "a-site": NOW + timedelta(seconds=1),
        "b-site": NOW,
    }
    assert store.ingest([row(None, "b-site", NOW - timedelta(seconds=2))]) == ["older"]


def test_history_is_bounded_by_pruning(store_target: str) -> None:
    store = open_store(store_target, now=NOW)
    for minute in range(12):
        store.ingest(
            [
                row(None, "s1", NOW + timedelta(minutes=minute)),
                row(None, "s2", NOW + timedelta(minutes=minute)),
            ]
        )
    assert store.count() == (2, 24)
    assert store.prune_history(5) == 14
    _, history = store.site("s1", history=100)
    assert [h.record.time for h in history] == [
        NOW + timedelta(minutes=m) for m in range(11, 6, -1)
    ]


def test_migrations_run_once_and_a_newer_schema_is_refused(store_target: str) -> None:
    store = open_store(store_target, now=NOW)
    assert store.migrate(now=NOW) == len(MIGRATIONS)  # a second start migrates nothing
    store.ingest([row(None, "s1", NOW)])
    with store._transaction(write=True, what="test") as cur:
        cur.execute("INSERT INTO outpost_schema (version, applied_us) VALUES (99, 0)")
    store.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this collector knows"):
        open_store(store_target, now=NOW)


def test_tokens_are_kept_as_hashes(store_target: str) -> None:
    store = open_store(store_target, now=NOW)
    store.add_token("grafana", "ab" * 32, now=NOW)
    with pytest.raises(StoreError, match="exists"):
        store.add_token("grafana", "cd" * 32, now=NOW)
    assert store.token_hashes() == {"ab" * 32: "grafana"}
    assert store.remove_token("grafana") and not store.remove_token("grafana")


def test_an_alert_is_claimed_once_and_resolved_once(store_target: str) -> None:
    store = open_store(store_target, now=NOW)
    assert store.claim_alert("refused/s1/x", firing=True, now=NOW, detail="d")
    assert not store.claim_alert("refused/s1/x", firing=True, now=NOW, detail="d")
    assert list(store.alerts()) == ["refused/s1/x"]
    assert store.claim_alert("refused/s1/x", firing=False, now=NOW, detail="")
    assert not store.claim_alert("refused/s1/x", firing=False, now=NOW, detail="")


def test_a_bad_target_is_named(tmp_path) -> None:
    with pytest.raises(StoreError, match="expected a file path"):
        open_store("mysql://x/y", now=NOW)
    with pytest.raises(StoreError, match="does not exist"):
        open_store(str(tmp_path / "missing" / "x.db"), now=NOW)


def _writer(target: str, worker: int, sites: int, rounds: int, results) -> None:
    store = open_store(target, now=NOW)
    counts: dict[str, int] = {}
    for r in range(rounds):
        # Every worker writes every site, at interleaved times: the newest must win.
        batch = [
            row(None, f"site-{s:04d}", NOW + timedelta(seconds=r * 10 + worker))
            for s in range(sites)
        ]
        for outcome in store.ingest(batch):
            counts[outcome] = counts.get(outcome, 0) + 1
    store.close()
    results.put(counts)


def test_two_writers_on_one_postgresql_lose_nothing(postgres) -> None:
    """A report is stored, or it is older than one stored meanwhile by the other writer;
    the history holds exactly the stored ones, and every site ends on the newest report."""
    target = postgres.create_database()
    open_store(target, now=NOW).close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_writer, args=(target, w, 200, 5, results)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    stored = sum(c.get("stored", 0) for c in counts)
    older = sum(c.get("older", 0) for c in counts)
    assert stored + older == 2 * 200 * 5
    store = open_store(target, now=NOW)
    records = store.sites()
    assert len(records) == 200
    # The newest report of every site is worker 2's last round, whoever wrote last.
    assert {r.time for r in records} == {NOW + timedelta(seconds=4 * 10 + 2)}
    assert store.count() == (200, stored)


def test_site_records_read_columns_in_field_order() -> None:
    """`SiteRecord.from_row` reads by position: the column list and the fields must agree."""
    from dataclasses import fields

    from reconciler.fleet.collector.store import _SUMMARY, SiteRecord

    renamed = {"report_us": "time", "received_us": "received"}
    assert [f.name for f in fields(SiteRecord)] == [renamed.get(c, c) for c in _SUMMARY]
