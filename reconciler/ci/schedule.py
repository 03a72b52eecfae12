"""When each site takes a change — wave, window, freeze — as its node will decide it.

The domain of ``outpost schedule [PATH]`` (``cli.schedule`` parses and prints).

Two modes.

**A change** (``--base REV``, with ``--head REV`` or the working tree): only the
sites whose slice the change touches, each with the inputs its node's gate
will use — computed by the same functions the node calls, so the schedule is
what the nodes will do, not an estimate:

- the commits are read as the node reads them (``trust.read_range``: paths
  changed against every parent) and, with ``--trust-root``, verified as the
  node verifies them, so an ``Outpost-Emergency`` trailer counts only on a
  root-signed commit (without it, a trailer is taken at its word, and the
  output says so);
- ``diff.affected_sites`` names the candidates, and a site is scheduled when a
  commit touched a path its slice is read from (render's ``sources``);
  :class:`reconciler.core.schedule.SignedRange` then gives its change time (the
  committer time of the last such commit) and the fleets whose waves gate it,
  exactly as ``NodePipeline.gate`` does through ``signed_change``;
- a paused fleet's pause time comes from ``core.commits.paused_since``, the node's
  walk over first parents.

A committed head is scheduled from its committer time (``--from`` overrides):
that is when its nodes can first see it. A working tree is an unmerged change:
it is scheduled as one commit merging at ``--from`` (default: now), which is
what a merge commit or a squash gives the nodes, and the output says so.

Render's ``sources`` are a site's own files plus the files of its fleets and
their apps. Rendering all 10,000 sites of a fleet-wide change would cost ~20 s,
so one site per combination of (fleets, own apps) is rendered and the others
take its fleet and app paths plus their own folder's files; the test
``test_change_sources_equal_render_sources`` holds this equal to rendering.

**A working tree without ``--base``**: every site (or those named with
``--site``) is scheduled as if its whole slice changed at ``--from`` (default:
now). Each site is gated by the slowest of its fleets' rollouts, and frozen by
every fleet's freezes, which is what the agent does when it cannot tell which
fleet's part of a slice changed. A fleet with ``paused: true`` shows as
blocked: the working tree has no history to say when it was paused, so no wave
opens (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.core.commits import Change as RangeCommit
    from reconciler.core.model import Repository, Site
    from reconciler.core.schedule import Prediction


# -- a working tree: every site as if its whole slice changed ------------------------


@dataclass(frozen=True)
class TreeSchedule:
    """Every site of a working tree, scheduled as if its whole slice changed at ``start``."""

    predictions: tuple[Prediction, ...]
    error: str | None = None
    """A site names a fleet that does not exist (nothing is predicted then)."""


def schedule_tree(
    root: Path, start: datetime, *, sites: Sequence[str] | None = None, emergency: str | None = None
) -> TreeSchedule:
    """Predict every site at ``root`` (or each of ``sites``) for a change at ``start``.

    Each site is gated by the slowest of its fleets' rollouts and frozen by every fleet's
    freezes; ``emergency`` (a reason) schedules it as a root-signed emergency change.
    Raises OutpostError for documents that cannot be read.
    """
    from reconciler.core.model import Repository
    from reconciler.core.schedule import Change, gate_inputs, predict
    from reconciler.core.source import WorkdirTree

    repo = Repository(WorkdirTree(root))
    site_ids = list(sites) if sites else list(repo.site_ids)
    change = Change(start, emergency=emergency is not None, emergency_reason=emergency or "")
    rows = []
    for site_id in site_ids:
        folder = repo.site(site_id)
        fleets = []
        for name in folder.site.fleets:
            fleet = repo.fleet(name)
            if fleet is None:
                return TreeSchedule(
                    (),
                    error=f"{folder.site.doc.mark('spec', 'fleets')}: site {site_id!r} names "
                    f"fleet {name!r} but fleets/{name}.yaml does not exist",
                )
            fleets.append(fleet.doc)
        calendar, rollout = gate_inputs(folder.site.doc, fleets, change)
        rows.append(predict(calendar, rollout, change, start, site_type=folder.site.type))
    return TreeSchedule(tuple(rows))


# -- a change: base..head ---------------------------------------------------------------


@dataclass(frozen=True)
class ChangeSchedule:
    """The schedule of one change, before formatting."""

    predictions: tuple[Prediction, ...]
    start: datetime
    """The instant predictions count from: head's committer time, the merge time, --from."""
    notes: tuple[str, ...]
    change: dict[str, Any]
    unreached: tuple[str, ...] = ()
    """Sites ``affected_sites`` names whose slices are not read from any changed path."""
    errors: tuple[str, ...] = ()
    """Sites that cannot be scheduled (their node would refuse the revision)."""
    refused: str | None = None
    """Why ``--trust-root`` refuses the range (nothing else is computed then)."""


