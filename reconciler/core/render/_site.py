"""``render_site``: one pure function from (tree, site id) to the site's objects.

The steps, in order (each error names the file:line to change):

1. the site folder (site.yaml, hardware.yaml, vms/, overrides.yaml, secrets/);
2. the site's fleets; each fleet's selector must match the site's labels. This
   is a guard on membership, enforced here and not only in CI because the node
   renders for itself: a signer allowed to edit ``sites/de-*`` must not be able
   to enrol a German store in a fleet meant for other stores by listing it;
3. the apps: from each fleet, then from the site (the site's version wins).
   Two fleets that give one app different versions, or contradicting values,
   are an error naming both lines: no fleet silently outranks another;
4. per app: version and images, values layered and checked against the
   parameter schema, placeholders filled, namespace set, the site's patches
   applied (after placeholders, before labels, so a patch cannot strip the
   labels Outpost owns), standard labels, device placement;
5. the site's VMs to KubeVirt;
6. a Namespace for every namespace the slice uses and does not define;
7. the encrypted secrets as references (render never runs sops);
8. one stable order: apply order by kind, then group, kind, namespace, name.

Nothing here touches the network, the clock or the cluster.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.errors import Mark, RenderError
from reconciler.core.labels import MANAGED_BY, MANAGED_BY_LABEL, SITE_LABEL, labels_along
from reconciler.core.loader import Document, YamlDocument, parse_yaml
from reconciler.core.memo import ByIdentity
from reconciler.core.model import (
    App,
    AppAssignment,
    Repository,
    SiteFolder,
    SiteId,
    selector_matches,
)
from reconciler.core.render._params import (
    Layer,
    Scope,
    fill,
    from_snapshot,
    merge_layers,
    placeholder_names,
    snapshot,
    used_parameters,
    validate_values,
)
from reconciler.core.render._patch import PatchError, json_patch, merge_patch
from reconciler.core.render._placement import (
    POD_TEMPLATE_PATHS,
    check_requirements,
    node_labels,
    place,
    placement_key,
    pod_template_metadata,
)
from reconciler.core.render._types import (
    CLUSTER_SCOPED_KINDS,
    AppInstance,
    ObjectKey,
    RenderedObject,
    RenderedSite,
    SecretRef,
)
from reconciler.core.render._vms import render_vm

APP_NAME = "app.kubernetes.io/name"
APP_VERSION = "app.kubernetes.io/version"
APP_LABEL = "outpost/app"
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(text: str) -> str:
    """``text`` as a valid label value (``2.3.0+build.1`` → ``2.3.0_build.1``)."""
    value = _LABEL_VALUE_BAD.sub("_", text)[:63]
    return value.strip("_.-")


@dataclass
class _Planned:
    """An app on its way to this site: the assignments that decide version and values."""

    name: str
    version: str
    version_from: AppAssignment
    fleet_layers: list[AppAssignment] = field(default_factory=list)
    site: AppAssignment | None = None


def _first_conflict(a: Any, b: Any, at: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) & set(b)):
            found = _first_conflict(a[key], b[key], (*at, str(key)))
            if found is not None:
                return found
        return None
    return None if a == b else at


def _check_version_text(assignment: AppAssignment) -> None:
    """``version: 1.10`` is the number 1.1 to YAML; a version must be written as a string."""
    node: Any = assignment.source.body
    for key in (*assignment.at, "version"):
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, str):
        raise RenderError(
            f"the version of app {assignment.app!r} must be a quoted string "
            f'(version: "1.10", not version: 1.10); found {node!r}',
            mark=assignment.source.mark(*assignment.at, "version"),
        )


def _plan(repo: Repository, folder: SiteFolder, sources: set[str]) -> dict[str, _Planned]:
    site = folder.site
    planned: dict[str, _Planned] = {}
    listed = site.doc.spec.get("fleets")
    if listed is not None and not isinstance(listed, list):
        raise RenderError(
            f"spec.fleets of site {folder.id!r} must be a list of fleet names; found {listed!r}",
            mark=site.doc.mark("spec", "fleets"),
        )
    for index, fleet_name in enumerate(site.fleets):
        fleet = repo.fleet(fleet_name)
        if fleet is None:
            raise RenderError(
                f"site {folder.id!r} joins fleet {fleet_name!r}, but fleets/{fleet_name}.yaml "
                "does not exist",
                mark=site.doc.mark("spec", "fleets", index),
            )
        sources.add(fleet.doc.path)
        if not selector_matches(fleet.selector, site.labels):
            raise RenderError(
                f"site {folder.id!r} lists fleet {fleet_name!r}, but the fleet's selector "
                f"({fleet.doc.mark('spec', 'selector')}) does not match the site's labels "
                f"{dict(sorted(site.labels.items()))}; membership needs both",
                mark=site.doc.mark("spec", "fleets", index),
            )
        for assignment in fleet.apps:
            _check_version_text(assignment)
            have = planned.get(assignment.app)
            if have is None:
                planned[assignment.app] = _Planned(
                    assignment.app, assignment.version, assignment, [assignment]
                )
                continue
            if have.version != assignment.version:
                raise RenderError(
                    f"fleets disagree on app {assignment.app!r} for site {folder.id!r}: "
                    f"version {assignment.version} here, version {have.version} at "
                    f"{have.version_from.mark}; assign the app in one fleet or in site.yaml",
                    mark=assignment.mark,
                )
            for other in have.fleet_layers:
                conflict = _first_conflict(other.values, assignment.values)
                if conflict is not None:
                    where = ".".join(conflict)
                    also = other.source.mark(*other.at, "values", *conflict)
                    raise RenderError(
                        f"fleets disagree on value {where} of app {assignment.app!r} for site "
                        f"{folder.id!r} (also set at {also}); "
                        "set it in one fleet, or in site.yaml",
                        mark=assignment.source.mark(*assignment.at, "values", *conflict),
                    )
            have.fleet_layers.append(assignment)
    for assignment in site.apps:
        _check_version_text(assignment)
        have = planned.get(assignment.app)
        if have is None:
            planned[assignment.app] = _Planned(assignment.app, assignment.version, assignment)
            have = planned[assignment.app]
        have.version = assignment.version
        have.version_from = assignment
        have.site = assignment
    return planned


def _layers(plan: _Planned, app: App, overrides: Document | None) -> tuple[list[Layer], list[Any]]:
    """The app's value layers, lowest first, and the site's patches of its objects."""
    layers = [Layer(app.defaults, app.doc, ("spec", "defaults"), "app defaults")]
    for assignment in plan.fleet_layers:
        layers.append(
            Layer(assignment.values, assignment.source, (*assignment.at, "values"), "fleet")
        )
    if plan.site is not None:
        layers.append(Layer(plan.site.values, plan.site.source, (*plan.site.at, "values"), "site"))
    patches: list[Any] = []
    if overrides is not None:
        entry = (overrides.spec.get("apps") or {}).get(plan.name)
        if isinstance(entry, Mapping):
            at = ("spec", "apps", plan.name)
            values = entry.get("values")
            if isinstance(values, Mapping):
                layers.append(Layer(values, overrides, (*at, "values"), "overrides"))
            patches = list(entry.get("patches") or [])
    return layers, patches


def _check_overrides(
    overrides: Document | None, planned: Mapping[str, _Planned], site: str
) -> None:
    if overrides is None:
        return
    for name in overrides.spec.get("apps") or {}:
        if name not in planned:
            running = ", ".join(sorted(planned)) or "none"
            raise RenderError(
                f"overrides for app {name!r}, which site {site!r} does not run "
                f"(it runs: {running}); remove them or assign the app",
                mark=overrides.mark("spec", "apps", name),
            )


def _standard_labels(site: str, app: str | None, version: str | None) -> dict[str, str]:
    labels = {MANAGED_BY_LABEL: MANAGED_BY, SITE_LABEL: site}
    if app is not None:
        labels[APP_LABEL] = app
    return labels


def _label(body: dict[str, Any], site: str, app: str, version: str) -> tuple[tuple[str, ...], ...]:
    """Outpost's labels always win; the app.kubernetes.io name/version only fill gaps,
    because a manifest's selector may already use them for its own component names.

    Returns the paths of the metadata labelled: where `_restamp` sets another site."""
    owned = _standard_labels(site, app, version)
    recommended = {APP_NAME: app, APP_VERSION: label_value(version)}
    body.setdefault("metadata", {})
    paths: list[tuple[str, ...]] = [("metadata",)]
    if pod_template_metadata(body) is not None:
        paths.append((*POD_TEMPLATE_PATHS[body["kind"]], "metadata"))
    spec = body.get("spec")
    job_template = (
        spec.get("jobTemplate")
        if body.get("kind") == "CronJob" and isinstance(spec, dict)
        else None
    )
    if isinstance(job_template, dict) and isinstance(job_template.setdefault("metadata", {}), dict):
        # The Jobs a CronJob creates carry these labels: the site's API server knows
        # them by their app (an app's allow-list or exemption, see core/policy/_export).
        paths.append(("spec", "jobTemplate", "metadata"))
    for path in paths:
        metadata = _at(body, path)
        labels = metadata.get("labels")
        if not isinstance(labels, dict):
            labels = metadata["labels"] = {}
        for key, value in recommended.items():
            labels.setdefault(key, value)
        labels.update(owned)
    return tuple(paths)


def _at(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = body
    for key in path:
        node = node[key]
    return node


def _restamped(
    template: dict[str, Any], paths: tuple[tuple[str, ...], ...], site: str
) -> dict[str, Any]:
    """`_restamp` of a copy of ``template`` that copies only the maps on the way to each
    site label: the rest is ``template``'s own, shared with every other such copy, so
    nothing may change it (a read-only render, ``render_site(shared=True)``)."""
    body = dict(template)
    for path in paths:
        parent, original = body, template
        for key in (*path, "labels"):
            original = original[key]
            child = parent[key]
            if child is original:  # still the template's map: this copy's own from here
                child = parent[key] = dict(child)
            parent = child
        parent[SITE_LABEL] = site
    return body


def _restamp(body: dict[str, Any], paths: tuple[tuple[str, ...], ...], site: str) -> None:
    """The site label at ``paths`` (what `_label` returned for a copy of ``body``) set to
    ``site``: the body is then what `_label` makes of it at that site."""
    for path in paths:
        _at(body, path)["labels"][SITE_LABEL] = site


def _manifest_shape(body: Any, doc: YamlDocument) -> None:
    """RenderError at ``doc``'s line unless ``body`` (filled from it) is a named object
    with a name the API server takes; lines are looked up only for the error."""
    if not isinstance(body, dict):
        raise RenderError(
            "a manifest document must be a Kubernetes object (a map)", mark=doc.mark()
        )
    for key in ("apiVersion", "kind"):
        if not isinstance(body.get(key), str) or not body.get(key):
            raise RenderError(f"the object has no {key}", mark=doc.mark())
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise RenderError("the object has no metadata.name", mark=doc.mark())
    name = metadata["name"]
    if body["apiVersion"].startswith("rbac.authorization.k8s.io/"):
        # RBAC names are path segments (system:aggregate-to-edit): no '/', no '%', not . or ..
        if name and name not in (".", "..") and not set(name) & {"/", "%"}:
            return
        raise RenderError(
            f"{body['kind']} name {name[:80]!r} is not a valid RBAC name (no '/' or '%', "
            "not '.' or '..'); check the placeholders in metadata.name",
            mark=doc.mark("metadata", "name"),
        )
    label = body["kind"] in _LABEL_NAMED and body["apiVersion"] == "v1"
    if not (_DNS_LABEL if label else _DNS_SUBDOMAIN).fullmatch(name) or len(name) > (
        63 if label else 253
    ):
        form = (
            "a DNS label: at most 63 lowercase letters, digits and '-'"
            if label
            else "a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.'"
        )
        raise RenderError(
            f"{body['kind']} name {name[:80]!r} is not a valid Kubernetes name ({form}, "
            "starting and ending with a letter or digit); the API server would refuse it — "
            "check the placeholders in metadata.name",
            mark=doc.mark("metadata", "name"),
        )


# Kubernetes names (apimachinery's IsDNS1123Subdomain / IsDNS1123Label); a Service's and a
# Namespace's name must be a label (it becomes a DNS name of its own).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAMED = frozenset({"Namespace", "Service"})


def _render_app(
    plan: _Planned,
    app: App,
    folder: SiteFolder,
    overrides: Document | None,
    *,
    shared: bool = False,
) -> tuple[AppInstance, list[RenderedObject]]:
    site = folder.site
    site_id = str(folder.id)
    if plan.version not in app.versions:
        have = ", ".join(sorted(app.versions)) or "none"
        raise RenderError(
            f"version {plan.version} of app {app.name!r} is not in apps/{app.name}/app.yaml "
            f"(versions: {have})",
            mark=plan.version_from.source.mark(*plan.version_from.at, "version"),
        )
    if app.required_device_types:
        check_requirements(
            app.name, app.required_device_types, folder.hardware, plan.version_from, site_id
        )
    layers, patches = _layers(plan, app, overrides)
    values = merge_layers(layers)
    properties = app.parameters.get("properties")
    declared = frozenset(properties) if isinstance(properties, Mapping) else frozenset()
    namespace = app.namespace
    scope = Scope(
        app=app.name,
        site=site_id,
        declared=declared,
        values=values,
        builtins={
            "app.name": app.name,
            "app.version": plan.version,
            "app.namespace": namespace,
            "site.name": site_id,
            "site.timezone": site.timezone,
            "site.type": site.type,
        },
        images=app.images(plan.version),
        version=plan.version,
    )
    checked = (plan.version, repr(values))
    if not _CHECKED.seen(app, checked):
        _check_app_values(app, layers, scope)
        _CHECKED.add(app, checked)
    objects: list[RenderedObject] = []
    required = app.required_device_types
    # `place` changes a body by what the key names of the site's hardware.
    placement = placement_key(required, folder.hardware)
    # Without patches a manifest's labelled and placed body is the same at every site with
    # the same key and placement but for the site label: kept once (`_STAMPED`), restamped.
    patched = bool(patches) and overrides is not None
    stamp: list[tuple[RenderedObject, Any]] = []  # to label and place, and what to keep it by
    for doc in app.manifests_for(plan.version):
        names = placeholder_names(doc)
        key = (*checked, tuple((n, v) for n, v in scope.builtins.items() if n in names))
        any_site = "site.name" not in names  # the same at every site with this key
        stamped_key = (*key, placement) if any_site and not patched else None
        stamped = None if stamped_key is None else _STAMPED.get(doc, stamped_key)
        if stamped is not None:
            kept, template, object_key, number, paths = stamped
            if shared:
                body = _restamped(template, paths, site_id)
            else:
                body = from_snapshot(kept)
                _restamp(body, paths, site_id)
        else:
            filled = _FILLED.get(doc, key)
            if filled is None:
                body = _fill_manifest(doc, app, scope)
                # A shape number only for a body without a site label of its own: then
                # the labels `_label` stamps are the only ones that differ between sites.
                shape = None if _has_site_label(body) else next(_SHAPES)
                object_key = ObjectKey.of(body)
                # This site takes the fresh body; another site with the same key gets a
                # copy. A manifest that uses the site's name has a key of its own per site.
                if any_site:
                    _FILLED.put(doc, key, (snapshot(body), object_key, shape))
                number = shape
            else:
                kept, object_key, number = filled
                body = from_snapshot(kept)
        origin = _ORIGINS.get(doc) or _ORIGINS.put(doc, doc.mark())
        obj = RenderedObject(
            object_key,
            body,
            origin,
            app.name,
            source=doc,
            shape=None if number is None else (number, app.name, plan.version, placement),
        )
        objects.append(obj)
        if stamped is None:
            stamp.append((obj, stamped_key))
    objects = _apply_patches(objects, patches, overrides, app.name)
    if patched:  # the patched objects replace the filled ones: all are labelled here
        stamp = [(obj, None) for obj in objects]
    for obj, stamped_key in stamp:
        paths = _label(obj.body, site_id, app.name, plan.version)
        place(obj.body, required, folder.hardware)
        if stamped_key is not None and obj.source is not None:
            number = None if obj.shape is None else obj.shape[0]
            kept = snapshot(obj.body)
            # The template `_restamped` shares with read-only renders: a copy of its own.
            entry = (kept, from_snapshot(kept), obj.key, number, paths)
            _STAMPED.put(obj.source, stamped_key, entry)
    instance = AppInstance(app.name, plan.version, namespace, values, plan.version_from, app)
    return instance, objects


def _check_app_values(app: App, layers: Sequence[Layer], scope: Scope) -> None:
    """The app's values against its parameters, and its parameters against its manifests."""
    if not app.manifests:
        raise RenderError(
            f"app {app.name!r} has no manifests: expected Kubernetes objects in "
            f"apps/{app.name}/manifests/*.yaml (is the folder missing or misnamed?)",
            mark=app.doc.mark(),
        )
    validate_values(scope.values, app.parameters, layers, app.doc)
    manifests = app.manifests_for(scope.version)
    if not manifests and app.source:
        raise RenderError(
            f"app {app.name!r} version {scope.version} comes from a {'/'.join(app.source)} "
            f"source but has no vendored output in apps/{app.name}/manifests/{scope.version}/; "
            f"run `outpost app vendor {app.name} --version {scope.version}` and commit the result",
            mark=app.doc.mark("spec", "versions", scope.version),
        )
    used = used_parameters(manifests, scope)
    if app.source:  # a parameter a newer (or older) vendored version uses is not unused
        used = used | {n.split(".")[0] for doc in app.manifests for n in placeholder_names(doc)}
    for name in sorted(scope.declared - used):
        raise RenderError(
            f"parameter {name!r} of app {app.name!r} is declared but no manifest in "
            f"apps/{app.name}/manifests uses ${{{name}}}; use it or remove it",
            mark=app.doc.mark("spec", "parameters", "properties", name),
        )


