"""Validate a repository tree: every document against its schema, then the references between them.

Validation never stops at the first problem: a pull request gets every finding
at once, each at the file and line to change. It runs in three layers, and a
document that fails one layer is left out of the next (a site.yaml that is not
YAML has no fleets to check):

1. files: every YAML file in a known place loads (``loader``: duplicate keys,
   aliases, size, encoding, kind) and sits where its kind belongs;
2. schemas: each document against ``schemas/<kind>.schema.json``, plus what a
   schema cannot say (a time zone exists in the tz database);
3. references: the folder is the id, ids are unique, fleets and apps and
   versions exist, a site matches the selector of every fleet it joins, every
   device a VM or an app needs is declared in that site's hardware.

Policies (CEL) and secrets add their own findings on top, through
``validate_tree``'s ``extra`` checks (CI's are ``ci.validate.extra_checks``), so
this module stays about the format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reconciler.core.errors import Mark, OutpostError
from reconciler.core.findings import Finding, aggregate, report_order
from reconciler.core.loader import (
    MAX_FILE_BYTES,
    Document,
    YamlDocument,
    load_document,
    parse_yaml,
)
from reconciler.core.model import (
    NAME_RE,
    SECRET_SUFFIXES,
    YAML_SUFFIXES,
    App,
    AppAssignment,
    Fleet,
    Hardware,
    Repository,
    Site,
    expect,
    folder_files,
    selector_matches,
)
from reconciler.core.schemas import schema_errors
from reconciler.core.source import MAX_READ_BYTES, Tree, first_level, unreadable_message

Check = Callable[[Repository, Sequence[str]], Iterable[Finding]]
# A check of one file's bytes (and its documents, None when it did not parse), run where
# the file is read for layer 1, so that no check has to read the tree a second time (and,
# in a large run, by the worker that loads a site folder on the folder's other files).
FileCheck = Callable[[str, bytes, "Sequence[YamlDocument] | None"], list[Finding]]
# A check whose findings for a site depend only on that site's folder and the shared
# documents (apps, fleets, policies): the policies, each site rendered on its own. Called
# with ``collapse`` it gives the ``Check``; a large run calls it with False in each worker,
# over the sites that worker loaded, and merges the parts (`_merge_site_findings`).
SiteCheck = Callable[[bool], Check]
# Facts about each site that a check across sites needs (its age recipient, say), gathered
# where the site is loaded: ``gather(repo, site_ids)`` gives site id → fact, picklable. A
# forked run merges the workers' parts and leaves them on the tree the extra checks get
# (``tree.gathered[name]``), so this process never rebuilds the sites' documents; a check
# finds no part for a site (one process, or a run over a few sites) and reads the site.
Gather = Callable[[Repository, Sequence[str]], dict[str, Any]]

CONFIG_DIRS = ("sites", "fleets", "apps", "policies")
_SITE_FILES = {"site.yaml": "Site", "hardware.yaml": "Hardware", "overrides.yaml": "SiteOverrides"}


@cache
def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _kind_for(path: str) -> tuple[str | None, str | None, str | None]:
    """(kind, expected name, reason) for a YAML path; kind None means the path is not ours."""
    parts = path.split("/")
    top = parts[0]
    if top == "sites":
        if len(parts) == 3 and parts[2] in _SITE_FILES:
            return _SITE_FILES[parts[2]], parts[1], None
        if len(parts) == 4 and parts[2] == "vms":
            return "VirtualMachine", None, None
        if len(parts) == 4 and parts[2] == "secrets":
            return None, None, None
        return (
            "?",
            None,
            (
                "unexpected file in a site folder; expected site.yaml, hardware.yaml, "
                "overrides.yaml, vms/<name>.yaml or secrets/<name>.sops.yaml"
            ),
        )
    if top == "fleets":
        if len(parts) == 2:
            return "Fleet", parts[1].rsplit(".", 1)[0], None
        return "?", None, "unexpected file; fleets live directly in fleets/<name>.yaml"
    if top == "apps":
        if len(parts) == 3 and parts[2] == "app.yaml":
            return "App", parts[1], None
        if len(parts) >= 4 and parts[2] == "manifests":
            return "manifest", None, None
        if len(parts) == 2:
            return "?", None, "unexpected file; an app lives in apps/<name>/app.yaml"
        return None, None, None
    if top == "policies" and len(parts) == 2:
        if parts[1].rsplit(".", 1)[0] == "signers":
            return "Signers", None, None
        return "Policy", None, None
    return None, None, None


def check_files(
    tree: Tree, include: Callable[[str], bool] | None = None
) -> tuple[list[Finding], list[Document], frozenset[str]]:
    """Layer 1: load every YAML file in a known place.

    Returns the findings, the documents that loaded, and the path of every document
    that was tried (loaded or not), so later layers do not call a broken file missing.

    ``include`` narrows the files read (``--changed-since``: the affected sites' folders
    plus every fleet, app and policy, which references need).
    """
    findings, documents, tried, _ = _check_files(tree, include)
    return findings, documents, tried


def _check_files(
    tree: Tree, include: Callable[[str], bool] | None, sites: Sequence[str] | None = None
) -> tuple[list[Finding], list[Document], frozenset[str], dict[str, list[YamlDocument]]]:
    """``check_files``, plus the parsed documents of every file that loaded, by path."""
    findings, paths = _list_paths(tree, sites)
    loaded, documents, tried, parsed, _ = _load_paths(tree, paths, include)
    return findings + loaded, documents, frozenset(tried), parsed


def _list_paths(tree: Tree, sites: Sequence[str] | None) -> tuple[list[Finding], list[str]]:
    """Every file under the config folders, and a finding for every link met on the way.

    With ``sites``, only those sites' folders are listed, not all of ``sites/``: at
    10,000 sites, walking every folder costs more than checking one.
    """
    findings: list[Finding] = []
    paths: list[str] = []
    for top in CONFIG_DIRS:
        if top != "sites" or sites is None:
            paths += tree.files(top, lenient=True)
            continue
        for site in sorted(set(sites)):
            folder = f"sites/{site}"
            try:
                paths += folder_files(tree, folder)
            except OutpostError as exc:  # "..", or a link where git keeps the folder
                findings.append(Finding.from_error(exc, rule="file"))
    unreadable: dict[str, str] = getattr(tree, "unreadable", {})
    for link in tree.links:
        message = (
            unreadable_message(unreadable[link])
            if link in unreadable
            else "is a symbolic link or submodule; the repository must hold plain files and "
            "folders (a link can point outside the tree, at content nobody reviewed)"
        )
        findings.append(Finding.at(Mark(link), message, rule="file"))
    return findings, paths


def _load_paths(
    tree: Tree,
    paths: Sequence[str],
    include: Callable[[str], bool] | None,
    file_checks: Sequence[FileCheck] = (),
) -> tuple[list[Finding], list[Document], set[str], dict[str, list[YamlDocument]], set[str]]:
    """Layer 1 over ``paths``: findings, documents, paths tried, parsed documents by path,
    and the paths ``file_checks`` checked (each file they saw was read, so its findings
    are among the findings)."""
    parsed: dict[str, list[YamlDocument]] = {}
    findings: list[Finding] = []
    documents: list[Document] = []
    tried: set[str] = set()
    checked: set[str] = set()
    for path in paths:
        if not path.endswith(YAML_SUFFIXES) or path.endswith(SECRET_SUFFIXES):
            continue
        if include is not None and not include(path):
            continue
        kind, name, reason = _kind_for(path)
        if kind is None:
            continue
        site_part = path.split("/")[1] if path.startswith("sites/") else None
        if site_part is not None and not NAME_RE.fullmatch(site_part):
            findings.append(
                Finding.at(
                    Mark(path),
                    f"site folder {site_part!r} is not a valid site id (lowercase letters, "
                    "digits and '-', at most 63, starting and ending with a letter or digit)",
                    rule="file",
                )
            )
            continue
        if reason is not None:
            findings.append(Finding.at(Mark(path), reason, rule="file"))
            continue
        data = None
        try:
            if kind != "manifest":
                tried.add(path)
            data = tree.read(path, MAX_FILE_BYTES)
            if site_part is not None:
                findings += placeholders(data, path)
            if kind == "manifest":
                parsed[path] = parse_yaml(data, path, multi=True)
                continue
            doc = expect(load_document(data, path), kind, name)
            documents.append(doc)
            parsed[path] = [doc]
        except OutpostError as exc:
            findings.append(Finding.from_error(exc, rule="file"))
        finally:
            if data is not None and file_checks:
                for file_check in file_checks:
                    findings += file_check(path, data, parsed.get(path))
                checked.add(path)
    return findings, documents, tried, parsed, checked


# From this many files on, a working directory is loaded and schema-checked by forked
# workers, each taking contiguous runs of the paths (about 1,000 sites).
PARALLEL_MIN_FILES = 3000


@dataclass
class _Checked:
    """Layers 1 and 2 over the files of a run, or of one run of its paths."""

    findings: list[Finding] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    parsed: dict[str, list[YamlDocument]] = field(default_factory=dict)
    schema_findings: list[Finding] = field(default_factory=list)
    valid: list[Document] = field(default_factory=list)
    file_checked: set[str] = field(default_factory=set)
    # Of the references that concern each site on its own (`_RefChecker.run_sites`) and
    # of ``site_checks``, when the workers that loaded the sites ran them (``sites_checked``;
    # ``site_checked``: the ``site_checks`` among them).
    site_findings: list[Finding] = field(default_factory=list)
    site_checked: bool = False
    # What the checks across sites need of the sites the workers loaded (their documents
    # stay in the workers): for the references, and by name for ``gather``.
    across: _AcrossSites | None = None
    gathered: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def sites_checked(self) -> bool:
        """Whether workers loaded the sites (and checked what concerns each on its own)."""
        return self.across is not None


def _files_and_schemas(
    tree: Tree,
    include: Callable[[str], bool] | None,
    sites: Sequence[str] | None,
    file_checks: Sequence[FileCheck] = (),
    site_checks: Sequence[SiteCheck] = (),
    gather: Mapping[str, Gather] | None = None,
) -> _Checked:
    """Layers 1 and 2: every file loaded, every document against its schema.

    Files are independent of each other, so a large working directory is split into
    contiguous runs of site folders, each loaded and checked by a forked worker;
    documents and findings come back in path order, as one process would produce them.
    The other folders (apps, fleets, policies: what every site shares) are loaded here
    first, so each worker has them. A commit's tree stays in this process (its git
    objects are not for sharing).

    A worker checks the references that concern each of its sites on its own and runs
    ``site_checks`` over them: rendering and checking a site needs only its own folder and
    the shared documents, so no second round of workers has to be started over the whole
    repository. Their findings are in ``site_findings`` (``sites_checked`` True). What the
    checks across sites need of its sites comes back instead of their documents
    (``across``, ``gathered``), and only the shared folders' documents are returned: the
    sites' 30,000 documents at 10,000 sites are neither sent nor rebuilt here. In one
    process all documents are returned and the caller checks everything.
    """
    from reconciler.core._fork import fork_map, tapering, workers_for

    findings, paths = _list_paths(tree, sites)
    workers = workers_for(len(paths), PARALLEL_MIN_FILES) if tree.revision is None else 1
    if workers <= 1:

        def alone(_: int) -> _Checked:
            found, documents, tried, parsed, checked = _load_paths(
                tree, paths, include, file_checks
            )
            schema_findings, valid = check_schemas(documents)
            return _Checked(found, documents, tried, parsed, schema_findings, valid, checked)

        (result,) = fork_map(alone, 1, 1)
        result.findings[:0] = findings
        return result

    # Site folders come first in the listing (CONFIG_DIRS), the shared folders after them.
    shared_paths = [p for p in paths if not p.startswith("sites/")]
    folders: dict[str, list[str]] = {}
    for path in paths:
        if path.startswith("sites/"):
            folders.setdefault(path.split("/", 2)[1], []).append(path)
    found, documents, tried, parsed, checked = _load_paths(tree, shared_paths, include, file_checks)
    schema_findings, valid = check_schemas(documents)
    shared = _Checked(found, documents, tried, parsed, schema_findings, valid, checked)
    runs = tapering(list(folders.items()), workers, workers * _RUNS_PER_WORKER, _SMALLEST_RUN)

    def check(index: int) -> _Checked:
        run = [path for _, folder in runs[index] for path in folder]
        found, documents, tried, parsed, checked = _load_paths(tree, run, include, file_checks)
        found += _check_rest(tree, run, include, file_checks, checked)
        schema_findings, valid = check_schemas(documents)
        names = [name for name, folder in runs[index] if any(p.count("/") >= 2 for p in folder)]
        repo = Repository(tree, parsed={**shared.parsed, **parsed})
        checker = _RefChecker([*shared.valid, *valid], frozenset(shared.tried | tried), False)
        result = _Checked(
            found,
            tried=tried,
            schema_findings=schema_findings,
            file_checked=checked,
            site_findings=checker.run_sites(),
            site_checked=bool(site_checks),
            across=checker.across(),
            gathered={name: facts(repo, names) for name, facts in (gather or {}).items()},
        )
        for site_check in site_checks:
            result.site_findings += site_check(False)(repo, names)
        return result

    across = _AcrossSites({}, [])
    result = _Checked(findings, site_checked=bool(site_checks), across=across)
    parts = fork_map(check, len(runs), workers)
    for part in [*parts, shared]:
        result.findings += part.findings
        result.documents += part.documents
        result.tried |= part.tried
        result.parsed.update(part.parsed)
        result.schema_findings += part.schema_findings
        result.valid += part.valid
        result.file_checked |= part.file_checked
        result.site_findings += part.site_findings
        if part.across is not None:
            across.fleets.update(part.across.fleets)
            across.nodes.extend(part.across.nodes)
        for name, facts in part.gathered.items():
            result.gathered.setdefault(name, {}).update(facts)
    return result


def _check_rest(
    tree: Tree,
    paths: Sequence[str],
    include: Callable[[str], bool] | None,
    file_checks: Sequence[FileCheck],
    checked: set[str],
) -> list[Finding]:
    """``file_checks`` on the files of site folders that layer 1 does not read (the secrets
    folder, anything else there), in the worker that has the folder anyway: the check that
    scans the rest of the tree then finds nothing left to read there. A file that cannot be
    read is left to that check, which says so."""
    findings: list[Finding] = []
    if not file_checks:
        return findings
    for path in paths:
        if path in checked or path.count("/") < 2 or (include is not None and not include(path)):
            continue
        try:
            data = tree.read(path, MAX_READ_BYTES)
        except OutpostError:
            continue
        for file_check in file_checks:
            findings += file_check(path, data, None)
        checked.add(path)
    return findings


# Runs per worker: more, smaller runs keep every worker busy to the end (a run's cost
# varies with its sites), at the price of loading the policies once per run.
_RUNS_PER_WORKER = 8
# The last runs taper down to this many site folders (`_fork.tapering`): the workers finish
# within a small run of each other.
_SMALLEST_RUN = 25


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    message = str(error.message)
    if error.validator == "additionalProperties":
        message = message.replace("Additional properties are not allowed", "unknown field(s)")
    elif (
        error.validator == "type"
        and error.validator_value == "string"
        and not isinstance(error.instance, dict | list)
    ):
        message += "; YAML read the unquoted value as a number, boolean or null — put it in quotes"
    elif error.validator == "pattern":
        expected = error.schema.get("description") or f"pattern {error.validator_value}"
        message = f"{error.instance!r} does not have the expected form: {expected}"
    return f"{where}: {message}" if where else message


def _without_echoes(errors: Sequence[Any]) -> list[Any]:
    """Drop "unevaluated properties" errors that only echo a deeper, more precise error.

    A ``oneOf`` branch that fails on ``vendor`` leaves ``vendor`` unevaluated, so the
    schema also complains one level up; the operator needs only the first message.
    """
    paths = [tuple(e.absolute_path) for e in errors]
    kept = []
    for error, path in zip(errors, paths, strict=True):
        if error.validator == "unevaluatedProperties" and any(
            other[: len(path)] == path and len(other) > len(path) for other in paths
        ):
            continue
        kept.append(error)
    return kept


def check_schemas(documents: Iterable[Document]) -> tuple[list[Finding], list[Document]]:
    """Layer 2: each document against its kind's schema, plus time zones."""
    findings: list[Finding] = []
    valid: list[Document] = []
    for doc in documents:
        errors = sorted(schema_errors(doc.kind, doc.body), key=lambda e: list(map(str, e.path)))
        for error in _without_echoes(errors):
            findings.append(Finding.at(doc.mark(*error.absolute_path), _describe(error)))
        if doc.kind == "Site":
            zone = doc.spec.get("timezone")
            if isinstance(zone, str) and not _zone_exists(zone):
                findings.append(
                    Finding.at(
                        doc.mark("spec", "timezone"),
                        f"spec.timezone: {zone!r} is not a time zone of the IANA tz database "
                        "(for example Europe/Berlin, America/Chicago, Asia/Kolkata)",
                    )
                )
                continue
        if not errors:
            valid.append(doc)
    return findings, valid


