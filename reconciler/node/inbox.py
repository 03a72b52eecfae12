"""Signed history on a USB stick: git bundles for air-gapped plants.

A plant with no route to the outside gets the *same* signed commits as a
networked store, carried as a git bundle. Nothing extra is signed: the unit of
trust stays the commit signature, which `trust` checks on the node exactly as
for a fetched commit. The bundle and its manifest only have to get the bytes
there intact; they are never a reason to trust anything.

Workstation side — `create_bundle` — is ``reconciler.fleet.bundle``; it writes
the format this module reads.

Node side — `import_inbox` (called by the agent's tick, under its lock):

1. every ``*.bundle`` in the inbox, by name. Only regular files are read, and
   they are opened without following links and without blocking: a symlink (a
   stick must not make the node read ``/etc``), a FIFO (it would hang the tick,
   and the lock with it), a folder or a device named ``*.bundle`` — or such a
   manifest — is refused with its name and what it is, and the tick goes on;
2. size cap (`MAX_BUNDLE_BYTES`, python-tuf's bounded inputs); the file is
   copied once into the mirror's staging folder while hashing, so what is
   checked is what is imported (no time-of-check/time-of-use on the stick);
3. a manifest next to it must match (sha256, size): tampered or damaged → refused;
4. the bundle header is parsed here (v2/v3, sha1 only, no ``filter`` = partial
   bundles), the pack's own SHA-1 trailer is checked (truncation and bit rot
   are refused before git touches the mirror), and every prerequisite commit
   must be in the mirror — the refusal names the missing commit;
5. an older bundle — a replay — changes nothing ("replay: already have …");
6. ``git bundle verify`` and ``git fetch`` run with the mirror as ``GIT_DIR``,
   a scrubbed environment (no system/global config, no hooks, no prompts) and
   a timeout. The head goes to ``refs/outpost/bundle``; ``refs/outpost/candidate``
   moves to it only if it descends from the current candidate (TUF "rollback":
   an old stick cannot take a plant back). The agent then verifies and applies
   the candidate like a fetched one. A failed fetch leaves no temporary pack
   behind: nothing in the mirror changes;
7. the bundle (and its manifest) move to ``processed/`` or ``rejected/`` with
   ``<name>.result.json`` (atomic writes), through a handle on that folder opened
   without following links: a ``processed/`` or ``rejected/`` that is a symlink
   (or anything but a real folder) is never written through — the bundle stays
   in the inbox and the result says why, so a stick cannot make the node move
   files or write results outside the inbox. A bundle whose prerequisites are
   missing is retried once after the others in the same run — two sticks' worth
   dropped at once need not be named in order.

A bundle made for another site is imported all the same: signatures decide,
and the node renders only its own slice of whatever commit it gets.

Errors: `BundleError` (permanent: this bundle is bad, it is refused and moved
to ``rejected/``) and `SourceUnavailable` (temporary: the stick cannot be read;
the file stays where it is for the next tick).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from reconciler.core.envelope import check_kind, read_json
from reconciler.core.errors import (
    ConfigError,
    OutpostError,
    PermanentError,
    SourceUnavailable,
)
from reconciler.core.files import json_bytes, write_at
from reconciler.node.fetch import APPLIED_REF, BUNDLE_REF, CANDIDATE_REF, HEARTBEAT_REF, Mirror

__all__ = [
    "BUNDLE_SUFFIX",
    "HEAD_REF_PREFIX",
    "MANIFEST_SUFFIX",
    "MAX_BUNDLE_BYTES",
    "PROCESSED_DIR",
    "REJECTED_DIR",
    "RESULT_SUFFIX",
    "BundleError",
    "BundleHeader",
    "BundleManifest",
    "BundleResult",
    "Outcome",
    "import_bundle",
    "import_inbox",
    "parse_header",
    "read_manifest",
]

BUNDLE_SUFFIX = ".bundle"
MANIFEST_SUFFIX = ".manifest.json"
RESULT_SUFFIX = ".result.json"
PROCESSED_DIR = "processed"
REJECTED_DIR = "rejected"
STAGING_DIR = "outpost-incoming"
HEAD_REF_PREFIX = "refs/heads/outpost/"

MAX_BUNDLE_BYTES = 1024 * 1024 * 1024
"""A configuration repository's whole history is megabytes; a gigabyte is a wrong file."""
MAX_HEADER_BYTES = 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024
GIT_TIMEOUT = 600.0

