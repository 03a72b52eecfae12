"""The commits of a range as the node's gate reads them, shared with ``outpost schedule``.

The node's pipeline builds a `Change` for every verified commit and finds when a fleet
was paused with `paused_since`; CI's schedule of a change (``ci.schedule``) reads the same
range with the same cap, so the schedule it prints is what the nodes will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.core.errors import OutpostError

# The node's default for ``maxCommitsPerTick`` (its AgentConfig), and the cap
# ``outpost schedule`` reads a range with.
DEFAULT_MAX_COMMITS = 1000
MAX_PAUSE_WALK = 2000


@dataclass(frozen=True)
class Change:
    """One verified commit of the range, as far as the gate cares."""

    sha: str
    committed_at: datetime
    paths: frozenset[str]
    emergency: bool
    emergency_reason: str
    first_seen: datetime | None = None
    """When the node first saw the commit (None: not known, e.g. CI's own view)."""


def paused_since(git_repo: Any, revision: str, path: str) -> datetime | None:
    """Committer time of the commit that set ``paused: true`` in ``path`` (first parents).

    Shared by the node's gate and ``outpost schedule``: a pause stops the waves that had
    not opened before this instant, so both must find the same commit.
    """
    import pygit2

    from reconciler.core.loader import MAX_FILE_BYTES, load_document

    commit = git_repo[revision].peel(pygit2.Commit)
    since: datetime | None = None
    for _ in range(MAX_PAUSE_WALK):
        try:
            oid = commit.tree[path].id
            if git_repo.odb.read_header(oid)[1] > MAX_FILE_BYTES:
                raise ValueError("too large to read")  # never inflated: read as not paused
            blob = git_repo[oid].peel(pygit2.Blob)
            paused = load_document(blob.data, path).spec.get("paused") is True
        except (KeyError, ValueError, pygit2.GitError, OutpostError):
            paused = False  # an unreadable version ends the pause as far as we can tell
        if not paused:
            return since
        since = datetime.fromtimestamp(commit.commit_time, UTC)
        if not commit.parents:
            return since
        commit = commit.parents[0]
    return since