class _Node(NamedTuple):
    """A node of a site's valid hardware.yaml, as the checks across sites see it."""

    site: str
    machine: str | None  # identity.machineId, if set
    machine_mark: Mark | None
    key: str | None  # publicKey's type and key, without the comment
    key_mark: Mark | None
    name: str


@dataclass
class _AcrossSites:
    """What the references across sites need of some sites: the fleets each valid site
    joins, and the nodes of each valid hardware.yaml (in site order, then node order)."""

    fleets: dict[str, tuple[str, ...]]
    nodes: list[_Node]


class _RefChecker:
    """Layer 3: references between documents that each passed their schema.

    ``sites``: what the checks across sites need of sites whose documents are not among
    ``documents`` (loaded by forked workers, which gave `across` instead).
    """

    def __init__(
        self,
        documents: Sequence[Document],
        present: frozenset[str],
        partial: bool,
        manifest_apps: frozenset[str] | None = None,
        sites: _AcrossSites | None = None,
    ) -> None:
        self.present = present
        self.manifest_apps = manifest_apps
        self.partial = partial
        self.given = sites
        self.findings: list[Finding] = []
        self.sites: dict[str, Site] = {}
        self.hardware: dict[str, Hardware] = {}
        self.vms: dict[str, list[Document]] = {}
        self.overrides: dict[str, Document] = {}
        self.fleets: dict[str, Fleet] = {}
        self.apps: dict[str, App] = {}
        for doc in documents:
            site_id = doc.path.split("/")[1] if doc.path.startswith("sites/") else ""
            if doc.kind == "Site":
                self.sites[site_id] = Site(doc)
            elif doc.kind == "Hardware":
                self.hardware[site_id] = Hardware(doc)
            elif doc.kind == "VirtualMachine":
                self.vms.setdefault(site_id, []).append(doc)
            elif doc.kind == "SiteOverrides":
                self.overrides[site_id] = doc
            elif doc.kind == "Fleet":
                self.fleets[doc.name] = Fleet(doc)
            elif doc.kind == "App":
                self.apps[doc.name] = App(doc, ())

    def add(self, mark: Mark, message: str, site: str = "") -> None:
        self.findings.append(Finding.at(mark, message, rule="reference", site=site))

    def run(self, *, sites: bool = True) -> list[Finding]:
        """Every finding; ``sites`` False leaves out what concerns each site on its own
        (`run_sites`), when the workers that loaded the sites have checked it."""
        for name, app in sorted(self.apps.items()):
            self._parameters(app)
            if self.manifest_apps is not None and name not in self.manifest_apps:
                self.add(
                    app.doc.mark(),
                    f"app {name!r} has no manifests: expected Kubernetes objects in "
                    f"apps/{name}/manifests/*.yaml (is the folder missing or misnamed?)",
                )
        self._fleet_schedules()
        if sites:
            self.run_sites()
        across = self.across()
        if self.given is not None:
            across.fleets.update(self.given.fleets)
            across.nodes.extend(self.given.nodes)
            across.nodes.sort(key=lambda node: node.site)  # stable: node order kept
        self._unique_machines(across.nodes)
        self._unique_node_keys(across.nodes)
        members: dict[str, set[str]] = {}  # fleet → the sites that join it
        for site_id, fleets in across.fleets.items():
            for fleet_name in fleets:
                members.setdefault(fleet_name, set()).add(site_id)
        for name, fleet in sorted(self.fleets.items()):
            self._fleet(name, fleet, members.get(name, set()), across.fleets)
        return self.findings

    def across(self) -> _AcrossSites:
        """What the checks across sites need of the sites among this checker's documents."""
        fleets = {
            site_id: tuple(str(name) for name in site.fleets if isinstance(name, str))
            for site_id, site in self.sites.items()
        }
        nodes: list[_Node] = []
        for site_id, hardware in sorted(self.hardware.items()):
            for index, node in enumerate(hardware.nodes):
                identity = node.get("identity") or {}
                machine = identity.get("machineId") if isinstance(identity, dict) else None
                line = node.get("publicKey")
                key = " ".join(line.split()[:2]) if isinstance(line, str) else None
                at = ("spec", "nodes", index)
                nodes.append(
                    _Node(
                        site_id,
                        machine or None,
                        hardware.doc.mark(*at, "identity", "machineId") if machine else None,
                        key,
                        hardware.doc.mark(*at, "publicKey") if key is not None else None,
                        str(node.get("name")),
                    )
                )
        return _AcrossSites(fleets, nodes)

    def run_sites(self) -> list[Finding]:
        """What concerns each site on its own: its files, its calendar, its references to
        fleets and apps, its hardware's names. A worker that loaded some sites (and the
        shared folders) checks them here; `run` with ``sites`` False does the rest."""
        self._site_schedules()
        self._site_files()
        for site_id, site in sorted(self.sites.items()):
            self._site(site_id, site)
        return self.findings

    def _site_files(self) -> None:
        """A site folder with files but no site.yaml: nothing would render it, silently."""
        folders = sorted({p.split("/")[1] for p in self.present if p.startswith("sites/")})
        for site_id in folders:
            if f"sites/{site_id}/site.yaml" not in self.present:
                self.add(
                    Mark(f"sites/{site_id}"),
                    f"site folder sites/{site_id}/ has no site.yaml; without it the site is "
                    "neither validated nor rendered (add one with kind: Site, or remove the "
                    "folder)",
                    site_id,
                )

    def _site_schedules(self) -> None:
        """What the gate computes with, read the way the gate reads it.

        A freeze whose ``to`` is before its ``from``, a window of zero length, a wave name
        used twice and dates or durations the gate cannot add without overflowing all
        pass the schemas; the schedule model refuses them with the line to change.
        """
        from reconciler.core.errors import ValidationError
        from reconciler.core.schedule import SiteCalendar

        valid: set[str] = set()  # most stores share their windows: parse each shape once
        for site_id, site in sorted(self.sites.items()):
            spec = site.doc.spec
            shape = repr([spec.get(k) for k in ("timezone", "updateWindows", "maintenance")])
            shape += repr(spec.get("freezes"))
            if shape in valid:
                continue
            try:
                SiteCalendar.from_document(site.doc)
            except ValidationError as exc:
                self.findings.append(Finding.from_error(exc, rule="schedule", site=site_id))
            else:
                valid.add(shape)

    def _fleet_schedules(self) -> None:
        """Each fleet's rollout, read as the gate reads it (see `_site_schedules`)."""
        from reconciler.core.errors import ValidationError
        from reconciler.core.schedule import FleetRollout

        for _, fleet in sorted(self.fleets.items()):
            try:
                FleetRollout.from_document(fleet.doc)
            except ValidationError as exc:
                self.findings.append(Finding.from_error(exc, rule="schedule"))

    def _parameters(self, app: App) -> None:
        """The app's parameter schema passes the guard every render compiles it under."""
        import json

        from reconciler.core.schema_guard import SchemaProblem, compile_parameters

        schema = app.doc.spec.get("parameters")
        if not isinstance(schema, dict):
            return
        compiled = compile_parameters(json.dumps(schema, sort_keys=True))
        if isinstance(compiled, SchemaProblem):
            self.add(
                app.doc.mark("spec", "parameters", *compiled.at),
                f"spec.parameters: {compiled.message}",
            )

    def _assignment(self, assignment: AppAssignment, site: str = "") -> App | None:
        app_name, version = assignment.app, assignment.version
        app = self.apps.get(app_name)
        if app is None and f"apps/{app_name}/app.yaml" in self.present:
            return None  # exists but is broken: its own findings say why
        if app is None:
            known = ", ".join(sorted(self.apps)) or "none"
            self.add(
                assignment.mark,
                f"app {app_name!r} does not exist (apps/{app_name}/app.yaml); known apps: {known}",
                site,
            )
            return None
        if version not in app.versions:
            known = ", ".join(sorted(app.versions)) or "none"
            self.add(
                assignment.mark,
                f"app {app_name!r} has no version {version!r} "
                f"(in {app.doc.path}); known versions: {known}",
                site,
            )
            return None
        return app

    def _site(self, site_id: str, site: Site) -> None:
        hardware = self.hardware.get(site_id)
        if hardware is None and f"sites/{site_id}/hardware.yaml" in self.present:
            return  # its schema findings come first; devices cannot be checked against it
        if hardware is None:
            self.add(
                site.doc.mark("metadata", "name"),
                f"site {site_id!r} has no hardware.yaml; expected sites/{site_id}/hardware.yaml",
                site_id,
            )
        devices = hardware.devices if hardware else ()
        device_names = {d.name for d in devices}
        device_types = {d.type for d in devices}
        node_names = {str(n.get("name")) for n in hardware.nodes} if hardware else set()
        running: dict[str, App] = {}
        fleets_list = site.doc.spec.get("fleets") or []
        for index, fleet_name in enumerate(fleets_list):
            fleet = self.fleets.get(fleet_name)
            if fleet is None and self._present_fleet(fleet_name):
                continue
            if fleet is None:
                known = ", ".join(sorted(self.fleets)) or "none"
                self.add(
                    site.doc.mark("spec", "fleets", index),
                    f"fleet {fleet_name!r} does not exist (fleets/{fleet_name}.yaml); "
                    f"known fleets: {known}",
                    site_id,
                )
                continue
            if not selector_matches(fleet.selector, site.labels):
                self.add(
                    site.doc.mark("spec", "fleets", index),
                    f"site joins fleet {fleet_name!r} but its labels do not match "
                    f"the fleet's selector {dict(fleet.selector)} ({fleet.doc.path})",
                    site_id,
                )
            for assignment in fleet.apps:
                app = self.apps.get(assignment.app)
                if app is not None and assignment.version in app.versions:
                    running[assignment.app] = app
        for assignment in site.apps:
            app = self._assignment(assignment, site_id)
            if app is not None:
                running[assignment.app] = app
        for app_name, app in sorted(running.items()):
            for device_type in app.required_device_types:
                if device_type not in device_types:
                    self.add(
                        site.doc.mark("spec"),
                        f"app {app_name!r} requires a {device_type} device "
                        f"({app.doc.path}), but sites/{site_id}/hardware.yaml declares none",
                        site_id,
                    )
        for vm in self.vms.get(site_id, []):
            for index, device in enumerate(vm.spec.get("devices") or []):
                if device not in device_names:
                    known = ", ".join(sorted(device_names)) or "none"
                    self.add(
                        vm.mark("spec", "devices", index),
                        f"VM {vm.name!r} passes through device {device!r}, which "
                        f"sites/{site_id}/hardware.yaml does not declare; declared: {known}",
                        site_id,
                    )
            node = vm.spec.get("node")
            if node is not None and node not in node_names:
                self.add(
                    vm.mark("spec", "node"),
                    f"VM {vm.name!r} is pinned to node {node!r}, which "
                    f"sites/{site_id}/hardware.yaml does not declare",
                    site_id,
                )
        names: dict[str, Document] = {}
        for vm in self.vms.get(site_id, []):
            if vm.name in names:
                self.add(
                    vm.mark("metadata", "name"),
                    f"VM name {vm.name!r} is already used by {names[vm.name].path}",
                    site_id,
                )
            names[vm.name] = vm
        overrides = self.overrides.get(site_id)
        if overrides is not None:
            for app_name in overrides.spec.get("apps") or {}:
                if app_name not in running:
                    self.add(
                        overrides.mark("spec", "apps", app_name),
                        f"overrides name app {app_name!r}, which site {site_id!r} does not run",
                        site_id,
                    )
        if hardware is not None:
            self._hardware_names(site_id, hardware)

    def _present_fleet(self, name: str) -> bool:
        return f"fleets/{name}.yaml" in self.present or f"fleets/{name}.yml" in self.present

    def _hardware_names(self, site_id: str, hardware: Hardware) -> None:
        seen_nodes: set[str] = set()
        seen_devices: set[str] = set()
        for n_index, node in enumerate(hardware.nodes):
            name = str(node.get("name"))
            if name in seen_nodes:
                self.add(
                    hardware.doc.mark("spec", "nodes", n_index, "name"),
                    f"node name {name!r} is declared twice",
                    site_id,
                )
            seen_nodes.add(name)
            for d_index, device in enumerate(node.get("devices") or []):
                dname = str(device.get("name"))
                if dname in seen_devices:
                    self.add(
                        hardware.doc.mark("spec", "nodes", n_index, "devices", d_index, "name"),
                        f"device name {dname!r} is declared twice at this site",
                        site_id,
                    )
                seen_devices.add(dname)

    def _unique_machines(self, nodes: Sequence[_Node]) -> None:
        owners: dict[str, str] = {}
        for node in nodes:
            machine = node.machine
            if machine is None or node.machine_mark is None:
                continue
            if machine in owners and owners[machine] != node.site:
                self.add(
                    node.machine_mark,
                    f"machine id {machine} is already declared by site {owners[machine]!r}; "
                    "one machine cannot serve two sites",
                    node.site,
                )
            owners.setdefault(machine, node.site)

    def _unique_node_keys(self, nodes: Sequence[_Node]) -> None:
        """A node key reports for one node of one site: a shared key would let one site's
        node report as another (the collector files a report under every site listing it)."""
        owners: dict[str, str] = {}
        for node in nodes:
            key = node.key
            if key is None or node.key_mark is None:
                continue
            if key in owners:
                self.add(
                    node.key_mark,
                    f"this node key is already the key of {owners[key]}; every node needs "
                    "its own (`outpost agent keygen` on the node)",
                    node.site,
                )
            owners.setdefault(key, f"{node.site}/{node.name}")

    def _fleet(
        self, name: str, fleet: Fleet, members: set[str], valid: Mapping[str, object]
    ) -> None:
        for assignment in fleet.apps:
            self._assignment(assignment)
        for w_index, wave in enumerate(fleet.doc.spec.get("waves") or []):
            for s_index, site_id in enumerate(wave.get("sites") or []):
                unseen = site_id not in valid and (
                    self.partial or f"sites/{site_id}/site.yaml" in self.present
                )
                if site_id not in members and not unseen:
                    self.add(
                        fleet.doc.mark("spec", "waves", w_index, "sites", s_index),
                        f"wave {wave.get('name')!r} names site {site_id!r}, which is not a "
                        f"member of fleet {name!r}",
                    )


