"""From signed commits to the change a site's gate sees — one function for the node and for CI.

The node's pipeline has verified the commits in (applied, candidate]; CI has read
the commits of a pull request's range. Both must hand :func:`decide` the same
:class:`Change` and the same ``changed_fleets``, or the schedule CI prints is a
guess. :func:`signed_change` is that single computation:

- **Which commits count.** Only commits whose changed paths meet the paths this
  site's slice is read from (render's ``sources``). Another store's edit, or a
  policy change, is not a change for this site and is not gated.
- **When the change happened.** The committer time of the *last* such commit
  (signed data, never the node's clock), so a later commit that touches only
  other sites cannot restart this site's soak times.
- **Emergency.** That last commit's ``Outpost-Emergency`` trailer, as the trust
  module judged it (root-signed only). An older emergency commit followed by an
  ordinary one is an ordinary change: the newer content was not declared urgent.
- **Which fleets' waves gate it.** A fleet whose own file changed, or one of
  whose apps (any path under ``apps/<app>/``) changed, in any counted commit;
  :func:`~reconciler.schedule.gate_inputs` then picks the latest-opening one.
  A change only to the site's own folder gates through no fleet's waves.

Nothing here reads git or the clock: commits come in as plain records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from reconciler.schedule._model import Change

__all__ = [
    "FleetDocument",
    "SignedChange",
    "SignedCommit",
    "changed_fleets",
    "fleet_touched",
    "signed_change",
    "touching",
]


class SignedCommit(Protocol):
    """One verified commit as the gate sees it (``reconciler.pipeline.Change`` is one)."""

    @property
    def committed_at(self) -> datetime: ...

    @property
    def paths(self) -> frozenset[str]: ...

    @property
    def emergency(self) -> bool: ...

    @property
    def emergency_reason(self) -> str: ...


class _AppAssignment(Protocol):
    @property
    def app(self) -> str: ...


class _HasPath(Protocol):
    @property
    def path(self) -> str: ...


class FleetDocument(Protocol):
    """What :func:`fleet_touched` needs of a loaded fleet (``reconciler.model.Fleet``)."""

    @property
    def name(self) -> str: ...

    @property
    def doc(self) -> _HasPath: ...

    @property
    def apps(self) -> Sequence[_AppAssignment]: ...


C = TypeVar("C", bound=SignedCommit)


def fleet_touched(fleet: FleetDocument, paths: Collection[str]) -> bool:
    """True when ``paths`` change the fleet's file or any file of an app the fleet assigns."""
    if fleet.doc.path in paths:
        return True
    apps = {a.app for a in fleet.apps}
    return any(p.startswith("apps/") and p.split("/")[1] in apps for p in paths)


def changed_fleets(fleets: Iterable[FleetDocument], paths: Collection[str]) -> list[str]:
    """Names of ``fleets`` (in order) whose part of a slice ``paths`` change."""
    return [str(f.name) for f in fleets if fleet_touched(f, paths)]


@dataclass(frozen=True)
class SignedChange:
    """The gate's view of a range for one site: the change and the fleets whose waves gate it."""

    change: Change
    changed_fleets: tuple[str, ...]
    commits: int
    """How many commits of the range changed this site's slice."""


def touching(commits: Iterable[C], sources: Collection[str]) -> list[C]:
    """The commits whose changed paths meet ``sources``."""
    wanted = sources if isinstance(sources, set | frozenset) else frozenset(sources)
    return [c for c in commits if not c.paths.isdisjoint(wanted)]


def signed_change(
    commits: Iterable[SignedCommit],
    sources: Collection[str],
    fleets: Sequence[FleetDocument],
    *,
    revision: str | None = None,
) -> SignedChange | None:
    """The change ``commits`` make to a slice read from ``sources``; None when they make none.

    ``fleets`` are the site's fleets as loaded at the candidate revision. Of
    several commits with the same committer time the first listed wins; callers
    pass the range as ``trust.read_range`` walks it, stably sorted by committer
    time, so the node and CI pick the same commit.
    """
    found = touching(commits, sources)
    if not found:
        return None
    latest = max(found, key=lambda c: c.committed_at)
    paths: set[str] = set()
    for commit in found:
        paths |= commit.paths
    return SignedChange(
        change=Change(
            changed_at=latest.committed_at,
            emergency=latest.emergency,
            emergency_reason=latest.emergency_reason,
            revision=revision,
        ),
        changed_fleets=tuple(changed_fleets(fleets, paths)),
        commits=len(found),
    )
