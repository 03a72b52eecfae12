"""Webhooks: an alert is sent once when it fires and once when it resolves, to a real receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from collector_world import Keys, signed

from reconciler.fleet.collector.app import Collector
from reconciler.fleet.collector.fleetview import FleetSource
from reconciler.fleet.collector.notify import Notifier
from reconciler.fleet.collector.store import open_store

NOW = datetime.now(UTC).replace(microsecond=0)
SITE = "de-muc-0007"


class Receiver:
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status == 200:  # recorded before the sender hears back
                    receiver.messages.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def collector(db: Path, fleet, clock: list[datetime]) -> Collector:
    source = FleetSource(fleet.path, fleet.allowed_signers)
    source.refresh(NOW)
    return Collector(store=open_store(str(db), now=NOW), source=source, clock=lambda: clock[0])


def test_fire_once_resolve_once_across_two_collectors(
    tmp_path: Path, keys: Keys, fleet, receiver: Receiver
) -> None:
    clock = [NOW]
    one, two = (
        collector(tmp_path / "c.db", fleet, clock),
        collector(tmp_path / "c.db", fleet, clock),
    )
    notify_one = Notifier([receiver.url], style="json")
    notify_two = Notifier([receiver.url], style="json")
    refused = signed(
        keys,
        SITE,
        NOW,
        outcome="refused",
        pending={"revision": "d" * 40, "reason": "unsigned commit", "until": None},
    )
    one.ingestor.ingest(refused.to_bytes(), "test")
    assert notify_one.evaluate(one) == [("firing", f"refused/{SITE}/{'d' * 40}")]
    assert notify_one.evaluate(one) == []
    assert notify_two.evaluate(two) == []  # the other collector sees it was sent
    [fired] = receiver.messages
    assert (fired["status"], fired["alert"], fired["site"]) == ("firing", "refused", SITE)
    assert "unsigned commit" in fired["detail"]
    # A newer report: the site took a good commit. The alert resolves, once.
    one.ingestor.ingest(signed(keys, SITE, NOW + timedelta(minutes=5)).to_bytes(), "test")
    clock[0] = NOW + timedelta(minutes=6)
    assert notify_two.evaluate(two) == [("resolved", f"refused/{SITE}/{'d' * 40}")]
    assert notify_one.evaluate(one) == []
    assert [m["status"] for m in receiver.messages] == ["firing", "resolved"]


def test_silence_and_slack_format_and_a_receiver_that_was_down(
    tmp_path: Path, keys: Keys, fleet, receiver: Receiver
) -> None:
    clock = [NOW]
    hq = collector(tmp_path / "c.db", fleet, clock)
    hq.ingestor.ingest(signed(keys, SITE, NOW).to_bytes(), "test")
    notifier = Notifier([receiver.url], style="slack")
    assert notifier.evaluate(hq) == []  # never-reported sites do not page
    clock[0] = NOW + timedelta(hours=3)  # past an online store's 2 h
    receiver.status = 503
    assert notifier.evaluate(hq) == []  # not delivered: not marked as sent
    receiver.status = 200
    assert notifier.evaluate(hq) == [("firing", f"silent/{SITE}")]
    [message] = receiver.messages
    assert message["text"].startswith(":red_circle: [FIRING] outpost silent at de-muc-0007")