def check_references(
    documents: Sequence[Document],
    present: frozenset[str] = frozenset(),
    *,
    partial: bool = False,
    manifest_apps: frozenset[str] | None = None,
    sites: bool = True,
    across: _AcrossSites | None = None,
) -> list[Finding]:
    """Layer 3 over the documents that passed layers 1 and 2.

    ``present`` holds the path of every document that was tried, valid or not, so a
    hardware.yaml with an error of its own is not also reported as missing. ``partial``:
    only some sites were read (``--changed-since``), so a site that was not read is not
    missing. ``sites`` False: what concerns each site on its own was checked where the
    sites were loaded (`_RefChecker.run_sites`); only what spans sites is checked here, with
    what those workers gave of their sites (``across``) beside ``documents``.
    """
    return _RefChecker(documents, present, partial, manifest_apps, across).run(sites=sites)


class _ListedTree:
    """``tree``, answering listings below a folder it has already listed from that listing.

    Validation lists ``sites/`` (and the other top folders) once; then every site's
    folder is listed again by ``Repository.site`` and by render. Filtering the sorted
    listing gives the same paths without a walk per site. Anything it cannot answer
    the same way (a link at or below the prefix, a prefix that is not clean) goes to
    ``tree``, which raises or answers as it always does.
    """

    def __init__(self, tree: Tree) -> None:
        self._tree = tree
        self._listed: dict[str, list[str]] = {}
        self.file_checked: frozenset[str] = frozenset()
        self.gathered: dict[str, dict[str, Any]] = {}  # `Gather`'s facts, by its name

    @property
    def revision(self) -> str | None:
        return self._tree.revision

    @property
    def links(self) -> list[str]:
        return self._tree.links

    @property
    def unreadable(self) -> dict[str, str]:
        return dict(getattr(self._tree, "unreadable", {}))

    def read(self, path: str, limit: int = MAX_READ_BYTES) -> bytes:
        return self._tree.read(path, limit)

    def exists(self, path: str) -> bool:
        return self._tree.exists(path)

    def children(self, prefix: str = "") -> tuple[list[str], list[str]]:
        listing = self._listed.get(prefix)
        if listing is not None:
            return first_level(prefix, listing)
        return self._tree.children(prefix)

    def peek(self, path: str, limit: int = MAX_READ_BYTES) -> bytes | None:
        return self._tree.peek(path, limit)

    def files(self, prefix: str = "", *, lenient: bool = False) -> list[str]:
        parts = prefix.split("/")
        listing = self._listed.get(parts[0]) if len(parts) > 1 else None
        if listing is None or any(p in ("", ".", "..") for p in parts):
            result = self._tree.files(prefix, lenient=lenient)
            if len(parts) == 1 and prefix and all(a < b for a, b in pairwise(result)):
                self._listed[prefix] = result
            return result
        below = prefix + "/"
        if any(link == prefix or link.startswith(below) for link in self._tree.links):
            return self._tree.files(prefix, lenient=lenient)
        first = bisect_left(listing, prefix)
        found = [prefix] if first < len(listing) and listing[first] == prefix else []
        index = bisect_left(listing, below, first)
        while index < len(listing) and listing[index].startswith(below):
            found.append(listing[index])
            index += 1
        return found


