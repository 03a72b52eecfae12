"""The node's reporter: signed reports to a real HTTPS receiver on loopback, spool, backoff."""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from node_keys import NODE_KEYS
from report_tls import Tls, make_tls

from reconciler.core.report import open_envelope, read_envelope
from reconciler.core.trust.sshsig import parse_public_key_line
from reconciler.node.config import ReportConfig
from reconciler.node.report import BACKOFF_CAP, Reporter, backoff

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
SITE = "de-muc-0007"
MUC_KEYS = [parse_public_key_line((NODE_KEYS / f"{SITE}-edge-1.key.pub").read_text())]


class Receiver:
    """An HTTPS server on 127.0.0.1 that records what it is sent and answers ``status``."""

    def __init__(self, tls: Tls) -> None:
        self.bodies: list[bytes] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                if receiver.status == 200:  # recorded before the sender hears back
                    receiver.bodies.append(body)
                self.send_response(receiver.status)
                for key, value in receiver.headers.items():
                    self.send_header(key, value)
                payload = (
                    b'{"outcome": "stored"}'
                    if receiver.status == 200
                    else (b'{"error": "no such key"}')
                )
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/api/v1/reports"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    server = Receiver(tls)
    yield server
    server.close()


def status(outcome: str = "applied", at: datetime = NOW, revision: str = "a" * 40) -> dict:
    return {
        "apiVersion": "outpost/v1",
        "kind": "SiteStatus",
        "site": SITE,
        "time": at.isoformat(),
        "outcome": outcome,
        "applied": {"revision": revision, "at": NOW.isoformat()},
        "fetched": {"revision": revision, "at": at.isoformat()},
        "sourceLastAnswered": at.isoformat(),
        "health": "healthy",
        "warnings": [],
    }


def reporter(tmp_path: Path, key: Path, url: str, ca: Path | None, **kw: object) -> Reporter:
    return Reporter(
        site=SITE,
        state_dir=tmp_path / "state",
        identity_key=key,
        report=ReportConfig(url=url, ca_bundle=ca, interval=3600, spool=int(kw.pop("spool", 5))),
        outbox=kw.pop("outbox", None),  # type: ignore[arg-type]
        rng=random.Random(7),
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}/api/v1/reports"


def test_a_changed_status_arrives_signed_over_verified_tls(
    tmp_path: Path, muc_key: Path, receiver: Receiver, tls: Tls
) -> None:
    node = reporter(tmp_path, muc_key, receiver.url, tls.ca)
    delivery = node.after_tick(status(), NOW)
    assert (delivery.queued, delivery.sent, delivery.spooled, delivery.error) == (True, 1, 0, None)
    [body] = receiver.bodies
    report = open_envelope(read_envelope(body, "received"), MUC_KEYS)
    assert report.body["outcome"] == "applied"
    assert delivery.last_sent_at == NOW.timestamp()


def test_nothing_new_is_not_sent_until_the_interval_passes(
    tmp_path: Path, muc_key: Path, receiver: Receiver, tls: Tls
) -> None:
    node = reporter(tmp_path, muc_key, receiver.url, tls.ca)
    node.after_tick(status(), NOW)
    later = NOW + timedelta(minutes=5)
    assert not node.after_tick(status(at=later), later).queued  # only timestamps changed
    changed = NOW + timedelta(minutes=10)
    assert node.after_tick(status("rolled-back", at=changed), changed).queued
    hour = changed + timedelta(hours=1)
    assert node.after_tick(status("rolled-back", at=hour), hour).queued
    outcomes = [json.loads(read_envelope(b, "r").payload)["outcome"] for b in receiver.bodies]
    assert outcomes == ["applied", "rolled-back", "rolled-back"]


def test_an_unknown_ca_is_refused_and_the_report_stays_spooled(
    tmp_path: Path, muc_key: Path, receiver: Receiver
) -> None:
    other = make_tls(tmp_path / "other", "other")
    node = reporter(tmp_path, muc_key, receiver.url, other.ca)
    delivery = node.after_tick(status(), NOW)
    assert delivery.sent == 0 and delivery.spooled == 1
    assert delivery.error is not None and "CERTIFICATE_VERIFY_FAILED" in delivery.error
    assert receiver.bodies == []


def test_while_the_collector_is_down_reports_wait_then_all_arrive_in_order(
    tmp_path: Path, muc_key: Path, tls: Tls
) -> None:
    down = closed_port_url()
    node = reporter(tmp_path, muc_key, down, tls.ca, spool=3)
    times = [NOW + timedelta(hours=i) for i in range(5)]
    deliveries = []
    for i, when in enumerate(times):
        deliveries.append(node.after_tick(status(at=when, revision=f"{i:040d}"), when))
    # Backoff: after the first failure the next rounds wait; the spool is bounded at 3,
    # the two oldest dropped and counted.
    assert [d.spooled for d in deliveries] == [1, 2, 3, 3, 3]
    assert deliveries[-1].dropped == 2
    assert deliveries[0].failures == 1 and deliveries[0].error is not None
    spool = sorted((tmp_path / "state" / "reports").glob("0*.json"))
    revisions = [
        json.loads(read_envelope(p.read_bytes(), "s").payload)["applied"]["revision"] for p in spool
    ]
    assert revisions == [f"{i:040d}" for i in (2, 3, 4)]
    # The collector comes back: the next round after the backoff sends all three, oldest first.
    receiver = Receiver(tls)
    try:
        node.report = ReportConfig(url=receiver.url, ca_bundle=tls.ca, interval=3600, spool=3)
        later = times[-1] + timedelta(minutes=30)  # past the backoff, inside the interval
        delivery = node.after_tick(status(at=later, revision=f"{4:040d}"), later)
        assert delivery.sent == 3 and delivery.spooled == 0 and delivery.failures == 0
        got = [
            json.loads(read_envelope(b, "r").payload)["applied"]["revision"]
            for b in receiver.bodies
        ]
        assert got == [f"{i:040d}" for i in (2, 3, 4)]
    finally:
        receiver.close()


