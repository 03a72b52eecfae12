"""A site's policies as Kubernetes objects: ValidatingAdmissionPolicy, binding, parameters.

The node applies these with the rest of the slice, so the site's own API server
refuses what CI refuses, also when a technician runs ``kubectl``. For every policy
that applies to the site (its ``match.siteTypes`` / ``siteSelector``, not exempt at
the site as a whole) and is not marked ``enforce: ci-and-node``:

- a ``ValidatingAdmissionPolicy`` ``outpost-<policy>``: the policy's resources as
  ``matchConstraints`` (CREATE and UPDATE), its expressions and messages in the
  API server's CEL (``_translate``), ``failurePolicy: Fail`` (an expression that
  cannot be evaluated refuses, as a run-time error is a violation for Outpost),
  and its app exemptions as a ``matchCondition``: objects labelled
  ``outpost/app: <app>`` in that app's namespaces at this site are not checked;
- a ``ValidatingAdmissionPolicyBinding`` of the same name: ``validationActions``
  ``[Deny]`` for ``severity: deny``, ``[Warn, Audit]`` for ``warn``; a
  ``namespaceSelector`` that leaves out Kubernetes' own namespaces (k3s ships its
  system images by tag from docker.io and re-applies them at every start; Outpost
  does not own them); and, for a policy reading ``site``, ``hardware`` or ``app``,
  a ``paramRef`` to the site's facts with ``parameterNotFoundAction: Deny`` (fail
  closed: facts deleted by hand refuse what those policies match, new Pods included,
  until the agent's next tick puts them back as drift — never admit everything);
- one ``ConfigMap`` ``outpost-system/outpost-policy-facts`` holding the facts those
  policies read (see ``_translate`` for its keys and typed values), and for each
  app the namespaces its objects are rendered into;
- a policy and binding of that name that check the facts ConfigMap itself (every
  entry typed) and use it as their parameter. They are also the anchor that keeps
  the API server resolving ConfigMap parameters: Kubernetes up to at least v1.36.3
  stops the ConfigMap parameter informer for good (until the API server restarts)
  once no binding with a ConfigMap ``paramKind`` is left for a second, after which
  every binding with ``parameterNotFoundAction: Deny`` refuses every request it
  matches (kubernetes/kubernetes#130887, #133827), or judges by the parameters it
  held when it stopped. Reproduced on the test control plane (v1.36.3) with kubectl:
  delete the policies and the facts and apply them again, and every matched request
  is refused with "no params found"; delete the one policy reading facts, change the
  facts, apply it again, and it judges by the old facts. With the anchor in place,
  neither happens. The anchor is part of every site's export, changes only with
  Outpost, and the apply never withdraws it (``node/apply/order.py``), so removing
  the last policy that reads facts, or re-creating its binding, never leaves the
  informer without a user.

A policy kept from the API server is listed with the reason (``SiteExport.kept``),
never silently left out; a policy that should be exported but cannot be is a
``PolicyError`` (loading it already reported it as an error finding at its line).

Exemptions expire by date: the caller passes ``today`` (the node reads its clock,
so an expired exemption leaves the binding at the next tick's drift check).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from reconciler.core.errors import Mark, PolicyError
from reconciler.core.policy._facts import site_status
from reconciler.core.policy._load import (
    ENFORCE_CI_AND_NODE,
    Policy,
    PolicySet,
    load_policies,
    policy_documents,
)
from reconciler.core.policy._translate import (
    APP_LABEL,
    APP_MARKER,
    Admission,
    FactPath,
)

__all__ = [
    "ADMISSION_API",
    "FACTS_NAME",
    "FACTS_NAMESPACE",
    "SYSTEM_NAMESPACES",
    "SiteExport",
    "admission_objects",
    "export_rendered_site",
    "export_site",
    "facts_data",
    "to_json",
    "to_yaml",
]

ADMISSION_API = "admissionregistration.k8s.io/v1"
FACTS_NAME = "outpost-policy-facts"
# The agent's own namespace (its inventory lives there); it exists before any stage.
FACTS_NAMESPACE = "outpost-system"
# Kubernetes' and k3s's own namespaces: not Outpost's to police (see the module docstring).
SYSTEM_NAMESPACES = ("kube-node-lease", "kube-public", "kube-system")
_MANAGED_BY = "app.kubernetes.io/managed-by"
_SITE_LABEL = "outpost/site"
_SOURCE_ANNOTATION = "outpost.io/policy-file"
_OPERATIONS = ["CREATE", "UPDATE"]


@dataclass(frozen=True)
class SiteExport:
    """The admission objects of one site, and the policies kept from its API server."""

    site: str
    objects: tuple[dict[str, Any], ...]
    exported: tuple[str, ...]
    kept: tuple[tuple[str, str], ...]  # (policy, why it is not at the API server)


def object_name(policy: str) -> str:
    return f"outpost-{policy}"


_TYPED = "['b:', 'i:', 'd:', 's:', 'n:', 'm:', 'l:']"


def _anchor(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """The policy and binding that check the facts ConfigMap (see the module docstring)."""
    metadata = {"name": FACTS_NAME, "labels": dict(labels)}
    return [
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": metadata,
            "spec": {
                "failurePolicy": "Fail",
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["*"],
                            "operations": list(_OPERATIONS),
                            "resources": ["configmaps"],
                            "resourceNames": [FACTS_NAME],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": (
                            "!has(object.data) || object.data.all(k, k.startsWith("
                            f"'{APP_MARKER}') || {_TYPED}.exists(p, object.data[k].startsWith(p)))"
                        ),
                        "message": (
                            "every entry of the policy facts is typed (b:, i:, d:, s:, n:, m:, "
                            "l:); the Outpost agent writes this ConfigMap, do not edit it"
                        ),
                    }
                ],
            },
        },
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {**metadata, "labels": dict(labels)},
            "spec": {
                "policyName": FACTS_NAME,
                "validationActions": ["Deny"],
                "paramRef": {
                    "namespace": FACTS_NAMESPACE,
                    "name": FACTS_NAME,
                    "parameterNotFoundAction": "Allow",
                },
                "matchResources": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": FACTS_NAMESPACE}
                    }
                },
            },
        },
    ]


# --------------------------------------------------------------------------- facts


def _encode(value: Any) -> str:
    """A fact as a typed string: the prefix tells the API server's CEL its type."""
    if value is None:
        return "n:"
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, int):
        return f"i:{value}"
    if isinstance(value, float):
        return f"d:{value!r}"
    if isinstance(value, Mapping):
        return "m:"
    if isinstance(value, list):
        return "l:"
    return f"s:{value}"