def validate_tree(
    tree: Tree,
    *,
    extra: Sequence[Check] = (),
    sites: Sequence[str] | None = None,
    partial: bool | None = None,
    collapse: bool = True,
    file_checks: Sequence[FileCheck] = (),
    site_checks: Sequence[SiteCheck] = (),
    gather: Mapping[str, Gather] | None = None,
) -> list[Finding]:
    """Every finding for ``tree``; ``extra`` checks (policies, secrets) run on the repository.

    With ``sites`` only those sites' folders are read (plus fleets, apps and policies): the
    cost of a pull request's validation grows with the sites it touches, not with the fleet.
    ``partial`` (default: whether ``sites`` is given) says that sites exist beyond those
    read, so a wave naming a site that was not read is not a finding; a caller that reads
    every site a wave names passes False. ``collapse`` False keeps findings that differ
    only by site apart (``aggregate``), for a shard of a run whose shards are merged later.
    ``file_checks`` run on each file layer 1 reads, as it reads it; the paths they saw are
    left on the tree the extra checks get (``tree.file_checked``), so a check that scans
    files (the secrets scan) reads only the others. ``site_checks`` run after ``extra``
    (see `SiteCheck`) over the sites read: when they are read by forked workers, each
    worker runs them over the sites it loaded, and their parts are merged here. ``gather``
    collects, in those workers, what the ``extra`` checks need of each site (`Gather`).
    """
    include = None
    if sites is not None:
        wanted = set(sites)

        def include(path: str) -> bool:  # an entry of sites/ may be a file (sharding)
            return not path.startswith("sites/") or path.split("/", 2)[1] in wanted

    tree = _ListedTree(tree)
    checked = _files_and_schemas(tree, include, sites, file_checks, site_checks, gather)
    tree.file_checked = frozenset(checked.file_checked)
    tree.gathered = checked.gathered
    # After a forked run this process holds what the workers sent (every path tried, the
    # facts of every site) in the oldest generation, and what is left only reads it: a
    # full collection would walk it all to free nothing. None until the findings are out;
    # the workers of a check forked from here collect as before.
    from reconciler.core._fork import paused_collections

    with paused_collections() if checked.sites_checked else nullcontext():
        findings = _references_and_extra(
            tree, checked, extra, sites, partial, collapse, site_checks
        )
    # A placeholder breaks its field's schema too; the placeholder finding says it better.
    marked = {(f.path, f.line) for f in findings if f.rule == "placeholder"}
    findings = [f for f in findings if f.rule == "placeholder" or (f.path, f.line) not in marked]
    if collapse:
        findings = aggregate(findings)
    return sorted(set(findings), key=report_order)


