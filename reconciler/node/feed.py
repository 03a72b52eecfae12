"""Follow a bundle feed: signed history from any static HTTP server, object store or CDN.

A git server pays for every poll (a smart-HTTP negotiation, even when nothing changed);
a static file costs a CDN nothing. The feed (written by ``outpost bundle publish``) is a
small ``index.json`` plus immutable bundle files. One tick, under the agent's lock:

1. **One conditional request for the index** (``If-None-Match`` / ``If-Modified-Since``
   from the last answer, kept in ``<state>/feed/``). An unchanged feed costs one request
   answered 304, and the index kept from last time is used.
2. **Nothing in the index is trusted.** It is parsed with every length capped
   (`feed_index`), then compared with the mirror: a head the node already has is not
   downloaded again (a head trust refused stays refused, at the cost of one request); a
   head *older* than the node's candidate is a feed that went backwards (an old copy
   restored, a stale cache, or another source was faster) — refused, by name, and the
   site keeps what it runs (TUF's rollback attack).
3. **Only what is missing is downloaded**: the chain's steps from a commit the mirror has
   to the head, or the full bundle when the node is new, too far behind (more than
   ``max_steps`` steps) or the steps would weigh more than the full bundle.
4. **Downloads are bounded and resumable**: each into ``partial/<sha256>.part`` with a
   ``Range`` request for what is missing, at most the size the index names (and never
   over the inbox's cap); the whole file's sha256 must match the index, else the copy is
   deleted and refused. A slow server runs into the tick's deadline; the partial file is
   kept and the next tick resumes it.
5. **Imported through the USB inbox's code path** (`inbox.import_inbox`): the index's
   manifest is written next to each file, so the inbox checks size and sha256 again, parses
   the header, checks the pack, refuses missing prerequisites and moves the candidate only
   forward. The agent then verifies every new commit's signature as for a fetched one.

Errors: `SourceUnavailable` (temporary — no answer, 404, 5xx, timeouts, a bundle the
index names but the server lacks) and `FeedError` (refused — a malformed index, a file that
is not what the index says, a feed that went backwards). Either way nothing the site runs
changes. Steps imported before a later download failed stay imported (they were whole and
verified); the result carries the error.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urljoin, urlsplit

from reconciler.core.envelope import loads
from reconciler.core.errors import ConfigError, DocumentError, OutpostError, SourceUnavailable
from reconciler.core.files import write_json
from reconciler.core.source import read_file
from reconciler.node.feed_index import (
    INDEX_NAME,
    MAX_INDEX_BYTES,
    FeedEntry,
    FeedError,
    FeedIndex,
    parse_index,
)
from reconciler.node.fetch import APPLIED_REF, CANDIDATE_REF, Mirror
from reconciler.node.http import HttpClient, ResponseTooLarge, safe_url
from reconciler.node.inbox import (
    BUNDLE_SUFFIX,
    MANIFEST_SUFFIX,
    PROCESSED_DIR,
    REJECTED_DIR,
    RESULT_SUFFIX,
    BundleResult,
    import_inbox,
    keep_heartbeat,
    short,
)

log = logging.getLogger("outpost.agent")

__all__ = [
    "FeedError",
    "FeedResult",
    "FeedSettings",
    "check_feed_url",
    "follow_feed",
]

DEFAULT_MAX_STEPS = 20
KEEP_RESULTS = 20
_CACHE = "index.cache.json"
_PARTIAL = "partial"
_INCOMING = "incoming"
_CHUNK = 1024 * 1024

FeedOutcome = Literal["unchanged", "current", "imported"]


@dataclass(frozen=True)
class FeedSettings:
    """``spec.feed`` of the agent config."""

    url: str
    ca_bundle: Path | None = None
    allow_http: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 600.0
    """Seconds one tick may spend on the feed in all; a partial download resumes next tick."""
    max_steps: int = DEFAULT_MAX_STEPS


@dataclass(frozen=True)
class FeedResult:
    """What following the feed did this tick.

    ``outcome``: ``unchanged`` (304, and the node has the head), ``current`` (a new index,
    but the node already has its head), ``imported`` (bundles were downloaded and handed
    to the inbox; ``bundles`` says what each did, refusals included). ``error`` is a download
    that failed after earlier steps were downloaded (and imported).
    """

    outcome: FeedOutcome
    message: str
    head: str
    requests: int
    bundles: tuple[BundleResult, ...] = ()
    downloaded: tuple[str, ...] = ()
    error: OutpostError | None = field(default=None, compare=False)


def check_feed_url(url: str, *, allow_http: bool) -> str | None:
    """Why ``url`` may not be a feed URL, or None when it may.

    HTTPS always; plain HTTP only to a loopback address (a test, or a cache on the node
    itself) or with ``allowHttp: true``. The feed's content is verified by signatures either
    way; HTTPS is what keeps a network in the middle from withholding updates unnoticed
    (a freeze attack) and from reading the repository's unencrypted parts.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in ("https", "http") or not host:
        return f"{url!r} is not an https:// URL"
    if parts.username or parts.password:
        return "the feed URL must not carry a user name or password"
    if parts.scheme == "http" and not allow_http and not _loopback(host):
        return (
            f"{safe_url(url)} is plain HTTP to a host that is not loopback; use https:// "
            "(or set spec.feed.allowHttp: true for a feed on a network you trust)"
        )
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def follow_feed(
    mirror: Mirror,
    settings: FeedSettings,
    folder: Path,
    *,
    now: datetime,
    client: HttpClient | None = None,
) -> FeedResult:
    """One tick's look at the feed (see the module docstring); ``folder`` is ``<state>/feed``.

    Raises SourceUnavailable or FeedError when the index cannot be had or used; problems
    with bundles after it are in the result.
    """
    reason = check_feed_url(settings.url, allow_http=settings.allow_http)
    if reason is not None:
        raise ConfigError(f"spec.feed.url: {reason}")
    if client is None:
        client = HttpClient(
            ca_bundle=settings.ca_bundle,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )
    deadline = time.monotonic() + settings.deadline
    index_url = _index_url(settings.url)
    index, answered_304 = _fetch_index(client, index_url, folder, deadline)
    requests = 1
    if index.heartbeat:
        note = keep_heartbeat(mirror, index.heartbeat)
        if note:
            log.warning("feed heartbeat", extra={"detail": note})
    head = index.head
    candidate = mirror.resolve(CANDIDATE_REF)
    applied = mirror.resolve(APPLIED_REF)
    if mirror.has(head):
        if head in (candidate, applied):
            return FeedResult(
                "unchanged" if answered_304 else "current",
                f"the feed's head {short(head)} is what this node has",
                head,
                requests,
            )
        newer = [c for c in (candidate, applied) if c is not None and mirror.descends(c, head)]
        if newer:
            raise FeedError(
                f"the feed at {safe_url(index_url)} went backwards: its head {short(head)} "
                f"(updated {index.updated}) is older than this node's {short(newer[0])}, "
                "which descends from it — an old copy of the feed restored, a stale cache, "
                "or another source was faster; keeping what this node has"
            )
        if candidate is None or mirror.descends(head, candidate):
            # Imported before (the agent put the candidate back on what runs after trust
            # refused the head): nothing to download; the candidate only moves forward.
            mirror.pin(CANDIDATE_REF, head)
            return FeedResult(
                "unchanged" if answered_304 else "current",
                f"this node already has the feed's head {short(head)}; candidate "
                f"{short(candidate)} → {short(head)}",
                head,
                requests,
            )
    plan = _plan(index, mirror, settings.max_steps)
    partial = folder / _PARTIAL
    incoming = folder / _INCOMING
    _forget_partials(partial, {entry.manifest.sha256 for entry in plan})
    downloaded: list[str] = []
    error: OutpostError | None = None
    for number, entry in enumerate(plan):
        try:
            requests += _download(client, index_url, entry, partial, deadline)
        except (SourceUnavailable, FeedError) as exc:
            error = exc
            break
        _deliver(entry, partial, incoming, number)
        downloaded.append(entry.name)
    bundles: tuple[BundleResult, ...] = ()
    if downloaded:
        bundles = tuple(import_inbox(mirror, incoming, now=now))
        _tidy(incoming)
    if not downloaded and error is not None:
        raise error
    moved = mirror.resolve(CANDIDATE_REF)
    message = (
        f"downloaded {len(downloaded)} of {len(plan)} bundle(s) from {safe_url(index_url)}; "
        f"candidate {short(candidate)} → {short(moved)}"
    )
    return FeedResult("imported", message, head, requests, bundles, tuple(downloaded), error=error)


