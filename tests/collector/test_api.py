"""The collector as it runs: `outpost fleet serve` in its own process, spoken to over loopback.

Every security rule sends the bad report and then shows that nothing was stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import urllib3
from collector_world import REPO_ROOT, Keys, Server, signed, start_server, status

from reconciler.core.report import Envelope, seal
from reconciler.fleet.collector.store import open_store

NOW = datetime.now(UTC).replace(microsecond=0)
SITE = "de-muc-0007"


def post(server: Server, body: bytes, **headers: str) -> tuple[int, dict]:
    answer = urllib3.request(
        "POST",
        server.url + "/api/v1/reports",
        body=body,
        headers={"Content-Type": "application/json", **headers},
        retries=False,
        timeout=10,
    )
    return answer.status, json.loads(answer.data)


def get(server: Server, path: str, token: str | None) -> tuple[int, dict | str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = urllib3.request("GET", server.url + path, headers=headers, retries=False, timeout=10)
    try:
        return answer.status, json.loads(answer.data)
    except ValueError:
        return answer.status, answer.data.decode()


def add_token(db: Path, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "fleet", "token", "add", name, "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, fleet) -> Iterator[tuple[Server, Path, str]]:
    tmp = tmp_path_factory.mktemp("collector")
    db = tmp / "collector.db"
    token = add_token(db, "ops")
    server = start_server(tmp, ["--db", str(db)], fleet, "--rate", "5/3600")
    yield server, db, token
    server.stop()


def stored(db: Path) -> dict[str, tuple[datetime, str]]:
    store = open_store(str(db), now=NOW)
    try:
        return {r.site: (r.time, r.outcome) for r in store.sites()}
    finally:
        store.close()


def history(db: Path, site: str) -> int:
    store = open_store(str(db), now=NOW)
    try:
        return len(store.site(site, history=500)[1])
    finally:
        store.close()


def test_a_signed_report_is_stored_and_served(world, keys: Keys) -> None:
    server, _db, token = world
    code, body = post(server, signed(keys, "de-ber-0042", NOW, node="edge-2").to_bytes())
    assert (code, body["outcome"]) == (200, "stored")
    code, site = get(server, "/api/v1/sites/de-ber-0042", token)
    assert code == 200
    assert site["node"] == "edge-2" and site["state"] == "ok"
    assert site["fleets"]["store-vision"] == "canary"
    assert len(site["history"]) == 1 and "BEGIN SSH SIGNATURE" in site["history"][0]["signature"]


def test_a_replay_and_an_older_report_change_nothing(world, keys: Keys) -> None:
    server, db, _ = world
    report = signed(keys, "de-ham-0113", NOW)
    assert post(server, report.to_bytes())[1]["outcome"] == "stored"
    assert post(server, report.to_bytes())[1]["outcome"] == "replay"
    older = signed(keys, "de-ham-0113", NOW - timedelta(minutes=1), outcome="rolled-back")
    assert post(server, older.to_bytes())[1]["outcome"] == "older"
    assert stored(db)["de-ham-0113"] == (NOW, "applied")
    assert history(db, "de-ham-0113") == 1


def test_another_sites_key_is_401_and_nothing_is_stored(world, keys: Keys) -> None:
    server, db, _ = world
    forged = seal(status("us-nyc-0310", NOW), keys.private("de-ber-0042"))
    code, body = post(server, forged.to_bytes())
    assert code == 401 and "not a node key of us-nyc-0310" in body["error"]
    assert "us-nyc-0310" not in stored(db)


def test_a_changed_payload_is_401_and_nothing_is_stored(world, keys: Keys) -> None:
    server, db, _ = world
    good = signed(keys, "jp-tyo-0701", NOW)
    payload = good.payload.replace(b'"applied"', b'"refused"', 1)
    code, body = post(server, Envelope(payload, good.signature, good.site, good.time).to_bytes())
    assert code == 401 and "does not match" in body["error"]
    assert "jp-tyo-0701" not in stored(db)


def test_a_site_not_in_the_repository_is_401(world, keys: Keys) -> None:
    server, db, _ = world
    code, body = post(server, seal(status("xx-nowhere-1", NOW), keys.private(SITE)).to_bytes())
    assert code == 401 and "not in the fleet repository" in body["error"]
    assert "xx-nowhere-1" not in stored(db)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"not json",
        json.dumps({"apiVersion": "outpost/v1", "kind": "SiteStatus", "site": SITE}).encode(),
    ],
)
def test_malformed_and_unsigned_reports_are_400(world, body: bytes) -> None:
    server, db, _ = world
    before = stored(db)
    code, answer = post(server, body)
    assert code == 400 and answer["error"]
    assert stored(db) == before


def test_a_body_over_the_cap_is_413_unread(world, keys: Keys) -> None:
    server, db, _ = world
    from reconciler.core.report import REPORT_NAMESPACE
    from reconciler.core.trust.sshsig import sign_message

    payload = json.dumps(status("au-syd-0501", NOW, warnings=["x" * 300_000])).encode()
    armored = sign_message(keys.private("au-syd-0501"), payload, namespace=REPORT_NAMESPACE)
    code, body = post(server, Envelope(payload, armored, "au-syd-0501", NOW).to_bytes())
    assert code == 413 and "at most" in body["error"]
    assert "au-syd-0501" not in stored(db)


def test_a_site_over_its_rate_is_429_and_the_extra_report_is_not_stored(world, keys) -> None:
    server, db, _ = world  # the server allows 5 reports per site, then one an hour
    codes = [
        post(server, signed(keys, "in-blr-0601", NOW + timedelta(seconds=i)).to_bytes())[0]
        for i in range(6)
    ]
    assert codes == [200] * 5 + [429]
    assert stored(db)["in-blr-0601"][0] == NOW + timedelta(seconds=4)
    # Forged reports in the site's name do not count against it (verified ones only).
    forged = seal(status("us-chi-0201", NOW), keys.private(SITE))
    assert [post(server, forged.to_bytes())[0] for _ in range(7)] == [401] * 7
    assert post(server, signed(keys, "us-chi-0201", NOW).to_bytes())[0] == 200


def test_the_read_api_needs_a_token_kept_only_as_a_hash(world) -> None:
    server, db, token = world
    for path in (
        "/api/v1/sites",
        f"/api/v1/sites/{SITE}",
        "/metrics",
        "/api/v1/changes/" + "a" * 40,
    ):
        assert get(server, path, None)[0] == 401
        assert get(server, path, "wrong")[0] == 401
        assert get(server, path, token)[0] == 200
    assert token.encode() not in db.read_bytes()


def test_sites_filter_by_fleet_wave_state_revision_and_stale(world, keys: Keys) -> None:
    server, _, token = world
    post(server, signed(keys, "us-aus-0244", NOW, revision="c" * 40).to_bytes())
    post(
        server,
        signed(
            keys,
            "de-fra-0088",
            NOW,
            outcome="refused",
            pending={"revision": "d" * 40, "reason": "unsigned", "until": None},
            sourceLastAnswered=(NOW - timedelta(days=4)).isoformat(),
        ).to_bytes(),
    )
    _, found = get(server, "/api/v1/sites?revision=cccccccc", token)
    assert [s["site"] for s in found["sites"]] == ["us-aus-0244"]
    _, found = get(server, "/api/v1/sites?state=refused", token)
    assert [s["site"] for s in found["sites"]] == ["de-fra-0088"]
    _, found = get(server, "/api/v1/sites?stale=true", token)
    assert [s["site"] for s in found["sites"]] == ["de-fra-0088"]
    _, found = get(server, "/api/v1/sites?fleet=retail-eu&wave=canary", token)
    assert {s["site"] for s in found["sites"]} == {"de-muc-0007"}
    _, found = get(server, "/api/v1/sites?state=silent&fleet=plants", token)
    assert {s["site"] for s in found["sites"]} == {"plant-lyon", "plant-ostrava"}
    assert get(server, "/api/v1/sites?state=bogus", token)[0] == 400
    assert get(server, "/api/v1/sites?revision=../x", token)[0] == 400


def test_metrics_have_fleet_series_and_per_site_ages(world, keys: Keys) -> None:
    server, _, token = world
    post(server, signed(keys, SITE, NOW).to_bytes())
    code, text = get(server, "/metrics", token)
    assert code == 200 and isinstance(text, str)
    assert 'outpost_fleet_sites{fleet="retail-eu",wave="canary",state="ok"} 1' in text
    assert f'outpost_site_report_age_seconds{{site="{SITE}"}}' in text
    assert 'outpost_site_never_reported{site="plant-ostrava"} 1' in text
    assert "outpost_collector_repository_ok 1" in text
    assert 'outpost_collector_reports_total{result="stored"}' in text


def test_the_ingest_route_answers_headers_methods_and_chunked_bodies(world, keys: Keys) -> None:
    """The route served straight on ASGI keeps the HTTP details of the framework's routes.

    Last in this module: it stores reports the tests above do not expect."""
    server, db, _ = world
    later = NOW + timedelta(hours=1)  # newer than what the tests above stored
    answer = urllib3.request(
        "POST",
        server.url + "/api/v1/reports",
        body=signed(keys, "us-aus-0244", later).to_bytes(),
        retries=False,
        timeout=10,
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.data) == {"outcome": "stored", "site": "us-aus-0244"}
    # Over the cap without a Content-Length (chunked): refused once the cap is passed.
    from reconciler.core.report import REPORT_NAMESPACE
    from reconciler.core.trust.sshsig import sign_message

    payload = json.dumps(status("us-nyc-0310", later, warnings=["y" * 300_000])).encode()
    armored = sign_message(keys.private("us-nyc-0310"), payload, namespace=REPORT_NAMESPACE)
    big = Envelope(payload, armored, "us-nyc-0310", later).to_bytes()
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    pool = urllib3.PoolManager()
    answer = pool.urlopen(
        "POST", server.url + "/api/v1/reports", body=chunks, chunked=True, retries=False, timeout=10
    )
    assert answer.status == 413 and "at most" in json.loads(answer.data)["error"]
    assert stored(db).get("us-nyc-0310", (NOW, ""))[0] < later
    # A small chunked report is read whole.
    small = signed(keys, "us-nyc-0310", later).to_bytes()
    answer = pool.urlopen(
        "POST",
        server.url + "/api/v1/reports",
        body=iter([small[:100], small[100:]]),
        chunked=True,
        retries=False,
        timeout=10,
    )
    assert answer.status == 200 and stored(db)["us-nyc-0310"][0] == later
    # Other methods on the route: 405 as before, nothing stored.
    assert urllib3.request("GET", server.url + "/api/v1/reports", retries=False).status == 405
    # The rate limit's answer carries Retry-After.
    codes = []
    for i in range(6):
        answer = urllib3.request(
            "POST",
            server.url + "/api/v1/reports",
            body=signed(keys, "au-syd-0501", later + timedelta(minutes=i)).to_bytes(),
            retries=False,
            timeout=10,
        )
        codes.append(answer.status)
    assert codes[-1] == 429 and int(answer.headers["Retry-After"]) > 0
