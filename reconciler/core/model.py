"""The repository as typed documents: which files are which, and what they say.

`Repository` reads lazily from a `Tree`: the node reads only its own site's
folder plus the fleets, apps and policies it needs; CI reads everything. Every
document keeps its `Document` (body and file:line marks), so any finding about
a value can point at the line that set it.

Paths decide kinds (``sites/<id>/site.yaml`` must hold a ``Site``), and the
folder name is the id: a file that says otherwise is an error, because a store
whose folder and name disagree is a store two people will configure twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NewType

from reconciler.core.errors import DocumentError, Mark
from reconciler.core.loader import (
    MAX_FILE_BYTES,
    Document,
    YamlDocument,
    parse_yaml,
    read_document,
    yaml_path,
)

# Where they always were, for their callers.
from reconciler.core.loader import YAML_SUFFIXES as YAML_SUFFIXES
from reconciler.core.loader import expect as expect
from reconciler.core.source import Tree

SiteId = NewType("SiteId", str)
FleetName = NewType("FleetName", str)
AppName = NewType("AppName", str)

# The site folders whose ``name`` file (``site.yaml``, ``hardware.yaml``) may hold one of
# the byte strings asked about, or a backslash (a value written with escapes): for a run
# over a few sites that asks whether any other site declares one of their values. A
# superset is fine, every hit is read and judged again; None means "cannot say", and the
# caller reads every site's file itself. (``ci.changes.SiteFileGrep`` asks git.)
SiteHolders = Callable[[str, Collection[bytes]], Collection[str] | None]

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SECRET_SUFFIXES = (".sops.yaml", ".sops.yml")


@dataclass(frozen=True)
class AppAssignment:
    """An app a site runs: which version, with which values, decided where."""

    app: AppName
    version: str
    values: Mapping[str, Any]
    source: Document
    at: tuple[str | int, ...]

    @property
    def mark(self) -> Mark:
        return self.source.mark(*self.at)


@dataclass(frozen=True)
class Site:
    """``sites/<id>/site.yaml``: a store or plant, its time zone and its update rules."""

    doc: Document

    @property
    def id(self) -> SiteId:
        return SiteId(self.doc.name)

    @property
    def type(self) -> str:
        return str(self.doc.spec.get("type", ""))

    @property
    def timezone(self) -> str:
        return str(self.doc.spec.get("timezone", ""))

    @property
    def labels(self) -> Mapping[str, str]:
        return self.doc.labels

    @property
    def fleets(self) -> tuple[FleetName, ...]:
        fleets = self.doc.spec.get("fleets")
        return tuple(FleetName(f) for f in fleets) if isinstance(fleets, list) else ()

    @property
    def connectivity(self) -> str:
        return str(self.doc.spec.get("connectivity", "online"))

    @property
    def sops_recipient(self) -> str | None:
        sops = self.doc.spec.get("sops")
        recipient = sops.get("recipient") if isinstance(sops, dict) else None
        return recipient if isinstance(recipient, str) else None

    @property
    def apps(self) -> tuple[AppAssignment, ...]:
        return _assignments(self.doc, ("spec", "apps"))


@dataclass(frozen=True)
class Fleet:
    """``fleets/<name>.yaml``: a group of sites, the app versions they run and how changes roll."""

    doc: Document

    @property
    def name(self) -> FleetName:
        return FleetName(self.doc.name)

    @property
    def selector(self) -> Mapping[str, Any]:
        selector = self.doc.spec.get("selector")
        return selector if isinstance(selector, dict) else {}

    @cached_property
    def apps(self) -> tuple[AppAssignment, ...]:
        return _assignments(self.doc, ("spec", "apps"))

    @property
    def break_glass(self) -> tuple[str, ...]:
        bg = self.doc.spec.get("breakGlass")
        recipients = bg.get("recipients") if isinstance(bg, dict) else None
        return tuple(r for r in recipients or [] if isinstance(r, str))


@dataclass(frozen=True)
class App:
    """``apps/<name>/``: an application's versions, parameters and manifests."""

    doc: Document
    manifests: tuple[YamlDocument, ...]
    """Every manifest, of every version (secret scans and policies read them all)."""
    by_version: Mapping[str, tuple[YamlDocument, ...]] = field(
        default_factory=dict, hash=False, compare=False
    )
    """An app with a ``source``: the vendored ``manifests/<version>/`` of each version, each
    with the files directly in ``manifests/`` (shared by every version) in front."""

    def manifests_for(self, version: str) -> tuple[YamlDocument, ...]:
        """What a site running ``version`` renders: all manifests, or, for an app with a
        ``source``, the shared ones and that version's vendored output."""
        if not self.source:
            return self.manifests
        return self.by_version.get(version, ())

    @property
    def source(self) -> Mapping[str, Any]:
        """``spec.source`` (a Helm chart or a Kustomize directory), or empty."""
        source = self.doc.spec.get("source")
        return source if isinstance(source, dict) else {}

    @cached_property
    def name(self) -> AppName:
        return AppName(self.doc.name)

    @property
    def namespace(self) -> str:
        return str(self.doc.spec.get("namespace") or self.doc.name)

    @property
    def versions(self) -> Mapping[str, Any]:
        versions = self.doc.spec.get("versions")
        return versions if isinstance(versions, dict) else {}

    @property
    def parameters(self) -> Mapping[str, Any]:
        parameters = self.doc.spec.get("parameters")
        return parameters if isinstance(parameters, dict) else {"type": "object"}

    @property
    def defaults(self) -> Mapping[str, Any]:
        defaults = self.doc.spec.get("defaults")
        return defaults if isinstance(defaults, dict) else {}

    @cached_property
    def required_device_types(self) -> tuple[str, ...]:
        requires = self.doc.spec.get("requires")
        devices = requires.get("devices") if isinstance(requires, dict) else None
        return tuple(d for d in devices or [] if isinstance(d, str))

    def images(self, version: str) -> Mapping[str, str]:
        entry = self.versions.get(version)
        images = entry.get("images") if isinstance(entry, dict) else None
        return images if isinstance(images, dict) else {}


