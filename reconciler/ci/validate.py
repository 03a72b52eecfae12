"""CI's validation of a repository: the format (``core.validate``), then secrets and policies.

``outpost validate`` calls `validate_repository`; with ``--changed-since`` only the sites a
change can affect are read, so a pull request's cost follows the change, not the fleet.
The node validates its own slice with ``core.validate.validate_tree`` alone.

``--changed-since REV`` (`_validate_changed`). git's command line lists what changed, and
what it ignores, in a process of its own while this one imports the checks
(``ci.changes``); ``diff.affected_sites`` turns paths into sites. The selected sites are
judged as a whole run judges them, and so are the values that must be unique across the
fleet: an age recipient (the secrets check) and a machine id or node key
(`_identity_conflicts`), whichever of two sites sharing one changed. Of the other sites
only the names are read (one listing of ``sites/``), and the site.yaml and hardware.yaml
files that may hold one of the selected sites' values: ``git grep`` finds them
(``ci.changes.SiteFileGrep``, started as soon as the values are known), and only those
are parsed.

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

import gc
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.errors import OutpostError

if TYPE_CHECKING:
    from reconciler.core.findings import Finding
    from reconciler.core.model import Repository, SiteHolders
    from reconciler.core.validate import Check, FileCheck, Gather, SiteCheck

# The checks' modules are imported where they are used: a run over a few sites starts git
# (``ci.changes``) before it imports them, and git's listing is what it waits for first.


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
    from reconciler.core.findings import aggregate, report_order

    found = list(findings)
    rendered_at = {(f.path, f.line, f.rule) for f in found if f.site}
    kept = [
        f
        for f in found
        if f.site or not f.path.startswith("apps/") or (f.path, f.line, f.rule) not in rendered_at
    ]
    marked = {(f.path, f.line) for f in kept if f.rule == "placeholder"}
    kept = [f for f in kept if f.rule == "placeholder" or (f.path, f.line) not in marked]
    return sorted(set(aggregate(kept)), key=report_order)


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
    if shard is not None and changed_since:
        raise ValueError("--shard and --changed-since cannot be combined; use one of them")
    if changed_since:
        return _validate_changed(root, changed_since, today)
    from reconciler.ci.changes import PendingIgnored

    # git lists what it ignores in a process of its own while this one imports the checks.
    pending = PendingIgnored(root) if root.is_dir() else None
    from reconciler.core.source import WorkdirTree
    from reconciler.core.validate import coverage, validate_tree

    try:
        checks = extra_checks(today=today, policies=False)
        more = site_checks(today=today)
        _prepare(policies=today is not None)
        tree = WorkdirTree(root, ignored=pending.result() if pending is not None else None)
    finally:
        if pending is not None:
            pending.close()
    if shard is not None:
        return _validate_shard(tree, shard, today)
    findings = validate_tree(
        tree, extra=checks, file_checks=file_checks(), site_checks=more, gather=gatherers()
    )
    return ValidationRun(findings, coverage(tree, sites=None, policies=today is not None))


def _validate_changed(root: Path, rev: str, today: date | None) -> ValidationRun:
    """``--changed-since``: the sites a change can affect, judged as a full run judges them.

    git lists the changes in a process of its own (`ci.changes`) while this one imports
    what the checks need. Of the other sites only their names are read (one listing of
    ``sites/``), and the bytes of the two files whose values must be unique across the
    fleet: site.yaml (an age recipient: the secrets check) and hardware.yaml (a machine id
    or node key: `_identity_conflicts`). A site whose bytes cannot hold one of the
    selected sites' values is not parsed.
    """
    from reconciler.ci.changes import SiteFileGrep, start_changes
    from reconciler.core.errors import SourceUnavailable

    if not root.is_dir():
        raise SourceUnavailable(f"{root} is not a directory")
    pending = start_changes(root, rev)
    holders = SiteFileGrep(root, pending)
    from reconciler.core.findings import report_order
    from reconciler.core.source import WorkdirTree
    from reconciler.core.validate import coverage, validate_tree

    # A run over a few sites keeps a few MB of objects, most of them modules and schemas for
    # the process's life: the collector's walks over them would cost a tenth of the run.
    collecting = gc.isenabled()
    gc.disable()
    try:
        checks = extra_checks(today=today, holders=holders)
        _prepare(policies=today is not None)
        changes = pending.result()
        tree = WorkdirTree(root, ignored=changes.ignored)
        sites = _affected_sites(root, changes, tree)
        _prefetch(holders, tree, sites)
        findings = validate_tree(tree, extra=checks, sites=sites, file_checks=file_checks())
        conflicts = _identity_conflicts(tree, sites, holders)
    finally:
        holders.close()
        pending.close()
        if collecting:
            gc.enable()
    if conflicts:
        findings = sorted(set(findings) | set(conflicts), key=report_order)
    return ValidationRun(findings, coverage(tree, sites=sites, policies=today is not None))


def _prepare(*, policies: bool) -> None:
    """Import what a run over a few sites uses, and build the format's validators, while
    git lists the changes in its own process: this process would wait for it otherwise."""
    from importlib import import_module

    from reconciler.core.schemas import prepare

    for module in ("reconciler.ci.diff", "reconciler.core.render", "reconciler.core.schema_guard"):
        import_module(module)
    prepare("Site", "Hardware", "SiteOverrides", "Fleet", "App", "Policy")
    if policies:
        from contextlib import suppress

        from reconciler.core.policy._cel import engine

        with suppress(ImportError):  # the policy check says so, naming what needed it
            engine()


# More selected sites than this, and the questions about the other sites' files are
# asked when they come: the values to look for are then too many to guess ahead.
_PREFETCH_MAX_SITES = 100
_RECIPIENT = re.compile(rb"age1[0-9a-z]{58}")


def _prefetch(holders: Any, tree: Any, sites: Sequence[str]) -> None:
    """Start git's grep for the values the checks will ask the other sites about (the
    selected sites' age recipients, in their site.yaml and secret files, and machine ids
    and node keys), so they run while the selected sites are validated. A guess from
    the bytes: a question it does not cover runs its own grep (`ci.changes.SiteFileGrep`).
    """
    from reconciler.core.model import folder_files

    if len(sites) > _PREFETCH_MAX_SITES:
        return
    tokens, escaped = _identity_tokens(tree, sites)
    recipients: set[bytes] = set()
    for site in sites:
        try:
            files = [f"sites/{site}/site.yaml"] + [
                path for path in folder_files(tree, f"sites/{site}") if "/secrets/" in path
            ]
        except OutpostError:
            continue
        for path in files:
            recipients.update(_RECIPIENT.findall(tree.peek(path) or b""))
    questions = {"site.yaml": recipients}
    if not escaped:  # then every hardware.yaml is read: no question to ask git
        questions["hardware.yaml"] = tokens
    holders.prefetch(questions)


def _identity_conflicts(
    tree: Any, sites: Sequence[str], holders: SiteHolders | None = None
) -> list[Finding]:
    """A machine id or node key that ``sites`` share with a site not read, found as a whole
    run finds it (``core.validate._RefChecker``), at either site.

    Only the hardware.yaml files whose bytes could hold one of the selected sites'
    values are parsed (`_hardware_candidates`, narrowed by ``holders``). The findings
    kept are those the selected sites make: the findings over the selected and candidate
    sites together, less those the candidates make among themselves (a conflict that was
    there before, between two sites the change does not touch, is not this change's).
    """
    from reconciler.core.model import Repository
    from reconciler.core.validate import check_references

    others = _hardware_candidates(tree, Repository(tree).site_folders, sites, holders)
    if not others:
        return []
    documents, marked = _hardware_documents(tree, [*sites, *others])
    theirs = [doc for doc in documents if doc.path.split("/")[1] in set(others)]
    found = set(check_references(documents, partial=True))
    found -= set(check_references(theirs, partial=True))
    # As a whole run does: a placeholder's line has the placeholder's finding alone.
    return [f for f in found if (f.path, f.line) not in marked]


def _hardware_documents(tree: Any, sites: Sequence[str]) -> tuple[list[Any], set[tuple[str, int]]]:
    """The hardware.yaml documents of ``sites`` that pass their schema, as layers 1 and 2
    leave them for layer 3, and the lines that hold a placeholder."""
    from reconciler.core.loader import MAX_FILE_BYTES, load_document
    from reconciler.core.model import expect
    from reconciler.core.validate import check_schemas, placeholders

    documents = []
    marked: set[tuple[str, int]] = set()
    for site in sites:
        path = f"sites/{site}/hardware.yaml"
        try:
            data = tree.read(path, MAX_FILE_BYTES)
            documents.append(expect(load_document(data, path), "Hardware", site))
        except OutpostError:
            continue  # the site's own findings, reported when that site is checked
        marked.update((f.path, f.line) for f in placeholders(data, path))
    return check_schemas(documents)[1], marked


def read_shard_outputs(paths: Sequence[Path]) -> ValidationRun:
    """The findings of a whole run from its shards' ``-o json`` files (`merge_findings`).

    Raises ``ValueError`` naming the file for anything that is not such an output.
    """

    from reconciler.core.envelope import loads
    from reconciler.core.findings import Finding
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
    from reconciler.core.validate import validate_tree

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
    checks = [
        _only(check, own) for check in extra_checks(today=today, collapse=False, policies=False)
    ]
    # The policies and the Kubernetes schemas run where the sites are loaded, as in a whole
    # run; on the sites read for the questions above too, whose findings are other shards'.
    findings = validate_tree(
        tree,
        extra=checks,
        sites=sorted({*mine, *extra}),
        partial=False,
        collapse=False,
        file_checks=file_checks(),
        site_checks=site_checks(today=today),
        gather=gatherers(),
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
    from reconciler.core.model import folder_files

    try:
        return folder_files(tree, f"sites/{name}")
    except OutpostError:
        return []


_TOKEN = re.compile(rb"[A-Za-z0-9+/=]{16,}")
# What a valid machine id or node key's base64 is (schemas/hardware.schema.json): only a
# value that passes its schema takes part in the uniqueness checks.
_IDENTITY = re.compile(rb"[0-9a-f]{32}|AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}")


def _identity_tokens(tree: Any, sites: Sequence[str]) -> tuple[set[bytes], bool]:
    """The runs of ``sites``' hardware.yaml bytes shaped like a machine id or a node key,
    and whether any holds a backslash (a value written with escapes is not among them)."""
    tokens: set[bytes] = set()
    escaped = False
    for name in sites:
        try:
            data = tree.read(f"sites/{name}/hardware.yaml")
        except OutpostError:
            continue
        tokens.update(t for t in _TOKEN.findall(data) if _IDENTITY.fullmatch(t))
        escaped = escaped or b"\\" in data
    return tokens, escaped


def _hardware_candidates(
    tree: Any, names: Sequence[str], mine: Sequence[str], holders: SiteHolders | None = None
) -> list[str]:
    """Other sites whose hardware.yaml could declare a machine id or node key of ``mine``.

    Our values are the runs of our bytes shaped like one (written literally, a value is a
    whole run); another file can declare one only if one of its own runs is one of ours,
    or it holds a backslash. Each file is cut into its runs, looked up among ours: a
    shard of 2,500 sites has 5,000 values, to be looked for in 7,500 files.
    ``holders`` (git's grep) narrows the files peeked at to those that hold one.
    """
    from reconciler.core._fork import map_runs
    from reconciler.core.validate import PARALLEL_MIN_FILES

    tokens, escaped = _identity_tokens(tree, mine)
    own = set(mine)
    hits = holders("hardware.yaml", tokens) if holders is not None and not escaped else None

    def candidates(run: Sequence[str]) -> list[str]:
        found = []
        for name in run:
            # Peeked at, as the secrets check peeks at site.yaml: a hit is read through the tree.
            data = tree.peek(f"sites/{name}/hardware.yaml")
            if data is None:
                continue
            if escaped or b"\\" in data or not tokens.isdisjoint(_TOKEN.findall(data)):
                found.append(name)
        return found

    rest = [name for name in names if name not in own and (hits is None or name in hits)]
    # A shard of a CI matrix peeks at the other 7,500 sites' files: in forked workers.
    return map_runs(candidates, rest, PARALLEL_MIN_FILES, fork=tree.revision is None)


def _wave_sites(tree: Any) -> set[str]:
    """Every site a fleet's wave names (shard 1 judges waves)."""
    from reconciler.core.model import YAML_SUFFIXES, Repository

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


def gatherers() -> dict[str, Gather]:
    """What the checks across sites need of each site, gathered where the sites are loaded
    (``core.validate.Gather``): the secrets check's recipients of every site."""
    from reconciler.core.secrets import SITE_KEYS, gather_site_keys

    return {SITE_KEYS: gather_site_keys}


def file_checks() -> list[FileCheck]:
    """Checks of each file as validation reads it: the secrets scan (``secrets.scan_file``)."""
    from reconciler.core.secrets import scan_file

    return [scan_file]


def extra_checks(
    *,
    today: date | None = None,
    collapse: bool = True,
    policies: bool = True,
    holders: SiteHolders | None = None,
) -> list[Check]:
    """The checks on top of the format: vendored output against its records (no helm
    needed), rollout records, policies (CEL) if ``today`` (and ``policies``: False leaves
    them to `site_checks`), then secrets.

    ``today`` decides which policy exemptions have expired; the caller reads the clock.
    ``holders``: for a run over a few sites, which others' site.yaml may share a recipient.
    The secrets check comes last: with ``holders`` it may wait for git's grep, which runs
    meanwhile. (The order changes no finding: a run's findings are a sorted set.)
    """
    from reconciler.ci.vendor import vendor_check
    from reconciler.core.schedule._promotion import check_records
    from reconciler.core.secrets import key_file_from_env, secrets_check

    checks: list[Check] = [vendor_check(), check_records]
    if policies:
        checks += [make(collapse) for make in site_checks(today=today)]
    if today is not None:
        from reconciler.ci.kube_schema import version_check

        checks.append(version_check)
    checks.append(secrets_check(key_file_from_env(), holders=holders))
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

    git answers which paths changed (`ci.changes`: its status skips unchanged files by
    the index's stat cache, so the cost follows the change, not the repository);
    ``diff.affected_sites`` maps paths to sites on both sides, so a site removed by the
    change is checked too.
    """
    from reconciler.ci.changes import changes_since
    from reconciler.core.source import WorkdirTree

    changes = changes_since(Path(root), rev)
    return _affected_sites(Path(root), changes, WorkdirTree(Path(root), ignored=changes.ignored))


def _affected_sites(root: Path, changes: Any, tree: Any) -> list[str]:
    """The sites ``changes`` can affect in the working ``tree`` or at the base revision.

    A path under ``sites/<id>/`` affects that site alone; only a change to a fleet, an app,
    a policy or a schema needs the base's fleets and sites (read from git's objects).
    """
    from reconciler.ci.diff import affected_sites
    from reconciler.core.model import Repository

    repos = [Repository(tree)]
    if any(path.split("/")[0] in _SHARED_TOPS for path in changes.paths):
        repos.append(Repository(_commit_tree(root, changes.revision)))
    return sorted(affected_sites(changes.paths, *repos))


# The folders whose files feed sites they do not name (``diff.affected_sites``).
_SHARED_TOPS = ("fleets", "apps", "policies", "schemas")


def _commit_tree(root: Path, revision: str) -> Any:
    import pygit2

    from reconciler.core.errors import SourceUnavailable
    from reconciler.core.source import CommitTree

    try:
        return CommitTree(pygit2.Repository(str(root)), revision)
    except pygit2.GitError as exc:
        raise SourceUnavailable(f"--changed-since {revision}: {exc}") from None
