"""Check one site's rendered slice against the policies: objects, Outpost documents, secrets.

`check_site` is CI's per-site step and `check_rendered_site` the node's re-check of its
own slice before it applies it (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from reconciler.core.errors import Mark
from reconciler.core.findings import Finding
from reconciler.core.labels import without_site_label
from reconciler.core.loader import Document
from reconciler.core.memo import ByIdentity
from reconciler.core.policy._evaluate import (
    _FAILURE,
    PolicyCache,
    _digest,
    evaluate,
)
from reconciler.core.policy._facts import site_status
from reconciler.core.policy._load import (
    Digests,
    PolicySet,
    load_policies,
    policy_documents,
)

OUTPOST_GROUP = "outpost"
RESERVED_ANNOTATION = "outpost/source"
SOPS_SOURCE = "sops"
RULE_ENGINE = "policy"


class ObjectLike(Protocol):
    """A rendered object as ``reconciler.core.render`` produces it."""

    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def origin(self) -> Mark: ...
    @property
    def app(self) -> str | None: ...


class SecretRefLike(Protocol):
    """A SOPS secret file of the site, named but not decrypted."""

    @property
    def path(self) -> str: ...
    @property
    def origin(self) -> Mark: ...
    @property
    def key(self) -> Any: ...


class RenderedLike(Protocol):
    """A rendered site: its objects (and, optionally, ``secret_refs``)."""

    @property
    def objects(self) -> Sequence[ObjectLike]: ...


@dataclass
class _Subject:
    """One thing a policy looks at: its body, where it came from, which app it belongs to."""

    body: Mapping[str, Any]
    origin: Mark
    app: str | None
    named: str | None = None  # how findings name it; None: kind, namespace and name
    digest: bytes | None = None
    projections: dict[tuple[tuple[str, ...], ...], bytes] | None = None

    def projected(self, paths: tuple[tuple[str, ...], ...]) -> bytes:
        """The digest of what a policy reading only ``paths`` of the body sees (`_project`)."""
        if self.projections is None:
            self.projections = {}
        found = self.projections.get(paths)
        if found is None:
            found = self.projections[paths] = _digest(_project(self.body, paths))
        return found

    @property
    def label(self) -> str:
        return self.named if self.named is not None else _label(self.body)


_ABSENT = "\x00absent"


def _project(body: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> list[Any]:
    """What selecting each of ``paths`` from ``body`` gives, step by step.

    For each path: how many steps succeeded, and either the value reached or, where a
    step found no such key in a map, a marker. A step that meets a list or a scalar
    records that value, so an expression's error (no such key, no such overload) is
    the same for two bodies with the same projection, as is its result.
    """
    out: list[Any] = []
    for path in paths:
        value: Any = body
        depth = 0
        for key in path:
            if not isinstance(value, Mapping):
                break
            if key not in value:
                value = _ABSENT
                break
            value = value[key]
            depth += 1
        out.append((depth, value))
    return out


def _group_of(body: Mapping[str, Any]) -> str:
    return str(body.get("apiVersion", "")).rpartition("/")[0]


def _label(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = str(metadata.get("name", "?"))
    namespace = metadata.get("namespace")
    return (
        f"{body.get('kind', '?')} {namespace}/{name}"
        if namespace
        else f"{body.get('kind', '?')} {name}"
    )


def _body_and_mark(doc: Any, fallback: str) -> tuple[dict[str, Any], Mark]:
    """Accept a loader Document, a model wrapper with ``.doc``, or a plain dict."""
    inner = getattr(doc, "doc", doc)
    if isinstance(inner, Document):
        return inner.body, inner.mark("metadata", "name")
    if isinstance(inner, Mapping):
        return dict(inner), Mark(fallback)
    return {}, Mark(fallback)


# What policies see of a rendered object, and its digest, by the object's shape: the
# objects of one shape differ only in the site label policies do not see
# (``RenderedObject.shape``), so every site after the first gets them for free.
_VIEWS: dict[Any, tuple[dict[str, Any], bytes, bool]] = {}  # and whether it claims a source
_VIEWS_MAX = 4096

# ``_body_and_mark`` of each App: every site running an app passes the same App.
_APPS = ByIdentity(256)


def _app_body_and_mark(app: Any, name: str) -> tuple[dict[str, Any], Mark]:
    found: tuple[dict[str, Any], Mark] | None = _APPS.get(app)
    if found is None:
        found = _APPS.put(app, _body_and_mark(app, f"apps/{name}/app.yaml"))
    return found


def _secret_stub(ref: SecretRefLike) -> dict[str, Any]:
    key = ref.key
    metadata: dict[str, Any] = {
        "name": str(getattr(key, "name", "")),
        "annotations": {RESERVED_ANNOTATION: SOPS_SOURCE, "outpost/file": ref.path},
    }
    namespace = getattr(key, "namespace", "")
    if namespace:
        metadata["namespace"] = str(namespace)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


def _claims_source(body: Mapping[str, Any]) -> bool:
    metadata = body.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return isinstance(annotations, Mapping) and RESERVED_ANNOTATION in annotations


def check_site(
    policies: PolicySet,
    rendered_site: RenderedLike,
    site_doc: Any,
    hardware_doc: Any,
    apps: Mapping[str, Any],
    *,
    vms: Iterable[Any] = (),
    cache: PolicyCache | None = None,
    digests: Digests | None = None,
) -> list[Finding]:
    """Every policy finding for one site.

    ``digests``, when given, receives each rendered object's body as policies see it
    (without the site label) and its digest, by ``id`` of the rendered body: a further
    check of the same objects (``ObjectCheck``) keys its own cache on them for free.

    ``site_doc``, ``hardware_doc``, ``vms`` and the values of ``apps`` (app name →
    App) may be loader Documents, model wrappers (``Site``, ``Hardware``, ``App``)
    or plain dicts; Documents give findings their file:line. ``rendered_site`` needs
    ``objects`` (each with ``body``, ``origin``, ``app``) and may have
    ``secret_refs``. Pass one ``cache`` for all sites of a run to check identical
    objects once. Findings carry the object's origin, ``rule`` = policy name and
    ``site`` = the site id; load-time findings are not repeated here.
    """
    cache = cache if cache is not None else PolicyCache()
    site_body, site_mark = _body_and_mark(site_doc, "site.yaml")
    site_id = str((site_body.get("metadata") or {}).get("name", ""))
    if hardware_doc is None:
        hardware_body: dict[str, Any] = {
            "apiVersion": "outpost/v1",
            "kind": "Hardware",
            "metadata": {"name": site_id},
            "spec": {"nodes": []},
        }
        hardware_mark = Mark(f"sites/{site_id}/hardware.yaml")
    else:
        hardware_body, hardware_mark = _body_and_mark(
            hardware_doc, f"sites/{site_id}/hardware.yaml"
        )
    spec = site_body.get("spec") if isinstance(site_body.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    metadata = site_body.get("metadata") if isinstance(site_body.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), Mapping) else {}
    assert isinstance(labels, Mapping)
    site_type = str(spec.get("type", ""))

    active = [p for p in policies.policies if p.matches_site(site_type, labels)]
    findings: list[Finding] = []
    if not active:
        return findings
    active_ids = {p.index for p in active}

    app_bodies: dict[str, tuple[dict[str, Any], Mark]] = {
        name: _app_body_and_mark(app, name) for name, app in apps.items()
    }
    vm_items = [_body_and_mark(vm, f"sites/{site_id}/vms") for vm in vms]

    subjects: list[_Subject] = []
    bodies: list[Mapping[str, Any]] = []
    shapes: list[Any] = []
    for obj in rendered_site.objects:
        body = obj.body
        bodies.append(body)
        shape = getattr(obj, "shape", None)
        shapes.append(shape)
        if shape is None:
            subjects.append(_Subject(without_site_label(body, site_id), obj.origin, obj.app))
            claims = _claims_source(body)
        else:
            known = _VIEWS.get(shape)
            if known is None:
                view = without_site_label(body, site_id)
                if len(_VIEWS) >= _VIEWS_MAX:
                    _VIEWS.clear()
                known = _VIEWS[shape] = (view, _digest(view), _claims_source(body))
            subjects.append(_Subject(known[0], obj.origin, obj.app, digest=known[1]))
            claims = known[2]
        if claims:
            findings.append(
                Finding.at(
                    obj.origin,
                    f"{_label(body)}: the annotation {RESERVED_ANNOTATION!r} is reserved; Outpost "
                    "sets it on secrets it decrypts from sites/<id>/secrets/*.sops.yaml. Remove it "
                    "(and encrypt the Secret with `outpost secrets` if it holds secrets)",
                    rule=RULE_ENGINE,
                    site=site_id,
                )
            )
    for ref in getattr(rendered_site, "secret_refs", ()) or ():
        stub = _secret_stub(ref)
        subjects.append(_Subject(stub, ref.origin, None, _label(stub)))

    status, problems = site_status(
        bodies,
        hardware_body,
        (b for b, _ in vm_items),
        (b for b, _ in app_bodies.values()),
        shapes=shapes,
    )
    for problem in problems:
        subject = subjects[problem.index]
        findings.append(
            Finding.at(
                subject.origin,
                f"{subject.label}: {problem.message}",
                rule=RULE_ENGINE,
                site=site_id,
            )
        )
    site_var = {**site_body, "status": status}
    status_var = {"status": status}  # ``site`` of a policy that reads only site.status
    subjects.append(_Subject(site_body, site_mark, None, f"Site {site_id}"))
    subjects.append(_Subject(hardware_body, hardware_mark, None, f"Hardware {site_id}"))
    for body, mark in vm_items:
        subjects.append(_Subject(body, mark, None, _label(body)))
    for name, (body, mark) in sorted(app_bodies.items()):
        subjects.append(_Subject(body, mark, name, f"App {name}"))

    # Digests of the site-level variables, computed only if some policy needs them.
    lazy: dict[str, bytes] = {}

    def digest_of(variable: str) -> bytes:
        if variable not in lazy:
            values = {"site": site_var, "status": status_var, "hardware": hardware_body}
            lazy[variable] = _digest(values[variable])
        return lazy[variable]

    for subject in subjects:
        matching = [
            p
            for p in policies.for_kind(_group_of(subject.body), str(subject.body.get("kind", "")))
            if p.index in active_ids and not (p.exemptions and p.exempt(site_id, subject.app))
        ]
        if not matching:
            continue
        app_entry = app_bodies.get(subject.app) if subject.app else None
        app_body: dict[str, Any] = app_entry[0] if app_entry else {}
        variables = {
            "object": subject.body,
            "site": site_var,
            "hardware": hardware_body,
            "app": app_body,
        }
        for policy in matching:
            paths = policy.object_paths
            if paths is not None:
                seen: bytes | None = subject.projected(paths)
            elif policy.reads_object:
                if subject.digest is None:
                    subject.digest = _digest(subject.body)
                seen = subject.digest
            else:
                seen = None
            site_of = "status" if policy.site_status_only else "site"
            key = (
                policy.index,
                seen,
                digest_of(site_of) if "site" in policy.uses else None,
                digest_of("hardware") if "hardware" in policy.uses else None,
                cache.app_digest(app_body) if "app" in policy.uses else None,
            )
            outcome = cache.results.get(key)
            if outcome is None:
                cache.misses += 1
                # Only what the policy reads is converted into CEL values: the key above
                # already trusts ``uses``, and converting a site's hardware for policies
                # that never read it was most of the binding cost.
                # A policy that reads only site.status gets only that as ``site``, and one
                # that never reads ``object`` is not given it (both cached to match, above).
                names = ("object", *sorted(policy.uses))[0 if policy.reads_object else 1 :]
                needed = {
                    name: status_var if site_of == "status" and name == "site" else variables[name]
                    for name in names
                }
                outcome = evaluate(policy, cache.bindings.bind(needed), variables=needed)
                cache.results[key] = outcome
            else:
                cache.hits += 1
            for kind, message in outcome:
                text = f"{subject.label}: {message}"
                if kind == _FAILURE:
                    text += (
                        f" (policy {policy.name} cannot decide, so it counts as a violation; "
                        f"{policy.doc.path})"
                    )
                findings.append(
                    Finding.at(
                        subject.origin,
                        text,
                        severity=policy.finding_severity,
                        rule=policy.name,
                        site=site_id,
                    )
                )
    if digests is not None:
        for obj, subject in zip(rendered_site.objects, subjects, strict=False):
            if subject.digest is None:
                subject.digest = _digest(subject.body)
            digests[id(obj.body)] = (subject.body, subject.digest)
    return findings


def check_rendered_site(
    repo: Any, site_id: str, rendered: RenderedLike, *, today: date
) -> list[Finding]:
    """The node's re-check of its own slice: load policies from ``repo``, check ``rendered``.

    Returns load findings (a policy file that does not load, an expression that does
    not compile, a stale exemption) plus the site's findings. Raises ``PolicyError``
    when the tree has no policies at all: the node must not apply an unchecked slice.
    A finding with severity error means: do not apply this commit.
    """
    documents, findings = policy_documents(repo)
    policies = load_policies(documents, today=today)
    findings.extend(policies.findings)
    findings += check_folder(policies, rendered, repo.site(site_id))
    return findings


def check_folder(
    policies: PolicySet,
    rendered: RenderedLike,
    folder: Any,
    *,
    cache: PolicyCache | None = None,
    digests: Digests | None = None,
) -> list[Finding]:
    """`check_site` for a site folder of the repository (its site, hardware and VMs) and
    its rendered slice (the apps it runs)."""
    apps = {instance.name: instance.app for instance in getattr(rendered, "apps", ())}
    return check_site(
        policies,
        rendered,
        folder.site.doc,
        folder.hardware.doc if folder.hardware is not None else None,
        apps,
        vms=folder.vms,
        cache=cache,
        digests=digests,
    )