def _fill_manifest(doc: YamlDocument, app: App, scope: Scope) -> dict[str, Any]:
    """One manifest with its placeholders filled and its namespace set: before patches and labels.

    A pure function of the manifest, the app's version and values, and the built-ins the
    manifest uses: ``_render_app`` keeps the result per such combination (``_FILLED``),
    and most stores of a fleet run the same combination.
    """
    namespace = app.namespace
    body = fill(doc, scope)
    _manifest_shape(body, doc)
    metadata = body["metadata"]
    if body["kind"] in CLUSTER_SCOPED_KINDS:
        if metadata.get("namespace"):
            raise RenderError(
                f"{body['kind']} is cluster-scoped and cannot have a namespace",
                mark=doc.mark("metadata", "namespace"),
            )
    elif metadata.get("namespace") in (None, ""):
        metadata["namespace"] = namespace
    elif metadata["namespace"] != namespace:
        raise RenderError(
            f"{body['kind']} {metadata['name']!r} sets namespace {metadata['namespace']!r}, "
            f"but app {app.name!r} deploys to namespace {namespace!r} (spec.namespace in "
            "app.yaml); leave metadata.namespace out or use ${app.namespace}",
            mark=doc.mark("metadata", "namespace"),
        )
    shaped: dict[str, Any] = body
    return shaped