_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SITE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SIGNATURES = {b"# v2 git bundle\n": 2, b"# v3 git bundle\n": 3}
_CHUNK = 1024 * 1024

Outcome = Literal["imported", "replay", "rejected", "unavailable"]


class BundleError(PermanentError):
    """A bundle (or the request to make one) is bad: refused, never retried as it is."""


# -- documents -------------------------------------------------------------------


@dataclass(frozen=True)
class BundleManifest:
    """``<bundle>.manifest.json``: what the bundle claims to be. Unsigned; integrity only."""

    site: str
    from_: str | None
    to: str
    created: str
    sha256: str
    size: int
    ref: str = ""
    commits: int = 0
    heartbeat: str = ""
    """The signed heartbeat tag object (base64) when the clone had one on ``to`` or an
    ancestor of it: an air-gapped plant's proof of how fresh its stick is. Unsigned here,
    signed itself; the node verifies it like a fetched one (`reconciler.node.heartbeat`)."""

    def to_json(self) -> dict[str, Any]:
        body = {
            "apiVersion": "outpost/v1",
            "kind": "BundleManifest",
            "site": self.site,
            "from": self.from_,
            "to": self.to,
            "ref": self.ref,
            "commits": self.commits,
            "created": self.created,
            "sha256": self.sha256,
            "size": self.size,
        }
        if self.heartbeat:
            body["heartbeat"] = self.heartbeat
        return body

    @classmethod
    def from_json(cls, data: Any, where: str) -> BundleManifest:
        """Parse and check a manifest; BundleError naming ``where`` and the field otherwise."""

        def bad(what: str) -> BundleError:
            return BundleError(
                f"{where}: {what}; the manifest cannot be trusted to check the bundle"
            )

        if not isinstance(data, Mapping):
            raise bad(f"expected a JSON object, found {type(data).__name__}")
        check_kind(data, "BundleManifest", bad)
        site, to, since = data.get("site"), data.get("to"), data.get("from")
        sha256, size, created = data.get("sha256"), data.get("size"), data.get("created")
        if not isinstance(site, str) or not _SITE.match(site):
            raise bad(f"site {site!r} is not a site id")
        if not isinstance(to, str) or not _SHA1.match(to):
            raise bad(f"to {to!r} is not a full commit id")
        if since is not None and (not isinstance(since, str) or not _SHA1.match(since)):
            raise bad(f"from {since!r} is neither null nor a full commit id")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise bad(f"sha256 {sha256!r} is not 64 lowercase hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"size {size!r} is not a byte count")
        if not isinstance(created, str):
            raise bad(f"created {created!r} is not a time")
        commits = data.get("commits", 0)
        ref = data.get("ref", "")
        heartbeat = data.get("heartbeat", "")
        if not isinstance(heartbeat, str) or len(heartbeat) > MAX_HEARTBEAT_CHARS:
            raise bad(
                f"heartbeat is not a base64 tag object of at most {MAX_HEARTBEAT_CHARS:,} "
                "characters"
            )
        return cls(
            site=site,
            from_=since,
            to=to,
            created=created,
            sha256=sha256,
            size=size,
            ref=str(ref) if isinstance(ref, str) else "",
            commits=commits if isinstance(commits, int) and not isinstance(commits, bool) else 0,
            heartbeat=heartbeat,
        )


@dataclass(frozen=True)
class BundleHeader:
    """The text header of a v2/v3 git bundle, parsed without git."""

    version: int
    capabilities: tuple[tuple[str, str], ...]
    prerequisites: tuple[tuple[str, str], ...]
    """(commit id, comment — git writes the commit's subject line there)."""
    refs: tuple[tuple[str, str], ...]
    """(commit id, ref name)."""
    pack_offset: int

    def capability(self, name: str) -> str | None:
        for key, value in self.capabilities:
            if key == name:
                return value
        return None


def parse_header(data: bytes, name: str) -> BundleHeader:
    """Parse the header at the start of ``data`` (the first bytes of the bundle file).

    Format (Documentation/gitformat-bundle.txt): a signature line, v3
    capabilities ``@key=value``, prerequisites ``-<id> <comment>``, references
    ``<id> <refname>``, an empty line, then the pack.
    """
    found = [(sig, ver) for sig, ver in _SIGNATURES.items() if data.startswith(sig)]
    if not found:
        first = data[:32].split(b"\n", 1)[0]
        raise BundleError(
            f"{name} is not a git bundle: it starts with {first!r}, expected "
            "'# v2 git bundle' or '# v3 git bundle'"
        )
    signature, version = found[0]
    offset = len(signature)
    capabilities: list[tuple[str, str]] = []
    prerequisites: list[tuple[str, str]] = []
    refs: list[tuple[str, str]] = []
    while True:
        end = data.find(b"\n", offset)
        if end < 0:
            raise BundleError(
                f"{name}: the bundle header ends before its blank line (truncated, or a header "
                f"over {MAX_HEADER_BYTES} bytes)"
            )
        raw = data[offset:end]
        offset = end + 1
        if not raw:
            break
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{name}: the bundle header has a line that is not UTF-8") from None
        if line.startswith("@"):
            if version < 3:
                raise BundleError(f"{name}: a v2 bundle cannot carry capability {line!r}")
            key, _, value = line[1:].partition("=")
            capabilities.append((key, value))
        elif line.startswith("-"):
            commit, _, comment = line[1:].partition(" ")
            if not _SHA1.match(commit):
                raise BundleError(f"{name}: prerequisite {commit[:80]!r} is not a commit id")
            prerequisites.append((commit, comment))
        else:
            commit, _, ref = line.partition(" ")
            if not _SHA1.match(commit) or not ref:
                raise BundleError(f"{name}: header line {line[:120]!r} is not '<commit> <ref>'")
            refs.append((commit, ref))
    return BundleHeader(
        version=version,
        capabilities=tuple(capabilities),
        prerequisites=tuple(prerequisites),
        refs=tuple(refs),
        pack_offset=offset,
    )


@dataclass(frozen=True)
class BundleResult:
    """What importing one bundle did. ``outcome``:

    - ``imported``: the candidate moved to ``head`` (``previous`` → ``candidate``);
    - ``replay``: the mirror already had it; nothing changed;
    - ``rejected``: the bundle is bad (``error`` is a BundleError); moved to ``rejected/``;
    - ``unavailable``: the stick could not be read (``error`` is SourceUnavailable);
      the file stays in the inbox for the next tick.
    """

    name: str
    outcome: Outcome
    message: str
    head: str | None = None
    previous: str | None = None
    candidate: str | None = None
    sha256: str | None = None
    size: int | None = None
    manifest: BundleManifest | None = None
    moved_to: Path | None = None
    note: str | None = None
    error: OutpostError | None = field(default=None, compare=False)

    @property
    def changed(self) -> bool:
        """True when the mirror's candidate moved."""
        return self.outcome == "imported"

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "apiVersion": "outpost/v1",
            "kind": "BundleResult",
            "bundle": self.name,
            "time": now.astimezone(UTC).isoformat(),
            "outcome": self.outcome,
            "message": self.message,
            "head": self.head,
            "previousCandidate": self.previous,
            "candidate": self.candidate,
            "sha256": self.sha256,
            "size": self.size,
            "manifest": self.manifest.to_json() if self.manifest else None,
            "note": self.note,
        }