def _references_and_extra(
    tree: _ListedTree,
    checked: _Checked,
    extra: Sequence[Check],
    sites: Sequence[str] | None,
    partial: bool | None,
    collapse: bool,
    site_checks: Sequence[SiteCheck],
) -> list[Finding]:
    """``validate_tree`` after layers 1 and 2: references, the parts of ``site_checks``,
    the ``extra`` checks (and ``site_checks`` if no worker ran them)."""
    findings = checked.findings + checked.schema_findings
    manifest_apps = frozenset(
        path.split("/")[1]
        for path in (*checked.parsed, *(f.path for f in checked.findings))
        if path.startswith("apps/") and path.split("/")[2:3] == ["manifests"]
    )
    findings += check_references(
        checked.valid,
        frozenset(checked.tried),
        partial=sites is not None if partial is None else partial,
        manifest_apps=manifest_apps,
        sites=not checked.sites_checked,
        across=checked.across,
    )
    if checked.sites_checked:
        findings += _merge_site_findings(checked.site_findings)
    if extra or (site_checks and not checked.site_checked):
        # The extra checks see the same documents: each file is parsed once per run.
        repo = Repository(tree, parsed=checked.parsed)
        selected = list(repo.site_ids) if sites is None else list(sites)
        for check in extra:
            findings += check(repo, selected)
        if not checked.site_checked:
            # As `Repository.site_ids` counts them: a folder with files (not a link, not a
            # file of sites/ itself, which the file layer reports).
            rendered = selected if sites is None else [s for s in selected if _holds(tree, s)]
            for site_check in site_checks:
                findings += site_check(collapse)(repo, rendered)
    return findings