class _PerObject:
    """Results per object identity and key, bounded both ways; each entry keeps its object
    alive, so an id is never reused while its results are kept."""

    def __init__(self, objects: int, per_object: int) -> None:
        self.objects = objects
        self.per_object = per_object
        self.entries: dict[int, tuple[object, dict[Any, Any]]] = {}

    def _results(self, obj: object) -> dict[Any, Any] | None:
        entry = self.entries.get(id(obj))
        return entry[1] if entry is not None and entry[0] is obj else None

    def get(self, obj: object, key: Any) -> Any:
        results = self._results(obj)
        return None if results is None else results.get(key)

    def seen(self, obj: object, key: Any) -> bool:
        results = self._results(obj)
        return results is not None and key in results

    def put(self, obj: object, key: Any, value: Any) -> Any:
        results = self._results(obj)
        if results is None:
            if len(self.entries) >= self.objects:
                del self.entries[next(iter(self.entries))]
            results = {}
            self.entries[id(obj)] = (obj, results)
        if len(results) >= self.per_object:
            del results[next(iter(results))]
        results[key] = value
        return value

    def add(self, obj: object, key: Any) -> None:
        self.put(obj, key, True)


# Apps whose values passed their checks, by (version, values); manifests filled by
# (version, values, the built-ins the manifest uses).
_CHECKED = _PerObject(objects=64, per_object=1024)
_FILLED = _PerObject(objects=512, per_object=256)
# Filled, labelled and placed bodies of unpatched manifests by (the key above, placement),
# with the paths of their site labels (`_restamp`).
_STAMPED = _PerObject(objects=512, per_object=256)
_SHAPES = itertools.count()  # a filled manifest's number: never reused (RenderedObject.shape)


