"""Per-site diffs between two trees: which sites' slices a change touches, and how.

The cost of a diff grows with the number of sites a change can affect, not with
the size of the fleet. First the changed paths (a git tree diff between two
commits, or a byte comparison of the config folders for a working tree), then
an index of which files feed which sites:

=====================================  =================================================
changed path                           sites it can affect
=====================================  =================================================
``sites/<id>/**``                      that site
``fleets/<F>.yaml``                    the members of F (sites listing F) in either tree
``apps/<A>/**``                        the sites running A (through a fleet or site.yaml)
``policies/signers.yaml``              none: it decides who may sign, not what is applied
``policies/**``, ``schemas/**``        every site: they judge every slice
anything else                          none
=====================================  =================================================

The index reads only site.yaml files and fleets, and only when a fleet or an
app changed; then only the affected sites are rendered, on both sides. A site
that does not change is not listed. A site that cannot be rendered on the head
side is an error (the change would break it); one that cannot be rendered on
the base side is reported, and its head slice is shown as new.

Diffs are unified diffs of each object's YAML. Encrypted secrets are compared
by the hash of the encrypted file only: a diff never shows a secret.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler.core.errors import OutpostError
from reconciler.core.model import YAML_SUFFIXES, Repository, Site
from reconciler.core.render import RenderedSite, dump_yaml, render_site
from reconciler.core.source import Tree

INDEXED_PREFIXES = ("sites", "fleets", "apps", "policies", "schemas")
SIGNERS_PATHS = ("policies/signers.yaml", "policies/signers.yml")
ADDED, REMOVED, CHANGED = "added", "removed", "changed"
MARKDOWN_LIMIT = 60_000  # GitHub rejects comments over 65,536 characters
TABLE_ROWS = 50
NAMES_SHOWN = 20


# -- which paths changed -----------------------------------------------------------------------


def changed_paths(base: Tree, head: Tree, prefixes: Sequence[str] = INDEXED_PREFIXES) -> set[str]:
    """Paths under ``prefixes`` whose bytes differ between two trees (added and removed too).

    Used for a working tree against a commit; between two commits,
    ``changed_paths_between_commits`` asks git instead of reading every blob.
    """
    changed: set[str] = set()
    for prefix in prefixes:
        old = set(base.files(prefix))
        new = set(head.files(prefix))
        changed |= old ^ new
        changed.update(p for p in old & new if base.read(p) != head.read(p))
    return changed


def changed_paths_between_commits(git_repo: Any, base: str, head: str) -> set[str]:
    """Paths that differ between two commits of ``git_repo`` (a pygit2 Repository).

    A git tree diff: unchanged subtrees are skipped by id, so the cost follows
    the size of the change, not of the repository. Renames count as a removal
    and an addition, so both the old and the new owner of a file are affected.
    """
    import pygit2

    from reconciler.core.errors import SourceUnavailable

    try:
        trees = [git_repo.revparse_single(rev).peel(pygit2.Commit).tree for rev in (base, head)]
        delta_set = git_repo.diff(trees[0], trees[1])
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError) as exc:
        raise SourceUnavailable(f"cannot diff {base}..{head}: {exc}") from None
    changed: set[str] = set()
    for delta in delta_set.deltas:
        changed.add(delta.old_file.path)
        changed.add(delta.new_file.path)
    return changed


# -- which sites those paths feed -------------------------------------------------------------


class SiteIndex:
    """Which sites of one tree a path feeds; site.yaml files are read only when needed."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._members: dict[str, set[str]] | None = None
        self._runners: dict[str, set[str]] | None = None
        self._unknown: set[str] = set()

    def _build(self) -> None:
        members: dict[str, set[str]] = {}
        runners: dict[str, set[str]] = {}
        fleet_apps: dict[str, set[str] | None] = {}
        for site_id in self.repo.site_ids:
            try:
                # site.yaml alone: membership and the site's own apps live there.
                site = Site(self.repo.document(f"sites/{site_id}/site.yaml", "Site", site_id))
            except OutpostError:
                # A site.yaml that does not load cannot prove it is unaffected.
                self._unknown.add(site_id)
                continue
            for app in site.apps:
                runners.setdefault(app.app, set()).add(site_id)
            for fleet in site.fleets:
                members.setdefault(fleet, set()).add(site_id)
                if fleet not in fleet_apps:
                    try:
                        loaded = self.repo.fleet(fleet)
                        fleet_apps[fleet] = {a.app for a in loaded.apps} if loaded else set()
                    except OutpostError:
                        fleet_apps[fleet] = None
                apps = fleet_apps[fleet]
                if apps is None:
                    self._unknown.add(site_id)
                    continue
                for app_name in apps:
                    runners.setdefault(app_name, set()).add(site_id)
        self._members, self._runners = members, runners

    def members(self, fleet: str) -> set[str]:
        if self._members is None:
            self._build()
        assert self._members is not None
        return self._members.get(fleet, set()) | self._unknown

    def runners(self, app: str) -> set[str]:
        if self._runners is None:
            self._build()
        assert self._runners is not None
        return self._runners.get(app, set()) | self._unknown

    def all(self) -> set[str]:
        return set(self.repo.site_ids)


