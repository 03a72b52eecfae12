"""Rendered objects against the Kubernetes API's own schemas, for the version the fleet runs.

A fleet declares ``spec.kubernetesVersion`` (``"1.31"``); every object a site of that
fleet renders is checked against the OpenAPI-derived JSON schemas of that version as
the ``kubernetes-validate`` package ships them (strict: unknown fields are errors, as
``kubectl apply --validate=strict`` would say). This is the one place that check lives.

Cost, and why it is shaped this way. ``kubernetes_validate.validate`` re-reads and
re-parses the 1.3 MB shared definitions file on every call (about 40 ms per object):
at 10,000 sites that is hours. Here each version's definitions are loaded once, each
kind's validator is built once, and a check compiled from the same schema
(``schemas.compile_check``, about 0.07 ms per Deployment against jsonschema's 0.5 ms)
answers "valid"; jsonschema explains only what the fast check rejects. Results are
kept per object content, and most stores render the same objects.

Kinds the package has no schema for (KubeVirt, Multus and other custom resources)
are not checked, as ``kubeconform -ignore-missing-schemas`` does. Without the package
(it is a CI dependency, not a node's), a fleet that declares a version gets one
warning saying its objects were not checked.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from reconciler.core.errors import Mark, OutpostError
from reconciler.core.findings import WARNING, Finding
from reconciler.core.labels import without_site_label
from reconciler.core.policy import Digests, ObjectCheck

RULE = "kubernetes"
_RESULTS_MAX = 50_000


def _package_dir() -> Path | None:
    # Found, not imported: only its schema files are read, and importing the package
    # (its own command line and validators) would cost a one-site run a tenth of its time.
    from importlib.util import find_spec

    try:
        spec = find_spec("kubernetes_validate")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"


@cache
def _versions() -> tuple[tuple[int, int], ...]:
    root = _package_dir()
    if root is None or not root.is_dir():
        return ()
    found = set()
    for entry in root.iterdir():
        match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local-strict", entry.name)
        if match:
            found.add((int(match.group(1)), int(match.group(2))))
    return tuple(sorted(found))


def schema_version(declared: str) -> tuple[int, int] | None:
    """The newest bundled schema version not newer than ``declared`` (``"1.31"``), or None."""
    major, minor = (int(part) for part in declared.split(".")[:2])
    older = [v for v in _versions() if v <= (major, minor)]
    return older[-1] if older else None


# A kind's fast check is compiled once this many distinct objects of it were checked:
# compiling a Deployment's costs about what jsonschema takes for that many of them.
FAST_AFTER = 16


class _Version:
    """One Kubernetes version's schemas: definitions loaded once, a validator per kind, and
    a kind's fast check compiled from its ``FAST_AFTER``-th distinct object on (compiling
    a Deployment's costs about what jsonschema takes for that many of them, so a run over a
    few sites never pays for it)."""

    def __init__(self, version: tuple[int, int]) -> None:
        from referencing import Registry, Resource

        root = _package_dir()
        assert root is not None
        self.version = version
        self.folder = root / f"v{version[0]}.{version[1]}.0-local-strict"
        definitions = Resource.from_contents(_load(self.folder / "_definitions.json"))
        self.registry = Registry().with_resource(definitions.id() or "", definitions)
        self.kinds: dict[tuple[str, str], tuple[Any, Any, Any] | None] = {}
        self.asked: dict[tuple[str, str], int] = {}
        self.fast: dict[tuple[str, str], Any] = {}

    def kind(self, api_version: str, kind: str) -> tuple[Any, Any] | None:
        """(jsonschema's validator, the fast check or None) of a kind; None: no schema."""
        from reconciler.core.schemas import compile_check

        key = (api_version, kind)
        if key not in self.kinds:
            self.kinds[key] = self._build(api_version, kind)
        built = self.kinds[key]
        if built is None:
            return None
        validator, schema, registry = built
        self.asked[key] = asked = self.asked.get(key, 0) + 1
        if key not in self.fast and asked > FAST_AFTER:
            self.fast[key] = compile_check(schema, registry)
        return validator, self.fast.get(key)

    def _build(self, api_version: str, kind: str) -> tuple[Any, Any, Any] | None:
        from jsonschema import Draft202012Validator
        from referencing import Resource

        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = self.folder / f"{kind.lower()}-{api}.json"
        if not re.fullmatch(r"[a-z0-9-]+", f"{kind.lower()}-{api}") or not path.is_file():
            return None
        schema = _load(path)
        resource = Resource.from_contents(schema)
        registry = self.registry.with_resource(resource.id() or "", resource)
        return Draft202012Validator(schema, registry=registry), schema, registry


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _for(version: tuple[int, int]) -> _Version:
    return _Version(version)


_RESULTS: dict[tuple[tuple[int, int], bytes], tuple[str, ...]] = {}


def object_errors(
    body: Mapping[str, Any], version: tuple[int, int], digest: bytes | None = None
) -> tuple[str, ...]:
    """What the API server's schema of ``version`` says is wrong with ``body`` (empty: valid).

    ``digest`` identifies ``body``'s content (the policy engine's digest of it, when it
    computed one); results are kept per version and digest.
    """
    if digest is None:
        digest = hashlib.blake2b(repr(body).encode(), digest_size=16).digest()
    key = (version, digest)
    found = _RESULTS.get(key)
    if found is not None:
        return found
    compiled = _for(version).kind(str(body.get("apiVersion")), str(body.get("kind")))
    if compiled is None:
        found = ()
    else:
        validator, fast = compiled
        valid = False
        if fast is not None:
            try:
                valid = bool(fast(body))
            except Exception:  # jsonschema decides what the compiled check cannot
                valid = False
        if valid:
            found = ()
        else:
            errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path)))
            found = tuple(
                f"{'.'.join(map(str, e.absolute_path)) or '(object)'}: {e.message}"[:300]
                for e in errors[:3]
            )
    if len(_RESULTS) >= _RESULTS_MAX:
        _RESULTS.clear()
    _RESULTS[key] = found
    return found


