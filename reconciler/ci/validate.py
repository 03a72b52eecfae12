"""CI's validation of a repository: the format (``core.validate``), then secrets and policies.

``outpost validate`` calls `validate_repository`; with ``--changed-since`` only the sites a
change can affect are read, so a pull request's cost follows the change, not the fleet.
The node validates its own slice with ``core.validate.validate_tree`` alone.

Shards (``--shard I/N``, one CI job each in a matrix). The entries of ``sites/``, sorted,
are cut into N contiguous runs of equal size (±1); shard I reads and checks the sites of
run I only, so its cost is about 1/N of the whole plus start-up. Every finding belongs
to exactly one shard (`shard_of`): a finding of a site (its ``site``, or a path under
``sites/<id>/``) to that site's shard, every other one (apps/, fleets/, policies/, the
tree's own files) to shard 1. What a shard needs of other sites to judge its own exactly:

- a machine id or node key declared twice: another site's hardware.yaml is read in full
  when its bytes hold a token of this shard's hardware files (a 32-hex id or a key's
  base64 can only be read from bytes that hold it literally, or through a double-quoted
  escape, which needs a backslash: such files are read too);
- a shared age recipient: the secrets check reads other sites' site.yaml the same way;
- a wave naming a site that is not in its fleet (shard 1): every site a wave names is read.

Sites read for these questions only have their own findings left to their shards. A
shard's findings are not collapsed across sites (``collapse``): a bad image 9,000 stores
render is one finding of the whole run, and no shard sees all 9,000. `merge_findings` turns
the shards' findings (``-o json``) into the whole run's, exactly (``outpost validate
--merge``); a test checks that the merge of every shard equals the unsharded run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from reconciler.core.envelope import loads
from reconciler.core.errors import OutpostError
from reconciler.core.findings import Finding, aggregate
from reconciler.core.model import Repository, folder_files
from reconciler.core.validate import Check, FileCheck, SiteCheck, validate_tree


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``: ``--shard 2/8``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` with 1 ≤ I ≤ N ≤ 10,000; ValueError says what was expected."""
        match = re.fullmatch(r"\s*(\d{1,5})\s*/\s*(\d{1,5})\s*", text)
        if match is None:
            raise ValueError(
                f"--shard {text!r}: expected I/N, this job's shard and the number of shards "
                "(e.g. --shard 2/8 in the second of 8 CI jobs)"
            )
        index, count = int(match.group(1)), int(match.group(2))
        if not 1 <= count <= 10_000 or not 1 <= index <= count:
            raise ValueError(
                f"--shard {text!r}: expected 1 ≤ I ≤ N ≤ 10000 (shards are numbered from 1, "
                "as GitHub Actions' matrix lists them)"
            )
        return cls(index, count)

    def block(self, names: Sequence[str]) -> list[str]:
        """This shard's contiguous run of ``names`` (sorted site folder names)."""
        start = (self.index - 1) * len(names) // self.count
        end = self.index * len(names) // self.count
        return list(names[start:end])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(finding: Finding, shards: dict[str, int]) -> int:
    """The shard a finding belongs to: its site's (``shards``: site folder → shard), else 1."""
    site = finding.site
    if not site and finding.path.startswith("sites/"):
        site = finding.path.split("/")[1]
    return shards.get(site, 1)


def merge_findings(findings: Iterable[Finding]) -> list[Finding]:
    """What one run over every site reports, from the findings of all its shards.

    The steps a single run takes once every site is checked, in its order: a Secret of an
    app's manifests found as written (no site) is dropped where a site renders it and the
    same rule flags it there (the site's finding is the better one: ``validate_policies``);
    a placeholder finding hides the others on its line; findings that differ only by site
    are collapsed (``aggregate``).
    """
    found = list(findings)
    rendered_at = {(f.path, f.line, f.rule) for f in found if f.site}
    kept = [
        f
        for f in found
        if f.site or not f.path.startswith("apps/") or (f.path, f.line, f.rule) not in rendered_at
    ]
    marked = {(f.path, f.line) for f in kept if f.rule == "placeholder"}
    kept = [f for f in kept if f.rule == "placeholder" or (f.path, f.line) not in marked]
    return sorted(set(aggregate(kept)), key=lambda f: (f.path, f.line, f.rule, f.message))


