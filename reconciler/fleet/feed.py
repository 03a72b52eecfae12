"""Publish a branch as a bundle feed: plain files any static server, object store or CDN serves.

``outpost bundle publish --branch main OUT_DIR`` keeps, in ``OUT_DIR``:

- ``bundles/<from>-<to>.bundle`` — one incremental bundle per publish, from the head
  published before to the branch's head now (git's own ``bundle create``, through
  `reconciler.fleet.bundle.write_bundle`, the code that makes a plant's stick);
- ``bundles/full-<head>.bundle`` — the whole history, for a new node;
- next to each, ``<file>.manifest.json`` — the inbox's manifest (so a stick can be filled
  from the feed folder as well);
- ``index.json`` (`reconciler.node.feed_index`) — the head, the full bundle and the chain.

Rules:

- **Idempotent.** Publishing the head that is already published writes nothing (the
  index's ETag and Last-Modified stay, so nodes keep getting 304s); only expired files go.
- **Files first, index last**, each written to a temporary name and renamed: a reader sees
  the old feed or the new, never an index naming a file that is not there yet. Bundle files
  are immutable once named (their names hold the commits), so a CDN may cache them forever;
  only ``index.json`` needs a short cache time.
- **The chain is kept for ``keep``** (default 30 days) so a store that was offline follows
  it step by step; older steps leave the index (such a node takes the full bundle).
  Files that left the index are deleted on the first publish at least `RETIRE_GRACE` later
  (a cached older index may still name them, a download may be under way).
- **A branch that was reset** (a refused commit is never built upon: the branch goes back
  to what the sites run and the work is committed again) starts its step from the merge
  base of the old and the new head, which every node that followed the feed has. History
  unrelated to the published head is refused: nodes could not connect it.
- The manifest's ``site`` is ``all`` (`FEED_SITE`): a feed bundle carries every site's
  slice; each node renders its own. Nothing here is signed; the commits are.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from reconciler.core.files import atomic_write, write_json
from reconciler.fleet.bundle import (
    Git,
    _resolve,
    _workstation_env,
    heartbeat_of,
    require_full_clone,
    workstation_git,
    write_bundle,
)
from reconciler.node.feed_index import (
    FEED_SITE,
    INDEX_NAME,
    FeedEntry,
    FeedError,
    FeedIndex,
    parse_index,
)
from reconciler.node.inbox import (
    GIT_TIMEOUT,
    MANIFEST_SUFFIX,
    BundleError,
    BundleManifest,
    short,
)

__all__ = ["DEFAULT_KEEP", "RETIRE_GRACE", "PublishResult", "publish_feed"]

DEFAULT_KEEP = 30 * 86400
RETIRE_GRACE = 3600
"""Seconds a file that left the index stays on the server (CDN caches of the index expire)."""
BUNDLES = "bundles"


@dataclass(frozen=True)
class PublishResult:
    """``outcome``: ``first`` (a new feed), ``published`` (a new step), ``unchanged``."""

    outcome: Literal["first", "published", "unchanged"]
    index: FeedIndex
    written: tuple[str, ...]
    removed: tuple[str, ...]
    note: str = ""


def publish_feed(
    repo_path: Path,
    branch: str,
    out_dir: Path,
    *,
    now: datetime,
    keep_seconds: int = DEFAULT_KEEP,
    timeout: float = GIT_TIMEOUT,
) -> PublishResult:
    """Bring the feed in ``out_dir`` up to ``branch``'s head (see the module docstring).

    BundleError for a clone that cannot be used (not a repository, shallow, no such branch,
    history unrelated to the published head) or an existing index that cannot be read.
    """
    env = _workstation_env()
    what = f"publishing {branch}"
    git = workstation_git(repo_path, what, env=env, timeout=timeout)
    require_full_clone(
        git,
        repo_path,
        "the full bundle needs the whole history; in CI check out with fetch-depth: 0 (or run "
        "`git fetch --unshallow`)",
    )
    head = _branch_head(git, branch)
    stamp = now.astimezone(UTC).isoformat()
    previous = _read_index(out_dir)
    if previous is not None and previous.branch != branch:
        raise BundleError(
            f"{out_dir / INDEX_NAME} is the feed of branch {previous.branch!r}, not {branch!r}: "
            "publish each branch into its own folder"
        )

    written: list[str] = []
    note = ""
    if previous is None:
        full = _write(repo_path, out_dir, branch, None, head, stamp, env, timeout, what)
        written.append(full.name)
        index = FeedIndex(branch, head, stamp, keep_seconds, full, ())
        outcome: Literal["first", "published", "unchanged"] = "first"
    elif previous.head == head:
        index = previous
        outcome = "unchanged"
    else:
        start, note = _step_start(git, previous.head, head, branch)
        step = _write(repo_path, out_dir, branch, start, head, stamp, env, timeout, what)
        full = _write(repo_path, out_dir, branch, None, head, stamp, env, timeout, what)
        written += [step.name, full.name]
        retired = (*previous.retired, (previous.full.name, stamp))
        index = FeedIndex(branch, head, stamp, keep_seconds, full, (*previous.chain, step), retired)
        outcome = "published"

    index = _expire(index, now, keep_seconds)
    removed = _remove_retired(out_dir, index, now)
    if removed:
        index = replace(index, retired=tuple(r for r in index.retired if r[0] not in removed))
    index = replace(index, heartbeat=heartbeat_of(repo_path, head, env=env, timeout=timeout))
    if outcome != "unchanged" or index != previous:
        if outcome == "unchanged":
            index = replace(index, updated=stamp)
        atomic_write(out_dir / INDEX_NAME, index.to_bytes())
    return PublishResult(outcome, index, tuple(written), tuple(sorted(removed)), note)


def _branch_head(git: Git, branch: str) -> str:
    """The branch's commit: the local branch, or ``origin/<branch>`` in a CI checkout."""
    if not branch or branch.startswith("-") or ".." in branch:
        raise BundleError(f"--branch {branch!r} is not a branch name")
    for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        proc = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    raise BundleError(
        f"this clone has no branch {branch!r} (neither refs/heads/{branch} nor "
        f"refs/remotes/origin/{branch}); fetch it first"
    )