def _declared(repo: Any, fleets: Sequence[str]) -> list[tuple[str, Mark]]:
    found: list[tuple[str, Mark]] = []
    for name in fleets:
        fleet = repo.fleet(name)
        value = fleet.doc.spec.get("kubernetesVersion") if fleet is not None else None
        if isinstance(value, str) and re.fullmatch(r"1\.\d{1,2}", value):
            found.append((value, fleet.doc.mark("spec", "kubernetesVersion")))
    return found


def version_check(repo: Any, _selected: Sequence[str]) -> list[Finding]:
    """A warning for each fleet whose ``kubernetesVersion`` no installed schema covers: its
    sites' rendered objects go unchecked. A fact about the fleet, said once whichever sites
    a run renders, so every shard of a run agrees with the whole run."""
    findings: list[Finding] = []
    for name in repo.fleet_names:
        try:
            declared = _declared(repo, [name])
        except OutpostError:
            continue  # the file layer reports the broken fleet
        for version, mark in declared:
            if schema_version(version) is not None:
                continue
            why = (
                "kubernetes-validate is not installed"
                if not _versions()
                else "the installed kubernetes-validate has no schemas that old"
            )
            findings.append(
                Finding.at(
                    mark,
                    f"rendered objects are not checked against Kubernetes {version}: {why}",
                    severity=WARNING,
                    rule=RULE,
                )
            )
    return findings


def object_check() -> ObjectCheck:
    """The check ``policy.validate_policies`` runs on every rendered site: (repo, folder,
    rendered, digests) → findings at each object's origin, for every version its fleets
    declare that an installed schema covers (``version_check`` names the others).
    ``digests`` are the policy engine's, by id of each rendered body."""

    # The versions a site's fleets declare, by its list of fleets, for one repository at a time.
    versions: dict[tuple[str, ...], list[tuple[str, tuple[int, int]]]] = {}
    seen: list[Any] = [None]

    def check(repo: Any, folder: Any, rendered: Any, digests: Digests) -> list[Finding]:
        site_id = str(folder.id)
        findings: list[Finding] = []
        if seen[0] is not repo:
            seen[0] = repo
            versions.clear()
        fleets = tuple(folder.site.fleets)
        key = tuple(map(str, fleets))  # names of fleets the site rendered with
        declared_versions = versions.get(key)
        if declared_versions is None:
            declared_versions = versions[key] = [
                (declared, version)
                for declared, _ in _declared(repo, fleets)
                if (version := schema_version(declared)) is not None
            ]
        for declared, version in declared_versions:
            for obj in rendered.objects:
                body, digest = digests.get(id(obj.body)) or (
                    without_site_label(obj.body, site_id),
                    None,
                )
                for message in object_errors(body, version, digest):
                    findings.append(
                        Finding.at(
                            obj.origin,
                            f"{obj.body.get('kind')} {obj.body['metadata'].get('name')!r}: "
                            f"{message} (the API schema of Kubernetes {declared}, the version "
                            "its fleet declares)",
                            rule=RULE,
                            site=site_id,
                        )
                    )
        return findings

    return check