def _short(revision: str) -> str:
    return revision[:12]


def _cached_repository(tree: Any) -> Repository:
    """A Repository whose parsed documents are kept: affected_sites and the schedule
    both read every affected site.yaml, and parsing is most of the cost."""
    from reconciler.core.loader import Document
    from reconciler.core.model import Repository

    class Cached(Repository):
        def __init__(self, tree: Any) -> None:
            super().__init__(tree)
            self._documents: dict[tuple[str, str, str | None], Document] = {}

        def document(self, path: str, kind: str, name: str | None = None) -> Document:
            key = (path, kind, name)
            found = self._documents.get(key)
            if found is None:
                found = super().document(path, kind, name)
                self._documents[key] = found
            return found

    return Cached(tree)


def schedule_change(
    root: Path,
    base: str,
    head: str | None,
    *,
    start: datetime | None,
    now: datetime,
    emergency: str | None = None,
    trust_root: Path | None = None,
    sites: list[str] | None = None,
) -> ChangeSchedule:
    """Schedule the change ``base..head`` (``head`` None: ``base..`` the working tree at ``root``).

    ``start`` is ``--from``; ``now`` is the caller's clock reading, used as the merge
    time of a working-tree change without ``start`` and as ``now`` of the trust check.
    Raises OutpostError for a repository or revision that cannot be read.
    """
    from datetime import UTC

    import pygit2

    from reconciler.ci.diff import changed_paths
    from reconciler.core.commits import Change as RangeCommit
    from reconciler.core.errors import SourceUnavailable
    from reconciler.core.schedule import format_utc
    from reconciler.core.source import CommitTree, WorkdirTree
    from reconciler.core.trust import resolve

    found = pygit2.discover_repository(str(root))
    if found is None:
        raise SourceUnavailable(f"{root} is not inside a git repository")
    git = pygit2.Repository(found)
    base_sha = resolve(git, base)
    head_sha: str | None = None
    merge_at: datetime | None = None
    approvals: list[str] = []
    if head is None:
        merge_at = start or now
        head_tree: Any = WorkdirTree(root)
        paths = changed_paths(CommitTree(git, base_sha), head_tree)
        commits = [
            RangeCommit(
                sha="working tree",
                committed_at=merge_at,
                paths=frozenset(paths),
                emergency=emergency is not None,
                emergency_reason=emergency or "",
            )
        ]
        how = "--from" if start is not None else "now"
        notes = [
            f"change {_short(base_sha)}..working tree is not committed: assuming the change "
            f"merges at {format_utc(merge_at)} ({how}) as one commit, which its nodes see then"
        ]
        if emergency is not None:
            notes.append(
                f"scheduled as an emergency ({emergency}): the merge commit must carry "
                "'Outpost-Emergency:' and be signed by a root signer, or nodes ignore it"
            )
        scheduled = _schedule_sites(
            git, base_sha, None, head_tree, commits, start=merge_at, merge_at=merge_at, sites=sites
        )
    else:
        head_sha = resolve(git, head)
        head_time = datetime.fromtimestamp(git[head_sha].peel(pygit2.Commit).commit_time, UTC)
        seen_at = start or head_time
        read = _read_range(git, base_sha, head_sha, trust_root=trust_root, now=now, seen_at=seen_at)
        if read.refused is not None:
            return ChangeSchedule((), now, (), {}, refused=read.refused)
        commits, notes = read.commits, read.notes
        approvals = read.pending
        notes.append(
            f"change {_short(base_sha)}..{_short(head_sha)}: {len(commits)} commit(s); each "
            "site's change time is, for the last of them that changed its slice, the later "
            "of its committer time and the time its node first sees it — the rule the node "
            "applies, so a commit dated back does not shorten a wave's soak"
        )
        how = "--from" if start is not None else f"{_short(head_sha)}'s committer time"
        notes.append(
            f"nodes are assumed to first see every commit of the change at "
            f"{format_utc(seen_at)} ({how}); a node that sees it later starts its soak later"
        )
        scheduled = _schedule_sites(
            git,
            base_sha,
            head_sha,
            CommitTree(git, head_sha),
            commits,
            start=start or head_time,
            merge_at=None,
            sites=sites,
        )
    return ChangeSchedule(
        predictions=scheduled.predictions,
        start=scheduled.start,
        notes=(*notes, *scheduled.notes),
        change={
            "base": base_sha,
            "head": head_sha,
            "commits": len(commits) if head_sha is not None else None,
            "assumedMergeAt": _iso(merge_at),
            "approvalsPending": approvals,
            **scheduled.change,
        },
        unreached=scheduled.unreached,
        errors=scheduled.errors,
    )