def short(commit: str | None) -> str:
    return commit[:12] if commit else "none"


# -- git ---------------------------------------------------------------------------


def _node_env(home: Path) -> dict[str, str]:
    """A scrubbed environment for git on the node: nothing from the caller steers it."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "GIT_ATTR_NOSYSTEM": "1",
    }


# Settings for every git run on the node: no hooks, no background gc while the
# agent holds its lock, no FETCH_HEAD in the mirror.
_NODE_CONFIG = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "fetch.writeCommitGraph=false",
    "-c", "transfer.fsckObjects=true",
)  # fmt: skip


def _git(
    args: Sequence[str], *, env: Mapping[str, str], timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run git; a missing binary is a ConfigError, a hang is SourceUnavailable."""
    try:
        return subprocess.run(
            ["git", *args],
            env=dict(env),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise ConfigError(
            f"{what} needs the git command line (git bundle create/verify, git fetch); "
            "it is not on PATH — install git (libgit2 cannot write or verify bundles)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"{what}: git did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise SourceUnavailable(f"{what}: cannot run git: {exc.strerror}") from None


def _stderr(proc: subprocess.CompletedProcess[str], limit: int = 600) -> str:
    text = " ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
    return text[:limit] or f"git exited with status {proc.returncode}"


def manifest_path(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + MANIFEST_SUFFIX)


def _kind(mode: int) -> str:
    """What a directory entry is, for a refusal: "a FIFO", "a folder"..."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path) -> int:
    """Open a file on the stick for reading: no link followed, no blocking on a FIFO, and
    only a regular file accepted. BundleError names what else it is; FileNotFoundError and
    other OSErrors pass through."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError(
                f"{path.name} is a symbolic link; the inbox takes plain files only "
                "(a link is not followed)"
            ) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError(
                f"{path.name} is {_kind(mode)}, not a regular file; the inbox takes plain "
                "files only (it is not read)"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_manifest(path: Path) -> BundleManifest:
    """Read a manifest file; BundleError if it is malformed or not a regular file, OSError
    passes through."""
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_MANIFEST_BYTES + 1)
    data = read_json(
        raw,
        cap=MAX_MANIFEST_BYTES,
        what="a bundle manifest",
        bad=lambda reason: BundleError(f"{path.name}: {reason}"),
    )
    return BundleManifest.from_json(data, path.name)


# -- node: import ------------------------------------------------------------------


class _Missing(BundleError):
    """Prerequisites are missing: may be satisfied by another bundle of the same run."""


def import_inbox(
    mirror: Mirror,
    inbox: Path,
    *,
    now: datetime,
    max_bytes: int = MAX_BUNDLE_BYTES,
    timeout: float = GIT_TIMEOUT,
) -> list[BundleResult]:
    """Import every ``*.bundle`` in ``inbox`` into ``mirror``; one result per bundle, in the
    order they were decided (by name; one waiting for another's commits comes after it).

    A missing inbox (no stick mounted) is no bundles. An inbox that cannot be listed
    raises SourceUnavailable. Each bundle's own problems are results, not exceptions.
    """
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(inbox)
            if entry.name.endswith(BUNDLE_SUFFIX) and not entry.name.startswith(".")
        )
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise SourceUnavailable(f"the bundle inbox {inbox} is not a directory") from None
    except OSError as exc:
        raise SourceUnavailable(f"cannot list the bundle inbox {inbox}: {exc.strerror}") from None

    _clear_staging(mirror.path / STAGING_DIR)
    results: list[BundleResult] = []
    pending = [inbox / name for name in names]
    while pending:
        deferred: list[Path] = []
        progressed = False
        for path in pending:
            result = import_bundle(
                mirror, path, now=now, max_bytes=max_bytes, timeout=timeout, defer_missing=True
            )
            if result is None:
                deferred.append(path)
                continue
            results.append(result)
            progressed = progressed or result.changed
        if not progressed:
            for path in deferred:
                final = import_bundle(mirror, path, now=now, max_bytes=max_bytes, timeout=timeout)
                assert final is not None
                results.append(final)
            break
        pending = deferred
    return results