def _fleet_of(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) == 2 and parts[1].endswith(YAML_SUFFIXES):
        return parts[1].rsplit(".", 1)[0]
    return None


def affected_sites(changed: Iterable[str], *repos: Repository) -> dict[str, set[str]]:
    """The sites ``changed`` paths can affect in any of ``repos``, with the paths that do."""
    indexes = [SiteIndex(r) for r in repos]
    result: dict[str, set[str]] = {}
    for path in sorted(set(changed)):
        parts = path.split("/")
        sites: set[str] = set()
        if parts[0] == "sites" and len(parts) >= 3:
            sites = {parts[1]}
        elif parts[0] == "fleets" and (fleet := _fleet_of(path)) is not None:
            for index in indexes:
                sites |= index.members(fleet)
        elif parts[0] == "apps" and len(parts) >= 3:
            for index in indexes:
                sites |= index.runners(parts[1])
        elif path in SIGNERS_PATHS:
            continue
        elif parts[0] in ("policies", "schemas") and len(parts) >= 2:
            for index in indexes:
                sites |= index.all()
        for site in sites:
            result.setdefault(site, set()).add(path)
    return result


# -- the diff ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectChange:
    """One object that is added, removed or changed, with its unified diff."""

    key: str
    change: str
    diff: str
    origin: str
    app: str | None


@dataclass(frozen=True)
class SecretChange:
    """An encrypted secret file that is added, removed or re-encrypted (content never shown)."""

    key: str
    change: str
    path: str


@dataclass(frozen=True)
class SiteDiff:
    """How one site's slice changes; ``reasons`` are the changed paths that feed it."""

    site: str
    status: str
    objects: tuple[ObjectChange, ...]
    secrets: tuple[SecretChange, ...] = ()
    node_labels: str = ""
    reasons: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        counts = {ADDED: 0, REMOVED: 0, CHANGED: 0}
        for change in [o.change for o in self.objects] + [s.change for s in self.secrets]:
            counts[change] += 1
        return counts

    def fingerprint(self) -> tuple[Any, ...]:
        """What changes, without the site's name: sites with equal fingerprints change alike."""

        def lines(text: str) -> tuple[str, ...]:
            return tuple(
                line
                for line in text.splitlines()
                if line[:1] in "+-" and not line.startswith(("+++", "---"))
            )

        return (
            self.status,
            tuple((o.key, o.change, lines(o.diff)) for o in self.objects),
            self.secrets,
            lines(self.node_labels),
        )


@dataclass(frozen=True)
class SiteError:
    """A site that could not be rendered on one side of the diff."""

    site: str
    side: str
    message: str
    location: str


@dataclass(frozen=True)
class SiteDiffs:
    """The result of ``diff``: only sites whose slice changes, plus render errors."""

    base: str | None
    head: str | None
    changed_paths: tuple[str, ...]
    rendered: tuple[str, ...]
    sites: tuple[SiteDiff, ...]
    errors: tuple[SiteError, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.sites)

    @property
    def head_errors(self) -> tuple[SiteError, ...]:
        return tuple(e for e in self.errors if e.side == "head")