@dataclass(frozen=True)
class _Range:
    commits: list[RangeCommit]
    notes: list[str]
    refused: str | None = None
    pending: list[str] = field(default_factory=list)


def _read_range(
    git: Any,
    base_sha: str,
    head_sha: str,
    *,
    trust_root: Path | None,
    now: datetime,
    seen_at: datetime | None = None,
) -> _Range:
    """The commits of base..head as the node's pipeline builds them (``NodePipeline.verify``)."""
    from datetime import UTC

    import pygit2

    from reconciler.core.commits import DEFAULT_MAX_COMMITS
    from reconciler.core.commits import Change as RangeCommit
    from reconciler.core.errors import SourceUnavailable
    from reconciler.core.trust import (
        emergency_reason,
        parse_allowed_signers,
        read_range,
        verify_range,
    )

    span = read_range(git, head_sha, base_sha, max_commits=DEFAULT_MAX_COMMITS)
    if len(span.commits) > DEFAULT_MAX_COMMITS:
        raise SourceUnavailable(
            f"{_short(base_sha)}..{_short(head_sha)} has more than {DEFAULT_MAX_COMMITS:,} "
            "commits; a node refuses a range that long (spec.maxCommits), so there is no "
            "schedule to show"
        )
    notes: list[str] = []
    if head_sha != base_sha and not git.descendant_of(head_sha, base_sha):
        notes.append(
            f"{_short(head_sha)} does not descend from {_short(base_sha)}: a node that "
            "applied the base refuses it (no rollback, no unrelated history); shown are "
            "the commits in base..head"
        )
    verdicts: dict[str, Any] = {}
    pending: list[str] = []
    if trust_root is not None:
        try:
            data = trust_root.read_bytes()
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot read --trust-root {trust_root}: {exc.strerror}"
            ) from None
        result = verify_range(
            span.commits,
            trust=parse_allowed_signers(data, str(trust_root)),
            candidate=head_sha,
            last_applied=span.last_applied,
            now=now,
            max_commits=DEFAULT_MAX_COMMITS,
        )
        if result.error is not None:
            return _Range([], notes, refused=str(result.error))
        verdicts = {v.sha: v for v in result.verdicts}
        pending = [item.message for item in result.pending]
        if pending:
            held = result.applicable
            where = f"on {_short(held)}" if held and held != base_sha else "where they are"
            notes.append(
                f"{len(pending)} commit(s) wait for approvals, so nodes stay {where} until "
                "they are approved; the times below count from when the approvals arrive: "
                + "; ".join(pending)
            )
    commits: list[RangeCommit] = []
    for record in span.commits:
        verdict = verdicts.get(record.sha)
        if verdict is not None:
            flagged, reason = verdict.emergency, verdict.emergency_reason
            stamp = verdict.committer_time or 0
        else:
            commit = git[record.sha].peel(pygit2.Commit)
            trailer = emergency_reason(commit.message)
            flagged, reason = trailer is not None, trailer or ""
            stamp = commit.commit_time
            if flagged:
                notes.append(
                    f"commit {_short(record.sha)} declares an emergency ({reason}); taken "
                    "as root-signed without checking: pass --trust-root to check it as a "
                    "node would"
                )
        commits.append(
            RangeCommit(
                sha=record.sha,
                committed_at=datetime.fromtimestamp(stamp, UTC),
                paths=frozenset(p for per_parent in record.changes for p in per_parent),
                emergency=flagged,
                emergency_reason=reason,
                first_seen=seen_at,
            )
        )
    commits.sort(key=lambda c: c.committed_at)  # as NodePipeline.verify orders them
    return _Range(commits, notes, pending=pending)


@dataclass(frozen=True)
class _Scheduled:
    predictions: tuple[Prediction, ...]
    start: datetime
    notes: tuple[str, ...]
    change: dict[str, Any]
    unreached: tuple[str, ...]
    errors: tuple[str, ...]


