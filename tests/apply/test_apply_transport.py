"""The API server connection pool (``apply.transport``) against real local HTTP(S) servers:
keep-alive reuse, a connection the server closed, an answer not read to its end, TLS with
the kubeconfig's server name, a watch stream, a server that is not there; and hostile
servers: one that drips its answer inside each read timeout, answers over the size cap
sent every way HTTP/1.1 allows, a watch line that never ends."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from reconciler.core.errors import ClusterUnavailable
from reconciler.node.apply.cluster import Cluster, _events
from reconciler.node.apply.transport import Pool, TransportError, Urllib3Transport
from tools.testcluster._pki import serving_pair

TIMEOUT = (5.0, 5.0)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path.startswith("/watch"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in (b'{"type": "ADDED"}\n', b'{"type": "MODIFIED"}\n'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = b"x" * (200_000 if self.path == "/big" else 2)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/last":
            self.send_header("Connection", "close")
        if self.path in ("/last", "/drop"):  # /drop closes without saying so
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


def test_connections_are_kept_alive_and_reused(server: Server) -> None:
    pool = Pool(server.url, context=None)
    for path in ("/a", "/b?x=1", "/c"):
        answer = pool.request("GET", server.url + path, body=None, headers={}, timeout=TIMEOUT)
        assert (answer.status, answer.read()) == (200, b"xx")
    assert server.paths == ["/a", "/b?x=1", "/c"]
    assert server.connections == 1
    pool.close()


def test_a_connection_the_server_closed_is_not_written_to(server: Server) -> None:
    pool = Pool(server.url, context=None)
    answer = pool.request("GET", server.url + "/drop", body=None, headers={}, timeout=TIMEOUT)
    assert answer.read() == b"xx"
    [idle] = pool._idle  # the answer did not say it closes: kept
    assert idle.sock is not None
    assert select.select([idle.sock], [], [], 5)[0]  # the server's close has arrived
    answer = pool.request("GET", server.url + "/b", body=None, headers={}, timeout=TIMEOUT)
    assert answer.read() == b"xx"
    assert server.connections == 2
    pool.close()


def test_an_answer_not_read_to_its_end_closes_its_connection(server: Server) -> None:
    pool = Pool(server.url, context=None)
    answer = pool.request("GET", server.url + "/big", body=None, headers={}, timeout=TIMEOUT)
    assert len(next(answer.stream(1024))) <= 1024
    answer.release()
    assert pool._idle == []
    assert pool.request("GET", server.url + "/a", body=None, headers={}, timeout=TIMEOUT).read()
    assert server.connections == 2


def test_a_connection_the_server_says_it_closes_is_not_kept(server: Server) -> None:
    pool = Pool(server.url, context=None)
    assert pool.request("GET", server.url + "/last", body=None, headers={}, timeout=TIMEOUT).read()
    assert pool._idle == []


def test_a_watch_streams_its_lines(server: Server) -> None:
    pool = Pool(server.url, context=None)
    answer = pool.request("GET", server.url + "/watch", body=None, headers={}, timeout=TIMEOUT)
    assert b"".join(answer.stream(65536)).splitlines() == [
        b'{"type": "ADDED"}',
        b'{"type": "MODIFIED"}',
    ]
    answer.release()
    assert len(pool._idle) == 1  # read to its end: reusable


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_server_that_is_not_there_is_tried_three_times_then_named() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TransportError, match=r"cannot connect to 127\.0\.0\.1:\d+ \(3 attempts\)"):
        Pool(url, context=None).request("GET", url + "/", body=None, headers={}, timeout=TIMEOUT)
    cluster = Cluster(url, Pool(url, context=None), dict, timeout_seconds=2)
    with pytest.raises(ClusterUnavailable, match="did not answer: cannot connect"):
        cluster.version()


def test_a_silent_server_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        pool = Pool(url, context=None)
        with pytest.raises(TransportError, match="timed out"):
            pool.request("GET", url + "/", body=None, headers={}, timeout=(1.0, 0.3))


def test_tls_checks_the_kubeconfigs_server_name(server: Server, tmp_path: Path) -> None:
    name = "api.store.internal"  # the certificate names only this, not the address
    ca_file, cert_file, key_file = serving_pair(tmp_path, "api", name, [x509.DNSName(name)])
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert_file, key_file)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    url = server.url.replace("http:", "https:")
    trusting = ssl.create_default_context(cafile=str(ca_file))
    named = Pool(url, context=trusting, server_name="api.store.internal")
    answer = named.request("GET", url + "/a", body=None, headers={}, timeout=TIMEOUT)
    assert answer.read() == b"xx"
    # Connected by address, the certificate does not name 127.0.0.1: refused, not retried.
    with pytest.raises(TransportError, match=r"TLS verification of 127\.0\.0\.1:\d+ failed"):
        Pool(url, context=trusting).request(
            "GET", url + "/a", body=None, headers={}, timeout=TIMEOUT
        )


def test_the_agents_connection_does_not_import_urllib3(server: Server) -> None:
    """urllib3 is for the kubernetes library's fallback and the report sender only."""
    code = (
        "import sys\n"
        "from reconciler.node.apply.cluster import Cluster\n"
        "from reconciler.node.apply.transport import Pool\n"
        f"url = {server.url!r}\n"
        "answer = Pool(url, context=None).request("
        "'GET', url + '/a', body=None, headers={}, timeout=(5, 5))\n"
        "assert answer.read() == b'xx'\n"
        "print('urllib3' in sys.modules, 'http.client' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "True"]


class Dripping:
    """A server that sends a whole, valid answer one piece at a time, each piece well
    inside the read timeout: only a deadline on the whole answer stops it."""

    def __init__(self, answer: bytes, *, piece: int, pause: float, first: int = 0) -> None:
        self._answer, self._piece, self._pause, self._first = answer, piece, pause, first
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.finished = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            connection.recv(65536)  # the request
            try:
                connection.sendall(self._answer[: self._first])
                for at in range(self._first, len(self._answer), self._piece):
                    connection.sendall(self._answer[at : at + self._piece])
                    self.finished.wait(self._pause)
            except OSError:
                return  # the client gave up
            self.finished.set()

    def close(self) -> None:
        self.finished.set()
        self._listener.close()


BODY = b'{"kind": "Status"}'
WHOLE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_an_answer_dripped_inside_each_read_timeout_still_meets_its_deadline(where: str) -> None:
    head = WHOLE.split(b"\r\n\r\n")[0]
    # 0.1-0.2 s between pieces against a 1 s read timeout: each read is quick, the whole is not.
    if where == "headers":
        server = Dripping(WHOLE, piece=2, pause=0.1)  # ~3 s to send
    else:  # the headers at once, then the body a byte at a time (~3.6 s)
        server = Dripping(WHOLE, piece=1, pause=0.2, first=len(head) + 4)
    try:
        pool = Pool(server.url, context=None)
        with pytest.raises(TransportError, match=r"timed out: no complete answer within 1 s"):
            pool.request("GET", server.url + "/", body=None, headers={}, timeout=(1.0, 1.0)).read()
        assert not server.finished.is_set()  # given up before the server was done
    finally:
        server.close()


def test_a_dripped_answer_that_ends_in_time_is_read() -> None:
    server = Dripping(WHOLE, piece=8, pause=0.01)
    try:
        pool = Pool(server.url, context=None)
        answer = pool.request("GET", server.url + "/", body=None, headers={}, timeout=(5.0, 5.0))
        assert answer.read() == BODY
    finally:
        server.close()


class Sized(BaseHTTPRequestHandler):
    """Answers ``/<how>/<n>`` with n bytes: with ``Content-Length``, chunked, or until it
    closes the connection."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        how, size = self.path.strip("/").split("/")
        body = b"y" * int(size)
        self.send_response(200)
        if how == "length":
            self.send_header("Content-Length", str(len(body)))
        elif how == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            if how == "chunked":
                for at in range(0, len(body), 300):
                    piece = body[at : at + 300]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(body)
        except OSError:
            pass  # the client stopped reading


@pytest.fixture
def sized() -> Iterator[str]:
    running = ThreadingHTTPServer(("127.0.0.1", 0), Sized)
    running.daemon_threads = True
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{running.server_address[1]}"
    running.shutdown()
    running.server_close()


@pytest.mark.parametrize("how", ["length", "chunked", "close"])
def test_an_answer_over_the_cap_is_refused_and_one_at_the_cap_read(sized: str, how: str) -> None:
    pool = Pool(sized, context=None, max_answer=1000)
    assert pool.request("GET", f"{sized}/{how}/1000", body=None, headers={}, timeout=TIMEOUT).read()
    with pytest.raises(TransportError, match=r"the answer is larger than 1,000 bytes"):
        pool.request("GET", f"{sized}/{how}/1001", body=None, headers={}, timeout=TIMEOUT).read()
    # The refused answer's connection is not reused half-read: the next request is whole.
    answer = pool.request("GET", f"{sized}/{how}/10", body=None, headers={}, timeout=TIMEOUT)
    assert answer.read() == b"y" * 10


def test_the_cluster_names_what_it_was_reading_when_the_answer_is_too_large(sized: str) -> None:
    cluster = Cluster(sized, Pool(sized, context=None, max_answer=1000), dict)
    with pytest.raises(ClusterUnavailable, match=r"larger than 1,000 bytes") as raised:
        cluster._answer(
            cluster._send("GET", "/chunked/5000", what="list configmaps in shop"),
            "list configmaps in shop",
        )
    assert str(raised.value).startswith("list configmaps in shop: reading the answer")


def test_the_handed_over_urllib3_pool_keeps_the_same_cap(sized: str) -> None:
    import urllib3

    transport = Urllib3Transport(urllib3.PoolManager(), max_answer=1000)
    url = f"{sized}/chunked/1000"
    assert transport.request("GET", url, body=None, headers={}, timeout=TIMEOUT).read()
    with pytest.raises(TransportError, match=r"larger than 1,000 bytes"):
        transport.request(
            "GET", f"{sized}/length/1001", body=None, headers={}, timeout=TIMEOUT
        ).read()


class Pieces:
    """An answer that streams the given pieces (what a watch reads)."""

    def __init__(self, *pieces: bytes) -> None:
        self._pieces = pieces

    def stream(self, amount: int) -> Iterator[bytes]:
        yield from self._pieces


def test_a_watch_event_longer_than_the_cap_ends_the_watch() -> None:
    pieces = Pieces(b'{"type": "ADDED"}\n{"type": ', b"x" * 600)
    events = _events(pieces, longest=500)  # type: ignore[arg-type]
    assert next(events) == {"type": "ADDED"}
    with pytest.raises(ValueError, match=r"longer than 500 bytes"):
        next(events)


def test_watch_events_split_anywhere_decode_the_same() -> None:
    stream = b'{"type": "ADDED"}\n\n{"type": "MODIFIED", "n": 1}\n{"type": "DELETED"}'
    whole = list(_events(Pieces(stream)))  # type: ignore[arg-type]
    assert [event["type"] for event in whole] == ["ADDED", "MODIFIED", "DELETED"]
    for cut in range(len(stream)):
        for second in range(cut, len(stream)):
            pieces = Pieces(stream[:cut], stream[cut:second], stream[second:])
            assert list(_events(pieces)) == whole  # type: ignore[arg-type]