def _has_site_label(body: dict[str, Any]) -> bool:
    """Whether a manifest sets ``outpost/site`` itself where labels are stamped or hidden
    (``labels.without_site_label``'s paths)."""
    return any(SITE_LABEL in labels for _, labels in labels_along(body))


_ORIGINS = ByIdentity(512)  # each manifest's own line
_NAMESPACE_ORIGINS = ByIdentity(512)  # each app's namespace line (its document's, if none)


def _namespace_origin(app: App) -> Mark:
    found: Mark | None = _NAMESPACE_ORIGINS.get(app.doc)
    if found is None:
        doc = app.doc
        found = doc.mark("spec", "namespace") if "namespace" in doc.spec else doc.mark()
        _NAMESPACE_ORIGINS.put(doc, found)
    return found


def _apply_patches(
    objects: list[RenderedObject], patches: Sequence[Any], overrides: Document | None, app: str
) -> list[RenderedObject]:
    if not patches or overrides is None:
        return objects
    result = list(objects)
    for index, patch in enumerate(patches):
        at = ("spec", "apps", app, "patches", index)
        target = patch.get("target") if isinstance(patch, Mapping) else None
        if not isinstance(target, Mapping):
            raise RenderError("a patch needs a target with kind and name", mark=overrides.mark(*at))
        matches = [
            i
            for i, obj in enumerate(result)
            if obj.key.kind == target.get("kind")
            and obj.key.name == target.get("name")
            and target.get("apiVersion") in (None, obj.key.api_version)
            and target.get("namespace") in (None, obj.key.namespace)
        ]
        described = "/".join(
            str(target[k]) for k in ("apiVersion", "kind", "namespace", "name") if k in target
        )
        if not matches:
            have = ", ".join(f"{o.key.kind}/{o.key.name}" for o in result) or "none"
            raise RenderError(
                f"patch target {described} matches no object of app {app!r} (its objects: {have})",
                mark=overrides.mark(*at, "target"),
            )
        if len(matches) > 1:
            raise RenderError(
                f"patch target {described} matches {len(matches)} objects of app {app!r} "
                f"({', '.join(str(result[i].key) for i in matches)}); add apiVersion or namespace",
                mark=overrides.mark(*at, "target"),
            )
        obj = result[matches[0]]
        try:
            if "merge" in patch:
                body = merge_patch(obj.body, patch["merge"])
            elif "json" in patch:
                body = json_patch(obj.body, patch["json"])
            else:
                raise PatchError("a patch needs either merge (RFC 7386) or json (RFC 6902)")
        except PatchError as exc:
            where = (*at, "json", exc.index) if exc.index is not None else (*at,)
            raise RenderError(
                f"patch to {obj.key} cannot be applied: {exc.message}", mark=overrides.mark(*where)
            ) from None
        if not isinstance(body, dict) or ObjectKey.of(body) != obj.key:
            raise RenderError(
                f"patch to {obj.key} changes the object's apiVersion, kind, namespace or name; "
                "patches may change an object but not which object it is",
                mark=overrides.mark(*at),
            )
        result[matches[0]] = RenderedObject(
            obj.key, body, obj.origin, obj.app, (*obj.patches, overrides.mark(*at)), obj.source
        )
    return result