def import_bundle(
    mirror: Mirror,
    path: Path,
    *,
    now: datetime,
    max_bytes: int = MAX_BUNDLE_BYTES,
    timeout: float = GIT_TIMEOUT,
    defer_missing: bool = False,
) -> BundleResult | None:
    """Check and import one bundle file, then move it aside with its result.

    Returns None only when ``defer_missing`` is set and the bundle's prerequisites are
    missing (the file is left alone so another bundle may supply them first).
    """
    manifest: BundleManifest | None = None
    digest: str | None = None
    size: int | None = None
    staging = mirror.path / STAGING_DIR
    try:
        with _staged(staging) as staged:
            digest, size = _copy_in(path, staged, max_bytes)
            manifest = _check_manifest(path, digest, size)
            outcome, message, head, previous, candidate = _import_staged(
                mirror, staged, path.name, manifest, timeout
            )
    except BundleError as exc:
        if defer_missing and isinstance(exc, _Missing):
            return None
        return _finish(
            path,
            now,
            BundleResult(
                path.name,
                "rejected",
                exc.message,
                sha256=digest,
                size=size,
                manifest=manifest,
                error=exc,
            ),
        )
    except SourceUnavailable as exc:
        return BundleResult(
            path.name,
            "unavailable",
            exc.message,
            sha256=digest,
            size=size,
            manifest=manifest,
            error=exc,
        )
    note = keep_heartbeat(mirror, manifest.heartbeat) if manifest is not None else None
    result = BundleResult(
        path.name,
        outcome,
        message,
        note=note,
        head=head,
        previous=previous,
        candidate=candidate,
        sha256=digest,
        size=size,
        manifest=manifest,
    )
    return _finish(path, now, result)


