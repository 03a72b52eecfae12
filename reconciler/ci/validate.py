"""CI's validation of a repository: the format (``core.validate``), then secrets and policies.

``outpost validate`` calls `validate_repository`; with ``--changed-since`` only the sites a
change can affect are read, so a pull request's cost follows the change, not the fleet.
The node validates its own slice with ``core.validate.validate_tree`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from reconciler.core.findings import Finding
from reconciler.core.model import Repository
from reconciler.core.validate import Check, validate_tree


@dataclass(frozen=True)
class ValidationRun:
    """What ``outpost validate`` found, and what it checked (one line, e.g. ``checked 12 sites,
    3 fleets, 6 apps, 9 policies``): a clean run says what it vouches for."""

    findings: list[Finding]
    checked: str


def validate_repository(
    root: Path, *, changed_since: str | None = None, today: date | None = None
) -> ValidationRun:
    """Every finding for the working tree at ``root``: format, secrets, and policies if ``today``.

    ``changed_since`` (a git revision) limits the sites read to those a change since it can
    affect; ``today`` decides which policy exemptions have expired (the caller reads the clock).
    """
    from reconciler.core.source import WorkdirTree
    from reconciler.core.validate import coverage

    tree = WorkdirTree(root)
    sites = sites_changed_since(root, changed_since) if changed_since else None
    findings = validate_tree(tree, extra=extra_checks(today=today), sites=sites)
    return ValidationRun(findings, coverage(tree, sites=sites, policies=today is not None))


def extra_checks(*, today: date | None = None) -> list[Check]:
    """The checks on top of the format: secrets, vendored output against its records (no helm
    needed), rollout records, then policies (CEL) if ``today``.

    ``today`` decides which policy exemptions have expired; the caller reads the clock.
    """
    from reconciler.ci.vendor import vendor_check
    from reconciler.core.schedule._promotion import check_records
    from reconciler.core.secrets import key_file_from_env, secrets_check

    checks: list[Check] = [secrets_check(key_file_from_env()), vendor_check(), check_records]
    if today is not None:
        from reconciler.ci.kube_schema import object_check
        from reconciler.core.policy import policy_check

        checks.append(policy_check(today=today, objects=object_check()))
    return checks


def sites_changed_since(root: Any, rev: str) -> list[str]:
    """Sites whose slice a change since ``rev`` can affect (working tree against ``rev``).

    git answers which paths changed (the index's stat cache skips unchanged files,
    so the cost follows the change, not the repository); ``diff.affected_sites``
    maps paths to sites on both sides, so a site removed by the change is checked too.
    """
    import pygit2

    from reconciler.ci.diff import affected_sites
    from reconciler.core.errors import SourceUnavailable
    from reconciler.core.source import CommitTree, WorkdirTree

    try:
        repo = pygit2.Repository(str(root))
    except pygit2.GitError:
        raise SourceUnavailable(
            f"--changed-since needs a git repository, and {root} is not one"
        ) from None
    try:
        found = repo.revparse_single(rev)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise SourceUnavailable(
            f"no revision {rev!r} in {Path(root).resolve()} (a commit id, branch or tag; "
            "in a shallow clone, fetch it first)"
        ) from None
    try:
        base = found.peel(pygit2.Commit)
        changed: set[str] = set()
        if repo.head_is_unborn or base.id != repo.head.target:
            # Against HEAD itself the status below already has every staged change.
            changed = {
                path
                for delta in base.tree.diff_to_index(repo.index).deltas
                for path in (delta.old_file.path, delta.new_file.path)
            }
        changed |= {
            path
            for path, flags in repo.status().items()
            if not flags & pygit2.enums.FileStatus.IGNORED
        }
    except (pygit2.GitError, KeyError, ValueError) as exc:
        raise SourceUnavailable(f"--changed-since {rev}: {exc}") from None
    head = Repository(WorkdirTree(Path(root)))
    before = Repository(CommitTree(repo, str(base.id)))
    return sorted(affected_sites(changed, before, head))