def test_backoff_skips_rounds_until_the_next_attempt(
    tmp_path: Path, muc_key: Path, receiver: Receiver, tls: Tls
) -> None:
    receiver.status = 503
    receiver.headers = {"Retry-After": "600"}
    node = reporter(tmp_path, muc_key, receiver.url, tls.ca)
    first = node.after_tick(status(), NOW)
    assert first.error is not None and "503" in first.error and first.spooled == 1
    meta = json.loads((tmp_path / "state" / "reports" / "spool.json").read_text())
    assert meta["nextAttempt"] >= NOW.timestamp() + 600  # Retry-After is honoured
    receiver.status = 200
    soon = NOW + timedelta(minutes=5)
    assert node.after_tick(status(at=soon), soon).sent == 0  # still backing off
    late = NOW + timedelta(minutes=11)
    assert node.after_tick(status(at=late), late).sent == 1


def test_a_report_refused_for_good_is_dropped_and_counted(
    tmp_path: Path, muc_key: Path, receiver: Receiver, tls: Tls
) -> None:
    receiver.status = 401
    node = reporter(tmp_path, muc_key, receiver.url, tls.ca)
    delivery = node.after_tick(status(), NOW)
    assert (delivery.refused, delivery.spooled, delivery.failures) == (1, 0, 0)


def test_an_unreadable_key_never_fails_the_caller(tmp_path: Path, receiver: Receiver) -> None:
    node = reporter(tmp_path, tmp_path / "missing.key", receiver.url, None)
    delivery = node.after_tick(status(), NOW)
    assert delivery.error is not None and "cannot read the node key" in delivery.error
    assert receiver.bodies == []


def test_the_outbox_gets_the_signed_report(tmp_path: Path, muc_key: Path) -> None:
    node = Reporter(
        site=SITE,
        state_dir=tmp_path / "state",
        identity_key=muc_key,
        report=None,
        outbox=tmp_path / "outbox",
    )
    assert node.after_tick(status(), NOW).queued
    data = (tmp_path / "outbox" / f"outpost-status-{SITE}.json").read_bytes()
    assert open_envelope(read_envelope(data, "outbox"), MUC_KEYS).time == NOW


def test_an_outbox_that_is_a_symlink_is_not_written_through(tmp_path: Path, muc_key: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "outbox").symlink_to(elsewhere)
    node = Reporter(
        site=SITE,
        state_dir=tmp_path / "state",
        identity_key=muc_key,
        report=None,
        outbox=tmp_path / "outbox",
    )
    delivery = node.after_tick(status(), NOW)
    assert delivery.error is not None and "symbolic link" in delivery.error
    assert list(elsewhere.iterdir()) == []


@given(st.integers(min_value=1, max_value=60))
def test_backoff_grows_with_jitter_and_is_capped(failures: int) -> None:
    rng = random.Random(failures)
    ceiling = min(BACKOFF_CAP, 30.0 * 2 ** (failures - 1))
    wait = backoff(failures, rng)
    assert ceiling / 2 <= wait <= ceiling


def test_a_fifo_in_the_spool_is_dropped_not_waited_on(
    tmp_path: Path, muc_key: Path, receiver: Receiver, tls: Tls
) -> None:
    """Spooled reports and spool.json are read bounded: a FIFO in place of either would
    block a plain open() for ever; the report is dropped (and counted), the counters restart."""
    node = reporter(tmp_path, muc_key, closed_port_url(), tls.ca)
    assert node.after_tick(status(), NOW).spooled == 1
    spool = tmp_path / "state" / "reports"
    [spooled] = sorted(spool.glob("0*.json"))
    spooled.unlink()
    os.mkfifo(spooled)
    (spool / "spool.json").unlink()
    os.mkfifo(spool / "spool.json")
    node.report = ReportConfig(url=receiver.url, ca_bundle=tls.ca, interval=3600, spool=5)
    later = NOW + timedelta(hours=2)
    delivery = node.after_tick(status(at=later, revision="b" * 40), later)
    assert (delivery.sent, delivery.spooled) == (1, 0)
    [body] = receiver.bodies
    assert open_envelope(read_envelope(body, "r"), MUC_KEYS).body["applied"]["revision"] == "b" * 40
    meta = json.loads((spool / "spool.json").read_text())
    assert meta["dropped"] == 1