MAX_HEARTBEAT_CHARS = 96 * 1024


def keep_heartbeat(mirror: Mirror, encoded: str) -> str | None:
    """Put a heartbeat tag object (base64, from a manifest or the feed's index) into the
    mirror under ``HEARTBEAT_REF``.

    Only its bytes are kept here (the object id is recomputed by git); whether it counts
    is decided by `reconciler.node.heartbeat` at the tick. A note when it cannot be kept.
    """
    if not encoded:
        return None
    import base64
    import binascii

    import pygit2

    try:
        raw = base64.b64decode(encoded, validate=True)
        oid = mirror.repo.odb.write(pygit2.enums.ObjectType.TAG, raw)
        mirror.pin(HEARTBEAT_REF, str(oid))
    except (binascii.Error, ValueError, pygit2.GitError) as exc:
        return f"its heartbeat tag could not be kept ({exc}); the commits are imported"
    return None


def _clear_staging(staging: Path) -> None:
    """Copies left by a run that was killed mid-import: the next run starts clean."""
    for leftover in _listing(staging):
        with contextlib.suppress(OSError):
            (staging / leftover).unlink()


@contextlib.contextmanager
def _staged(staging: Path) -> Iterator[Path]:
    try:
        staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="incoming-", suffix=BUNDLE_SUFFIX, dir=staging)
    except OSError as exc:
        raise SourceUnavailable(f"cannot stage a bundle under {staging}: {exc.strerror}") from None
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _copy_in(source: Path, staged: Path, max_bytes: int) -> tuple[str, int]:
    """Copy the bundle off the stick once, hashing as it goes; refuse links and oversize."""
    try:
        fd = _open_regular(source)
    except OSError as exc:
        raise SourceUnavailable(f"cannot open {source}: {exc.strerror}") from None
    digest = hashlib.sha256()
    copied = 0
    try:
        info = os.fstat(fd)
        if info.st_size > max_bytes:
            raise BundleError(
                f"{source.name} is {info.st_size} bytes, over the cap of {max_bytes} bytes: "
                "not a configuration bundle (a config repository's history is megabytes)"
            )
        with os.fdopen(fd, "rb", closefd=False) as reader, staged.open("wb") as writer:
            while chunk := reader.read(_CHUNK):
                copied += len(chunk)
                if copied > max_bytes:
                    raise BundleError(
                        f"{source.name} grew past the cap of {max_bytes} bytes while being read"
                    )
                digest.update(chunk)
                writer.write(chunk)
    except OSError as exc:
        raise SourceUnavailable(f"cannot read {source}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return digest.hexdigest(), copied


def _check_manifest(path: Path, digest: str, size: int) -> BundleManifest | None:
    where = manifest_path(path)
    try:
        manifest = read_manifest(where)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SourceUnavailable(f"cannot read {where}: {exc.strerror}") from None
    if manifest.size != size or manifest.sha256 != digest:
        raise BundleError(
            f"{path.name} does not match its manifest: it is {size} bytes with sha256 "
            f"{digest[:16]}…, the manifest says {manifest.size} bytes with sha256 "
            f"{manifest.sha256[:16]}… — truncated, damaged or tampered with in transit; "
            "copy it again from the original"
        )
    return manifest


def _read_header(staged: Path, name: str) -> BundleHeader:
    with staged.open("rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    return parse_header(head, name)


def _check_pack(staged: Path, header: BundleHeader, name: str) -> None:
    """The pack after the header must be whole: 'PACK', and its SHA-1 trailer must match.

    This is what ``git bundle verify`` does not check; catching it here means a
    truncated copy is refused before git writes anything into the mirror.
    """
    size = staged.stat().st_size
    body = size - header.pack_offset
    damaged = f"{name}: the pack data is truncated or corrupt ({body} bytes after the header"
    if body < 32:
        raise BundleError(f"{damaged}, too short for a pack); copy it again from the original")
    digest = hashlib.sha1(usedforsecurity=False)
    with staged.open("rb") as handle:
        handle.seek(header.pack_offset)
        magic = handle.read(4)
        if magic != b"PACK":
            raise BundleError(f"{damaged}, no PACK signature); copy it again from the original")
        digest.update(magic)
        remaining = body - 4 - 20
        while remaining > 0:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
        trailer = handle.read(20)
    if digest.digest() != trailer:
        raise BundleError(
            f"{damaged}, its SHA-1 checksum does not match); copy it again from the original"
        )


def _choose_head(
    header: BundleHeader, name: str, manifest: BundleManifest | None
) -> tuple[str, str]:
    if len(header.refs) == 1:
        return header.refs[0]
    if not header.refs:
        raise BundleError(f"{name} carries no ref: there is no head to import")
    if manifest is not None:
        for commit, ref in header.refs:
            if commit == manifest.to:
                return commit, ref
    listed = ", ".join(ref for _, ref in header.refs[:5])
    raise BundleError(
        f"{name} carries {len(header.refs)} refs ({listed}); expected one branch head — "
        "make bundles with `outpost bundle create`"
    )


def _import_staged(
    mirror: Mirror,
    staged: Path,
    name: str,
    manifest: BundleManifest | None,
    timeout: float,
) -> tuple[Outcome, str, str, str | None, str | None]:
    header = _read_header(staged, name)
    object_format = header.capability("object-format") or "sha1"
    if object_format != "sha1":
        raise BundleError(
            f"{name} uses object format {object_format}; this node's mirror uses sha1"
        )
    if header.capability("filter") is not None:
        raise BundleError(
            f"{name} is a partial bundle (filter {header.capability('filter')!r}): it leaves "
            "objects out, and the node needs every file of the commits it verifies"
        )
    head, ref = _choose_head(header, name, manifest)
    if manifest is not None and manifest.to != head:
        raise BundleError(
            f"{name}: its head is {short(head)} but its manifest says {short(manifest.to)}"
        )
    _check_pack(staged, header, name)
    missing = [(c, comment) for c, comment in header.prerequisites if not mirror.has(c)]
    if missing:
        listed = "; ".join(
            f"{c}" + (f" ({comment.strip()[:80]})" if comment.strip() else "")
            for c, comment in missing[:5]
        )
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        have = mirror.resolve(APPLIED_REF) or mirror.resolve(CANDIDATE_REF)
        raise _Missing(
            f"{name} needs commit {listed}{more}, which this node does not have "
            f"(it has {short(have)}): bring a bundle made with --since {short(have)} "
            "(or --full), or the bundle that comes before this one"
        )

    previous = mirror.resolve(CANDIDATE_REF)
    if mirror.has(head):
        verdict = _classify(mirror, head, name)
        if verdict is not None:
            return "replay", verdict, head, previous, previous

    env = _node_env(mirror.path)
    base = ["--git-dir", str(mirror.path), *_NODE_CONFIG]
    what = f"importing {name}"
    verify = _git(
        [*base, "bundle", "verify", "--quiet", str(staged)], env=env, timeout=timeout, what=what
    )
    if verify.returncode != 0:
        raise BundleError(f"{name} failed `git bundle verify`: {_stderr(verify)}")
    packs = mirror.path / "objects" / "pack"
    before = _listing(packs)
    fetch = _git(
        [*base, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-gc",
         str(staged), f"+{ref}:{BUNDLE_REF}"],
        env=env,
        timeout=timeout,
        what=what,
    )  # fmt: skip
    if fetch.returncode != 0:
        for leftover in _listing(packs) - before:
            if leftover.startswith("tmp_"):
                with contextlib.suppress(OSError):
                    (packs / leftover).unlink()
        text = _stderr(fetch)
        if "No space left" in text:
            raise SourceUnavailable(f"{what}: the node's disk is full: {text}")
        raise BundleError(f"{name} could not be imported (git fetch): {text}")
    if mirror.resolve(BUNDLE_REF) != head:
        raise BundleError(
            f"{name}: after the import {BUNDLE_REF} is {short(mirror.resolve(BUNDLE_REF))}, "
            f"not the bundle's head {short(head)}"
        )
    verdict = _classify(mirror, head, name)
    if verdict is not None:
        return "replay", verdict, head, previous, previous
    if previous is not None and not mirror.repo.descendant_of(head, previous):
        raise BundleError(
            f"{name}: its head {short(head)} does not descend from this node's candidate "
            f"{short(previous)}; a bundle may only move a plant forward along its history. "
            f"Kept under {BUNDLE_REF} for inspection"
        )
    mirror.pin(CANDIDATE_REF, head)
    return (
        "imported",
        f"imported {name}: candidate {short(previous)} → {short(head)}",
        head,
        previous,
        head,
    )


def _classify(mirror: Mirror, head: str, name: str) -> str | None:
    """A reason text when ``head`` is not news (a replay), else None."""
    for ref, what in ((CANDIDATE_REF, "candidate"), (APPLIED_REF, "applied revision")):
        known = mirror.resolve(ref)
        if known is None:
            continue
        if head == known:
            return f"replay: already have {short(head)} ({name} brings nothing new)"
        if mirror.repo.descendant_of(known, head):
            return (
                f"replay: already have {short(known)}; {name} ends at the older {short(head)} "
                f"(this node's {what} descends from it), nothing changed"
            )
    return None


def _listing(directory: Path) -> set[str]:
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return set()


def _finish(path: Path, now: datetime, result: BundleResult) -> BundleResult:
    """Move the bundle and its manifest aside and write ``<name>.result.json`` next to them.

    The folder is opened without following links and every move and write goes through
    that handle: a ``processed/`` swapped for a symlink cannot redirect them.
    """
    name = REJECTED_DIR if result.outcome == "rejected" else PROCESSED_DIR
    try:
        folder = _open_folder(path.parent, name)
    except _NotAFolder as exc:
        note = (
            f"{exc}; nothing is moved or written through it — {path.name} stays in the inbox "
            f"(replace {name}/ with a real folder)"
        )
        return replace(result, note=note)
    except OSError as exc:
        note = (
            f"could not open {name}/ ({exc.strerror or exc}); {path.name} stays in the inbox "
            "and is looked at again next time (a read-only stick?)"
        )
        return replace(result, note=note)
    try:
        target = _free_name(folder, path.name)
        os.replace(path, target, dst_dir_fd=folder)
        manifest = manifest_path(path)
        if os.path.lexists(manifest):
            os.replace(manifest, target + MANIFEST_SUFFIX, dst_dir_fd=folder)
        moved = replace(result, moved_to=path.parent / name / target)
        write_at(
            folder,
            target + RESULT_SUFFIX,
            json_bytes(moved.to_json(now)),
        )
    except OSError as exc:
        note = (
            f"could not move {path.name} to {name}/ ({exc.strerror or exc}); it stays "
            "in the inbox and is looked at again next time (a read-only stick?)"
        )
        return replace(result, note=note)
    finally:
        os.close(folder)
    return moved


class _NotAFolder(Exception):
    """processed/ or rejected/ exists but is not a real folder."""


def _open_folder(inbox: Path, name: str) -> int:
    """A handle on ``inbox/name``, made if missing; never through a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK
    with contextlib.suppress(FileExistsError):
        os.mkdir(inbox / name)
    try:
        fd = os.open(inbox / name, flags)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        try:
            mode = os.lstat(inbox / name).st_mode
        except OSError:
            raise exc from None
        where = ""
        if stat.S_ISLNK(mode):
            with contextlib.suppress(OSError):
                where = f" (to {os.readlink(inbox / name)})"
        raise _NotAFolder(f"{name}/ in the inbox is {_kind(mode)}{where}, not a folder") from None
    return fd


def _free_name(folder: int, name: str) -> str:
    """A name in the folder handle ``folder`` that neither a bundle nor a result uses yet."""

    def taken(candidate: str) -> bool:
        return any(_exists_at(folder, n) for n in (candidate, candidate + RESULT_SUFFIX))

    target = name
    stem = name[: -len(BUNDLE_SUFFIX)] if name.endswith(BUNDLE_SUFFIX) else name
    counter = 1
    while taken(target):
        target = f"{stem}.{counter}{BUNDLE_SUFFIX}"
        counter += 1
    return target


def _exists_at(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
