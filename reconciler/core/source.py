"""A read-only view of one repository tree: a working directory or a git commit.

Rendering and validation read files only through `Tree`, so the same code path
serves CI (a working directory, or any revision) and the node (a verified
commit). A commit is read straight from git's object database through pygit2
tree and blob objects: there is no checkout for anyone to tamper with between
verification and rendering.

Neither view follows a symlink or a submodule: a link could point outside the
tree (``/etc/outpost/age.key``) or at content nobody reviewed, so either one is
an error naming its path.

A working directory inside a git repository shows what git would commit: files git
ignores (``.gitignore``, ``.git/info/exclude``, ``core.excludesFile``) and are not
tracked are left out, so a virtualenv or a build folder in the repository root is
neither validated nor scanned for secrets — a commit would not carry it either.

Every read is bounded (``read_file``): only a regular file is read, opened
without following a link and without blocking (a FIFO in place of
``site.yaml`` would wait forever for a writer), and its size is checked with
``fstat`` before a byte is read, so a 1 GB ``hardware.yaml`` costs a stat,
not 2 GB of memory. A git blob's size comes from its object header the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from reconciler.core.errors import (
    ConfigError,
    DocumentError,
    Mark,
    OutpostError,
    SourceUnavailable,
)

# The most any repository file may hold. YAML documents have their own, smaller limit
# (``loader.MAX_FILE_BYTES``); this one bounds everything else read from the tree.
MAX_READ_BYTES = 8 * 1024 * 1024

_GIT_LINK = 0o160000
_SYMLINK = 0o120000
_IGNORED_DIRS = frozenset({".git"})
_LINK_MESSAGE = "is a symbolic link; the repository must hold plain files and folders"


def _link_message(holder: str) -> str:
    return f"is a symbolic link; {holder} must hold plain files and folders"


class Tree(Protocol):
    """What every reader of the repository needs, and nothing more."""

    @property
    def revision(self) -> str | None:
        """The commit id this tree is, or None for a working directory."""
        ...

    def files(self, prefix: str = "", *, lenient: bool = False) -> list[str]:
        """Every regular file at or below ``prefix`` (posix, relative, sorted).

        A symlink or submodule below ``prefix`` is a DocumentError, unless ``lenient``:
        then it is left out and listed in ``links`` (validation reports each one and goes on).
        """
        ...

    @property
    def links(self) -> list[str]:
        """Symlinks, submodules and unreadable folders met by lenient listings."""
        ...

    def children(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """The names directly in folder ``prefix``: (files, folders), each sorted.

        What a walk of ``prefix`` would meet at its first level: links, submodules and
        what git ignores are left out. Only that folder is read, nothing below it.
        """
        ...

    def peek(self, path: str, limit: int = MAX_READ_BYTES) -> bytes | None:
        """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, else None,
        without asking git whether it ignores the file: for a pre-filter whose every hit
        is read again with `read` (a hit that is ignored is then refused as usual)."""
        ...

    def read(self, path: str, limit: int = MAX_READ_BYTES) -> bytes:
        """The bytes of one file; DocumentError if it is not a regular file of the tree
        or holds more than ``limit`` bytes (checked before reading)."""
        ...

    def exists(self, path: str) -> bool:
        """True if ``path`` is a regular file of the tree."""
        ...


_LAST_READ: list[str] = [""]


def last_read() -> str:
    """The repository path read last in this process (for an internal error's one line)."""
    return _LAST_READ[0]


_REPOSITORY = "the repository"


def _too_large(size: int, limit: int, path: str, holder: str = _REPOSITORY) -> DocumentError:
    hint = (
        "split it, or move large data out of the repository"
        if holder == _REPOSITORY
        else f"no file of {holder} is ever this large: it is damaged, or not the file it should be"
    )
    return DocumentError(
        f"file is {size:,} bytes; the limit is {limit:,} bytes ({hint})", mark=Mark(path)
    )


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_file(
    full: Path | str,
    shown: str,
    limit: int = MAX_READ_BYTES,
    *,
    holder: str = _REPOSITORY,
    follow_links: bool = False,
) -> bytes:
    """The bytes of the regular file ``full``, at most ``limit``; DocumentError naming ``shown``.

    The one bounded reader for files on disk: opened with ``O_NOFOLLOW`` (a link is
    refused, not followed) and ``O_NONBLOCK`` (opening a FIFO returns at once), then
    ``fstat`` decides before reading: only a regular file of at most ``limit`` bytes
    is read, and never more than that many bytes even if it grows meanwhile.
    ``holder`` says whose file it is in the messages (``"the state directory"``).
    ``follow_links`` is for a file the node's own configuration names (a token file that
    Kubernetes mounts as a link, say): the path is the operator's, not a repository's or a
    removable medium's, so a link is followed; everything else is checked the same way.
    """
    nofollow = 0 if follow_links else os.O_NOFOLLOW
    flags = os.O_RDONLY | os.O_NONBLOCK | nofollow | getattr(os, "O_CLOEXEC", 0)
    _LAST_READ[0] = shown
    try:
        fd = os.open(full, flags)
    except FileNotFoundError:
        raise DocumentError("file not found", mark=Mark(shown)) from None
    except OSError as exc:
        if not follow_links and os.path.islink(full):
            raise DocumentError(_link_message(holder), mark=Mark(shown)) from None
        raise DocumentError(f"cannot read file: {exc.strerror}", mark=Mark(shown)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise DocumentError(
                f"is {what}, not a regular file; {holder} must hold plain files",
                mark=Mark(shown),
            )
        if info.st_size > limit:
            raise _too_large(info.st_size, limit, shown, holder)
        chunks: list[bytes] = []
        left = info.st_size + 1  # one byte more tells a file that grew while we read
        while left > 0:
            want = min(left, 1 << 20)
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            if len(chunk) < want:
                break  # a regular file reads short only at its end: no second read to see it
        data = b"".join(chunks)
        if len(data) > limit:
            raise _too_large(len(data), limit, shown, holder)
        return data
    except OSError as exc:
        raise DocumentError(f"cannot read file: {exc.strerror}", mark=Mark(shown)) from None
    finally:
        os.close(fd)


CONFIGURED = "the node's configuration"


def read_configured(path: Path, what: str, limit: int, *, holder: str = CONFIGURED) -> bytes:
    """A file a configuration or command line names (``what``: "the trust root"): bounded
    like every read, a link followed (`read_file`); ConfigError naming ``what`` and the path.
    ``holder`` names whose configuration it is in the messages."""
    try:
        return read_file(path, str(path), limit, holder=holder, follow_links=True)
    except DocumentError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.message}") from None


def entries(tree: Tree, prefix: str = "") -> list[str]:
    """The names directly under ``prefix`` in ``tree``, sorted: a working directory lists the
    one folder; any other tree answers from its listing of the subtree."""
    listed = getattr(tree, "entries", None)
    if listed is not None:
        return list(listed(prefix))
    below = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    try:
        paths = tree.files(prefix, lenient=True)
    except OutpostError:
        return []
    return sorted({p[len(below) :].split("/")[0] for p in paths if p.startswith(below)})


def unreadable_message(reason: str) -> str:
    return (
        f"folder cannot be read ({reason}); its files would be left out, so nothing below "
        "it is checked or rendered — fix its permissions"
    )


def _under(prefix: str, path: str) -> bool:
    prefix = prefix.strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def first_level(prefix: str, listed: list[str]) -> tuple[list[str], list[str]]:
    """(files, folders) directly in ``prefix``, from a listing of the files below it: a
    folder is there when a file below it is (as a walk finds folders)."""
    skip = len(prefix) + 1 if prefix else 0
    files: set[str] = set()
    folders: set[str] = set()
    for path in listed:
        rest = path[skip:]
        if not rest or (prefix and not path.startswith(prefix + "/")):
            continue
        name, _, below = rest.partition("/")
        (folders if below else files).add(name)
    return sorted(files), sorted(folders)


def _clean(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DocumentError(f"path {path!r} leaves the repository", mark=Mark(path))
    return "/".join(parts)


_IGNORED_KEPT = 1 << 20


class _GitIgnore:
    """Which paths of a working directory git ignores and does not track.

    Asks libgit2 (every ``.gitignore`` on the way, ``.git/info/exclude``,
    ``core.excludesFile``), so the rules are git's own and not a re-implementation.
    A path git ignores but tracks is kept, as ``git add`` keeps it. Outside a git
    repository nothing is ignored.
    """

    def __init__(self, root: Path) -> None:
        self._repo: Any = None
        self._base = ""
        self._tracked: frozenset[str] | None = None
        self._known: dict[str, bool] = {}
        import pygit2

        try:
            found = pygit2.discover_repository(str(root))
            repo = pygit2.Repository(found) if found else None
        except (pygit2.GitError, OSError):
            repo = None
        if repo is None or repo.is_bare or repo.workdir is None:
            return
        workdir = Path(repo.workdir).resolve()
        try:
            base = root.relative_to(workdir).as_posix()
        except ValueError:
            return
        self._repo = repo
        self._base = "" if base == "." else base + "/"

    def _tracked_paths(self) -> frozenset[str]:
        """Tracked files and every folder above one; read once, on the first ignored path."""
        if self._tracked is None:
            import pygit2

            tracked: set[str] = set()
            try:
                entries = [entry.path for entry in self._repo.index]
            except (pygit2.GitError, OSError):  # an unreadable index: nothing counts as tracked
                entries = []
            for path in entries:
                tracked.add(path)
                parts = path.split("/")
                tracked.update("/".join(parts[:i]) for i in range(1, len(parts)))
            self._tracked = frozenset(tracked)
        return self._tracked

    def __call__(self, rel: str) -> bool:
        """True if git ignores ``rel`` (relative to the tree's root) and tracks nothing there.

        Answers are kept: the walk asks about every entry, and each read asks again about
        the path and every folder above it (libgit2 takes microseconds per question, and a
        fleet's tree has tens of thousands of paths).
        """
        known = self._known.get(rel)
        if known is not None:
            return known
        if self._repo is None or not rel:
            return False
        path = self._base + rel
        ignored = bool(self._repo.path_is_ignored(path)) and path not in self._tracked_paths()
        if len(self._known) >= _IGNORED_KEPT:
            self._known.clear()
        self._known[rel] = ignored
        return ignored


class _ListedIgnores:
    """What git ignores and does not track, from a listing git made of them
    (``git status --ignored=matching``: an ignored folder as itself): a path is ignored
    when it or a folder above it is listed."""

    def __init__(self, ignored: Collection[str]) -> None:
        self._ignored = frozenset(ignored)

    def __call__(self, rel: str) -> bool:
        if not self._ignored or not rel:
            return False
        if rel in self._ignored:
            return True
        parts = rel.split("/")
        return any("/".join(parts[:i]) in self._ignored for i in range(1, len(parts)))


class WorkdirTree:
    """A working directory: what CI and ``outpost validate`` read by default.

    ``ignored``: the paths git ignores and does not track, when the caller has asked git
    already (``ci.changes``: the same walk as its status); without it libgit2 is asked
    about each path as the tree meets it.
    """

    def __init__(self, root: Path, *, ignored: Collection[str] | None = None) -> None:
        self.root = root.resolve()
        self._listed: dict[str, list[str]] = {}
        self._links: dict[str, list[str]] = {}
        self._every_link: set[str] = set()  # of all the listings: `links` is asked often
        self._children: dict[str, tuple[list[str], list[str]]] = {}
        self.unreadable: dict[str, str] = {}
        if not self.root.is_dir():
            raise SourceUnavailable(f"{root} is not a directory")
        self._ignored: Callable[[str], bool] = (
            _GitIgnore(self.root) if ignored is None else _ListedIgnores(ignored)
        )

    @property
    def revision(self) -> str | None:
        return None

    @property
    def links(self) -> list[str]:
        return sorted(self._every_link)

    def _keep_links(self, prefix: str, links: list[str]) -> None:
        self._links[prefix] = links
        self._every_link.update(links)

    def _walk(self, prefix: str) -> list[str]:
        """Regular files at or below ``prefix``; only that subtree is walked."""
        cached = self._listed.get(prefix)
        if cached is not None:
            return cached
        found: list[str] = []
        links: list[str] = []
        start = self.root / prefix if prefix else self.root
        if prefix and self._ignored_on_the_way(prefix):
            self._listed[prefix] = []
            self._keep_links(prefix, [])
            return []
        linked = start.is_symlink()
        if linked:
            links.append(prefix)
        elif start.is_file():
            found.append(prefix)

        def unreadable(error: OSError) -> None:
            # A folder that cannot be listed is reported, never skipped: skipping would drop
            # its files silently (a secrets/ folder the CI user cannot read would vanish
            # from the render).
            if isinstance(error, FileNotFoundError | NotADirectoryError):
                return  # a prefix that is absent or a file: nothing below it
            rel = os.path.relpath(str(error.filename), self.root).replace(os.sep, "/")
            self.unreadable[rel] = error.strerror or "cannot be read"
            links.append(rel)

        # One scandir per folder: an entry's type comes with it (no stat per file), and a
        # folder walked before (``sites`` when the whole tree is listed later) is not
        # walked again.
        pending = [] if linked else [(str(start), prefix)]  # a link is reported, not followed
        while pending:
            folder, rel_dir = pending.pop()
            try:
                with os.scandir(folder) as scanned:
                    listed = list(scanned)
            except OSError as error:
                unreadable(error)
                continue
            for entry in listed:
                name = entry.name
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if (name in _IGNORED_DIRS and not rel_dir) or self._ignored(rel):
                    continue
                try:
                    link = entry.is_symlink()
                    folder_entry = not link and entry.is_dir(follow_symlinks=False)
                except OSError:
                    link, folder_entry = False, False
                if link:
                    links.append(rel)
                elif folder_entry:
                    if rel in self._listed and rel in self._links:
                        found.extend(self._listed[rel])
                        links.extend(self._links[rel])
                    else:
                        pending.append((entry.path, rel))
                else:  # a FIFO or a device is listed so that reading it says what it is
                    found.append(rel)
        result = sorted(found)
        self._listed[prefix] = result
        self._keep_links(prefix, sorted(links))
        return result

    def entries(self, prefix: str = "") -> list[str]:
        """The names directly under the folder ``prefix`` (files, folders, links), sorted,
        less what git ignores: one listing, where ``files`` walks the whole subtree."""
        prefix = _clean(prefix)
        if prefix and self._ignored_on_the_way(prefix):
            return []
        try:
            with os.scandir(self.root / prefix if prefix else self.root) as found:
                names = [entry.name for entry in found]
        except OSError:
            return []
        return sorted(
            name
            for name in names
            if not (not prefix and name in _IGNORED_DIRS)
            and not self._ignored(f"{prefix}/{name}" if prefix else name)
        )

    def files(self, prefix: str = "", *, lenient: bool = False) -> list[str]:
        prefix = _clean(prefix)
        found = self._walk(prefix)
        if self._links[prefix] and not lenient:
            first = self._links[prefix][0]
            if first in self.unreadable:
                raise DocumentError(unreadable_message(self.unreadable[first]), mark=Mark(first))
            raise DocumentError(_LINK_MESSAGE, mark=Mark(first))
        return found

    def children(self, prefix: str = "") -> tuple[list[str], list[str]]:
        prefix = _clean(prefix)
        listed = self._listed.get(prefix)
        if listed is not None:  # walked already: the first level of that listing
            return first_level(prefix, listed)
        known = self._children.get(prefix)
        if known is None:
            known = self._children[prefix] = self._read_children(prefix)
        return known

    def _read_children(self, prefix: str) -> tuple[list[str], list[str]]:
        start = self.root / prefix if prefix else self.root
        if (prefix and self._ignored_on_the_way(prefix)) or start.is_symlink():
            return [], []
        files: list[str] = []
        folders: list[str] = []
        try:
            entries = list(os.scandir(start))
        except OSError:
            return [], []
        for entry in entries:
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            if entry.is_symlink() or (entry.name in _IGNORED_DIRS and not prefix):
                continue
            if self._ignored(rel):
                continue
            (folders if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
        return sorted(files), sorted(folders)

    def peek(self, path: str, limit: int = MAX_READ_BYTES) -> bytes | None:
        path = _clean(path)
        try:  # a string path: thousands of peeks, and pathlib costs more than the read
            return read_file(f"{self.root}/{path}", path, limit)
        except DocumentError:
            return None

    def _ignored_on_the_way(self, path: str) -> bool:
        """True if git ignores ``path`` or a folder above it."""
        if isinstance(self._ignored, _ListedIgnores):  # it looks above the path itself
            return self._ignored(path)
        parts = path.split("/")
        return any(self._ignored("/".join(parts[:i])) for i in range(1, len(parts) + 1))

    def exists(self, path: str) -> bool:
        path = _clean(path)
        if self._ignored_on_the_way(path):
            return False
        try:
            mode = (self.root / path).lstat().st_mode
        except OSError:
            return False
        return not stat.S_ISDIR(mode) and not stat.S_ISLNK(mode)

    def read(self, path: str, limit: int = MAX_READ_BYTES) -> bytes:
        path = _clean(path)
        if path and self._ignored_on_the_way(path):
            raise DocumentError(
                "is ignored by git (.gitignore) and so is not part of the repository",
                mark=Mark(path),
            )
        return read_file(f"{self.root}/{path}", path, limit)  # a string: see ``peek``


_TREE_CACHE_BYTES = 64 << 20


def _cache_trees(pygit2: Any) -> None:
    """Let libgit2 cache trees of any size: by default it skips trees over 4 KiB, so in a
    repository of thousands of sites every read of ``sites/`` costs milliseconds again."""
    pygit2.settings.cache_object_limit(pygit2.enums.ObjectType.TREE, _TREE_CACHE_BYTES)


class CommitTree:
    """The tree of one git commit, read from the object database without a checkout."""

    def __init__(self, repo: Any, commit: str) -> None:
        import pygit2

        _cache_trees(pygit2)
        self._repo = repo
        try:
            obj = repo.revparse_single(commit)
            peeled = obj.peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            where = str(repo.workdir or repo.path).rstrip("/")
            raise SourceUnavailable(
                f"no revision {commit!r} in {where} (a commit id, branch or tag)"
            ) from None
        self._commit = peeled
        self._revision = str(peeled.id)
        self._listed: dict[str, dict[str, Any]] = {}
        self._links: dict[str, list[str]] = {}

    @property
    def revision(self) -> str | None:
        return self._revision

    def _subtree(self, prefix: str) -> Any:
        tree = self._commit.tree
        if not prefix:
            return tree
        try:
            entry = tree[prefix]
        except KeyError:
            return None
        return self._repo[entry.id] if entry.type_str == "tree" else None

    def _walk(self, prefix: str) -> dict[str, Any]:
        """Blob ids at or below ``prefix``; only that subtree is read (a node reads its slice)."""
        cached = self._listed.get(prefix)
        if cached is not None:
            return cached
        blobs: dict[str, Any] = {}
        links: list[str] = []
        root = self._subtree(prefix)
        if root is None:
            oid = self._lookup(prefix) if prefix else None
            if oid is not None:
                blobs[prefix] = oid
        stack: list[tuple[str, Any]] = []
        if root is not None:
            stack.append((prefix + "/" if prefix else "", root))
        while stack:
            base, tree = stack.pop()
            for entry in tree:
                path = f"{base}{entry.name}"
                if entry.filemode in (_SYMLINK, _GIT_LINK):
                    links.append(path)
                elif entry.type_str == "tree":
                    stack.append((path + "/", self._repo[entry.id]))
                else:
                    blobs[path] = entry.id
        result = dict(sorted(blobs.items()))
        self._listed[prefix] = result
        self._links[prefix] = sorted(links)
        return result

    @property
    def links(self) -> list[str]:
        return sorted({link for links in self._links.values() for link in links})

    def _lookup(self, path: str) -> Any:
        try:
            entry = self._commit.tree[path]
        except KeyError:
            return None
        if entry.filemode == _SYMLINK:
            raise DocumentError(
                f"is a symbolic link in commit {self._revision[:12]}; "
                "the repository must hold plain files and folders",
                mark=Mark(path),
            )
        return entry.id if entry.type_str == "blob" else None

    def files(self, prefix: str = "", *, lenient: bool = False) -> list[str]:
        prefix = _clean(prefix)
        found = list(self._walk(prefix))
        if self._links[prefix] and not lenient:
            raise DocumentError(
                f"is a symbolic link or submodule in commit {self._revision[:12]}; "
                "the repository must hold plain files and folders",
                mark=Mark(self._links[prefix][0]),
            )
        return found

    def children(self, prefix: str = "") -> tuple[list[str], list[str]]:
        prefix = _clean(prefix)
        listed = self._listed.get(prefix)
        if listed is not None:
            return first_level(prefix, list(listed))
        tree = self._subtree(prefix)
        files: list[str] = []
        folders: list[str] = []
        for entry in tree if tree is not None else ():
            if entry.filemode in (_SYMLINK, _GIT_LINK):
                continue
            (folders if entry.type_str == "tree" else files).append(entry.name)
        return sorted(files), sorted(folders)

    def peek(self, path: str, limit: int = MAX_READ_BYTES) -> bytes | None:
        try:
            return self.read(path, limit)
        except DocumentError:
            return None

    def exists(self, path: str) -> bool:
        return self._lookup(_clean(path)) is not None

    def read(self, path: str, limit: int = MAX_READ_BYTES) -> bytes:
        path = _clean(path)
        oid = self._lookup(path)
        _LAST_READ[0] = path
        if oid is None:
            raise DocumentError(f"file not found in commit {self._revision[:12]}", mark=Mark(path))
        _, size = self._repo.odb.read_header(oid)  # the size, without inflating the blob
        if size > limit:
            raise _too_large(size, limit, path)
        data: bytes = self._repo[oid].data
        return data
