"""The bundle feed's index: ``index.json``, the one small file a node asks for every tick.

Written at headquarters by `reconciler.fleet.feed.publish_feed`, served by any static
HTTP server, object store or CDN, read by the node's `reconciler.node.feed`. The format
is defined here, next to its reader, as the inbox defines the bundle manifest.

```
{"apiVersion": "outpost/v1", "kind": "BundleFeed", "branch": "main",
 "head": "<commit>", "updated": "<time>", "keepSeconds": 2592000,
 "latest": "bundles/<from>-<to>.bundle",
 "full":  {"name": "bundles/full-<head>.bundle", "published": ..., "manifest": {...}},
 "chain": [{"name": "bundles/<from>-<to>.bundle", "published": ..., "manifest": {...}}, ...]}
```

- ``chain`` is oldest first; each entry is an incremental bundle from an earlier published
  head to the next one, and the last one ends at ``head``. A node that was offline follows
  the links (``from`` of one entry is ``to`` of the one before) from a commit it has.
- ``full`` is the whole history of ``head``, for a new node or one too far behind.
- ``manifest`` is the `BundleManifest` the USB inbox reads (size and sha256 of the file):
  the node writes it next to the downloaded file and imports both through the inbox.

Nothing in the index is trusted. It is not signed; it only says where bytes are and how
many to expect. The commits those bytes carry are verified on the node exactly like fetched
ones, and a head older than what the node has is refused (TUF's rollback attack). Every
length is capped (python-tuf's bounded inputs): the index's size, the chain's length, a
bundle's size, the names (relative, under ``bundles/``: an index cannot send the node to
another host or outside the feed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.envelope import read_document
from reconciler.core.errors import PermanentError
from reconciler.node.inbox import (
    MAX_BUNDLE_BYTES,
    MAX_HEARTBEAT_CHARS,
    BundleError,
    BundleManifest,
    short,
)

__all__ = [
    "FEED_KIND",
    "FEED_SITE",
    "INDEX_NAME",
    "MAX_CHAIN",
    "MAX_INDEX_BYTES",
    "FeedEntry",
    "FeedError",
    "FeedIndex",
    "parse_index",
]

FEED_KIND = "BundleFeed"
INDEX_NAME = "index.json"
FEED_SITE = "all"
"""The manifest's ``site`` for a feed bundle: it carries every site's slice."""
MAX_INDEX_BYTES = 1024 * 1024
"""A chain of a few thousand entries is a few hundred kilobytes; a megabyte is a wrong file."""
MAX_CHAIN = 5000

_NAME = re.compile(r"^bundles/[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.bundle$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


class FeedError(PermanentError):
    """The feed is wrong (a malformed index, a file that is not what the index says, a feed
    that went backwards): refused with the reason, and the site keeps what it runs."""


@dataclass(frozen=True)
class FeedEntry:
    """One published bundle file: where it is (relative to the index) and what it must be."""

    name: str
    published: str
    manifest: BundleManifest

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "published": self.published, "manifest": self.manifest.to_json()}

    @classmethod
    def from_json(cls, data: Any, where: str) -> FeedEntry:
        if not isinstance(data, Mapping):
            raise FeedError(f"{where}: expected an object, found {type(data).__name__}")
        name, published = data.get("name"), data.get("published")
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
            raise FeedError(
                f"{where}: name {str(name)[:120]!r} is not a bundle file under bundles/ "
                "(letters, digits, '.', '_' and '-', ending in .bundle)"
            )
        if not isinstance(published, str):
            raise FeedError(f"{where}: published {published!r} is not a time")
        try:
            manifest = BundleManifest.from_json(data.get("manifest"), f"{where}.manifest")
        except BundleError as exc:
            raise FeedError(exc.message) from None
        if manifest.size > MAX_BUNDLE_BYTES:
            raise FeedError(
                f"{where}: {name} claims {manifest.size} bytes, over the cap of "
                f"{MAX_BUNDLE_BYTES} bytes for a bundle"
            )
        return cls(name=name, published=published, manifest=manifest)


@dataclass(frozen=True)
class FeedIndex:
    """``index.json``: the newest head, its full bundle and the chain that leads to it."""

    branch: str
    head: str
    updated: str
    keep_seconds: int
    full: FeedEntry
    chain: tuple[FeedEntry, ...]
    retired: tuple[tuple[str, str], ...] = ()
    """(file name, when it left the index): files the publisher deletes after a grace time,
    while caches may still hand out an older index that names them. Nodes ignore it."""
    heartbeat: str = ""
    """The signed heartbeat tag object (base64) on ``head`` or an ancestor, refreshed by every
    publish: unsigned here, signed itself, verified on the node (`reconciler.node.heartbeat`)."""

    def __post_init__(self) -> None:
        if self.full.manifest.to != self.head or self.full.manifest.from_ is not None:
            raise FeedError(
                f"the full bundle {self.full.name} is not the whole history of the head "
                f"{short(self.head)} (it goes {short(self.full.manifest.from_)} → "
                f"{short(self.full.manifest.to)})"
            )
        if self.chain and self.chain[-1].manifest.to != self.head:
            raise FeedError(
                f"the chain ends at {short(self.chain[-1].manifest.to)}, not at the head "
                f"{short(self.head)}"
            )
        names = [self.full.name, *(entry.name for entry in self.chain)]
        if len(set(names)) != len(names):
            raise FeedError("the index names the same bundle file twice")
        for entry in self.chain:
            if entry.manifest.from_ is None:
                raise FeedError(f"chain entry {entry.name} is a full bundle; expected a step")

    @property
    def latest(self) -> FeedEntry:
        """The newest bundle: the last step of the chain, or the full bundle when there is none."""
        return self.chain[-1] if self.chain else self.full

    def steps_from(self, has: Callable[[str], bool]) -> tuple[FeedEntry, ...] | None:
        """The chain's steps that lead from a commit ``has`` knows to the head, oldest first;
        None when the links break before reaching one (the node then needs the full bundle).

        The walk goes backwards from the head along ``from`` → ``to`` links, so a chain that
        was restarted (a branch reset to what the sites run) is followed from its new start.
        """
        by_to = {entry.manifest.to: entry for entry in self.chain}
        path: list[FeedEntry] = []
        at = self.head
        while at in by_to and len(path) <= len(self.chain):
            entry = by_to[at]
            path.append(entry)
            start = entry.manifest.from_
            assert start is not None
            if has(start):
                return tuple(reversed(path))
            at = start
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "apiVersion": "outpost/v1",
            "kind": FEED_KIND,
            "branch": self.branch,
            "head": self.head,
            "updated": self.updated,
            "keepSeconds": self.keep_seconds,
            "latest": self.latest.name,
            "full": self.full.to_json(),
            "chain": [entry.to_json() for entry in self.chain],
            "retired": [{"name": name, "retired": when} for name, when in self.retired],
            **({"heartbeat": self.heartbeat} if self.heartbeat else {}),
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode()


def parse_index(raw: bytes, where: str) -> FeedIndex:
    """Parse ``index.json`` bytes; FeedError naming ``where`` and the field for anything wrong."""
    data = read_document(
        raw,
        FEED_KIND,
        cap=MAX_INDEX_BYTES,
        what="a feed index",
        bad=lambda reason: FeedError(f"{where}: {reason}"),
    )
    branch, head, updated = data.get("branch"), data.get("head"), data.get("updated")
    keep, chain = data.get("keepSeconds", 0), data.get("chain", [])
    if not isinstance(branch, str) or not _BRANCH.match(branch):
        raise FeedError(f"{where}: branch {str(branch)[:80]!r} is not a branch name")
    if not isinstance(head, str) or not _SHA1.match(head):
        raise FeedError(f"{where}: head {str(head)[:80]!r} is not a full commit id")
    if not isinstance(updated, str):
        raise FeedError(f"{where}: updated {updated!r} is not a time")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise FeedError(f"{where}: keepSeconds {keep!r} is not a number of seconds")
    if not isinstance(chain, list):
        raise FeedError(f"{where}: chain is not a list")
    if len(chain) > MAX_CHAIN:
        raise FeedError(f"{where}: the chain has {len(chain)} entries, over the cap of {MAX_CHAIN}")
    full = FeedEntry.from_json(data.get("full"), f"{where}: full")
    steps = tuple(FeedEntry.from_json(item, f"{where}: chain[{i}]") for i, item in enumerate(chain))
    retired = data.get("retired", [])
    if not isinstance(retired, list) or len(retired) > MAX_CHAIN:
        raise FeedError(f"{where}: retired is not a list of at most {MAX_CHAIN} entries")
    gone: list[tuple[str, str]] = []
    for i, item in enumerate(retired):
        name = item.get("name") if isinstance(item, Mapping) else None
        when = item.get("retired") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not _NAME.match(name) or not isinstance(when, str):
            raise FeedError(f"{where}: retired[{i}] is not {{name: bundles/…, retired: time}}")
        gone.append((name, when))
    heartbeat = data.get("heartbeat", "")
    if not isinstance(heartbeat, str) or len(heartbeat) > MAX_HEARTBEAT_CHARS:
        raise FeedError(
            f"{where}: heartbeat is not a base64 tag object of at most "
            f"{MAX_HEARTBEAT_CHARS:,} characters"
        )
    try:
        return FeedIndex(
            branch=branch,
            head=head,
            updated=updated,
            keep_seconds=keep,
            full=full,
            chain=steps,
            retired=tuple(gone),
            heartbeat=heartbeat,
        )
    except FeedError as exc:
        raise FeedError(f"{where}: {exc.message}") from None