@dataclass(frozen=True)
class Device:
    """One device declared on one hardware node."""

    node: str
    name: str
    type: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class Hardware:
    """``sites/<id>/hardware.yaml``: the nodes of a site and the devices attached to them."""

    doc: Document

    @cached_property
    def nodes(self) -> tuple[Mapping[str, Any], ...]:
        nodes = self.doc.spec.get("nodes")
        return tuple(n for n in nodes or [] if isinstance(n, dict))

    @cached_property
    def devices(self) -> tuple[Device, ...]:
        found: list[Device] = []
        for node in self.nodes:
            for device in node.get("devices", []) or []:
                if isinstance(device, dict):
                    found.append(
                        Device(
                            node=str(node.get("name", "")),
                            name=str(device.get("name", "")),
                            type=str(device.get("type", "")),
                            spec=device,
                        )
                    )
        return tuple(found)


@dataclass(frozen=True)
class SiteFolder:
    """Everything under ``sites/<id>/``: the documents and the paths of its secrets."""

    id: SiteId
    site: Site
    hardware: Hardware | None
    vms: tuple[Document, ...]
    overrides: Document | None
    secrets: tuple[str, ...]


def _assignments(doc: Document, at: tuple[str, ...]) -> tuple[AppAssignment, ...]:
    node: Any = doc.body
    for key in at:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return ()
    result: list[AppAssignment] = []
    for name, entry in node.items():
        entry = entry if isinstance(entry, dict) else {}
        values = entry.get("values")
        result.append(
            AppAssignment(
                app=AppName(str(name)),
                version=str(entry.get("version", "")),
                values=values if isinstance(values, dict) else {},
                source=doc,
                at=(*at, name),
            )
        )
    return tuple(result)


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: matchLabels and matchExpressions."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and (not present or labels[key] not in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def folder_files(tree: Tree, folder: str) -> list[str]:
    """The files of one ``folder`` (a site's), listed leniently; none if the folder is itself
    a link: validation reports the link (``tree.links``) and never reads through it.

    Raises OutpostError for a folder name that cannot be listed (``..``).
    """
    listed = tree.files(folder, lenient=True)
    return [] if folder in tree.links else listed