def _holds(tree: Tree, site: str) -> bool:
    """Whether ``sites/<site>`` is a folder with a file below it."""
    try:
        return any(p.count("/") >= 2 for p in tree.files(f"sites/{site}", lenient=True))
    except OutpostError:
        return False


def _merge_site_findings(found: Sequence[Finding]) -> list[Finding]:
    """The findings of ``site_checks`` run over parts of the sites, as one run over all.

    Each part also judged what belongs to no site (a policy that does not load, a Secret
    written in an app's manifests), so those come once per part: the same finding again
    is dropped. A Secret of an app's manifests found as written (no site) is dropped where
    a site renders it and the same rule flags it there, as ``policy.validate_policies``
    does over every site (and ``ci.validate.merge_findings`` over CI shards).
    """
    rendered_at = {(f.path, f.line, f.rule) for f in found if f.site}
    seen: set[Finding] = set()
    kept: list[Finding] = []
    for f in found:
        if not f.site:
            if f in seen or (
                f.path.startswith("apps/") and (f.path, f.line, f.rule) in rendered_at
            ):
                continue
            seen.add(f)
        kept.append(f)
    return kept


PLACEHOLDER = b"REPLACE-ME"


def placeholders(data: bytes, path: str) -> list[Finding]:
    """A ``REPLACE-ME`` that `outpost site new` wrote and nobody replaced: one finding a line.

    The scaffold writes it where only the site can say (node name, machine id, device
    ids); a site must not validate, let alone reach a node, with a value that was never
    real.
    """
    if PLACEHOLDER not in data:
        return []
    found = []
    for number, line in enumerate(data.splitlines(), start=1):
        if PLACEHOLDER in line:
            text = line.decode(errors="replace")
            hint = text.split("#", 1)[1].strip() if "#" in text else ""
            found.append(
                Finding.at(
                    Mark(path, number),
                    f"placeholder {PLACEHOLDER.decode()} left by `outpost site new`: replace it "
                    "with the site's real value" + (f" ({hint})" if hint else ""),
                    rule="placeholder",
                )
            )
    return found


def coverage(tree: Tree, *, sites: Sequence[str] | None, policies: bool) -> str:
    """What a run checked, in one line: a clean run should say what it vouches for.

    Counted from the file listing (no document is parsed again): sites, fleets, apps
    and policy files, e.g. ``checked 12 sites, 3 fleets, 6 apps, 9 policies``.
    """
    repo = Repository(tree)
    site_count = len(repo.site_ids) if sites is None else len(sites)
    policy_files = [
        p
        for p in tree.files("policies", lenient=True)
        if p.endswith(YAML_SUFFIXES) and p.count("/") == 1 and not p.startswith("policies/signers.")
    ]

    def n(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    every = len(repo.site_folders)  # one read of sites/, not a walk of every site's folder
    scope = f" (changed since the base, of {every})" if sites is not None else ""
    checked = (
        f"checked {n(site_count, 'site')}{scope}, {n(len(repo.fleet_names), 'fleet')}, "
        f"{n(len(repo.app_names), 'app')}, "
    )
    count = len(policy_files)
    checked += f"{count} {'policy' if count == 1 else 'policies'}" if policies else "no policies"
    return checked


def site_ids_from(documents: Iterable[Document]) -> list[str]:
    return sorted({d.name for d in documents if d.kind == "Site"})