@dataclass(frozen=True)
class ValidationRun:
    """What ``outpost validate`` found, and what it checked (one line, e.g. ``checked 12 sites,
    3 fleets, 6 apps, 9 policies``): a clean run says what it vouches for."""

    findings: list[Finding]
    checked: str


def validate_repository(
    root: Path,
    *,
    changed_since: str | None = None,
    today: date | None = None,
    shard: Shard | None = None,
) -> ValidationRun:
    """Every finding for the working tree at ``root``: format, secrets, and policies if ``today``.

    ``changed_since`` (a git revision) limits the sites read to those a change since it can
    affect; ``today`` decides which policy exemptions have expired (the caller reads the clock).
    ``shard``: only this shard's findings, not collapsed across sites (see the module).
    """
    from reconciler.core.source import WorkdirTree
    from reconciler.core.validate import coverage

    tree = WorkdirTree(root)
    if shard is not None:
        if changed_since:
            raise ValueError("--shard and --changed-since cannot be combined; use one of them")
        return _validate_shard(tree, shard, today)
    sites = sites_changed_since(root, changed_since) if changed_since else None
    findings = validate_tree(
        tree,
        extra=extra_checks(today=today, policies=False),
        sites=sites,
        file_checks=file_checks(),
        site_checks=site_checks(today=today),
    )
    return ValidationRun(findings, coverage(tree, sites=sites, policies=today is not None))


def read_shard_outputs(paths: Sequence[Path]) -> ValidationRun:
    """The findings of a whole run from its shards' ``-o json`` files (`merge_findings`).

    Raises ``ValueError`` naming the file for anything that is not such an output.
    """

    from reconciler.core.source import read_file

    fields = ("path", "line", "message", "severity", "rule", "site")
    found: list[Finding] = []
    for path in paths:
        try:
            data = loads(read_file(path, str(path), 256 << 20))
        except OutpostError as exc:
            raise ValueError(f"--merge {path}: {exc}") from None
        except ValueError as exc:
            raise ValueError(
                f"--merge {path}: not JSON ({exc}); expected the output of "
                "`outpost validate --shard I/N -o json`"
            ) from None
        if not isinstance(data, list):
            raise ValueError(f"--merge {path}: expected a JSON list of findings (-o json)")
        for index, item in enumerate(data):
            if (
                not isinstance(item, dict)
                or set(item) != set(fields)
                or not (
                    isinstance(item["line"], int)
                    and all(isinstance(item[k], str) for k in fields if k != "line")
                )
            ):
                raise ValueError(
                    f"--merge {path}: item {index} is not a finding of `outpost validate -o "
                    f"json` (expected the fields {', '.join(fields)})"
                )
            found.append(Finding(**{k: item[k] for k in fields}))
    merged = merge_findings(found)
    return ValidationRun(merged, f"merged {len(paths)} shard output(s)")


def _validate_shard(tree: Any, shard: Shard, today: date | None) -> ValidationRun:
    names = _site_entries(tree)
    shards = {
        name: index
        for index in range(1, shard.count + 1)
        for name in Shard(index, shard.count).block(names)
    }
    mine = shard.block(names)
    own = [name for name in mine if any(p.count("/") >= 2 for p in _listing(tree, name))]
    extra = set(_hardware_candidates(tree, names, mine))
    if shard.index == 1:
        extra |= _wave_sites(tree)
    extra -= set(mine)
    checks = [_only(check, own) for check in extra_checks(today=today, collapse=False)]
    findings = validate_tree(
        tree,
        extra=checks,
        sites=sorted({*mine, *extra}),
        partial=False,
        collapse=False,
        file_checks=file_checks(),
    )
    findings = [f for f in findings if shard_of(f, shards) == shard.index]
    what = "policies" if today is not None else "no policies"
    checked = (
        f"checked shard {shard} of the repository: {len(own)} of its {len(names)} site "
        f"folder entries ({what}); `outpost validate --merge` combines the shards' -o json"
    )
    return ValidationRun(findings, checked)