def _secret_refs(repo: Repository, folder: SiteFolder) -> list[SecretRef]:
    refs: list[SecretRef] = []
    for path in folder.secrets:
        data = repo.tree.read(path)
        doc = parse_yaml(data, path)[0]
        body = doc.body
        if (
            not isinstance(body, dict)
            or body.get("apiVersion") != "v1"
            or body.get("kind") != "Secret"
        ):
            raise RenderError(
                "a file under secrets/ must be a sops-encrypted `apiVersion: v1` `kind: Secret`",
                mark=doc.mark("kind"),
            )
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
            raise RenderError("the Secret has no metadata.name", mark=doc.mark("metadata"))
        key = ObjectKey("", "v1", "Secret", str(metadata.get("namespace") or ""), metadata["name"])
        refs.append(SecretRef(path, key, hashlib.sha256(data).hexdigest(), doc.mark()))
    return refs


def _namespaces(
    objects: Sequence[RenderedObject],
    refs: Sequence[SecretRef],
    site_id: str,
    origins: Mapping[str, Mark],
) -> list[RenderedObject]:
    defined = {o.key.name for o in objects if o.key.kind == "Namespace" and not o.key.group}
    users: dict[str, set[str | None]] = {}
    for obj in objects:
        if obj.key.namespace:
            users.setdefault(obj.key.namespace, set()).add(obj.app)
    for ref in refs:
        if ref.key.namespace:
            users.setdefault(ref.key.namespace, set()).add(None)
    result: list[RenderedObject] = []
    for name in sorted(set(users) - defined):
        # The namespace belongs to an app when exactly one app puts objects in it;
        # a site secret or VM next to the app's objects does not change that.
        apps = users[name] - {None}
        app = next(iter(apps)) if len(apps) == 1 else None
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": _standard_labels(site_id, app, None)},
        }
        origin = origins.get(name) or Mark(f"sites/{site_id}/site.yaml", 1)
        # Every site's namespace of this name and app is this body but for the site label.
        shape = ("namespace", name, app)
        result.append(RenderedObject(ObjectKey.of(body), body, origin, app, shape=shape))
    return result


