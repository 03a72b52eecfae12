"""The git seam: a local bare mirror that the node fetches into and reads commits from.

The node never checks anything out. It fetches the configured branch into
``refs/outpost/remote`` of a bare mirror in its state directory (forced, so a
force-push is *seen* — and then refused by `trust` as unrelated history,
instead of silently failing to fetch) and makes it ``refs/outpost/candidate``
unless a bundle already brought a descendant of it; it pins what it applied
under ``refs/outpost/applied`` so those objects are never lost. The heartbeat
tag, when the source has one, comes along into ``refs/outpost/heartbeat``.

Every pygit2 error becomes `SourceUnavailable` (temporary: the remote may come
back) or `ConfigError` (a credentials file that does not exist will not appear
by retrying).

A fetch is bounded (``spec.fetchLimits`` in agent.yaml, defaults in the
AgentConfig schema): libgit2 reports every chunk it receives, and past the byte
or object cap the transfer is stopped, whatever the server announced. That is a
temporary error naming the figures; the pack files the fetch had begun are
removed and no ref moves, so a hostile or broken server cannot fill the node's
disk a tick at a time.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.errors import SourceUnavailable

CANDIDATE_REF = "refs/outpost/candidate"
REMOTE_REF = "refs/outpost/remote"
APPLIED_REF = "refs/outpost/applied"
BUNDLE_REF = "refs/outpost/bundle"
HEARTBEAT_REF = "refs/outpost/heartbeat"
MAX_SECRET_FILE_BYTES = 64 * 1024
"""A password or token file holds one line; anything larger is the wrong file."""
"""The source's signed heartbeat tag (`reconciler.core.trust.heartbeat`), fetched with the
branch when the source has one."""


@dataclass(frozen=True)
class Credentials:
    """Where the node's git credentials live; the files are read at fetch time only."""

    username: str | None = None
    password_file: Path | None = None
    ssh_key_file: Path | None = None
    ssh_public_key_file: Path | None = None


class Mirror:
    """A bare repository under the state directory."""

    def __init__(self, path: Path) -> None:
        import pygit2

        self.path = path
        try:
            if (path / "HEAD").exists():
                self.repo = pygit2.Repository(str(path))
            else:
                path.mkdir(parents=True, exist_ok=True)
                self.repo = pygit2.init_repository(str(path), bare=True)
        except pygit2.GitError as exc:
            raise SourceUnavailable(f"cannot open the local mirror {path}: {exc}") from None
        self._clear_stale_locks()

    def _clear_stale_locks(self) -> None:
        """Remove lock files a killed fetch left behind.

        The agent holds its own lock for the whole tick, so no other writer can own a
        ``*.lock`` in the mirror: one that exists was left by a process killed mid-fetch,
        and would make every later fetch fail.
        """
        for lock in self.path.glob("*.lock"):
            lock.unlink(missing_ok=True)
        refs = self.path / "refs"
        if refs.is_dir():
            for lock in refs.rglob("*.lock"):
                lock.unlink(missing_ok=True)

    def fetch(
        self,
        url: str,
        branch: str,
        credentials: Credentials | None = None,
        *,
        max_bytes: int | None = None,
        max_objects: int | None = None,
    ) -> str:
        """Fetch ``branch`` of ``url``; return the commit id it points at.

        Past ``max_bytes`` received or ``max_objects`` the fetch stops: `SourceUnavailable`
        with the figures, and the packs it had begun are removed.
        """
        import pygit2

        refspec = f"+refs/heads/{branch}:{REMOTE_REF}"
        heartbeat = f"+refs/tags/outpost/heartbeat:{HEARTBEAT_REF}"
        callbacks = _callbacks(credentials, max_bytes=max_bytes, max_objects=max_objects)
        packs = self.path / "objects" / "pack"
        before = _files(packs)
        try:
            remote = self.repo.remotes.create_anonymous(url)
            remote.fetch([refspec, heartbeat], callbacks=callbacks, depth=0)
        except _OverLimit as exc:
            removed = _remove_new(packs, before)
            raise SourceUnavailable(
                f"fetching {branch!r} from {_safe(url)} stopped: {exc}; "
                f"removed what it had written ({removed} file(s) under objects/pack). A "
                "configuration repository's history is megabytes: check the remote (or raise "
                "spec.fetchLimits in agent.yaml if it really is this big)"
            ) from None
        except pygit2.GitError as exc:
            _remove_new(packs, before, temporary_only=True)
            raise SourceUnavailable(
                f"fetching {branch!r} from {_safe(url)} failed: {exc}"
            ) from None
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(
                f"fetching {branch!r} from {_safe(url)} failed: {exc}"
            ) from None
        head = self.resolve(REMOTE_REF)
        if head is None:
            raise SourceUnavailable(f"{_safe(url)} has no branch {branch!r}")
        current = self.resolve(CANDIDATE_REF)
        # A bundle may have brought something newer than the remote has: keep it. Anything
        # else the remote says becomes the candidate, force-pushed history included, so that
        # trust sees it and refuses it by name instead of the fetch failing quietly.
        if current is None or current == head or not self.descends(current, head):
            self.pin(CANDIDATE_REF, head)
        return head

    def descends(self, commit: str, ancestor: str) -> bool:
        """True if ``commit`` has ``ancestor`` in its history (and is not the same commit)."""
        import pygit2

        try:
            return bool(self.repo.descendant_of(pygit2.Oid(hex=commit), pygit2.Oid(hex=ancestor)))
        except (KeyError, ValueError, pygit2.GitError):
            return False

    def count(self, base: str, head: str, *, limit: int = 100_000) -> int:
        """How many commits ``head`` has that ``base`` has not (``git rev-list base..head``),
        counting at most ``limit``."""
        import pygit2

        try:
            walker = self.repo.walk(pygit2.Oid(hex=head), pygit2.enums.SortMode.NONE)
            walker.hide(pygit2.Oid(hex=base))
            total = 0
            for _ in walker:
                total += 1
                if total >= limit:
                    break
        except (KeyError, ValueError, pygit2.GitError):
            return 0
        return total

    def resolve(self, ref: str) -> str | None:
        try:
            return str(self.repo.references[ref].peel().id)
        except (KeyError, ValueError):
            return None

    def has(self, commit: str) -> bool:
        import pygit2

        try:
            return isinstance(self.repo[commit], pygit2.Commit)
        except (KeyError, ValueError):
            return False

    def pin(self, ref: str, commit: str) -> None:
        import pygit2

        self.repo.references.create(ref, pygit2.Oid(hex=commit), force=True)

    def commit_time(self, commit: str) -> int:
        import pygit2

        return int(self.repo[commit].peel(pygit2.Commit).commit_time)