def _read_index(out_dir: Path) -> FeedIndex | None:
    path = out_dir / INDEX_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_index(raw, str(path))
    except FeedError as exc:
        raise BundleError(
            f"{exc.message}; the feed folder holds an index this command cannot continue — "
            "fix it or publish into an empty folder"
        ) from None


def _step_start(git: Git, published: str, head: str, branch: str) -> tuple[str, str]:
    """Where the new step starts: the published head, or the merge base after a reset."""
    if git("cat-file", "-e", f"{published}^{{commit}}", check=False).returncode != 0:
        raise BundleError(
            f"the feed's published head {short(published)} is not in this clone: fetch the "
            "full history of the repository the feed was published from"
        )
    ancestor = git("merge-base", "--is-ancestor", published, head, check=False)
    if ancestor.returncode == 0:
        return published, ""
    base = git("merge-base", published, head, check=False).stdout.strip()
    if not base:
        raise BundleError(
            f"{branch} at {short(head)} shares no history with the feed's published head "
            f"{short(published)}: nodes could not connect it. Publish it into a new folder "
            "(and point the nodes there) if this is really a new repository"
        )
    base = _resolve(git, base, "merge base")
    return base, (
        f"{branch} was reset: {short(published)} is not an ancestor of {short(head)}; the "
        f"new step starts at their merge base {short(base)}, which every node following "
        "the feed has"
    )


def _write(
    repo_path: Path,
    out_dir: Path,
    branch: str,
    start: str | None,
    head: str,
    stamp: str,
    env: dict[str, str],
    timeout: float,
    what: str,
) -> FeedEntry:
    """Write one bundle and its manifest under temporary names, then rename them."""
    name = f"{BUNDLES}/{'full' if start is None else start}-{head}.bundle"
    target = out_dir / name
    temp = target.with_name(f".{target.name}.tmp")
    ref = f"refs/heads/{branch}"
    try:
        digest, size, commits = write_bundle(
            repo_path, ref, start, head, temp, env=env, timeout=timeout, what=what
        )
        manifest = BundleManifest(
            site=FEED_SITE,
            from_=start,
            to=head,
            created=stamp,
            sha256=digest,
            size=size,
            ref=ref,
            commits=commits,
        )
        write_json(target.with_name(target.name + MANIFEST_SUFFIX), manifest.to_json())
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return FeedEntry(name=name, published=stamp, manifest=manifest)


def _expire(index: FeedIndex, now: datetime, keep_seconds: int) -> FeedIndex:
    """Steps published more than ``keep_seconds`` ago leave the chain (the newest stays)."""
    cutoff = now - timedelta(seconds=keep_seconds)
    chain = list(index.chain)
    gone: list[tuple[str, str]] = []
    while len(chain) > 1 and _time(chain[0].published) < cutoff:
        gone.append((chain.pop(0).name, now.astimezone(UTC).isoformat()))
    if not gone:
        return index
    return replace(index, chain=tuple(chain), retired=(*index.retired, *gone))


def _remove_retired(out_dir: Path, index: FeedIndex, now: datetime) -> set[str]:
    """Delete files that left the index at least `RETIRE_GRACE` ago, and leftovers of a
    publish that was killed (temporary files, bundles the index never named)."""
    named = {index.full.name, *(entry.name for entry in index.chain)}
    waiting = {name for name, when in index.retired}
    removed: set[str] = set()
    for name, when in index.retired:
        if name in named or now - _time(when) < timedelta(seconds=RETIRE_GRACE):
            continue
        _unlink(out_dir / name)
        removed.add(name)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(out_dir / BUNDLES):
            base = entry.name.removesuffix(MANIFEST_SUFFIX)
            name = f"{BUNDLES}/{base}"
            if name not in named and name not in waiting:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    return removed


def _unlink(path: Path) -> None:
    for file in (path, path.with_name(path.name + MANIFEST_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