def _canonical(body: Any) -> str:
    """Equal text means equal JSON (``1`` and ``true`` differ, unlike in Python's ``==``)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _object_diff(site: str, key: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{site}/{key}" if old else "/dev/null",
            tofile=f"b/{site}/{key}" if new else "/dev/null",
            n=3,
        )
    )


def _labels_text(rendered: RenderedSite | None) -> str:
    if rendered is None:
        return ""
    return "".join(
        f"node {node}: {key}={value}\n"
        for node, labels in sorted(rendered.node_labels.items())
        for key, value in sorted(labels.items())
    )


def site_diff(
    site: str, old: RenderedSite | None, new: RenderedSite | None, reasons: Iterable[str] = ()
) -> SiteDiff | None:
    """The difference between two renderings of one site, or None when there is none."""
    old_objects = {o.key.identity: o for o in (old.objects if old else ())}
    new_objects = {o.key.identity: o for o in (new.objects if new else ())}
    order = sorted(
        set(old_objects) | set(new_objects),
        key=lambda i: (new_objects.get(i) or old_objects[i]).key.sort_key(),
    )
    changes: list[ObjectChange] = []
    for identity in order:
        a, b = old_objects.get(identity), new_objects.get(identity)
        if a is not None and b is not None and _canonical(a.body) == _canonical(b.body):
            continue  # YAML is only written for objects that change: it costs 50x more
        a_text = dump_yaml(a.body, fast=True) if a else ""
        b_text = dump_yaml(b.body, fast=True) if b else ""
        shown = b or a
        assert shown is not None
        change = ADDED if a is None else REMOVED if b is None else CHANGED
        changes.append(
            ObjectChange(
                str(shown.key),
                change,
                _object_diff(site, str(shown.key), a_text, b_text),
                str(shown.origin),
                shown.app,
            )
        )
    old_secrets = {str(r.key): r for r in (old.secret_refs if old else ())}
    new_secrets = {str(r.key): r for r in (new.secret_refs if new else ())}
    secrets: list[SecretChange] = []
    for key in sorted(set(old_secrets) | set(new_secrets)):
        a_ref, b_ref = old_secrets.get(key), new_secrets.get(key)
        if a_ref is not None and b_ref is not None and a_ref.sha256 == b_ref.sha256:
            continue
        ref = b_ref or a_ref
        assert ref is not None
        change = ADDED if a_ref is None else REMOVED if b_ref is None else CHANGED
        secrets.append(SecretChange(key, change, ref.path))
    old_labels, new_labels = _labels_text(old), _labels_text(new)
    labels = ""
    if old_labels != new_labels:
        labels = "".join(
            difflib.unified_diff(
                old_labels.splitlines(keepends=True),
                new_labels.splitlines(keepends=True),
                fromfile=f"a/{site}/node-labels",
                tofile=f"b/{site}/node-labels",
            )
        )
    if not changes and not secrets and not labels:
        return None
    status = ADDED if old is None else REMOVED if new is None else CHANGED
    return SiteDiff(site, status, tuple(changes), tuple(secrets), labels, tuple(sorted(reasons)))


def _render(repo: Repository, site: str, side: str, errors: list[SiteError]) -> RenderedSite | None:
    if site not in repo.site_ids:
        return None
    try:
        return render_site(repo, site)
    except OutpostError as exc:
        errors.append(SiteError(site, side, exc.message, str(exc.mark or "")))
        return None


def diff(
    base_repo: Repository,
    head_repo: Repository,
    *,
    changed: Iterable[str] | None = None,
    only: Iterable[str] | None = None,
) -> SiteDiffs:
    """Which sites' slices change between two trees, and how.

    ``changed`` is the set of changed paths when the caller knows it (a git tree
    diff); otherwise the config folders of both trees are compared byte by byte.
    Only the sites those paths feed are rendered, each on both sides; ``only``
    narrows them further to the named sites (``outpost diff --site``).
    """
    paths = set(changed) if changed is not None else changed_paths(base_repo.tree, head_repo.tree)
    # The head's index is enough: a site whose membership or own apps differ in the
    # base has a changed site.yaml, and a fleet whose apps differ is a changed fleet
    # file; both are affected by their own paths already.
    affected = affected_sites(paths, head_repo)
    if only is not None:
        wanted = set(only)
        affected = {site: reasons for site, reasons in affected.items() if site in wanted}
    errors: list[SiteError] = []
    sites: list[SiteDiff] = []
    for site in sorted(affected):
        old = _render(base_repo, site, "base", errors)
        new = _render(head_repo, site, "head", errors)
        if new is None and site in head_repo.site_ids:
            continue  # the head side failed: reported as an error, not as a removal
        found = site_diff(site, old, new, affected[site])
        if found is not None:
            sites.append(found)
    return SiteDiffs(
        base=base_repo.revision,
        head=head_repo.revision,
        changed_paths=tuple(sorted(paths)),
        rendered=tuple(sorted(affected)),
        sites=tuple(sites),
        errors=tuple(errors),
    )


def diff_revisions(
    repo_dir: str, base: str, head: str | None, *, only: Sequence[str] | None = None
) -> SiteDiffs:
    """``diff`` of the commit ``base`` against ``head`` (None: the working tree at ``repo_dir``).

    With two commits the changed paths come from git's tree diff. Raises OutpostError
    (SourceUnavailable for a directory outside git or an unknown revision).
    """
    from pathlib import Path

    import pygit2

    from reconciler.core.errors import SourceUnavailable
    from reconciler.core.source import CommitTree, WorkdirTree

    found = pygit2.discover_repository(repo_dir)
    if found is None:
        raise SourceUnavailable(f"{repo_dir} is not inside a git repository")
    git_repo = pygit2.Repository(found)
    base_tree = CommitTree(git_repo, base)
    if head is None:
        head_tree: Any = WorkdirTree(Path(repo_dir))
        changed = None
    else:
        head_tree = CommitTree(git_repo, head)
        changed = changed_paths_between_commits(git_repo, base, head)
    return diff(Repository(base_tree), Repository(head_tree), changed=changed, only=only)


# -- output -----------------------------------------------------------------------------------


def _rev(revision: str | None) -> str:
    return revision[:12] if revision else "working tree"


def _summary(result: SiteDiffs) -> str:
    return (
        f"{len(result.sites)} site(s) change; {len(result.rendered)} site(s) rendered for "
        f"{len(result.changed_paths)} changed path(s)"
    )


def groups(result: SiteDiffs) -> list[list[SiteDiff]]:
    """The changed sites grouped by what changes: a fleet-wide bump is one group, not 400."""
    found: dict[tuple[Any, ...], list[SiteDiff]] = {}
    for site in result.sites:
        found.setdefault(site.fingerprint(), []).append(site)
    return list(found.values())


def _names(members: Sequence[SiteDiff], shown: int) -> str:
    names = ", ".join(m.site for m in members[:shown])
    if len(members) > shown:
        names += f" and {len(members) - shown} more"
    return names


def format_text(result: SiteDiffs, *, summary_only: bool = False) -> str:
    """Plain text: a summary, then each group of sites that change alike with its diffs.

    A group is shown once, with the diff of its first site; ``summary_only`` leaves
    the diffs out and prints one line per group.
    """
    out = [f"outpost diff {_rev(result.base)} → {_rev(result.head)}: {_summary(result)}"]
    for error in result.errors:
        out.append(f"{error.location}: error: site {error.site} ({error.side}): {error.message}")
    all_groups = groups(result)
    if len(all_groups) < len(result.sites):
        out.append(f"{len(all_groups)} distinct change(s) across {len(result.sites)} site(s)")
    for members in all_groups:
        site = members[0]
        counts = site.counts()
        alike = (
            f" — {len(members)} sites, same change; diff of {site.site}" if len(members) > 1 else ""
        )
        heading = (
            f"{'sites' if len(members) > 1 else 'site'} {_names(members, NAMES_SHOWN)} "
            f"({site.status}): {counts[ADDED]} added, {counts[REMOVED]} removed, "
            f"{counts[CHANGED]} changed{alike}"
        )
        if summary_only:
            out.append(heading)
            continue
        out.append("")
        out.append(f"=== {heading}")
        for secret in site.secrets:
            out.append(f"secret {secret.key} {secret.change} ({secret.path}; encrypted, not shown)")
        for obj in site.objects:
            out.append(obj.diff.rstrip("\n"))
        if site.node_labels:
            out.append(site.node_labels.rstrip("\n"))
    return "\n".join(out) + "\n"


def _fence(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}diff\n{text.rstrip()}\n{fence}"


def format_markdown(
    result: SiteDiffs, *, limit: int = MARKDOWN_LIMIT, summary_only: bool = False
) -> str:
    """A pull-request comment: a table of sites, then one folded diff per group of sites
    that change alike (a version bump in a 400-store fleet is one diff, not 400)."""
    out = [f"### outpost diff `{_rev(result.base)}` → `{_rev(result.head)}`", ""]
    if result.errors:
        out.append("**Sites that cannot be rendered:**")
        out.append("")
        for error in result.errors:
            where = f"`{error.location}`: " if error.location else ""
            out.append(f"- {error.site} ({error.side}): {where}{error.message}")
        out.append("")
    if not result.sites:
        out.append(f"No site's slice changes ({_summary(result)}).")
        return "\n".join(out) + "\n"
    out.append(_summary(result) + ".")
    out.append("")
    out.append("| site | status | added | removed | changed |")
    out.append("|---|---|---:|---:|---:|")
    for site in result.sites[:TABLE_ROWS]:
        c = site.counts()
        out.append(f"| {site.site} | {site.status} | {c[ADDED]} | {c[REMOVED]} | {c[CHANGED]} |")
    if len(result.sites) > TABLE_ROWS:
        out.append(f"| … and {len(result.sites) - TABLE_ROWS} more | | | | |")
    out.append("")
    if summary_only:
        return "\n".join(out) + "\n"
    body: list[str] = []
    used = sum(len(line) + 1 for line in out)
    left_out = 0
    for members in groups(result):
        first = members[0]
        names = _names(members, NAMES_SHOWN)
        alike = (
            f" ({len(members)} sites, same change; diff of {first.site})"
            if len(members) > 1
            else ""
        )
        parts = [f"<details><summary>{names}{alike}</summary>", ""]
        for secret in first.secrets:
            parts.append(f"- secret `{secret.key}` {secret.change} (encrypted, not shown)")
        text = "".join(o.diff for o in first.objects) + first.node_labels
        if text:
            parts.append(_fence(text))
        parts += ["", "</details>", ""]
        section = "\n".join(parts)
        if used + len(section) > limit:
            left_out += len(members)
            continue
        body.append(section)
        used += len(section) + 1
    out.extend(body)
    if left_out:
        out.append(
            f"_{left_out} site(s) left out to keep this comment under GitHub's size limit; "
            "run `outpost diff` for all of them._"
        )
    return "\n".join(out) + "\n"


def _camel(value: Any) -> Any:
    """The JSON key style of every command's output (camelCase, like Kubernetes objects)."""
    if isinstance(value, dict):
        return {
            re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): _camel(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_camel(v) for v in value]
    return value


def as_data(result: SiteDiffs) -> dict[str, Any]:
    data = asdict(result)
    data["changed"] = result.changed
    data["groups"] = [[m.site for m in members] for members in groups(result)]
    converted: dict[str, Any] = _camel(data)
    return converted


def format_json(result: SiteDiffs, *, summary_only: bool = False) -> str:
    data = as_data(result)
    if summary_only:
        for site in data["sites"]:
            for obj in site["objects"]:
                obj.pop("diff")
            site.pop("nodeLabels")
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


FORMATS: Mapping[str, Any] = {"text": format_text, "markdown": format_markdown, "json": format_json}
