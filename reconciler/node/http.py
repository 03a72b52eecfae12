"""The HTTP seam of the bundle feed (urllib3). The API server is reached through
`reconciler.node.apply.transport`, the status reports through `reconciler.node.report`.

One client per tick, one pool (keep-alive between the index and the bundles). Decisions:

- **Every request is bounded.** A connect timeout, a read timeout per socket read, and a
  deadline for the whole body checked between chunks, so a server that trickles one byte
  just inside the read timeout cannot hold the tick either. A body longer than the caller's
  cap is cut off, never buffered.
- **No retries, no redirects.** The next tick is the retry (with a conditional request it
  costs one round trip). A redirect is reported with its target instead of followed: a feed
  that moved is a configuration change, and following it quietly could leave HTTPS.
- **TLS verified always**, against the system's CAs or the configured CA bundle; there is
  no switch to turn verification off.
- **Errors normalised here**: anything urllib3 or the socket raises becomes
  `SourceUnavailable` (temporary: the server may answer next tick); a body over its cap is
  `ResponseTooLarge` (permanent for that response). Status codes are returned, not raised:
  what a 404 means is the caller's to say.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.core.errors import PermanentError, SourceUnavailable

__all__ = ["HttpClient", "Reply", "ResponseTooLarge", "safe_url"]

_CHUNK = 256 * 1024


class ResponseTooLarge(PermanentError):
    """The server sent more bytes than the caller allows for this response."""


@dataclass(frozen=True)
class Reply:
    """A response: its status, the headers the feed uses, and the body if it was collected."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    received: int = 0

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def safe_url(url: str) -> str:
    """A URL fit for a log line: no user:password, no query string (a signed URL's token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class HttpClient:
    """GET requests with timeouts, a body cap and a deadline; see the module docstring."""

    def __init__(
        self,
        *,
        ca_bundle: Path | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        user_agent: str = "outpost-agent",
    ) -> None:
        import urllib3

        if ca_bundle is not None and not ca_bundle.is_file():
            from reconciler.core.errors import ConfigError

            raise ConfigError(f"the feed's CA bundle {ca_bundle} does not exist or is not a file")
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._read_timeout = read_timeout
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_bundle) if ca_bundle is not None else None,
            retries=False,
            timeout=self._timeout,
            maxsize=1,
        )
        self._user_agent = user_agent

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int,
        deadline: float,
        sink: Callable[[int, Mapping[str, str]], Callable[[bytes], None]] | None = None,
    ) -> Reply:
        """GET ``url``. A 2xx body goes chunk by chunk to the writer that
        ``sink(status, headers)`` returns (or is collected into ``Reply.body`` when there is
        no sink); other bodies are discarded unread.

        ``deadline`` is a `time.monotonic` reading after which the transfer is abandoned
        (SourceUnavailable, with the bytes received so far already handed to ``sink``).
        """
        import urllib3

        what = safe_url(url)
        sent = {"User-Agent": self._user_agent, "Accept-Encoding": "identity", **(headers or {})}
        started = time.monotonic()
        try:
            response = self._pool.request(
                "GET", url, headers=sent, preload_content=False, redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise SourceUnavailable(f"GET {what} failed: {_reason(exc)}") from None
        except OSError as exc:
            raise SourceUnavailable(f"GET {what} failed: {exc.strerror or exc}") from None
        complete = False
        try:
            found = {k.lower(): v for k, v in response.headers.items()}
            if not 200 <= response.status < 300:
                # A 304 has no body; any other body is not read (it could be endless).
                complete = response.status in (204, 304)
                return Reply(response.status, found)
            body: list[bytes] = []
            write = body.append if sink is None else sink(response.status, found)
            received = 0
            while True:
                if time.monotonic() > deadline:
                    raise SourceUnavailable(
                        f"GET {what}: the server is too slow — {received} bytes in "
                        f"{time.monotonic() - started:.0f} s, past this tick's deadline"
                    )
                try:
                    # read1: one socket read at most. read(n) would wait for n bytes, and a
                    # trickling server would keep it (and the tick) waiting past the deadline.
                    chunk = response.read1(min(_CHUNK, max_bytes + 1 - received))
                except urllib3.exceptions.HTTPError as exc:
                    raise SourceUnavailable(
                        f"GET {what}: the transfer broke after {received} bytes: {_reason(exc)}"
                    ) from None
                except OSError as exc:
                    raise SourceUnavailable(
                        f"GET {what}: the transfer broke after {received} bytes: "
                        f"{exc.strerror or exc}"
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    raise ResponseTooLarge(
                        f"GET {what}: the server sent more than the {max_bytes} bytes expected"
                    )
                write(chunk)
            complete = True
            return Reply(response.status, found, b"".join(body), received)
        finally:
            if complete:
                response.release_conn()  # read to the end: the connection can be reused
            else:
                response.close()  # abandoned midway: never hand a half-read connection back
                response.release_conn()


def _reason(exc: Exception) -> str:
    import urllib3

    inner = getattr(exc, "reason", None)
    if isinstance(exc, urllib3.exceptions.SSLError) or isinstance(
        inner, urllib3.exceptions.SSLError
    ):
        return (
            f"TLS verification failed ({inner or exc}); check the server's certificate "
            "and spec.feed.caBundle"
        )
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError) or isinstance(
        inner, urllib3.exceptions.ReadTimeoutError
    ):
        return "the server stopped answering (read timeout)"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError) or isinstance(
        inner, urllib3.exceptions.ConnectTimeoutError
    ):
        return "no connection within the connect timeout"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return f"cannot connect: {str(exc).rsplit(':', 1)[-1].strip()}"
    text = str(inner or exc)
    return text[:300]