def _index_url(url: str) -> str:
    """The feed URL names the index itself or the folder it is in."""
    path = urlsplit(url).path
    if path.endswith(".json"):
        return url
    return urljoin(url.rstrip("/") + "/", INDEX_NAME)


def _fetch_index(
    client: HttpClient, url: str, folder: Path, deadline: float
) -> tuple[FeedIndex, bool]:
    """The index, asked for conditionally; (index, True) when the server answered 304."""
    cache = _read_cache(folder, url)
    headers: dict[str, str] = {}
    if cache is not None:
        if cache.get("etag"):
            headers["If-None-Match"] = cache["etag"]
        if cache.get("lastModified"):
            headers["If-Modified-Since"] = cache["lastModified"]
    try:
        reply = client.get(url, headers=headers, max_bytes=MAX_INDEX_BYTES, deadline=deadline)
    except ResponseTooLarge as exc:
        raise FeedError(f"{exc.message}: not a feed index") from None
    where = safe_url(url)
    if reply.status == 304 and cache is not None:
        return parse_index(cache["body"].encode(), where), True
    if reply.status == 404:
        raise SourceUnavailable(
            f"the feed has no index at {where} (404): not published yet, or a wrong spec.feed.url"
        )
    if reply.status in (301, 302, 303, 307, 308):
        raise SourceUnavailable(
            f"the feed at {where} answered {reply.status}, moved to "
            f"{safe_url(reply.header('location') or '?')}; redirects are not followed — "
            "point spec.feed.url at the new place"
        )
    if reply.status != 200:
        raise SourceUnavailable(f"the feed at {where} answered HTTP {reply.status} for the index")
    index = parse_index(reply.body, where)
    try:
        text = reply.body.decode()
    except UnicodeDecodeError:  # parse_index has read it as JSON already
        text = ""
    if text:
        write_json(
            folder / _CACHE,
            {
                "url": url,
                "etag": reply.header("etag"),
                "lastModified": reply.header("last-modified"),
                "body": text,
            },
        )
    return index, False


