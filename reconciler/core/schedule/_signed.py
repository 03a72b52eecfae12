"""From signed commits to the change a site's gate sees — one function for the node and for CI.

The node's pipeline has verified the commits in (applied, candidate]; CI has read
the commits of a pull request's range. Both must hand :func:`decide` the same
:class:`Change` and the same ``changed_fleets``, or the schedule CI prints is a
guess. :func:`signed_change` is that single computation:

- **Which commits count.** Only commits whose changed paths meet the paths this
  site's slice is read from (render's ``sources``). Another store's edit, or a
  policy change, is not a change for this site and is not gated.
- **When the change happened.** The *later* of two instants, for the last such
  commit: its committer time (signed, but typed by its signer) and the time
  the node first saw it (the node's own record; CI predicts it). A signer who
  dates a commit back cannot skip a wave's soak, and a later commit that
  touches only other sites cannot restart this site's soak times.
- **Emergency.** That last commit's ``Outpost-Emergency`` trailer, as the trust
  module judged it (root-signed only). An older emergency commit followed by an
  ordinary one is an ordinary change: the newer content was not declared urgent.
- **Which fleets' waves gate it.** A fleet whose own file changed, or one of
  whose apps (any path under ``apps/<app>/``) changed, in any counted commit;
  :func:`~reconciler.core.schedule.gate_inputs` then picks the latest-opening one.
  A change only to the site's own folder gates through no fleet's waves.

Nothing here reads git or the clock: commits come in as plain records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reconciler.core.schedule._model import Change

__all__ = [
    "FleetDocument",
    "SignedChange",
    "SignedCommit",
    "SignedRange",
    "change_time",
    "changed_fleets",
    "fleet_touched",
    "signed_change",
    "touched_apps",
]


class SignedCommit(Protocol):
    """One verified commit as the gate sees it (``reconciler.node.pipeline.Change`` is one)."""

    @property
    def committed_at(self) -> datetime: ...

    @property
    def paths(self) -> frozenset[str]: ...

    @property
    def emergency(self) -> bool: ...

    @property
    def emergency_reason(self) -> str: ...

    @property
    def first_seen(self) -> datetime | None:
        """When the node first saw the commit; None when unknown (the committer time rules)."""
        ...


def change_time(commit: SignedCommit) -> datetime:
    """The later of the committer time and when the node first saw the commit."""
    seen = commit.first_seen
    return commit.committed_at if seen is None else max(commit.committed_at, seen)


class _AppAssignment(Protocol):
    @property
    def app(self) -> str: ...


class _HasPath(Protocol):
    @property
    def path(self) -> str: ...


class FleetDocument(Protocol):
    """What :func:`fleet_touched` needs of a loaded fleet (``reconciler.core.model.Fleet``)."""

    @property
    def name(self) -> str: ...

    @property
    def doc(self) -> _HasPath: ...

    @property
    def apps(self) -> Sequence[_AppAssignment]: ...


def touched_apps(paths: Iterable[str]) -> frozenset[str]:
    """Apps with a changed file: ``apps/<app>/…`` → ``<app>``."""
    return frozenset(p.split("/")[1] for p in paths if p.startswith("apps/"))


def fleet_touched(
    fleet: FleetDocument, paths: Collection[str], apps: Collection[str] | None = None
) -> bool:
    """True when ``paths`` change the fleet's file or any file of an app the fleet assigns.

    ``apps`` is :func:`touched_apps` of ``paths`` when the caller has it already.
    """
    if fleet.doc.path in paths:
        return True
    changed = touched_apps(paths) if apps is None else apps
    return any(a.app in changed for a in fleet.apps)


def changed_fleets(fleets: Iterable[FleetDocument], paths: Collection[str]) -> list[str]:
    """Names of ``fleets`` (in order) whose part of a slice ``paths`` change."""
    apps = touched_apps(paths)
    return [str(f.name) for f in fleets if fleet_touched(f, paths, apps)]


@dataclass(frozen=True)
class SignedChange:
    """The gate's view of a range for one site: the change and the fleets whose waves gate it."""

    change: Change
    changed_fleets: tuple[str, ...]
    commits: int
    """How many commits of the range changed this site's slice."""
    fleet_changes: tuple[tuple[str, str], ...] = ()
    """fleet → the last counted commit that touched it: the change a promotion names."""


class SignedRange:
    """A range's commits, prepared once so that thousands of sites can be asked cheaply.

    The node asks for one site (:func:`signed_change`); ``outpost schedule``
    asks for every affected site of a fleet-wide change, where a commit may
    carry 10,000 paths. Each commit's touched apps are computed once, and a
    fleet counts as changed when any one counted commit touches it — the same
    answer as testing the union of their paths, without building the union
    per site.
    """

    def __init__(self, commits: Iterable[SignedCommit]) -> None:
        self.commits: tuple[SignedCommit, ...] = tuple(commits)
        self._apps = [touched_apps(c.paths) for c in self.commits]

    def change_for(
        self,
        sources: Collection[str],
        fleets: Sequence[FleetDocument],
        *,
        revision: str | None = None,
    ) -> SignedChange | None:
        """The change the range makes to a slice read from ``sources``; None when none.

        ``fleets`` are the site's fleets as loaded at the candidate revision. Of
        several commits with the same committer time the first listed wins; callers
        pass the range as ``trust.read_range`` walks it, stably sorted by committer
        time, so the node and CI pick the same commit.
        """
        wanted = sources if isinstance(sources, set | frozenset) else frozenset(sources)
        folders = _folders(wanted)
        found = [
            i
            for i, c in enumerate(self.commits)
            if not c.paths.isdisjoint(wanted) or any(_folder(p) in folders for p in c.paths)
        ]
        if not found:
            return None
        latest = max((self.commits[i] for i in found), key=lambda c: c.committed_at)
        names: list[str] = []
        fleet_changes: list[tuple[str, str]] = []
        for f in fleets:
            touching = [
                self.commits[i]
                for i in found
                if fleet_touched(f, self.commits[i].paths, self._apps[i])
            ]
            if not touching:
                continue
            names.append(str(f.name))
            last = max(touching, key=lambda c: c.committed_at)
            sha = getattr(last, "sha", None)
            if isinstance(sha, str):
                fleet_changes.append((str(f.name), sha))
        return SignedChange(
            change=Change(
                changed_at=max(change_time(self.commits[i]) for i in found),
                emergency=latest.emergency,
                emergency_reason=latest.emergency_reason,
                revision=revision,
            ),
            changed_fleets=tuple(names),
            commits=len(found),
            fleet_changes=tuple(fleet_changes),
        )


def _folder(path: str) -> str:
    """``sites/<id>/`` or ``apps/<name>/`` for a path below one, else ""."""
    if not path.startswith(("sites/", "apps/")):
        return ""
    second = path.find("/", path.find("/") + 1)
    return path[: second + 1] if second > 0 else ""


def _folders(sources: Collection[str]) -> frozenset[str]:
    """The site and app folders a slice is read from.

    A file deleted from one of them (an overrides.yaml, a manifest) is not among the
    head's sources, yet its deletion changes the slice: it counts as touching it.
    """
    return frozenset(f for f in (_folder(p) for p in sources) if f)


def signed_change(
    commits: Iterable[SignedCommit],
    sources: Collection[str],
    fleets: Sequence[FleetDocument],
    *,
    revision: str | None = None,
) -> SignedChange | None:
    """The change ``commits`` make to a slice read from ``sources``; None when they make none.

    What the node's gate calls; see :meth:`SignedRange.change_for`.
    """
    return SignedRange(commits).change_for(sources, fleets, revision=revision)