class Repository:
    """Lazy, cached, typed access to one tree's documents.

    ``parsed`` holds documents already parsed from this same tree, by path (an
    Outpost document as a one-element sequence, a manifest file as its documents):
    validation loads every file once to check it and hands the result over, so no
    file is parsed twice in a run. Paths not in it are read from the tree on demand.
    """

    def __init__(
        self, tree: Tree, *, parsed: Mapping[str, Sequence[YamlDocument]] | None = None
    ) -> None:
        self.tree = tree
        self._parsed: Mapping[str, Sequence[YamlDocument]] = parsed or {}
        self._sites: dict[str, SiteFolder] = {}
        self._fleets: dict[str, Fleet | None] = {}
        self._apps: dict[str, App | None] = {}

    @property
    def revision(self) -> str | None:
        return self.tree.revision

    def document(self, path: str, kind: str, name: str | None = None) -> Document:
        parsed = self._parsed.get(path)
        if parsed is not None and len(parsed) == 1 and isinstance(parsed[0], Document):
            return expect(parsed[0], kind, name)
        return read_document(self.tree, path, kind, name)

    def _yaml(self, path: str) -> Sequence[YamlDocument]:
        parsed = self._parsed.get(path)
        if parsed is not None:
            return parsed
        return parse_yaml(self.tree.read(path, MAX_FILE_BYTES), path, multi=True)

    @cached_property
    def site_ids(self) -> tuple[SiteId, ...]:
        ids = {p.split("/")[1] for p in self.tree.files("sites", lenient=True) if p.count("/") >= 2}
        return tuple(SiteId(i) for i in sorted(ids))

    @cached_property
    def site_folders(self) -> tuple[SiteId, ...]:
        """The folders of ``sites/``, from one directory read where ``site_ids`` walks below
        every one of them (the same ids, but for a folder that holds no file at all): what
        a run over a few sites asks when it needs the others' names, not their files."""
        return tuple(SiteId(name) for name in self.tree.children("sites")[1])

    @cached_property
    def fleet_names(self) -> tuple[FleetName, ...]:
        names = [
            p[len("fleets/") :].rsplit(".", 1)[0]
            for p in self.tree.files("fleets")
            if p.count("/") == 1 and p.endswith(YAML_SUFFIXES)
        ]
        return tuple(FleetName(n) for n in sorted(names))

    @cached_property
    def app_names(self) -> tuple[AppName, ...]:
        names = {
            p.split("/")[1] for p in self.tree.files("apps", lenient=True) if p.count("/") >= 2
        }
        return tuple(AppName(n) for n in sorted(names))

    def site(self, site_id: str) -> SiteFolder:
        """The folder of one site; DocumentError for a missing or malformed site.yaml."""
        cached = self._sites.get(site_id)
        if cached is not None:
            return cached
        if not NAME_RE.fullmatch(site_id):
            raise DocumentError(
                f"site id {site_id!r} is not a DNS label (lowercase letters, digits, '-')",
                mark=Mark(f"sites/{site_id}"),
            )
        base = f"sites/{site_id}"
        files = self.tree.files(base)
        if f"{base}/site.yaml" not in files:
            raise DocumentError(
                f"site {site_id!r} has no site.yaml; expected {base}/site.yaml",
                mark=Mark(base),
            )
        site = Site(self.document(f"{base}/site.yaml", "Site", site_id))
        hardware = None
        if f"{base}/hardware.yaml" in files:
            hardware = Hardware(self.document(f"{base}/hardware.yaml", "Hardware", site_id))
        overrides = None
        if f"{base}/overrides.yaml" in files:
            overrides = self.document(f"{base}/overrides.yaml", "SiteOverrides", site_id)
        vms = tuple(
            self.document(p, "VirtualMachine")
            for p in files
            if p.startswith(f"{base}/vms/") and p.endswith(YAML_SUFFIXES)
        )
        secrets = tuple(
            p for p in files if p.startswith(f"{base}/secrets/") and p.endswith(SECRET_SUFFIXES)
        )
        folder = SiteFolder(SiteId(site_id), site, hardware, vms, overrides, secrets)
        self._sites[site_id] = folder
        return folder

    def fleet(self, name: str) -> Fleet | None:
        """A fleet by name, or None if no ``fleets/<name>.yaml`` exists."""
        if name not in self._fleets:
            path = yaml_path(self.tree, f"fleets/{name}")
            self._fleets[name] = (
                Fleet(self.document(path, "Fleet", name)) if path is not None else None
            )
        return self._fleets[name]

    def app(self, name: str) -> App | None:
        """An app by name with its manifests, or None if ``apps/<name>/app.yaml`` does not exist."""
        if name not in self._apps:
            base = f"apps/{name}"
            if not NAME_RE.fullmatch(name) or not self.tree.exists(f"{base}/app.yaml"):
                self._apps[name] = None
            else:
                doc = self.document(f"{base}/app.yaml", "App", name)
                manifests: list[YamlDocument] = []
                for path in self.tree.files(f"{base}/manifests"):
                    if path.endswith(YAML_SUFFIXES):
                        manifests.extend(self._yaml(path))
                self._apps[name] = App(doc, tuple(manifests), _by_version(doc, manifests))
        return self._apps[name]

    def policies(self) -> tuple[Document, ...]:
        """Every ``kind: Policy`` in ``policies/`` (signers.yaml excluded)."""
        return tuple(
            self.document(p, "Policy")
            for p in self.tree.files("policies")
            if p.endswith(YAML_SUFFIXES) and p.count("/") == 1 and not _is_signers(p)
        )

    def signers(self) -> Document | None:
        path = "policies/signers.yaml"
        return self.document(path, "Signers") if self.tree.exists(path) else None


def _by_version(
    doc: Document, manifests: list[YamlDocument]
) -> dict[str, tuple[YamlDocument, ...]]:
    """For an app with ``spec.source``: ``manifests/<version>/`` per version, shared files first."""
    if not isinstance(doc.spec.get("source"), dict):
        return {}
    shared: list[YamlDocument] = []
    vendored: dict[str, list[YamlDocument]] = {}
    for manifest in manifests:
        parts = manifest.path.split("/")
        if len(parts) == 4:
            shared.append(manifest)
        else:
            vendored.setdefault(parts[3], []).append(manifest)
    return {version: (*shared, *docs) for version, docs in vendored.items()}


def _is_signers(path: str) -> bool:
    return path in ("policies/signers.yaml", "policies/signers.yml")
