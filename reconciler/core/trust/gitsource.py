"""The thin git layer of `trust`: read a commit range out of a repository for the core.

For each commit in (last applied, candidate] it reads, with pygit2 and without a
checkout: the raw commit object, the paths changed relative to each parent
(a tree-to-tree diff, no rename detection, so a rename counts as the old and
the new path), and each parent's ``policies/signers.yaml`` blob. Everything a
trust decision depends on is then re-derived from those bytes by
`reconciler.core.trust.verify`; this layer only fetches.

The walk is ``git rev-list last..candidate`` (libgit2's revwalk with the last
applied commit hidden) and stops after ``max_commits + 1`` commits, so a huge
unrelated history costs one bounded walk, not a verification of every commit.

Every pygit2 error becomes `SourceUnavailable`: the repository or an object in
it could not be read (a mirror with missing objects is fixed by fetching again).
Except one: a commit object that is there but that libgit2 cannot parse (a malformed
parent or tree line, say) will not read better on the next fetch. It is found from the
raw objects and refused by name, as a `VerificationError` the node remembers, instead
of being retried as a temporary failure forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.core.errors import SourceUnavailable, VerificationError
from reconciler.core.loader import MAX_FILE_BYTES
from reconciler.core.trust.allowed_signers import TrustRoot
from reconciler.core.trust.rules import ROOT_SIGNERS_PATH, SIGNERS_PATH
from reconciler.core.trust.verify import (
    DEFAULT_MAX_COMMITS,
    DEFAULT_MAX_SKEW,
    CommitObject,
    CommitRecord,
    ParentSigners,
    RangeResult,
    SignersUnreadable,
    parse_commit,
    verify_range,
)

__all__ = ["CommitRange", "open_repository", "read_range", "resolve", "verify_repository"]

_REGULAR = (0o100644, 0o100755)


@dataclass(frozen=True)
class CommitRange:
    """What the core needs for one range; ``commits`` stops at ``max_commits + 1``."""

    candidate: str
    last_applied: CommitObject | None
    commits: tuple[CommitRecord, ...]


def _errors() -> tuple[type[BaseException], ...]:
    import pygit2

    return (pygit2.GitError, KeyError, ValueError, TypeError, pygit2.InvalidSpecError)


def open_repository(path: Path) -> Any:
    """Open a (bare or not) repository; `SourceUnavailable` if there is none."""
    import pygit2

    try:
        return pygit2.Repository(str(path))
    except (pygit2.GitError, KeyError, ValueError) as exc:
        raise SourceUnavailable(f"cannot open the git repository {path}: {exc}") from None


def resolve(repo: Any, revision: str) -> str:
    """A revision (sha, branch, tag, ``HEAD~2``) → the full id of the commit it names."""
    import pygit2

    try:
        commit = repo.revparse_single(revision).peel(pygit2.Commit)
    except _errors() as exc:
        malformed = _malformed_commit(repo, [_named_id(repo, revision)], None, limit=1)
        if malformed is not None:
            raise malformed from None
        raise SourceUnavailable(
            f"revision {revision!r} does not name a commit in {repo.path}: {exc}"
        ) from None
    return str(commit.id)


def _named_id(repo: Any, revision: str) -> str:
    """The object id a commit id or a reference names, without parsing the object."""
    if len(revision) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in revision):
        return revision.lower()
    try:
        return str(repo.lookup_reference_dwim(revision).resolve().target)
    except _errors():
        return ""


def _malformed_commit(
    repo: Any, start: list[str], stop: str | None, *, limit: int
) -> VerificationError | None:
    """The refusal for the first commit from ``start`` back to ``stop`` whose raw bytes do
    not parse (read from the object database, as libgit2 cannot load such a commit), or
    None when every commit read is well formed or an object is simply missing."""
    import pygit2

    seen: set[str] = set()
    stack = [sha for sha in start if sha]
    while stack and len(seen) <= limit:
        sha = stack.pop()
        if sha in seen or sha == stop:
            continue
        seen.add(sha)
        try:
            kind, raw = repo.odb.read(pygit2.Oid(hex=sha))
        except _errors():
            return None
        if kind != pygit2.enums.ObjectType.COMMIT:
            return None
        try:
            parsed = parse_commit(CommitObject(sha, bytes(raw)))
        except VerificationError as exc:
            return VerificationError(f"commit {sha[:7]}: {exc.message}")
        try:
            repo.get(sha)
        except _errors() as exc:  # well formed for trust, but not for git (an author line)
            return VerificationError(f"commit {sha[:7]}: git cannot read the commit: {exc}")
        stack.extend(parsed.parents)
    return None


class _Reader:
    """Reads commits of one repository, caching each signers.yaml blob by its id."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.signers: dict[str, ParentSigners] = {}
        self.tree_signers: dict[str, ParentSigners] = {}

    def signers_of(self, tree: Any, path: str = SIGNERS_PATH) -> ParentSigners:
        key = f"{tree.id}:{path}"
        if key in self.tree_signers:
            return self.tree_signers[key]
        try:
            entry = tree[path]
        except KeyError:
            found: ParentSigners = None
        else:
            blob_id = f"{entry.id}:{entry.filemode}"
            if blob_id in self.signers:
                found = self.signers[blob_id]
            elif entry.filemode not in _REGULAR:
                found = SignersUnreadable(
                    f"is not a regular file (git mode {entry.filemode:o}); it is ignored"
                )
            elif self.repo.odb.read_header(entry.id)[1] > MAX_FILE_BYTES:
                found = SignersUnreadable(
                    f"is larger than {MAX_FILE_BYTES:,} bytes; it is not read"
                )  # the size from the object header: a huge blob is never inflated
            else:
                found = bytes(entry.data)
            self.signers[blob_id] = found
        self.tree_signers[key] = found
        return found

    def record(self, commit: Any) -> CommitRecord:
        tree = commit.tree
        parents = commit.parents
        if parents:
            changes = tuple(_changed(parent.tree, tree) for parent in parents)
        else:
            changes = (_changed(None, tree),)
        next_root = (
            self.signers_of(tree, ROOT_SIGNERS_PATH) if ROOT_SIGNERS_PATH in changes[0] else None
        )
        return CommitRecord(
            sha=str(commit.id),
            raw=commit.read_raw(),
            changes=changes,
            parent_signers=tuple(self.signers_of(parent.tree) for parent in parents),
            next_root=next_root,
        )


