"""Collectors are stateless: two `outpost fleet serve` on one PostgreSQL, fed at once, lose nothing."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import urllib3
from collector_world import Keys, signed, start_server

from reconciler.fleet.collector.store import open_store

NOW = datetime.now(UTC).replace(microsecond=0)
NODES = {
    "au-syd-0501": "edge-1",
    "de-ber-0042": "edge-2",
    "de-fra-0088": "edge-1",
    "de-ham-0113": "edge-1",
    "de-muc-0007": "edge-1",
    "in-blr-0601": "edge-1",
    "jp-tyo-0701": "edge-1",
    "plant-lyon": "ipc-2",
    "plant-ostrava": "ipc-1",
    "us-aus-0244": "edge-1",
    "us-chi-0201": "edge-2",
    "us-nyc-0310": "edge-1",
}
ROUNDS = 25


def test_two_collectors_on_one_postgresql_lose_nothing(
    tmp_path: Path, postgres, keys: Keys, fleet
) -> None:
    url = postgres.create_database()
    servers = [start_server(tmp_path, ["--url", url], fleet, "--rate", "1000/1") for _ in (1, 2)]
    try:
        reports = [
            (
                site,
                NOW + timedelta(seconds=r),
                signed(
                    keys, site, NOW + timedelta(seconds=r), node=node, revision=f"{r:040x}"
                ).to_bytes(),
            )
            for r in range(ROUNDS)
            for site, node in NODES.items()
        ]
        pool = urllib3.PoolManager(maxsize=16)

        def send(index: int) -> str:
            _site, _, body = reports[index]
            server = servers[index % 2]  # alternate: each site's reports hit both collectors
            answer = pool.request(
                "POST",
                server.url + "/api/v1/reports",
                body=body,
                headers={"Content-Type": "application/json"},
                retries=False,
                timeout=30,
            )
            assert answer.status == 200, answer.data
            return str(json.loads(answer.data)["outcome"])

        # Newest first and oldest last, from 16 threads: the races are real.
        with ThreadPoolExecutor(16) as executor:
            outcomes = list(executor.map(send, reversed(range(len(reports)))))
    finally:
        for server in servers:
            server.stop()
    assert len(outcomes) == ROUNDS * len(NODES)
    store = open_store(url, now=NOW)
    records = {r.site: r for r in store.sites()}
    assert set(records) == set(NODES)
    newest = NOW + timedelta(seconds=ROUNDS - 1)
    assert {r.time for r in records.values()} == {newest}
    assert {r.applied for r in records.values()} == {f"{ROUNDS - 1:040x}"}
    # Every report either is in the history or arrived after a newer one ("older").
    _, history_rows = store.count()
    assert history_rows == outcomes.count("stored")
    assert outcomes.count("stored") + outcomes.count("older") == len(outcomes)
    assert outcomes.count("stored") >= len(NODES)
