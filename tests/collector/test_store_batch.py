"""A batch goes to PostgreSQL as one statement of column arrays: every text survives the trip
byte for byte, and a site twice in one batch still gets both reports, oldest first."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from collector_world import status

from reconciler.fleet.collector.store import Row, open_store

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ODD = ['quote " backslash \\ braces {a,b} NULL', "ünïcødé ✓ 日本", "", "NULL", "a,b", "{}"]


def row(site: str, at: datetime, **kw: object) -> Row:
    body = status(site, at, **kw)
    payload = json.dumps(body, ensure_ascii=False)
    return Row(
        site, "edge-1", at, NOW, hashlib.sha256(payload.encode()).hexdigest(), body, payload, "sig"
    )


def test_odd_texts_and_nulls_come_back_as_they_went(store_target: str) -> None:
    store = open_store(store_target, now=NOW)
    rows = [
        row(
            f"site-{n}",
            NOW,
            outcome="refused",
            lastError=text,
            pending={"revision": "b" * 40, "reason": text, "until": None},
            warnings=[text, text],
        )
        for n, text in enumerate(ODD)
    ]
    rows.append(row("site-plain", NOW))  # pending, lastError: NULL
    assert store.ingest(rows) == ["stored"] * len(rows)
    found = {r.site: r for r in store.sites()}
    for n, text in enumerate(ODD):
        record = found[f"site-{n}"]
        assert (record.last_error, record.pending_reason, record.warnings) == (
            text,
            text,
            (text, text),
        )
        assert record.pending_until is None and record.time == NOW
        _, history = store.site(f"site-{n}")
        assert [json.loads(h.payload)["lastError"] for h in history] == [text]
    assert found["site-plain"].pending is None and found["site-plain"].last_error is None


def test_one_site_three_times_in_a_batch_with_others(store_target: str) -> None:
    store = open_store(store_target, now=NOW)
    later, latest = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    rows = [
        row("twice", latest),
        *(row(f"other-{n:03d}", NOW) for n in range(300)),
        row("twice", NOW),
        row("twice", later),
        row("twice", later),
    ]
    # The repeated report is judged against what the batch left stored: the newest, so "older".
    assert store.ingest(rows) == ["stored"] * 303 + ["older"]
    _, history = store.site("twice", history=10)
    assert [h.record.time for h in history] == [latest, later, NOW]
    assert store.count() == (301, 303)
    assert store.ingest([row("twice", later), row("other-000", NOW)]) == ["older", "replay"]