def _check_unique(objects: Sequence[RenderedObject]) -> None:
    seen: dict[tuple[str, str, str, str], RenderedObject] = {}
    for obj in objects:
        other = seen.get(obj.key.identity)
        if other is not None:
            raise RenderError(
                f"{obj.key} is rendered twice: here and at {other.origin}; "
                "an object can come from one place only",
                mark=obj.origin,
            )
        seen[obj.key.identity] = obj


def render_site(repo: Repository, site_id: str, *, shared: bool = False) -> RenderedSite:
    """Render the slice of ``site_id`` from ``repo``'s tree.

    A pure function of the tree and the site id: the same tree gives the same
    objects, in the same order, on every machine. Raises RenderError (or
    DocumentError for a malformed file) naming the file and line to change.

    ``shared``: for a caller that only reads the objects (a check of every site): an
    object rendered at an earlier site before shares all but its labels' maps with
    the others; changing any other part of it would change theirs.

    Rendering assumes documents that passed their schemas. Fed one that did not (a
    number where a list belongs), it fails closed: the Python error becomes a
    RenderError that sends the operator to ``outpost validate``, so the commit is
    refused like any other bad input instead of crashing the node's tick.
    """
    try:
        return _render_site(repo, site_id, shared)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        raise RenderError(
            f"site {site_id!r} cannot be rendered: its documents do not have the shape the "
            f"schemas require ({type(exc).__name__}: {exc}); run `outpost validate` to see where",
            mark=Mark(f"sites/{site_id}"),
        ) from exc