def _schedule_sites(
    git: Any,
    base_sha: str,
    head_sha: str | None,
    head_tree: Any,
    commits: Sequence[RangeCommit],
    *,
    start: datetime,
    merge_at: datetime | None,
    sites: Sequence[str] | None = None,
) -> _Scheduled:
    """Predict every site the commits reach, with its node's change, fleets and pauses."""
    from reconciler.ci.diff import affected_sites
    from reconciler.core.commits import paused_since
    from reconciler.core.errors import OutpostError
    from reconciler.core.model import Site
    from reconciler.core.schedule import FleetRollout, SignedRange, gate_inputs, predict

    changed: set[str] = set()
    for item in commits:
        changed |= item.paths
    head_repo = _cached_repository(head_tree)
    affected = affected_sites(changed, head_repo)
    wanted = sorted(affected) if sites is None else sorted(set(sites) & set(affected))
    signed_range = SignedRange(commits)
    slice_sources = SliceSources(head_repo)
    rollouts: dict[tuple[str, datetime | None], FleetRollout] = {}
    paused: dict[str, datetime | None] = {}
    rows: list[Prediction] = []
    unreached: list[str] = []
    removed: list[str] = []
    errors: list[str] = []

    def pause_time(path: str) -> datetime | None:
        if path not in paused:
            if head_sha is not None:
                paused[path] = paused_since(git, head_sha, path)
            else:  # the merge commit pauses it, unless the base already was paused
                paused[path] = paused_since(git, base_sha, path) or merge_at
        return paused[path]

    for site_id in wanted:
        if not head_tree.exists(f"sites/{site_id}/site.yaml"):
            removed.append(site_id)
            continue
        try:
            site = Site(head_repo.document(f"sites/{site_id}/site.yaml", "Site", site_id))
            fleets = []
            for index, name in enumerate(site.fleets):
                fleet = head_repo.fleet(name)
                if fleet is None:
                    errors.append(
                        f"{site.doc.mark('spec', 'fleets', index)}: site {site_id!r} names "
                        f"fleet {name!r} but fleets/{name}.yaml does not exist"
                    )
                    break
                fleets.append(fleet)
            else:
                sources = slice_sources(site_id, site)
                signed = signed_range.change_for(sources, fleets, revision=head_sha)
                if signed is None:
                    unreached.append(site_id)
                    continue
                pauses = {f.name: pause_time(f.doc.path) for f in fleets if _paused(f)}
                calendar, rollout = gate_inputs(
                    site.doc,
                    [f.doc for f in fleets],
                    signed.change,
                    changed_fleets=signed.changed_fleets,
                    paused_at={k: v for k, v in pauses.items() if v is not None},
                    rollouts=rollouts,
                )
                rows.append(predict(calendar, rollout, signed.change, start, site_type=site.type))
        except OutpostError as exc:
            where = f"{exc.mark}: " if exc.mark else ""
            errors.append(
                f"{where}site {site_id}: {exc.message} (its node would refuse this revision)"
            )
    notes: list[str] = []
    if unreached:
        notes.append(
            f"{len(unreached):,} site(s) affected only through files their slices are not "
            "read from (policies/, schemas/, app files outside app.yaml and manifests/): "
            "their nodes take the new revision without waiting, and nothing in their slice "
            "changes"
        )
    if removed:
        notes.append(f"{len(removed):,} site(s) removed at the head: nothing to schedule")
    if errors:
        notes.append(f"{len(errors):,} site(s) cannot be scheduled: see the errors")
    counts = {
        "changedPaths": len(changed),
        "affected": len(affected),
        "scheduled": len(rows),
        "unreached": len(unreached),
        "removed": len(removed),
        "errors": len(errors),
    }
    return _Scheduled(tuple(rows), start, tuple(notes), counts, tuple(unreached), tuple(errors))


class SliceSources:
    """The paths a site's slice is read from, as render's ``sources`` lists them.

    ``render_site`` reads a site's own folder, its fleets' files and its apps'
    ``app.yaml`` and manifests. All but the own folder depend only on which
    fleets the site joins and which apps its site.yaml assigns, so one site per
    such combination is rendered and the others reuse its fleet and app paths:
    a fleet-wide change to 10,000 sites renders a handful, not 10,000. A site
    that fails to render raises (its node would refuse the revision) and does
    not become the combination's example.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._shared: dict[tuple[tuple[str, ...], tuple[str, ...]], frozenset[str]] = {}
        self.rendered = 0

    def __call__(self, site_id: str, site: Site) -> set[str]:
        from reconciler.core.render import render_site

        key = (tuple(site.fleets), tuple(sorted({a.app for a in site.apps})))
        own = set(self.repo.tree.files(f"sites/{site_id}"))
        shared = self._shared.get(key)
        if shared is None:
            rendered = render_site(self.repo, site_id)
            self.rendered += 1
            prefix = f"sites/{site_id}/"
            shared = frozenset(s for s in rendered.sources if not s.startswith(prefix))
            self._shared[key] = shared
        return own | shared


def _paused(fleet: Any) -> bool:
    return fleet.doc.spec.get("paused") is True


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
