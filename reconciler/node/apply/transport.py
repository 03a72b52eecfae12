"""HTTP/1.1 to the API server: a small keep-alive pool over the standard library's ``http.client``.

`Cluster` sends every request through a `Transport`. The agent's own (`Pool`) is built
from the kubeconfig's endpoint and TLS context; a ``kubernetes.client.ApiClient`` handed
over keeps its urllib3 pool (`Urllib3Transport`).

Why not urllib3 for the agent's own connection: a node runs the tick as a fresh process
every five minutes, and importing urllib3 (its HTTP/2 probe imports ``importlib.metadata``,
its URL parser compiles a dozen expressions) costs about 20 ms of a no-op tick's 0.24 s,
for features the agent does not use (proxies, redirects, compression, HTTP/2). What it
does use is kept here, the same way:

- a connection is reused while the server keeps it open; one found closed (or with
  bytes nobody asked for) when taken from the pool is dropped, not written to;
- connecting (TCP and the TLS handshake) has its own timeout and is tried three times
  at once, as urllib3's ``Retry(connect=2)`` did; once a request is sent it is never sent
  again (a write the server may have done is not repeated);
- every read has a timeout, and the whole answer a deadline: the read timeout counts
  from the request, not from the last byte, so a server that sends one byte just inside
  each timeout cannot keep a request going (the headers included);
- an answer is read only up to ``max_answer`` bytes (`MAX_ANSWER_BYTES`: a LIST page of
  500 large objects fits many times over); a larger one is an error, not a full memory;
- a response not read to its end closes its connection;
- at most ``maxsize`` idle connections are kept; threads each take their own.

Every failure to connect, send or read is a `TransportError` (an ``OSError``) with the
reason; `Cluster` turns it into ``ClusterUnavailable``.
"""

from __future__ import annotations

import functools
import http.client
import io
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = [
    "MAX_ANSWER_BYTES",
    "Answer",
    "Pool",
    "Transport",
    "TransportError",
    "Urllib3Transport",
]

CONNECT_ATTEMPTS = 3
"""Connecting is tried this often before a request gives up (urllib3's ``connect=2``)."""

MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The largest answer read, and the longest line of a watch: the agent's largest request
is a LIST page of 500 objects (a Secret or ConfigMap is at most 1 MiB, most are a few
KiB); a store's API server that answers more is broken, and the node is small."""


