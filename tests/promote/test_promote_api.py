"""``outpost fleet promote --api``: the stores' status read from a running collector's API.

The real `outpost fleet serve` (SQLite), the example fleet with its retail-eu waves gated,
a report signed with the canary's node key, then the promoter reading over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import urllib3

from reconciler.fleet.collector.app import hash_token
from reconciler.fleet.collector.store import open_store
from tests.collector.collector_world import Keys, signed, start_server
from tools import signedfleet

ROOT = Path(__file__).resolve().parents[2]
GATED = """  waves:
    - {name: canary, sites: [de-muc-0007]}
    - {name: stores, gate: {healthy: 100, minSoak: 1h}}
"""


def _gate(text: str) -> str:
    head, rest = text.split("  waves:\n", 1)
    return head + GATED + rest[rest.index("  freezes:") :]


def test_promote_reads_the_collectors_api(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    fleet = signedfleet.create(tmp_path / "repo", when=now - timedelta(days=2))
    fleet.edit("fleets/retail-eu.yaml", _gate)
    change = fleet.commit("gate the stores", when=now - timedelta(days=1))
    db = tmp_path / "collector.db"
    store = open_store(str(db), now=now)
    store.add_token("promoter", hash_token("promoter-token"), now=now)
    store.close()
    server = start_server(tmp_path, ["--db", str(db)], fleet)
    try:
        keys = Keys(tmp_path)
        body = signed(keys, "de-muc-0007", now, revision=change).to_bytes()
        answer = urllib3.request(
            "POST", server.url + "/api/v1/reports", body=body,
            headers={"Content-Type": "application/json"}, retries=False, timeout=10,
        )  # fmt: skip
        assert answer.status in (200, 201, 202), answer.data
        token = tmp_path / "token"
        token.write_text("promoter-token\n")
        argv = [
            sys.executable, "-m", "reconciler.cli", "fleet", "promote", "--api", server.url,
            "--token-file", str(token), "--repo", str(fleet.path),
            "--trust", str(fleet.allowed_signers), "--dry-run", "-o", "json",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        [decision] = json.loads(done.stdout)["decisions"]
        assert (decision["fleet"], decision["change"]) == ("retail-eu", change)
        assert decision["action"] == "promote" and decision["wave"] == "stores"
        assert any(line.startswith("de-muc-0007: applied") for line in decision["sites"])
        token.write_text("not-a-token\n")
        refused = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert refused.returncode == 2 and "HTTP 401" in refused.stderr, refused.stderr
    finally:
        server.stop()
