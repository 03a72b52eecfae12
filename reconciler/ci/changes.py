"""What changed in a working tree since a revision, and where other sites hold a value:
git's command line answers both for ``outpost validate --changed-since``.

A run over the sites a change can affect first asks which paths changed. Two commands
answer it (`start_changes`, then `PendingChanges.result`):

- ``git status`` (porcelain v1, NUL-separated, every untracked file listed, no rename
  detection): what differs between HEAD, the index and the working tree, and the
  untracked files. With ``--ignored=matching`` the same walk lists what git ignores
  and does not track (an ignored folder as itself, not its files), so the tree read
  afterwards leaves those out without asking git about each of its paths;
- ``git diff --cached REV``: what the index changed since REV (nothing to read when
  REV is HEAD: the index's cache tree answers).

A rename counts as a removal and an addition (``--no-renames``), so a site a file left
is checked too. Paths are the repository's own, relative to ``root`` (which may be a
folder inside the work tree: git's paths are cut to it).

Then the checks that need every site ask which other sites' site.yaml or hardware.yaml
could declare a value of the changed ones (an age recipient, a machine id, a node key).
`SiteFileGrep` answers with ``git grep --cached -F`` over the files of the index and
reads the changed and untracked ones itself (status listed every file whose working copy
differs from the index): a superset (a hit is read and judged again by the check). At
10,000 sites, reading and matching the 20,000 files here cost 0.24 s of this process; one
single-threaded grep of the index takes 0.12 s, of the working tree 0.2 s (an open and a
read a file), on the other core while the changed sites are checked. The index's files
are the checked-out ones, so their objects are there: the grep fetches nothing, even in a
partial clone.

No command takes a lock (``--no-optional-locks``: validation never writes the index);
each one has a time limit and an output limit. A failure of status or diff is a
`SourceUnavailable` that says what git said; a failed grep only sends the question back
to the caller's own reading of every file.

Why the command line, not libgit2 (pygit2): ``git status`` stats every tracked file
against the index's cache, in C, in a process of its own that runs while this one
imports the checks; libgit2's status took twice git's CPU on a 10,000-site tree (0.25 s
against 0.12 s), and a run that does not import pygit2 starts about 30 ms sooner.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import DocumentError, SourceUnavailable
from reconciler.core.source import read_file

__all__ = [
    "Changes",
    "PendingChanges",
    "PendingIgnored",
    "SiteFileGrep",
    "changes_since",
    "start_changes",
]

TIMEOUT_SECONDS = 300.0
# git's listing of changed, untracked and ignored paths: a million paths fit.
MAX_OUTPUT_BYTES = 256 << 20
_STDERR_KEPT = 4096
_STDERR_SHOWN = 400


@dataclass(frozen=True)
class Changes:
    """What changed in the working tree at ``root`` since ``revision`` (a commit id).

    ``paths``: every path added, removed or modified since the revision, staged or not,
    and every untracked path (``untracked`` holds those alone). ``ignored``: the paths
    git ignores and does not track (a folder without its trailing slash); what is below
    them is ignored too.
    """

    revision: str
    paths: frozenset[str]
    ignored: frozenset[str]
    untracked: frozenset[str] = frozenset()


class _Overrun(Exception):
    """A command ran past its time or its output limit."""


def _command(root: Path, *args: str) -> list[str]:
    return ["git", "--no-optional-locks", "-C", str(root), *args]


def _environment() -> dict[str, str]:
    # git's messages in one language, so an operator and a log search read the same words.
    return {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start one git command; OSError (no git) is the caller's to word."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(),
    )


def _no_git(exc: OSError) -> SourceUnavailable:
    return SourceUnavailable(
        "--changed-since asks git which files changed, and `git` could not be run: "
        f"{exc.strerror or exc}"
    )


def _stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _collect(
    procs: dict[str, subprocess.Popen[bytes]], deadline: float
) -> dict[str, tuple[int, bytes, str]]:
    """Each command's exit code, output and last line on stderr, read together (none of
    them blocks on a full pipe) and bounded; `_Overrun` past the deadline or the limit."""
    chunks: dict[tuple[str, bool], list[bytes]] = {}
    total = 0
    with selectors.DefaultSelector() as selector:
        for name, proc in procs.items():
            assert proc.stdout is not None and proc.stderr is not None
            selector.register(proc.stdout, selectors.EVENT_READ, (name, False))
            selector.register(proc.stderr, selectors.EVENT_READ, (name, True))
            chunks[name, False], chunks[name, True] = [], []
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Overrun(f"did not finish within {TIMEOUT_SECONDS:.0f} s")
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                kept = chunks[key.data]
                if key.data[1]:  # stderr: its start is kept, the rest drained
                    if sum(map(len, kept)) < _STDERR_KEPT:
                        kept.append(chunk)
                    continue
                kept.append(chunk)
                total += len(chunk)
                if total > MAX_OUTPUT_BYTES:
                    raise _Overrun(f"listed more than {MAX_OUTPUT_BYTES >> 20} MiB of paths")
    results = {}
    for name, proc in procs.items():
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise _Overrun(f"did not finish within {TIMEOUT_SECONDS:.0f} s") from None
        said = b"".join(chunks[name, True]).decode(errors="replace").strip()
        last = said.splitlines()[-1][:_STDERR_SHOWN] if said else f"exit {code}"
        results[name] = (code, b"".join(chunks[name, False]), last)
    return results


class PendingChanges:
    """``git status`` and ``git diff --cached`` running for `Changes`; `result` waits."""

    def __init__(self, root: Path, revision: str) -> None:
        self.root = root
        self.asked = revision
        self._deadline = time.monotonic() + TIMEOUT_SECONDS
        self._changes: Changes | None = None
        # The status walks the whole tree: it starts first and runs while the revision
        # is looked up.
        try:
            self._procs = {"status": _start(_command(root, *_STATUS))}
        except OSError as exc:
            raise _no_git(exc) from None
        try:
            self.prefix, self.revision = self._resolve()
            diff = ["diff", "--cached", "--name-only", "-z", "--no-renames", "--no-relative"]
            diff += ["--no-ext-diff", self.revision, "--", "."]
            self._procs["diff"] = _start(_command(root, *diff))
        except OSError as exc:
            _stop(self._procs.values())
            raise _no_git(exc) from None
        except BaseException:
            _stop(self._procs.values())
            raise

    def _resolve(self) -> tuple[str, str]:
        """(root's folder inside the work tree, ``/``-terminated or empty; the commit id)."""
        if self.asked.startswith("-") or not self.asked.strip():
            raise SourceUnavailable(
                f"--changed-since {self.asked!r}: expected a revision (a commit id, branch "
                "or tag), not an option or an empty name"
            )
        argv = _command(self.root, "rev-parse", "--show-prefix", "--verify", "--quiet")
        try:
            done = subprocess.run(
                [*argv, f"{self.asked}^{{commit}}"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=_environment(),
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceUnavailable(
                f"--changed-since {self.asked}: git rev-parse in {self.root} did not answer "
                f"within {TIMEOUT_SECONDS:.0f} s"
            ) from None
        lines = done.stdout.decode(errors="surrogateescape").split("\n")
        if done.returncode != 0 and (done.returncode != 1 or len(lines) < 2):
            said = done.stderr.decode(errors="replace").strip().splitlines()
            reason = said[-1][:_STDERR_SHOWN] if said else f"exit {done.returncode}"
            raise SourceUnavailable(
                f"--changed-since needs a git repository, and {self.root} is not one "
                f"(git: {reason})"
            )
        if done.returncode != 0:
            raise SourceUnavailable(
                f"no revision {self.asked!r} in {self.root.resolve()} (a commit id, branch or "
                "tag; in a shallow clone, fetch it first)"
            )
        return lines[0], lines[1].strip()

    def close(self) -> None:
        """Stop git if nobody waited for it (the run failed before it needed the changes)."""
        if self._changes is None:
            _stop(self._procs.values())

    def result(self) -> Changes:
        """Wait for git (once: later calls answer the same); SourceUnavailable naming the
        command when one fails."""
        if self._changes is None:
            self._changes = self._wait()
        return self._changes

    def _wait(self) -> Changes:
        try:
            results = _collect(self._procs, self._deadline)
        except _Overrun as exc:
            raise SourceUnavailable(
                f"--changed-since {self.asked}: git, listing the changes in {self.root}, {exc}"
            ) from None
        finally:
            _stop(self._procs.values())
        for name, (code, _, said) in results.items():
            if code != 0:
                raise SourceUnavailable(f"--changed-since {self.asked}: git {name}: {said}")
        paths: set[str] = set()
        untracked: set[str] = set()
        ignored: set[str] = set()
        for state, path, origin in _status_entries(results["status"][1]):
            if state == b"!!":
                ignored.add(path.rstrip("/"))
                continue
            paths.add(path)
            if state == b"??":
                untracked.add(path)
            if origin is not None:
                paths.add(origin)
        paths.update(_decode(path) for path in results["diff"][1].split(b"\0") if path)
        return Changes(
            self.revision,
            frozenset(_below(self.prefix, paths)),
            frozenset(_below(self.prefix, ignored)),
            frozenset(_below(self.prefix, untracked)),
        )


class PendingIgnored:
    """What git ignores (and does not track) at ``root``, for a run that reads every file.

    The same status as `PendingChanges` (``--ignored=matching``), with ``rev-parse
    --show-prefix`` for where ``root`` sits in the work tree, started before the run
    imports its checks; the tree then looks each path up in that listing instead of
    asking libgit2 about each of the 50,000 paths of a 10,000-site fleet. `result` is
    None where git gives no answer (not a repository, no git, an error, past the time
    or output limit): the tree asks libgit2 then, as it always could.
    """

    def __init__(self, root: Path) -> None:
        self._deadline = time.monotonic() + TIMEOUT_SECONDS
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._answer: frozenset[str] | None = None
        try:
            self._procs["status"] = _start(_command(root, *_STATUS))
            self._procs["prefix"] = _start(_command(root, "rev-parse", "--show-prefix"))
        except OSError:
            self.close()
            self._procs = {}

    def result(self) -> frozenset[str] | None:
        """The ignored paths relative to ``root`` (a folder without its slash), or None.
        Waits for git once; later calls answer the same."""
        if not self._procs:
            return self._answer
        try:
            self._answer = self._read(_collect(self._procs, self._deadline))
        except _Overrun:
            self._answer = None
        finally:
            self.close()
        return self._answer

    @staticmethod
    def _read(results: dict[str, tuple[int, bytes, str]]) -> frozenset[str] | None:
        if any(code != 0 for code, _, _ in results.values()):
            return None
        prefix = _decode(results["prefix"][1]).strip()
        ignored = {
            path.rstrip("/")
            for state, path, _ in _status_entries(results["status"][1])
            if state == b"!!"
        }
        if any(prefix.startswith(path + "/") for path in ignored):
            return None  # ``root`` lies in an ignored folder: libgit2 says what that means
        return frozenset(_below(prefix, ignored))

    def close(self) -> None:
        """Stop git (if it still runs); `result` answers what it had, or None."""
        _stop(self._procs.values())
        self._procs = {}


# What changed, what is untracked and what git ignores (an ignored folder as itself), every
# untracked file listed, no rename detection; NUL-separated, paths from the work tree's top.
_STATUS = (
    *("status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching"),
    *("--no-renames", "--", "."),
)


def _status_entries(output: bytes) -> Iterator[tuple[bytes, str, str | None]]:
    """(state, path, the path it was renamed or copied from or None) of each entry of
    ``_STATUS``'s output (renames are off; a configuration cannot turn them on)."""
    fields = output.split(b"\0")
    index = 0
    while index < len(fields):
        entry = fields[index]
        index += 1
        if len(entry) < 4:
            continue  # the empty field after the last NUL
        state, origin = entry[:2], None
        if state[:1] in b"RC" or state[1:] in b"RC":
            origin = _decode(fields[index]) if index < len(fields) else None
            index += 1
        yield state, _decode(entry[3:]), origin


def _decode(path: bytes) -> str:
    # The tree reads names the way os.scandir reports them (surrogates for bytes that are
    # not UTF-8), so a path git lists matches the path the walk finds.
    return os.fsdecode(path)


def _below(prefix: str, paths: set[str]) -> set[str]:
    """``paths`` (from the work tree's top) inside ``prefix``, relative to it."""
    if not prefix:
        return paths
    return {path[len(prefix) :] for path in paths if path.startswith(prefix)}


def start_changes(root: Path, revision: str) -> PendingChanges:
    """Start git on the question "what changed at ``root`` since ``revision``"."""
    return PendingChanges(root, revision)


def changes_since(root: Path, revision: str) -> Changes:
    """`Changes` of the working tree at ``root`` since ``revision`` (waits for git)."""
    return start_changes(root, revision).result()


_SITE_FILE = re.compile(r"sites/([^/]+)/([^/]+)")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
# More values than a few sites hold is a question for the caller's own reading.
MAX_NEEDLES = 1000


class _Grep:
    """One ``git grep --cached -l -F`` over the ``names`` files of every site folder (in the
    index), for ``wanted``; `hits` waits for it, once: the site folders holding a hit, by
    file name."""

    def __init__(self, root: Path, names: Sequence[str], wanted: frozenset[bytes]) -> None:
        self.names = frozenset(names)
        self.wanted = wanted
        self._hits: dict[str, set[str]] | None = None
        self._done = False
        # Paths relative to ``root`` (the pathspecs' folder), whatever grep.fullName says;
        # one thread: this process checks the changed sites on the other core meanwhile.
        argv = ["git", "-c", "grep.fullName=false", *_command(root)[1:]]
        argv += ["grep", "--cached", "--threads=1", "--no-color", "-l", "-z", "-F"]
        argv += [arg for needle in sorted(wanted) for arg in ("-e", os.fsdecode(needle))]
        argv += ["--", *(f":(glob)sites/*/{name}" for name in sorted(names))]
        try:
            self._proc: subprocess.Popen[bytes] | None = _start(argv)
        except OSError:
            self._proc = None

    def hits(self) -> dict[str, set[str]] | None:
        """None when git gave no clean answer (not there, an error, too slow)."""
        if not self._done:
            self._done = True
            self._hits = self._wait()
        return self._hits

    def _wait(self) -> dict[str, set[str]] | None:
        if self._proc is None:
            return None
        try:
            code, out, _ = _collect({"grep": self._proc}, time.monotonic() + TIMEOUT_SECONDS)[
                "grep"
            ]
        except _Overrun:
            return None
        finally:
            self.stop()
        if code not in (0, 1):  # 1: nothing matched
            return None
        found: dict[str, set[str]] = {name: set() for name in self.names}
        for path in out.split(b"\0"):
            match = _SITE_FILE.fullmatch(_decode(path))
            if match is not None and match.group(2) in found:
                found[match.group(2)].add(match.group(1))
        return found

    def stop(self) -> None:
        if self._proc is not None:
            _stop([self._proc])


class SiteFileGrep:
    """``core.model.SiteHolders`` for the working tree whose changes git lists (``pending``).

    Called with a file name (``site.yaml``) and byte strings, it answers the site folders
    whose such file holds one of them or a backslash: the index's files through
    ``git grep --cached -F`` (in C), those that changed or are untracked
    (`Changes.paths`) read here from the working tree. A file git ignores is in neither,
    as it is not in the tree. Anything but a clean answer from git (no git, a timeout, an
    error) is None: the caller reads the files itself.

    `prefetch` starts one grep for every question to come, before they come, so that it
    runs beside the checks; a question about one of its file names whose byte strings are
    all among the prefetched ones is answered from it (more byte strings find more files,
    never fewer), any other runs a grep of its own.
    """

    def __init__(self, root: Path, pending: PendingChanges) -> None:
        self.root = root
        self._pending = pending
        self._prefetched: _Grep | None = None

    @property
    def changed(self) -> frozenset[str]:
        """The paths whose working copy may differ from the index's (git's status)."""
        return self._pending.result().paths

    def prefetch(self, questions: Mapping[str, Collection[bytes]]) -> None:
        """Start the grep for ``questions`` (file name → byte strings) now."""
        asked = [_searchable(name, needles) for name, needles in questions.items()]
        if self._prefetched is not None or not asked or None in asked:
            return
        wanted = frozenset(needle for each in asked if each is not None for needle in each)
        if len(wanted) <= MAX_NEEDLES:
            self._prefetched = _Grep(self.root, sorted(questions), wanted)

    def close(self) -> None:
        """Stop a prefetched grep nobody asked about."""
        if self._prefetched is not None:
            self._prefetched.stop()

    def __call__(self, name: str, needles: Collection[bytes]) -> Collection[str] | None:
        wanted = _searchable(name, needles)
        if wanted is None:
            return None  # not a question for a command line: the caller reads the files
        grep = self._prefetched
        if grep is None or name not in grep.names or not wanted <= grep.wanted:
            grep = _Grep(self.root, [name], wanted)
        hits = grep.hits()
        if hits is None:
            return None
        changed = self.changed
        found = {site for site in hits[name] if f"sites/{site}/{name}" not in changed}
        for path in sorted(changed):
            match = _SITE_FILE.fullmatch(path)
            if match is not None and match.group(2) == name and self._holds(path, wanted):
                found.add(match.group(1))
        return found

    def _holds(self, path: str, wanted: Collection[bytes]) -> bool:
        try:
            data = read_file(self.root / path, path)
        except DocumentError:
            return False  # gone, not a regular file, too large: not in the tree either
        return any(needle in data for needle in wanted)


def _searchable(name: str, needles: Collection[bytes]) -> frozenset[bytes] | None:
    """``needles`` and a backslash, if git grep can be asked about them in ``name`` files."""
    wanted = frozenset({*needles, b"\\"})
    if (
        not _PLAIN_NAME.fullmatch(name)
        or len(wanted) > MAX_NEEDLES
        or any(not needle or b"\0" in needle or b"\n" in needle for needle in wanted)
    ):
        return None
    return wanted