def _walk(root: Any, path: Sequence[str]) -> Iterable[tuple[int, Any]]:
    """(depth, value) of each prefix of ``path`` that exists in ``root``."""
    node = root
    for depth, key in enumerate(path, start=1):
        if not isinstance(node, Mapping) or key not in node:
            return
        node = node[key]
        yield depth, node


def facts_data(
    facts: Iterable[FactPath],
    *,
    site: Mapping[str, Any],
    hardware: Mapping[str, Any],
    apps: Mapping[str, Mapping[str, Any]],
    app_namespaces: Mapping[str, Iterable[str]],
) -> dict[str, str]:
    """The parameter ConfigMap's ``data`` for ``facts``: every existing prefix of each path.

    ``site`` is the Site document with its computed ``status``; ``apps`` maps app
    names to App documents, ``app_namespaces`` app names to the namespaces their
    objects are rendered into ('' for cluster-scoped objects).
    """
    data: dict[str, str] = {}
    wanted = sorted(set(facts))
    for fact in wanted:
        if fact.root == "app":
            for name, body in apps.items():
                for depth, value in _walk(body, fact.path):
                    data[".".join(("app", name, *fact.path[:depth]))] = _encode(value)
        else:
            root = site if fact.root == "site" else hardware
            for depth, value in _walk(root, fact.path):
                data[".".join((fact.root, *fact.path[:depth]))] = _encode(value)
    if any(f.root == "app" for f in wanted):
        for name, namespaces in app_namespaces.items():
            data[APP_MARKER + name] = ",".join(sorted(set(namespaces)))
    return dict(sorted(data.items()))


# --------------------------------------------------------------------------- objects


