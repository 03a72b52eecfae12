"""What the node applied, recovered when ``state.json`` is lost: the floor never goes down.

``state.json`` is the node's memory of what runs, what was refused and what failed
its health check. A truncated or deleted file must not make the node forget it: a
node that believes it applied nothing would accept an older, unrelated signed
history (a rollback of the whole site), stop correcting drift and report
``applied: none``. Two other records survive the file, and this module reads them:

- the mirror: ``refs/outpost/applied`` (pinned after every successful apply), and
  one ref per refused commit (``refs/outpost/refused/<id>``, pointing at a blob with
  the reason) and per commit that failed its health check
  (``refs/outpost/failed/<id>``), written by `remember` after every tick;
- the cluster: the inventory ConfigMap records the revision of the last complete
  apply (an apply cut short records the union of old and new, and no revision; a
  failed first install, pruned again, records what was left and no revision). A
  revision the mirror records as failed is never taken as applied.

Of the two applied revisions the newer along history wins; if they disagree
outright, the cluster's wins (it is what runs) and the status says so. Over both
stands ``spec.trust.floor`` in agent.yaml, a commit pinned at enrollment: a
recovered revision that does not descend from it is ignored.

Nothing here talks to Kubernetes: the agent reads the inventory's revision and
passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.node.fetch import APPLIED_REF, Mirror

__all__ = ["FAILED_PREFIX", "REFUSED_PREFIX", "Recovered", "recover", "remember"]

REFUSED_PREFIX = "refs/outpost/refused/"
FAILED_PREFIX = "refs/outpost/failed/"
MAX_REASON_BYTES = 16 * 1024


@dataclass(frozen=True)
class Recovered:
    """What `recover` found; ``notes`` explain it for the status and the log."""

    applied: str | None
    refused: Mapping[str, str]
    failed: tuple[str, ...]
    notes: tuple[str, ...]


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "none"


def recover(mirror: Mirror, *, cluster_revision: str | None, floor: str | None) -> Recovered:
    """The applied revision, refused and failed commits, from the mirror and the cluster."""
    notes: list[str] = []
    failed = _failed(mirror)
    if cluster_revision in failed:
        # An inventory written by a failed first install (by an older agent) names the
        # failed commit: it never ran healthy, so it is not what this site applied.
        notes.append(
            f"the cluster's inventory names {_short(cluster_revision)}, which failed its "
            "health check: not taken as applied"
        )
        cluster_revision = None
    from_mirror = mirror.resolve(APPLIED_REF)
    found = [
        (revision, where)
        for revision, where in (
            (cluster_revision, "the cluster's inventory"),
            (from_mirror, f"the mirror's {APPLIED_REF}"),
        )
        if revision
    ]
    if floor is not None:
        kept = []
        for revision, where in found:
            if revision == floor or mirror.descends(revision, floor):
                kept.append((revision, where))
            else:
                notes.append(
                    f"{where} names {_short(revision)}, which does not descend from the enrolled "
                    f"floor {_short(floor)} (spec.trust.floor): ignored"
                )
        found = kept
    applied: str | None = None
    where = ""
    if len(found) == 1 or (len(found) == 2 and found[0][0] == found[1][0]):
        applied, where = found[0]
    elif len(found) == 2:
        (cluster, _), (pinned, _) = found
        if mirror.descends(pinned, cluster):
            applied, where = pinned, f"the mirror's {APPLIED_REF}"
        else:
            applied, where = cluster, "the cluster's inventory"
            if not mirror.descends(cluster, pinned):
                notes.append(
                    f"the cluster's inventory names {_short(cluster)} and the mirror's "
                    f"{APPLIED_REF} {_short(pinned)}, which are unrelated; taking what the "
                    "cluster runs"
                )
    refused = _refused(mirror)
    if applied is not None or refused or failed:
        notes.insert(
            0,
            f"the state file was lost; recovered the applied revision {_short(applied)}"
            + (f" from {where}" if applied else "")
            + f", {len(refused)} refused and {len(failed)} failed commit(s) from the mirror",
        )
    return Recovered(applied, refused, failed, tuple(notes))


def _listed(mirror: Mirror, prefix: str) -> list[str]:
    return [name for name in mirror.repo.references if name.startswith(prefix)]


def _refused(mirror: Mirror) -> dict[str, str]:
    import pygit2

    found: dict[str, str] = {}
    for name in _listed(mirror, REFUSED_PREFIX):
        sha = name.removeprefix(REFUSED_PREFIX)
        try:
            blob = mirror.repo[mirror.repo.references[name].target]
            data = bytes(blob.data[:MAX_REASON_BYTES]) if isinstance(blob, pygit2.Blob) else b""
        except (KeyError, ValueError, pygit2.GitError):
            data = b""
        found[sha] = data.decode("utf-8", "replace") or "refused before (reason not recorded)"
    return found


def _failed(mirror: Mirror) -> tuple[str, ...]:
    return tuple(
        sorted(name.removeprefix(FAILED_PREFIX) for name in _listed(mirror, FAILED_PREFIX))
    )


def remember(mirror: Mirror, refused: Mapping[str, str], failed: Sequence[str]) -> None:
    """Make the mirror's refused and failed refs match the state (after every tick)."""
    import pygit2

    wanted = {REFUSED_PREFIX + sha: reason for sha, reason in refused.items()}
    wanted_failed = {FAILED_PREFIX + sha: sha for sha in failed if mirror.has(sha)}
    for name in _listed(mirror, REFUSED_PREFIX) + _listed(mirror, FAILED_PREFIX):
        if name not in wanted and name not in wanted_failed:
            mirror.repo.references.delete(name)
    for name, reason in wanted.items():
        blob = mirror.repo.create_blob(reason.encode()[:MAX_REASON_BYTES])
        current = mirror.repo.references.get(name)
        if current is None or current.target != blob:
            mirror.repo.references.create(name, blob, force=True)
    for name, sha in wanted_failed.items():
        if mirror.repo.references.get(name) is None:
            mirror.repo.references.create(name, pygit2.Oid(hex=sha), force=True)