def _only(check: Check, sites: list[str]) -> Check:
    def narrowed(repo: Repository, _: Sequence[str]) -> Iterable[Finding]:
        return check(repo, sites)

    return narrowed


def _site_entries(tree: Any) -> list[str]:
    """Every entry of ``sites/`` (folders, and anything else there), sorted: what is sharded."""
    from reconciler.core.source import entries

    return entries(tree, "sites")


def _listing(tree: Any, name: str) -> list[str]:
    try:
        return folder_files(tree, f"sites/{name}")
    except OutpostError:
        return []


_TOKEN = re.compile(rb"[A-Za-z0-9+/=]{16,}")


def _hardware_candidates(tree: Any, names: Sequence[str], mine: Sequence[str]) -> list[str]:
    """Other sites whose hardware.yaml could declare a machine id or node key of ``mine``."""
    tokens: set[bytes] = set()
    escaped = False  # a value of ours written with escapes is not among our tokens
    for name in mine:
        try:
            data = tree.read(f"sites/{name}/hardware.yaml")
        except OutpostError:
            continue
        tokens.update(_TOKEN.findall(data))
        escaped = escaped or b"\\" in data
    own = set(mine)
    found = []
    for name in names:
        if name in own:
            continue
        # Peeked at, as the secrets check peeks at site.yaml: a hit is read through the tree.
        data = tree.peek(f"sites/{name}/hardware.yaml")
        if data is None:
            continue
        if escaped or b"\\" in data or not tokens.isdisjoint(_TOKEN.findall(data)):
            found.append(name)
    return found


def _wave_sites(tree: Any) -> set[str]:
    """Every site a fleet's wave names (shard 1 judges waves)."""
    from reconciler.core.model import YAML_SUFFIXES

    named: set[str] = set()
    repo = Repository(tree)
    for path in tree.files("fleets", lenient=True):
        if not path.endswith(YAML_SUFFIXES) or path.count("/") != 1:
            continue
        try:
            fleet = repo.fleet(path[len("fleets/") :].rsplit(".", 1)[0])
        except OutpostError:
            continue
        for wave in (fleet.doc.spec.get("waves") or []) if fleet is not None else []:
            if isinstance(wave, dict):
                named.update(str(s) for s in wave.get("sites") or [] if isinstance(s, str))
    return {name for name in named if "/" not in name and name not in ("", ".", "..")}


def file_checks() -> list[FileCheck]:
    """Checks of each file as validation reads it: the secrets scan (``secrets.scan_file``)."""
    from reconciler.core.secrets import scan_file

    return [scan_file]


def extra_checks(
    *, today: date | None = None, collapse: bool = True, policies: bool = True
) -> list[Check]:
    """The checks on top of the format: secrets, vendored output against its records (no helm
    needed), rollout records, then policies (CEL) if ``today`` (and ``policies``: False
    leaves them to `site_checks`).

    ``today`` decides which policy exemptions have expired; the caller reads the clock.
    """
    from reconciler.ci.vendor import vendor_check
    from reconciler.core.schedule._promotion import check_records
    from reconciler.core.secrets import key_file_from_env, secrets_check

    checks: list[Check] = [secrets_check(key_file_from_env()), vendor_check(), check_records]
    if policies:
        checks += [make(collapse) for make in site_checks(today=today)]
    if today is not None:
        from reconciler.ci.kube_schema import version_check

        checks.append(version_check)
    return checks


def site_checks(*, today: date | None) -> list[SiteCheck]:
    """The policies (CEL) and the Kubernetes API schemas of every rendered object, if
    ``today``: each site is rendered and checked on its own (``core.validate.SiteCheck``)."""
    if today is None:
        return []
    from reconciler.ci.kube_schema import object_check
    from reconciler.core.policy import policy_check

    def policies(collapse: bool) -> Check:
        return policy_check(today=today, objects=object_check(), collapse=collapse)

    return [policies]


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