def _read_cache(folder: Path, url: str) -> dict[str, str] | None:
    """The last index and its validators, if they were for this URL and can be read."""
    path = folder / _CACHE
    if not os.path.lexists(path):
        return None
    try:
        data = loads(
            read_file(path, str(path), 3 * MAX_INDEX_BYTES, holder="the feed's cache folder")
        )
    except (DocumentError, ValueError) as exc:  # fetched whole again, with a line in the log
        log.warning("feed index cache unreadable", extra={"error": str(exc)})
        return None
    if (
        not isinstance(data, dict)
        or data.get("url") != url
        or not isinstance(data.get("body"), str)
    ):
        return None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _plan(index: FeedIndex, mirror: Mirror, max_steps: int) -> tuple[FeedEntry, ...]:
    steps = index.steps_from(mirror.has)
    if steps is None or len(steps) > max_steps:
        return (index.full,)
    if sum(step.manifest.size for step in steps) >= index.full.manifest.size:
        return (index.full,)
    return steps


def _forget_partials(partial: Path, wanted: set[str]) -> None:
    """Partial downloads this tick does not continue are deleted: disk use stays bounded."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(partial):
            if name.removesuffix(".part") not in wanted:
                with contextlib.suppress(OSError):
                    (partial / name).unlink()


def _download(
    client: HttpClient, index_url: str, entry: FeedEntry, partial: Path, deadline: float
) -> int:
    """Bring ``entry`` whole into ``partial/<sha256>.part``; the number of requests made."""
    expected = entry.manifest.size
    target = partial / f"{entry.manifest.sha256}.part"
    url = urljoin(index_url, entry.name)
    where = safe_url(url)
    try:
        partial.mkdir(parents=True, exist_ok=True)
        info = target.lstat() if os.path.lexists(target) else None
        have = info.st_size if info is not None else 0
        # Anything but a regular file (a FIFO would block the open below) starts over too.
        if info is not None and (not stat.S_ISREG(info.st_mode) or have > expected):
            target.unlink()
            have = 0
    except OSError as exc:
        raise SourceUnavailable(f"cannot use {partial}: {exc.strerror}") from None
    requests = 0
    if have < expected:
        requests = 1
        try:
            with target.open("r+b" if have else "wb") as out:
                status = _fetch_into(client, url, out, have, expected, deadline)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise SourceUnavailable(f"cannot write {target}: {exc.strerror}") from None
        if status == 416:
            target.unlink(missing_ok=True)
            raise SourceUnavailable(
                f"{where} refused to resume at byte {have} (416); the download starts over "
                "next tick"
            )
    digest, size = _hash(target)
    if size != expected or digest != entry.manifest.sha256:
        with contextlib.suppress(OSError):
            target.unlink()
        raise FeedError(
            f"{where} is not the file the index names: {size} bytes with sha256 "
            f"{digest[:16]}…, the index says {expected} bytes with sha256 "
            f"{entry.manifest.sha256[:16]}… — damaged or tampered with on the server or in "
            "transit; the copy was deleted and is downloaded again next tick"
        )
    return requests


def _fetch_into(
    client: HttpClient, url: str, out: BinaryIO, have: int, expected: int, deadline: float
) -> int:
    """GET the bytes from ``have`` on into ``out`` (at most ``expected`` in all); the status.

    A 206 continues the partial file; a 200 (a server that ignores ``Range``) rewrites it
    from the start. Anything else leaves it as it was.
    """
    where = safe_url(url)

    def sink(status: int, headers: Mapping[str, str]) -> Callable[[bytes], None]:
        if status == 206:
            content_range = headers.get("content-range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise SourceUnavailable(
                    f"{where} answered the request for bytes {have}- with {content_range!r}; "
                    "the partial download is kept and resumed next tick"
                )
            out.seek(have)
        else:
            out.seek(0)
            out.truncate()
        position = out.tell()

        def write(chunk: bytes) -> None:
            nonlocal position
            position += len(chunk)
            if position > expected:
                raise FeedError(
                    f"{where} is longer than the {expected} bytes the index names: damaged "
                    "or tampered with; refused"
                )
            out.write(chunk)

        return write

    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        reply = client.get(url, headers=headers, max_bytes=expected, deadline=deadline, sink=sink)
    except ResponseTooLarge:
        raise FeedError(
            f"{where} is longer than the {expected} bytes the index names: damaged or "
            "tampered with; refused"
        ) from None
    if reply.status in (200, 206, 416):
        return reply.status
    if reply.status == 404:
        raise SourceUnavailable(
            f"the index names {where}, but the server has no such file (404): the feed is "
            "being published right now, or its old bundles were removed too early"
        )
    raise SourceUnavailable(f"{where} answered HTTP {reply.status}")


def _hash(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return digest.hexdigest(), 0
    except OSError as exc:
        raise SourceUnavailable(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest(), size


def _deliver(entry: FeedEntry, partial: Path, incoming: Path, number: int) -> None:
    """Move a whole download into the inbox folder, with the index's manifest next to it."""
    name = f"{number:04d}-{entry.name.rsplit('/', 1)[-1]}"
    try:
        incoming.mkdir(parents=True, exist_ok=True)
        target = incoming / name
        write_json(target.with_name(target.name + MANIFEST_SUFFIX), entry.manifest.to_json())
        os.replace(partial / f"{entry.manifest.sha256}.part", target)
    except OSError as exc:
        raise SourceUnavailable(f"cannot move a download into {incoming}: {exc.strerror}") from None


def _tidy(incoming: Path) -> None:
    """Imported bundles are not kept (the mirror has their commits); refused ones and the
    last results are, for an operator to look at."""
    processed = incoming / PROCESSED_DIR
    with contextlib.suppress(OSError):
        for name in os.listdir(processed):
            if name.endswith(BUNDLE_SUFFIX) or name.endswith(MANIFEST_SUFFIX):
                (processed / name).unlink()
    for folder in (processed, incoming / REJECTED_DIR):
        _keep_newest(folder, KEEP_RESULTS)


def _keep_newest(folder: Path, count: int) -> None:
    try:
        entries = sorted(
            (entry for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)),
            key=lambda entry: entry.stat(follow_symlinks=False).st_mtime,
        )
    except OSError:
        return
    results = [e for e in entries if e.name.endswith(RESULT_SUFFIX)]
    for old in results[: max(0, len(results) - count)]:
        stem = old.name[: -len(RESULT_SUFFIX)]
        for name in (old.name, stem, stem + MANIFEST_SUFFIX):
            with contextlib.suppress(OSError):
                (folder / name).unlink()