class TransportError(OSError):
    """The connection could not be made, or broke; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Answer(Protocol):
    """A response whose body has not been read yet."""

    @property
    def status(self) -> int: ...

    def read(self) -> bytes:
        """The whole body (at most the transport's cap, else `TransportError`); the
        connection goes back to its pool."""
        ...

    def stream(self, amount: int) -> Iterator[bytes]:
        """The body in pieces as they arrive (a watch)."""
        ...

    def release(self) -> None:
        """Done with this answer: its connection is reused if it can be, else closed."""
        ...


class Transport(Protocol):
    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> Answer:
        """Send one request; its answer with the body unread, or `TransportError`."""
        ...

    def close(self) -> None: ...


class _Deadline(io.RawIOBase):
    """The socket's own reader, each read waiting at most until ``deadline``."""

    def __init__(
        self,
        raw: io.RawIOBase,
        sock: socket.socket,
        deadline: float,
        seconds: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self._raw = raw  # holds the socket open while the answer is read, as http.client's does
        self._sock = sock
        self._deadline = deadline
        self._late = _late(seconds)
        self._clock = clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - self._clock()
        if left <= 0:
            raise TimeoutError(self._late)
        self._sock.settimeout(left)
        try:
            return self._raw.readinto(buffer)
        except TimeoutError as exc:
            raise TimeoutError(self._late) from exc

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """A response read through `_Deadline` instead of the socket's own file."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float,
        seconds: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        raw = self.fp.detach()  # nothing read yet: the buffer is empty
        self.fp = io.BufferedReader(_Deadline(raw, sock, deadline, seconds, clock))


class _TLSConnection(http.client.HTTPConnection):
    """HTTPS with the caller's context and the name the certificate must carry (the
    kubeconfig's ``tls-server-name`` may differ from the host connected to)."""

    default_port = 443

    def __init__(
        self, host: str, port: int, *, timeout: float, context: ssl.SSLContext, name: str
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._name = name

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._name)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the server (or has unasked-for bytes)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _too_large(cap: int) -> TransportError:
    return TransportError(f"the answer is larger than {cap:,} bytes, the most this node reads")


def _late(seconds: float) -> str:
    return f"timed out: no complete answer within {seconds:g} s"


def _joined(pieces: Iterable[bytes], cap: int) -> bytes:
    """``pieces`` as one body; `TransportError` at the first byte past ``cap``."""
    parts, size = [], 0
    for piece in pieces:
        size += len(piece)
        if size > cap:
            raise _too_large(cap)
        parts.append(piece)
    return b"".join(parts)


class _PoolAnswer:
    def __init__(
        self,
        pool: Pool,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        cap: int,
    ) -> None:
        self._pool = pool
        self._connection: http.client.HTTPConnection | None = connection
        self._response = response
        self._cap = cap
        self.status = response.status

    def read(self) -> bytes:
        try:
            if self._response.length is not None:  # said in advance: read whole or refused
                if self._response.length > self._cap:
                    raise _too_large(self._cap)
                return self._response.read()
            return _joined(iter(lambda: self._response.read(65536), b""), self._cap)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TransportError):
                raise
            raise TransportError(_reason(exc)) from exc
        finally:
            self.release()

    def stream(self, amount: int) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._response.read1(amount)
            except (OSError, http.client.HTTPException) as exc:
                raise TransportError(_reason(exc)) from exc
            if not chunk:
                return
            yield chunk

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._response.isclosed() and not self._response.will_close:
            self._pool._put(connection)
        else:
            self._response.close()
            connection.close()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Pool:
    """Keep-alive HTTP/1.1 connections to one server (see the module docstring)."""

    def __init__(
        self,
        server: str,
        *,
        context: ssl.SSLContext | None,
        server_name: str | None = None,
        maxsize: int = 8,
        max_answer: int = MAX_ANSWER_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {server!r}")
        self._https = parts.scheme == "https"
        if self._https and context is None:
            raise ValueError(f"{server}: HTTPS needs a TLS context")
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._context = context
        self._name = server_name or self._host
        self._maxsize = maxsize
        self._max_answer = max_answer
        self._clock = clock
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _take(self) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if not _dropped(connection):
                return connection
            connection.close()

    def _put(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._maxsize:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        where = f"{self._host}:{self._port}"
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            connection: http.client.HTTPConnection
            if self._https:
                assert self._context is not None
                connection = _TLSConnection(
                    self._host, self._port, timeout=timeout, context=self._context, name=self._name
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            try:
                connection.connect()
            except ssl.SSLCertVerificationError as exc:  # the same certificate again: no retry
                connection.close()
                raise TransportError(f"TLS verification of {where} failed: {exc}") from exc
            except OSError as exc:
                connection.close()
                if attempt == CONNECT_ATTEMPTS:
                    raise TransportError(
                        f"cannot connect to {where} ({attempt} attempts): {_reason(exc)}"
                    ) from exc
            else:
                return connection
        raise AssertionError("unreachable")  # pragma: no cover

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> Answer:
        connect, read = timeout
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self._take() or self._connect(connect)
        deadline = self._clock() + read  # the whole answer, headers to last byte
        connection.response_class = functools.partial(  # type: ignore[assignment]
            _Response, deadline=deadline, seconds=read, clock=self._clock
        )
        try:
            assert connection.sock is not None
            connection.sock.settimeout(read)
            connection.request(method, target, body=body, headers=dict(headers))
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransportError(_reason(exc)) from exc
        return _PoolAnswer(self, connection, response, self._max_answer)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class _Urllib3Answer:
    def __init__(
        self,
        response: Any,
        errors: tuple[type[BaseException], ...],
        cap: int,
        deadline: float,
        seconds: float,
    ) -> None:
        self._response = response
        self._errors = errors
        self._cap = cap
        self._deadline = deadline
        self._seconds = seconds
        self.status = int(response.status)

    def read(self) -> bytes:
        """The body up to the cap; the deadline is checked between pieces (urllib3 reads
        the headers itself, each read with its timeout)."""
        try:
            return _joined(
                self._in_time(self._response.stream(65536, decode_content=True)), self._cap
            )
        except self._errors as exc:
            if isinstance(exc, TransportError):
                raise
            raise TransportError(_reason(exc)) from exc
        finally:
            self.release()

    def _in_time(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            if time.monotonic() > self._deadline:
                raise TransportError(f"TimeoutError: {_late(self._seconds)}")
            yield piece

    def stream(self, amount: int) -> Iterator[bytes]:
        try:
            yield from self._response.stream(amount, decode_content=True)
        except self._errors as exc:
            raise TransportError(_reason(exc)) from exc

    def release(self) -> None:
        self._response.release_conn()


class Urllib3Transport:
    """A urllib3 pool handed over (a ``kubernetes.client.ApiClient``'s), errors normalised."""

    def __init__(
        self, pool: Any, *, on_close: Any = None, max_answer: int = MAX_ANSWER_BYTES
    ) -> None:
        import urllib3

        self._urllib3 = urllib3
        self._pool = pool
        self._on_close = on_close
        self._max_answer = max_answer
        self._errors: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> Answer:
        connect, read = timeout
        deadline = time.monotonic() + connect + read
        try:
            response = self._pool.request(
                method,
                url,
                body=body,
                headers=dict(headers),
                timeout=self._urllib3.Timeout(connect=connect, read=read),
                preload_content=False,
            )
        except self._errors as exc:
            raise TransportError(str(getattr(exc, "reason", None) or exc)) from exc
        return _Urllib3Answer(response, self._errors, self._max_answer, deadline, connect + read)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