def _exemption_condition(pairs: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    """A matchCondition leaving out the objects of exempt apps, (app, namespace) pairs."""
    listed = sorted({f"{app}@{namespace}" for app, namespace in pairs})
    if not listed:
        return None
    quoted = ", ".join(f"'{item}'" for item in listed)
    return {
        "name": "outpost-exemptions",
        "expression": (
            f"!(has(object.metadata.labels) && '{APP_LABEL}' in object.metadata.labels"
            f" && (object.metadata.labels['{APP_LABEL}'] + '@'"
            " + (has(object.metadata.namespace) ? object.metadata.namespace : ''))"
            f" in [{quoted}])"
        ),
    }


def admission_objects(
    policy: Policy,
    admission: Admission,
    *,
    name: str,
    labels: Mapping[str, str],
    params: tuple[str, str] | None,
    exempt: Iterable[tuple[str, str]] = (),
    match_resources: Mapping[str, Any] | None = None,
    validation_actions: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding for ``policy``.

    ``params`` is the (namespace, name) of the facts ConfigMap, used when the policy
    reads Outpost-only variables; ``exempt`` (app, namespace) pairs whose objects
    are left out; ``match_resources`` the binding's selection (default: every
    namespace but Kubernetes' own); ``validation_actions`` default from severity.
    """
    annotations = {_SOURCE_ANNOTATION: policy.doc.path}
    metadata = {"name": name, "labels": dict(labels), "annotations": annotations}
    validations = []
    for check in admission.validations:
        entry: dict[str, Any] = {"expression": check.expression, "message": check.message}
        if check.message_expression:
            entry["messageExpression"] = check.message_expression
        validations.append(entry)
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": list(groups),
                    "apiVersions": ["*"],
                    "operations": list(_OPERATIONS),
                    "resources": list(resources),
                }
                for groups, resources in admission.resource_rules
            ]
        },
        "validations": validations,
    }
    if admission.variables:
        spec["variables"] = [{"name": n, "expression": e} for n, e in admission.variables]
    condition = _exemption_condition(exempt)
    if condition is not None:
        spec["matchConditions"] = [condition]
    binding: dict[str, Any] = {
        "policyName": name,
        "validationActions": list(
            validation_actions or (["Deny"] if policy.severity == "deny" else ["Warn", "Audit"])
        ),
        "matchResources": dict(
            match_resources
            or {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": list(SYSTEM_NAMESPACES),
                        }
                    ]
                }
            }
        ),
    }
    if admission.needs_params:
        if params is None:
            raise PolicyError(
                f"policy {policy.name} reads {', '.join(sorted(map(str, admission.facts)))} "
                "but no parameter resource was given for it",
                mark=policy.doc.mark(),
            )
        spec["paramKind"] = {"apiVersion": "v1", "kind": "ConfigMap"}
        binding["paramRef"] = {
            "namespace": params[0],
            "name": params[1],
            "parameterNotFoundAction": "Deny",
        }
    return [
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": metadata,
            "spec": spec,
        },
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {
                **metadata,
                "labels": dict(labels),
                "annotations": dict(annotations),
            },
            "spec": binding,
        },
    ]


def _why_kept(policy: Policy) -> str:
    if policy.enforce == ENFORCE_CI_AND_NODE:
        because = (
            f" (the API server could not: {policy.not_exportable})" if policy.not_exportable else ""
        )
        return f"marked enforce: ci-and-node{because}"
    return policy.not_exportable


def export_site(
    policies: PolicySet,
    *,
    site_id: str,
    site: Mapping[str, Any],
    hardware: Mapping[str, Any],
    apps: Mapping[str, Mapping[str, Any]],
    app_namespaces: Mapping[str, Iterable[str]],
    strict: bool = True,
) -> SiteExport:
    """The admission objects for one site (see the module docstring).

    ``site`` is the Site document with its computed ``status`` (what CEL sees as
    ``site``), ``hardware`` the Hardware document, ``apps`` the App documents the
    site runs by name, ``app_namespaces`` the namespaces of each app's objects.
    Raises PolicyError for a policy that applies here, is not marked ci-and-node
    and cannot be expressed for the API server; with ``strict=False`` (re-applying
    a revision the node accepted before, say after an upgrade of Outpost) such a
    policy is listed in ``kept`` instead, so a rollback is never refused.
    """
    spec = site.get("spec") if isinstance(site.get("spec"), Mapping) else {}
    metadata = site.get("metadata") if isinstance(site.get("metadata"), Mapping) else {}
    assert isinstance(spec, Mapping) and isinstance(metadata, Mapping)
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), Mapping) else {}
    assert isinstance(labels, Mapping)
    site_type = str(spec.get("type", ""))
    own_labels = {_MANAGED_BY: "outpost", _SITE_LABEL: site_id}
    objects: list[dict[str, Any]] = []
    exported: list[str] = []
    kept: list[tuple[str, str]] = []
    facts: set[FactPath] = set()
    for policy in policies.policies:
        if not policy.matches_site(site_type, labels):
            kept.append((policy.name, "does not apply to this site (match.siteTypes/siteSelector)"))
            continue
        whole = [e for e in policy.exemptions if e.apps is None and e.covers(site_id, None)]
        if whole:
            kept.append((policy.name, f"this site is exempt: {whole[0].reason} ({whole[0].mark})"))
            continue
        if policy.enforce == ENFORCE_CI_AND_NODE:
            kept.append((policy.name, _why_kept(policy)))
            continue
        if policy.admission is None and not strict:
            kept.append((policy.name, f"cannot be exported: {policy.not_exportable}"))
            continue
        if policy.admission is None:
            raise PolicyError(
                f"policy {policy.name} applies to site {site_id} but the API server cannot "
                f"enforce it: {policy.not_exportable}; mark it `enforce: ci-and-node` or "
                "rewrite it",
                mark=policy.doc.mark("spec"),
            )
        exempt = [
            (app, namespace)
            for exemption in policy.exemptions
            if exemption.apps is not None
            and (exemption.sites is None or site_id in exemption.sites)
            for app in sorted(exemption.apps)
            for namespace in app_namespaces.get(app, ())
        ]
        if object_name(policy.name) == FACTS_NAME:
            raise PolicyError(
                f"a policy named {policy.name!r} would be exported as {FACTS_NAME}, the name of "
                "the site's policy facts; rename the policy",
                mark=policy.doc.mark("metadata", "name"),
            )
        objects += admission_objects(
            policy,
            policy.admission,
            name=object_name(policy.name),
            labels=own_labels,
            params=(FACTS_NAMESPACE, FACTS_NAME),
            exempt=exempt,
        )
        facts |= policy.admission.facts
        exported.append(policy.name)
    # Always, even with nothing exported: the anchor must outlive every policy that reads
    # facts, including the last one a commit removes (see the module docstring).
    facts_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": FACTS_NAME, "namespace": FACTS_NAMESPACE, "labels": dict(own_labels)},
        "data": facts_data(
            facts, site=site, hardware=hardware, apps=apps, app_namespaces=app_namespaces
        ),
    }
    objects[:0] = [facts_map, *_anchor(own_labels)]
    return SiteExport(site_id, tuple(objects), tuple(exported), tuple(kept))


def _body(doc: Any) -> dict[str, Any]:
    inner = getattr(doc, "doc", doc)
    body = getattr(inner, "body", inner)
    return dict(body) if isinstance(body, Mapping) else {}


def export_rendered_site(
    repo: Any, site_id: str, rendered: Any, *, today: date, strict: bool = True
) -> SiteExport:
    """``export_site`` for a site rendered from ``repo``: the node's and the CLI's entry point.

    Loads the policies (``today`` decides which exemptions still hold), computes
    ``site.status`` from the rendered objects as the policy check does, and takes
    each app's namespaces from its rendered objects. Raises PolicyError when the
    tree has no policies or one cannot be exported.
    """
    documents, problems = policy_documents(repo)
    if problems:
        first = problems[0]
        raise PolicyError(
            f"policies cannot be exported: {first.message}", mark=Mark(first.path, first.line)
        )
    policies = load_policies(documents, today=today)
    folder = repo.site(site_id)
    site_body = _body(folder.site)
    hardware_body = (
        _body(folder.hardware)
        if folder.hardware is not None
        else {
            "apiVersion": "outpost/v1",
            "kind": "Hardware",
            "metadata": {"name": site_id},
            "spec": {"nodes": []},
        }
    )
    apps = {i.name: _body(i.app) for i in getattr(rendered, "apps", ())}
    bodies = [o.body for o in rendered.objects]
    status, _ = site_status(bodies, hardware_body, (_body(vm) for vm in folder.vms), apps.values())
    namespaces: dict[str, set[str]] = {name: set() for name in apps}
    for obj in rendered.objects:
        if obj.app in namespaces:
            namespaces[obj.app].add(str((obj.body.get("metadata") or {}).get("namespace") or ""))
    return export_site(
        policies,
        site_id=site_id,
        site={**site_body, "status": status},
        hardware=hardware_body,
        apps=apps,
        app_namespaces=namespaces,
        strict=strict,
    )


# --------------------------------------------------------------------------- output


def to_yaml(export: SiteExport) -> str:
    """The objects as a YAML stream (``kubectl apply -f -`` reads it), with a header saying
    which policies are exported and which stay with CI and the node, and why."""
    from reconciler.core.render import dump_yaml

    header = [f"# outpost policy export: site {export.site}"]
    header += [f"# at the API server: {name}" for name in export.exported]
    header += [f"# CI and node only: {name}: {why}" for name, why in export.kept]
    documents = ["---\n" + dump_yaml(obj) for obj in export.objects]
    return "\n".join(header) + "\n" + "".join(documents)


def to_json(export: SiteExport) -> str:
    """The export as JSON: site, exported and kept policies (with the reason), objects."""
    import json

    data = {
        "site": export.site,
        "exported": list(export.exported),
        "kept": [{"policy": name, "reason": why} for name, why in export.kept],
        "objects": list(export.objects),
    }
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
