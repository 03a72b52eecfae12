"""A node follows a bundle feed served by a real nginx on loopback.

Real parts: git bundles from `outpost bundle publish`'s code, commits signed with ssh keys
from ssh-keygen, nginx from Debian (its ETag/Last-Modified and Range handling, its access
log to count requests), the agent's real pipeline. The cluster is a recording stand-in
(`feed_world.RecordingCluster`): applying is not what these tests are about.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from airgap_world import History, Key, snapshot
from feed_world import SOAK, WINDOW, Desk, FeedNode, make_tls

from tools.webserver import LogLine, Nginx


@pytest.fixture
def desk(history: History, nginx: Nginx) -> Desk:
    return Desk(history.repo, nginx)


@pytest.fixture
def node(tmp_path: Path, keys: dict[str, Key], desk: Desk) -> FeedNode:
    return FeedNode(tmp_path / "node", keys["ops"], desk.url)


def since(nginx: Nginx, mark: int, under: str = "/") -> list[LogLine]:
    """The requests logged after ``mark`` whose path starts with ``under``.

    nginx writes a request's line when it ends; a download the node gave up on under
    ``limit_rate`` ends when nginx next tries to send, which can be after the next tick has
    begun, so a test that follows a cut-off download names the feed it is asking about.
    """
    return [line for line in nginx.requests()[mark:] if line.uri.startswith(under)]


def uris(lines: list[LogLine]) -> list[tuple[str, int]]:
    return [(line.uri, line.status) for line in lines]


def first_tick_applies(node: FeedNode, candidate: str) -> None:
    """Nothing runs at the plant yet: with ``spec.firstApply: immediate`` (the default) the
    first tick downloads the fleet and applies it outside its wave (ARCHITECTURE.md, trust
    rule 26)."""
    report = node.tick()
    assert (report.outcome, report.applied) == ("applied", candidate), (
        report.error,
        report.warnings,
    )
    assert node.applied == candidate


def install_at_a(history: History, desk: Desk, node: FeedNode) -> None:
    """Publish A (a new feed: the full bundle only) and let the node apply it."""
    history.repo.git("reset", "-q", "--hard", history.a)
    first = desk.publish()
    assert first.outcome == "first"
    first_tick_applies(node, history.a)


# -- the four behaviours the issue names ------------------------------------------------


def test_a_node_follows_three_published_changes(
    history: History, desk: Desk, node: FeedNode, nginx: Nginx
) -> None:
    mark = len(nginx.requests())
    install_at_a(history, desk, node)
    # A new node: the index, then the full bundle — nothing else.
    assert uris(since(nginx, mark)) == [
        ("/feed/index.json", 200),
        (f"/feed/bundles/full-{history.a}.bundle", 200),
    ]

    previous = history.a
    for interval in (750, 1000, 1250):
        head = history.repo.change_plant(f"Ostrava: publish every {interval} ms", interval)
        assert desk.publish().outcome == "published"
        mark = len(nginx.requests())

        report = node.tick()

        assert report.outcome == "applied", (report.error, report.warnings)
        assert report.applied == head == node.applied
        # Only the step from what the node had to the new head.
        assert uris(since(nginx, mark)) == [
            ("/feed/index.json", 200),
            (f"/feed/bundles/{previous}-{head}.bundle", 200),
        ]
        previous = head
    assert node.cluster.applied[-1] == previous


def test_a_node_offline_for_three_publishes_catches_up_in_one_tick(
    history: History, desk: Desk, node: FeedNode, nginx: Nginx
) -> None:
    install_at_a(history, desk, node)
    heads = [history.a]
    for interval in (750, 1000, 1250):
        heads.append(history.repo.change_plant(f"Ostrava: every {interval} ms", interval))
        desk.publish()
    mark = len(nginx.requests())

    report = node.tick()

    assert report.outcome == "applied", (report.error, report.warnings)
    assert node.applied == heads[-1]
    assert uris(since(nginx, mark)) == [
        ("/feed/index.json", 200),
        *((f"/feed/bundles/{a}-{b}.bundle", 200) for a, b in itertools.pairwise(heads)),
    ]
    state = json.loads((node.config.state_dir / "state.json").read_text())
    assert state["applied"] == heads[-1]


def test_a_tampered_bundle_is_refused_and_nothing_changes(
    history: History, desk: Desk, node: FeedNode, nginx: Nginx
) -> None:
    install_at_a(history, desk, node)
    head = history.repo.change_plant("Ostrava: publish every 750 ms", 750)
    desk.publish()
    step = desk.out / "bundles" / f"{history.a}-{head}.bundle"
    data = bytearray(step.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the checksum can tell
    step.write_bytes(bytes(data))
    before = snapshot(node.mirror)

    report = node.tick()

    assert report.outcome == "unchanged"
    assert node.applied == history.a
    assert node.candidate == history.a
    assert snapshot(node.mirror) == before
    [warning] = [w for w in report.warnings if "feed" in w]
    assert "is not the file the index names" in warning
    assert f"{history.a}-{head}.bundle" in warning
    assert node.cluster.applied == [history.a]
    # The bad copy is not kept: the next tick downloads it again (and finds it still bad).
    assert not list((node.config.state_dir / "feed" / "partial").iterdir())


def test_a_consistent_feed_with_a_commit_nobody_signed_is_refused_by_trust(
    history: History, desk: Desk, node: FeedNode, keys: dict[str, Key], nginx: Nginx
) -> None:
    """Whoever controls the server can rewrite the index to match its bundle: the commit
    signature is what refuses it."""
    install_at_a(history, desk, node)
    rogue = history.repo.change_plant("Ostrava: publish every 10 ms", 10, keys["rogue"])
    desk.publish()

    report = node.tick()

    assert report.outcome == "refused"
    assert rogue[:7] in (report.pending_reason or "")
    assert node.applied == history.a
    assert node.cluster.applied == [history.a]

    # The refusal stands; the refused bundle is not downloaded again tick after tick.
    mark = len(nginx.requests())
    report = node.tick()
    assert report.outcome == "refused"
    assert uris(since(nginx, mark)) == [("/feed/index.json", 304)]
    assert node.applied == history.a


def test_an_unchanged_feed_costs_one_request_answered_304(
    history: History, desk: Desk, node: FeedNode, nginx: Nginx
) -> None:
    install_at_a(history, desk, node)
    assert desk.publish().outcome == "unchanged"  # republishing changes nothing
    mark = len(nginx.requests())

    for _ in range(3):
        report = node.tick()
        assert report.outcome == "unchanged"
        assert not report.warnings

    lines = since(nginx, mark)
    assert uris(lines) == [("/feed/index.json", 304)] * 3
    assert all(line.bytes_sent < 400 for line in lines)  # headers only


def test_a_plant_enrolled_gated_downloads_the_fleet_and_waits_for_its_wave(
    history: History, desk: Desk, tmp_path: Path, keys: dict[str, Key], nginx: Nginx
) -> None:
    """``spec.firstApply: gated``: the whole fleet is new to the node, so the plant's wave
    opens a week from when the node first saw it (trust rule 16), not from the committer
    time; the feed is asked once more a week later, answered 304, and the node applies."""
    history.repo.git("reset", "-q", "--hard", history.a)
    desk.publish()
    node = FeedNode(tmp_path / "gated", keys["ops"], desk.url, first_apply="gated")
    mark = len(nginx.requests())
    report = node.tick()
    assert (report.outcome, report.candidate, node.applied) == ("waiting", history.a, None), (
        report.error,
        report.warnings,
    )
    opens = (WINDOW + SOAK).strftime("%Y-%m-%d %H:%M UTC")
    assert report.pending_reason == f"waiting for wave 'all' (opens {opens})"
    assert node.cluster.applied == []

    node.now = WINDOW + SOAK
    report = node.tick()
    assert (report.outcome, node.applied) == ("applied", history.a), report.warnings
    assert uris(since(nginx, mark)) == [
        ("/feed/index.json", 200),
        (f"/feed/bundles/full-{history.a}.bundle", 200),
        ("/feed/index.json", 304),
    ]


# -- failure modes: a temporary error or a refusal with a reason, never a hang ----------


def test_no_feed_published_is_a_temporary_404(node: FeedNode, nginx: Nginx) -> None:
    report = node.tick()

    assert report.temporary
    [warning] = report.warnings
    assert "no index" in warning and "404" in warning
    assert node.applied is None


def test_an_index_naming_a_missing_bundle_is_temporary_and_the_site_keeps_what_it_runs(
    history: History, desk: Desk, node: FeedNode
) -> None:
    install_at_a(history, desk, node)
    head = history.repo.change_plant("Ostrava: publish every 750 ms", 750)
    desk.publish()
    step = desk.out / "bundles" / f"{history.a}-{head}.bundle"
    step.rename(step.with_name("aside"))

    report = node.tick()

    assert report.temporary
    assert report.outcome == "unchanged"
    assert node.applied == history.a
    assert any("404" in w and f"{history.a}-{head}.bundle" in w for w in report.warnings)

    # The upload finishes: the next tick (the index answered 304) takes the step.
    step.with_name("aside").rename(step)
    report = node.tick()
    assert report.outcome == "applied", (report.error, report.warnings)
    assert node.applied == head


def test_a_corrupt_index_is_refused_with_its_reason(
    history: History, desk: Desk, node: FeedNode
) -> None:
    install_at_a(history, desk, node)
    (desk.out / "index.json").write_text('{"apiVersion": "outpost/v1", "kind": "BundleFeed"')

    report = node.tick()

    assert report.outcome == "unchanged"
    assert not report.temporary
    [warning] = report.warnings
    assert "feed refused" in warning and "index.json: not JSON" in warning
    assert node.applied == history.a


def test_a_feed_that_goes_backwards_is_refused_and_the_node_keeps_its_head(
    history: History, desk: Desk, node: FeedNode
) -> None:
    install_at_a(history, desk, node)
    old_index = (desk.out / "index.json").read_bytes()
    head = history.repo.change_plant("Ostrava: publish every 750 ms", 750)
    desk.publish()
    assert node.tick().outcome == "applied"
    (desk.out / "index.json").write_bytes(old_index)  # an old copy restored

    report = node.tick()

    assert node.applied == head
    assert node.candidate == head
    [warning] = report.warnings
    assert "went backwards" in warning
    assert history.a[:12] in warning and head[:12] in warning


def test_a_slow_server_runs_into_the_deadline_and_the_next_tick_resumes_the_download(
    history: History, desk: Desk, node: FeedNode, nginx: Nginx
) -> None:
    history.repo.git("reset", "-q", "--hard", history.a)
    desk.publish()
    # /slow/ serves the same files at 2 KiB/s (nginx limit_rate); the tick may spend 2 s.
    node.with_feed(url=f"{nginx.url}/slow/feed/", deadline=2.0)

    report = node.tick()

    assert report.temporary
    assert any("too slow" in w for w in report.warnings), report.warnings
    assert node.applied is None
    [part] = list((node.config.state_dir / "feed" / "partial").iterdir())
    got = part.stat().st_size
    assert 0 < got < (desk.out / "bundles" / f"full-{history.a}.bundle").stat().st_size

    node.with_feed(url=desk.url, deadline=600.0)
    mark = len(nginx.requests())
    report = node.tick()

    assert report.outcome == "applied", (report.error, report.warnings)
    assert node.applied == history.a
    [_index, resumed] = since(nginx, mark, under="/feed/")
    assert (resumed.uri, resumed.status, resumed.range) == (
        f"/feed/bundles/full-{history.a}.bundle",
        206,
        f"bytes={got}-",
    )


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/feed/"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_never_answers_is_a_read_timeout_not_a_hang(
    node: FeedNode, silent_server: str
) -> None:
    node.with_feed(url=silent_server, read_timeout=1.0)

    report = node.tick()

    assert report.temporary
    [warning] = report.warnings
    assert "stopped answering" in warning


def test_a_server_ignoring_range_sends_the_whole_file_and_the_partial_copy_starts_over(
    history: History, desk: Desk, node: FeedNode, nginx: Nginx
) -> None:
    history.repo.git("reset", "-q", "--hard", history.a)
    desk.publish()
    node.with_feed(url=f"{nginx.url}/slow/feed/", deadline=2.0)
    assert node.tick().temporary
    [part] = list((node.config.state_dir / "feed" / "partial").iterdir())
    assert part.stat().st_size > 0

    node.with_feed(url=f"{nginx.url}/norange/feed/", deadline=600.0)
    mark = len(nginx.requests())
    report = node.tick()

    assert report.outcome == "applied", (report.error, report.warnings)
    assert node.applied == history.a
    # The node asked to resume; nginx ignored the Range and sent all of it, from byte 0.
    [_index, whole] = since(nginx, mark, under="/norange/")
    assert whole.uri == f"/norange/feed/bundles/full-{history.a}.bundle"
    assert whole.status == 200
    assert whole.range.startswith("bytes=") and whole.range != "bytes=0-"


def test_a_bundle_longer_than_the_index_says_is_refused(
    history: History, desk: Desk, node: FeedNode
) -> None:
    install_at_a(history, desk, node)
    head = history.repo.change_plant("Ostrava: publish every 750 ms", 750)
    desk.publish()
    step = desk.out / "bundles" / f"{history.a}-{head}.bundle"
    step.write_bytes(step.read_bytes() + b"\0" * 4096)

    report = node.tick()

    assert node.applied == history.a
    [warning] = report.warnings
    assert "longer than the" in warning and "bytes the index names" in warning


def test_https_with_the_configured_ca_bundle_and_refused_without_it(
    history: History, keys: dict[str, Key], tmp_path: Path
) -> None:
    ca, cert, key = make_tls(tmp_path / "tls")
    with Nginx(tmp_path / "tls-nginx", tmp_path / "tls-www", tls=(cert, key)) as server:
        desk = Desk(history.repo, server)
        desk.publish()
        trusting = FeedNode(tmp_path / "trusting", keys["ops"], desk.url, ca_bundle=ca)
        stranger = FeedNode(tmp_path / "stranger", keys["ops"], desk.url)

        first_tick_applies(trusting, history.c)
        refused = stranger.tick()

    assert desk.url.startswith("https://")
    assert refused.temporary
    [warning] = refused.warnings
    assert "TLS verification failed" in warning and "caBundle" in warning
    assert stranger.applied is None