def _safe(url: str) -> str:
    """A URL fit for a log line: credentials embedded in it are cut out."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


class _OverLimit(Exception):
    """Raised inside libgit2's progress callback; pygit2 aborts the transfer and re-raises."""


def _files(directory: Path) -> set[str]:
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return set()


def _remove_new(directory: Path, before: set[str], *, temporary_only: bool = False) -> int:
    """Delete files a failed fetch left in ``directory``; return how many."""
    removed = 0
    for name in _files(directory) - before:
        if temporary_only and not name.startswith(("pack_git2_", "tmp_")):
            continue
        with contextlib.suppress(OSError):
            (directory / name).unlink()
            removed += 1
    return removed


def _make_callbacks() -> type:
    """The callbacks class, defined on first use so that pygit2 is imported lazily."""
    import pygit2

    class Callbacks(pygit2.RemoteCallbacks):
        def __init__(
            self,
            credentials: Credentials | None,
            *,
            max_bytes: int | None = None,
            max_objects: int | None = None,
        ) -> None:
            super().__init__()
            self.credentials_from = credentials
            self.max_bytes = max_bytes
            self.max_objects = max_objects

        def transfer_progress(self, stats: Any) -> None:
            received = int(stats.received_bytes)
            objects = int(stats.received_objects)
            total = int(stats.total_objects)
            figures = f"{received:,} bytes and {objects:,} of {total:,} objects received"
            if self.max_bytes is not None and received > self.max_bytes:
                raise _OverLimit(
                    f"{figures}, over the limit of {self.max_bytes:,} bytes "
                    "(spec.fetchLimits.maxBytes)"
                )
            if self.max_objects is not None and max(objects, total) > self.max_objects:
                raise _OverLimit(
                    f"{figures}, over the limit of {self.max_objects:,} objects "
                    "(spec.fetchLimits.maxObjects)"
                )

        def credentials(self, url: str, username_from_url: str | None, allowed: Any) -> Any:
            credentials = self.credentials_from
            if credentials is None:
                raise pygit2.Passthrough  # no credentials configured: libgit2's own default
            user = credentials.username or username_from_url or "git"
            if (
                credentials.ssh_key_file is not None
                and allowed & pygit2.enums.CredentialType.SSH_KEY
            ):
                public = credentials.ssh_public_key_file or credentials.ssh_key_file.with_suffix(
                    ".pub"
                )
                return pygit2.Keypair(user, str(public), str(credentials.ssh_key_file), "")
            if credentials.password_file is not None:
                from reconciler.core.source import read_configured

                raw = read_configured(
                    credentials.password_file, "the git password file", MAX_SECRET_FILE_BYTES
                )
                password = raw.decode("utf-8", "replace").strip()
                return pygit2.UserPass(user, password)
            raise pygit2.Passthrough

    return Callbacks


def _callbacks(
    credentials: Credentials | None, *, max_bytes: int | None, max_objects: int | None
) -> Any:
    return _make_callbacks()(credentials, max_bytes=max_bytes, max_objects=max_objects)