def _changed(old: Any, new: Any) -> tuple[str, ...]:
    diff = new.diff_to_tree(swap=True) if old is None else old.diff_to_tree(new)
    paths: set[str] = set()
    for delta in diff.deltas:
        paths.add(delta.old_file.path)
        paths.add(delta.new_file.path)
    return tuple(sorted(paths))


def read_range(
    repo: Any,
    candidate: str,
    last_applied: str | None = None,
    *,
    max_commits: int = DEFAULT_MAX_COMMITS,
) -> CommitRange:
    """Read (``last_applied``, ``candidate``] (full ids) from ``repo`` for `verify_range`."""
    import pygit2

    reader = _Reader(repo)
    try:
        walker = repo.walk(pygit2.Oid(hex=candidate), pygit2.enums.SortMode.NONE)
        last: CommitObject | None = None
        if last_applied is not None:
            last_oid = pygit2.Oid(hex=last_applied)
            last = CommitObject(last_applied, repo[last_oid].read_raw())
            walker.hide(last_oid)
        found: list[Any] = []
        for commit in walker:
            found.append(commit)
            if len(found) > max_commits:
                break
        if len(found) > max_commits:
            records = tuple(CommitRecord(str(c.id), b"") for c in found)
        else:
            records = tuple(reader.record(c) for c in found)
    except _errors() as exc:
        malformed = _malformed_commit(repo, [candidate], last_applied, limit=max_commits)
        if malformed is not None:
            raise malformed from None
        raise SourceUnavailable(f"cannot read commits from {repo.path}: {exc}") from None
    return CommitRange(candidate, last, records)


def verify_repository(
    repo: Any,
    trust: TrustRoot,
    *,
    now: datetime,
    candidate: str = "HEAD",
    since: str | None = None,
    max_commits: int = DEFAULT_MAX_COMMITS,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> RangeResult:
    """Resolve the revisions, read the range and verify it: what ``outpost verify`` and the
    agent call. ``since`` is the last applied commit (None: the whole history)."""
    head = resolve(repo, candidate)
    last = resolve(repo, since) if since is not None else None
    span = read_range(repo, head, last, max_commits=max_commits)
    return verify_range(
        span.commits,
        trust=trust,
        candidate=head,
        last_applied=span.last_applied,
        now=now,
        max_skew=max_skew,
        max_commits=max_commits,
    )