def _render_site(repo: Repository, site_id: str, shared: bool = False) -> RenderedSite:
    folder = repo.site(site_id)
    sources: set[str] = set(repo.tree.files(f"sites/{site_id}"))
    planned = _plan(repo, folder, sources)
    _check_overrides(folder.overrides, planned, site_id)

    objects: list[RenderedObject] = []
    instances: list[AppInstance] = []
    namespace_origins: dict[str, Mark] = {}
    for name in sorted(planned):
        plan = planned[name]
        app = repo.app(name)
        if app is None:
            raise RenderError(
                f"app {name!r} is assigned here, but apps/{name}/app.yaml does not exist",
                mark=plan.version_from.mark,
            )
        sources.add(app.doc.path)
        sources.update(doc.path for doc in app.manifests)
        instance, app_objects = _render_app(plan, app, folder, folder.overrides, shared=shared)
        instances.append(instance)
        objects.extend(app_objects)
        if app.namespace not in namespace_origins:  # the first app's line
            namespace_origins[app.namespace] = _namespace_origin(app)

    labels = _standard_labels(site_id, None, None)
    for vm in sorted(folder.vms, key=lambda d: d.path):
        vm_objects = render_vm(vm, site_id, folder.hardware, labels)
        objects.extend(vm_objects)
        namespace_origins.setdefault(vm_objects[0].key.namespace, vm.mark("spec", "namespace"))

    refs = _secret_refs(repo, folder)
    for ref in refs:
        namespace_origins.setdefault(ref.key.namespace, ref.origin)
    objects.extend(_namespaces(objects, refs, site_id, namespace_origins))
    _check_unique([*objects, *(RenderedObject(r.key, {}, r.origin) for r in refs)])
    objects.sort(key=lambda o: o.key.sort_key())
    return RenderedSite(
        site=SiteId(site_id),
        revision=repo.revision,
        objects=tuple(objects),
        secret_refs=tuple(sorted(refs, key=lambda r: r.path)),
        node_labels=node_labels(folder.hardware),
        apps=tuple(instances),
        sources=tuple(sorted(sources)),
    )
