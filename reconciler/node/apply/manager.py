"""ResourceManager: staged server-side apply, drift, inventory, prune and health wait.

Modelled on Flux's ``fluxcd/pkg/ssa`` ResourceManager, with these decisions:

- **One field manager, forced.** Every object goes out as a server-side apply
  PATCH with ``fieldManager=outpost`` and ``force=true``. The signed repository
  is the only source of truth for the fields it sets: a hand edit (``kubectl
  edit``, another controller) of such a field is drift and is taken back.
  Fields the repository does not set stay with whoever set them (replica
  counts owned by an HPA, annotations added by an operator).
- **Stamped ownership.** Every applied object gets the labels
  ``app.kubernetes.io/managed-by: outpost`` and ``outpost/site: <site>`` (one key,
  `reconciler.core.labels`; prune also recognises the older ``outpost.io/site``);
  prune deletes only objects that carry both (never delete what we did not
  create) and not those annotated ``outpost.io/prune: disabled`` (the opt-out,
  as in Flux's ``kustomize.toolkit.fluxcd.io/prune: disabled``).
- **Stages.** CRDs first, then the watch waits until each is Established (a
  custom resource of the same slice would be refused before), Namespaces next,
  then the rest by stage (:mod:`.order`). Objects of one stage go out in
  parallel from a small thread pool; a stage starts only when the previous one
  has finished. An error stops the apply after the stage it happened in, and
  every refused object of that stage is named in one ApplyError.
- **At most one request per object.** Created / configured / unchanged comes from the
  PATCH answer (201 = created) and one metadata-only LIST per kind and
  namespace taken before the stage (an unchanged apply writes nothing; see
  ``_same`` for objects whose controller writes status meanwhile). Flux
  dry-runs every object first; that doubles the requests, and the agent's
  rollback already covers a half-applied revision.
- **Inventory first.** Before anything is sent, the in-cluster inventory is
  widened to (previous keys ∪ new keys) with ``complete: false``. A kill in
  the middle of an apply then leaves every object we may have created listed,
  so a later prune can still find it. After health and prune the agent
  records the new revision with :meth:`ResourceManager.write_inventory`.
  The ConfigMap holds about 4,000 objects' keys and fingerprints within the
  1 MiB object limit; beyond that the server refuses the write (ApplyError).
- **Fingerprints: skip what nobody touched.** After an object is applied
  (or a dry run finds it in line) the manager records a digest of the body
  it sent and the uid, resourceVersion and generation the server stored; the
  inventory ConfigMap keeps them. The next apply or drift check reads only
  metadata (one LIST per kind and namespace) and leaves an object alone when
  its body is the same and it is provably as we left it: same uid, and the
  same resourceVersion — or, for kinds whose controllers keep writing status,
  the same generation (bumped by every spec change, by anyone) with our
  labels and annotations intact. Everything else is sent (apply) or dry-run
  (drift). A no-op tick on a 200-object site costs a handful of requests
  instead of 200 dry runs. Secrets are never fingerprinted (``_fingerprinted``).
- **A quiet tick is one look.** The agent records a slice it found in line
  (:meth:`ResourceManager.record`: each object's fingerprint and resource;
  :meth:`ResourceManager.record_secrets`: each Secret's uid and resourceVersion)
  and the ticks after it ask :meth:`ResourceManager.look_recorded`: the
  inventory, then one LIST per kind and namespace in turn on one connection
  (whole objects where health is in the status), no discovery, no dry run,
  no Secret decrypted. kubectl diff GETs and dry-runs every object instead.
- **Drift by dry run.** :meth:`ResourceManager.drift` asks the server what a
  forced apply would produce and compares that with the live object, minus
  server noise (managedFields, resourceVersion, generation, status). Defaults
  the server fills in match on both sides, so only a real difference counts.
- **Policies never block their own slice.** Bindings of admission policies
  that leave the slice or change are withdrawn before the first stage and
  re-created last (the reasoning is in :mod:`.order`); the binding of the
  site's policy facts is never withdrawn.
- **Immutable fields** (a Job's template, a Service's clusterIP) are refused by
  the server and reported as ApplyError; unlike Flux's ``force`` mode the
  object is not deleted and re-created behind the operator's back. Name such
  objects by version (``migrate-v42``) instead.

Nothing here reads the clock: :meth:`ResourceManager.wait_healthy` takes
``clock`` and ``sleep``; waiting for CRDs uses a server-side watch timeout.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from reconciler.core.errors import (
    ApplyError,
    ClusterUnavailable,
    ConfigError,
    OutpostError,
    PermanentError,
)
from reconciler.core.labels import MANAGED_BY, MANAGED_BY_LABEL, SITE_LABEL, site_of
from reconciler.node.apply.cluster import Cluster, Resource
from reconciler.node.apply.health import (
    Health,
    Status,
    explain_pods,
    health_of,
    needs_status,
    pod_selector,
)
from reconciler.node.apply.order import (
    STAGE_CRDS,
    ObjectKey,
    is_facts_anchor,
    is_policy_binding,
    key_of,
    prune_order,
    stages,
)

__all__ = [
    "INVENTORY_NAME",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "PRUNE_ANNOTATION",
    "PRUNE_DISABLED",
    "SITE_LABEL",
    "Action",
    "ApplyEntry",
    "ApplyResult",
    "Clock",
    "Drift",
    "HealthReport",
    "Inventory",
    "RecordedLook",
    "ResourceManager",
    "Sleep",
]

PRUNE_ANNOTATION = "outpost.io/prune"
PRUNE_DISABLED = "disabled"
INVENTORY_NAME = "outpost-inventory"

Clock = Callable[[], float]
Sleep = Callable[[float], None]
Obj = Mapping[str, Any]
T = TypeVar("T")
R = TypeVar("R")

# Fields the server owns; a manifest that carries them (copied from `kubectl get
# -o yaml`) would make the apply a precondition or a no-op fight.
_SERVER_METADATA = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_MAX_REPORTED = 10


class Action(enum.StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ApplyEntry:
    key: ObjectKey
    action: Action


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did, object by object, in apply order."""

    revision: str
    entries: tuple[ApplyEntry, ...]

    def _with(self, action: Action) -> tuple[ObjectKey, ...]:
        return tuple(e.key for e in self.entries if e.action is action)

    @property
    def created(self) -> tuple[ObjectKey, ...]:
        return self._with(Action.CREATED)

    @property
    def configured(self) -> tuple[ObjectKey, ...]:
        return self._with(Action.CONFIGURED)

    @property
    def unchanged(self) -> tuple[ObjectKey, ...]:
        return self._with(Action.UNCHANGED)

    @property
    def keys(self) -> frozenset[ObjectKey]:
        return frozenset(e.key for e in self.entries)

    @property
    def changed(self) -> bool:
        return any(e.action is not Action.UNCHANGED for e in self.entries)


@dataclass(frozen=True)
class Drift:
    """An applied object whose live state differs from the revision, or that is gone.

    ``fields`` are dotted paths of the first differences (values are never
    reported: the object may be a Secret).
    """

    key: ObjectKey
    reason: str  # "missing" | "changed"
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.reason == "missing":
            return f"{self.key}: missing"
        return f"{self.key}: changed ({', '.join(self.fields) or 'metadata'})"


@dataclass(frozen=True)
class Inventory:
    """The keys applied for a revision, as stored in the cluster.

    ``complete`` is False while an apply of ``revision`` is under way (the keys
    are then the union of the old and the new set).
    """

    site: str
    revision: str
    keys: frozenset[ObjectKey]
    complete: bool = True


@dataclass(frozen=True)
class HealthReport:
    """The outcome of :meth:`ResourceManager.wait_healthy`."""

    status: Status
    objects: tuple[tuple[ObjectKey, Health], ...]
    timed_out: bool
    elapsed_seconds: float

    @property
    def healthy(self) -> bool:
        return self.status is Status.CURRENT

    @property
    def failed(self) -> tuple[tuple[ObjectKey, Health], ...]:
        return tuple(item for item in self.objects if item[1].status is Status.FAILED)

    @property
    def pending(self) -> tuple[tuple[ObjectKey, Health], ...]:
        return tuple(item for item in self.objects if item[1].status is Status.IN_PROGRESS)

    def progress(self, deadline_seconds: float) -> str:
        """One line while waiting: how far along, and what the first slow object says."""
        ready = sum(1 for _, health in self.objects if health.status is Status.CURRENT)
        waiting = self.pending
        line = (
            f"{ready} of {len(self.objects)} objects ready after {self.elapsed_seconds:.0f}s "
            f"(deadline {deadline_seconds:.0f}s)"
        )
        if waiting:
            key, health = waiting[0]
            more = f" and {len(waiting) - 1} more" if len(waiting) > 1 else ""
            line += f"; waiting for {key}: {health.reason}{more}"
        return line

    def summary(self) -> str:
        """One line for the status file and the log."""
        if self.healthy:
            return f"all {len(self.objects)} objects healthy"
        bad = self.failed or self.pending
        head = "; ".join(f"{key}: {health.reason}" for key, health in bad[:_MAX_REPORTED])
        more = f"; and {len(bad) - _MAX_REPORTED} more" if len(bad) > _MAX_REPORTED else ""
        if self.failed:
            return f"{len(self.failed)} of {len(self.objects)} objects failed: {head}{more}"
        when = f" after {self.elapsed_seconds:.0f}s" if self.timed_out else ""
        return f"{len(bad)} of {len(self.objects)} objects not ready{when}: {head}{more}"


@dataclass(frozen=True)
class RecordedLook:
    """What :meth:`ResourceManager.look_recorded` saw of a recorded slice, every object
    vouched for: each one's health, and whether its Secrets are as they were in line."""

    objects: tuple[tuple[ObjectKey, Health], ...]
    secrets_in_line: bool

    @property
    def healthy(self) -> bool:
        return all(health.status is Status.CURRENT for _, health in self.objects)


@dataclass(frozen=True)
class _Item:
    key: ObjectKey
    resource: Resource
    body: dict[str, Any]


@dataclass(frozen=True)
class _Print:
    """What an object was right after we applied (or verified) it.

    ``digest`` is the body we sent; ``uid``, ``version`` and ``generation``
    what the server stored. See :meth:`ResourceManager._untouched`.
    """

    digest: str
    uid: str
    version: str
    generation: int | None

    def encode(self) -> list[Any]:
        return [self.digest, self.uid, self.version, self.generation]

    @classmethod
    def decode(cls, raw: Any) -> _Print | None:
        if not (isinstance(raw, list) and len(raw) == 4):
            return None
        digest, uid, version, generation = raw
        if not (isinstance(digest, str) and isinstance(uid, str) and isinstance(version, str)):
            return None
        if generation is not None and not isinstance(generation, int):
            return None
        return cls(digest, uid, version, generation)


def _fingerprinted(key: ObjectKey) -> bool:
    """Secrets get no fingerprint.

    A digest of a Secret's body, stored in a ConfigMap (readable by more
    people than Secrets are), would let a reader confirm guesses of a
    low-entropy value — a till PIN, a short password — offline. Secrets are
    few per site; they are always sent (apply) or dry-run (drift), or on a
    quiet tick known by the uid and resourceVersion a dry run last found in
    line (`ResourceManager.record_secrets`: nothing derived from the value).
    """
    return key.group_kind != ("", "Secret")


def _digest(body: Obj) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _print_of(digest: str, stored: Obj) -> _Print | None:
    metadata = stored.get("metadata") or {}
    uid, version = metadata.get("uid"), metadata.get("resourceVersion")
    if not (isinstance(uid, str) and isinstance(version, str) and uid and version):
        return None
    generation = metadata.get("generation")
    return _Print(digest, uid, version, generation if isinstance(generation, int) else None)


def _version_of(live: Obj | None) -> tuple[str, str] | None:
    """(uid, resourceVersion) of a live object: the same pair is the same stored object."""
    metadata = (live or {}).get("metadata") or {}
    uid, version = metadata.get("uid"), metadata.get("resourceVersion")
    if isinstance(uid, str) and isinstance(version, str) and uid and version:
        return uid, version
    return None


def _skeleton(key: ObjectKey, api_version: str) -> dict[str, Any]:
    """An object with nothing but what names it: enough for `key_of` and a LIST."""
    metadata = {"name": key.name, **({"namespace": key.namespace} if key.namespace else {})}
    return {"apiVersion": api_version, "kind": key.kind, "metadata": metadata}


def _planned(entries: Any) -> list[tuple[ObjectKey, Resource, dict[str, Any], str]] | None:
    """Entries of `ResourceManager.record` as (key, resource, skeleton, digest); None when
    one is not such an entry."""
    if not isinstance(entries, list | tuple):
        return None
    planned = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3):
            return None
        skeleton, plural, digest = entry
        if not (isinstance(skeleton, dict) and isinstance(digest, str)):
            return None
        try:
            key = key_of(skeleton)
            resource = _recorded_resource(
                str(skeleton["apiVersion"]), key.kind, key.namespace, plural
            )
        except (ApplyError, KeyError, TypeError, ValueError):
            return None
        planned.append((key, resource, skeleton, digest))
    return planned


def _versions(entries: Any) -> list[tuple[tuple[Resource, str], tuple[str, str]]] | None:
    """Entries of `ResourceManager.record_secrets` as ((resource, namespace), (uid,
    resourceVersion)); None for None (nothing recorded) or when one is not such an entry."""
    if not isinstance(entries, list | tuple):
        return None
    found = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 6):
            return None
        if not all(isinstance(field, str) and field for field in entry[:2] + entry[3:]):
            return None
        api_version, kind, namespace, plural, uid, version = entry
        try:
            resource = _recorded_resource(api_version, kind, namespace, plural)
        except (TypeError, ValueError):
            return None
        found.append(((resource, namespace), (uid, version)))
    return found


def _recorded_resource(api_version: str, kind: str, namespace: object, plural: object) -> Resource:
    """The resource of a recorded object, as discovery named it when it was recorded."""
    if not (isinstance(plural, str) and plural and isinstance(namespace, str)):
        raise ValueError("not a recorded resource")
    group, _, version = api_version.rpartition("/")
    return Resource(group, version, kind, plural, bool(namespace))


def _contains(live: Any, want: Any) -> bool:
    """Every label (or annotation) we set is there with our value."""
    live = live if isinstance(live, Mapping) else {}
    want = want if isinstance(want, Mapping) else {}
    return all(live.get(name) == value for name, value in want.items())


def _combine(errors: Sequence[OutpostError]) -> OutpostError:
    """One error for a stage: permanent beats temporary (the input is bad either way)."""
    permanent = [e for e in errors if isinstance(e, PermanentError)]
    if not permanent:
        return errors[0]
    if len(permanent) == 1:
        return permanent[0]
    lines = "\n  ".join(str(e) for e in permanent[:_MAX_REPORTED])
    more = (
        f"\n  ... and {len(permanent) - _MAX_REPORTED} more"
        if len(permanent) > _MAX_REPORTED
        else ""
    )
    first = permanent[0]
    return ApplyError(
        f"{len(permanent)} objects were refused:\n  {lines}{more}",
        obj=getattr(first, "obj", ""),
        code=getattr(first, "code", 0),
        reason=getattr(first, "reason", ""),
    )


def _comparable(obj: Obj) -> dict[str, Any]:
    """An object without the fields the server changes on every write (for drift)."""
    out = {k: v for k, v in obj.items() if k != "status"}
    metadata = dict(out.get("metadata") or {})
    for name in _SERVER_METADATA:
        metadata.pop(name, None)
    out["metadata"] = metadata
    return out


def _same(before: Obj, after: Obj) -> bool:
    """Whether an apply left an object as it was, from the metadata read before it.

    An equal resourceVersion means nothing was written. Otherwise an equal
    ``generation`` (bumped by every spec change) with equal labels and
    annotations means only status moved: a Deployment's controller writes
    status all the time, and that is not our change.
    """
    was, now = before.get("metadata") or {}, after.get("metadata") or {}
    if was.get("resourceVersion") is not None and was.get("resourceVersion") == now.get(
        "resourceVersion"
    ):
        return True
    generation = was.get("generation")
    return (
        generation is not None
        and generation == now.get("generation")
        and (was.get("labels") or {}) == (now.get("labels") or {})
        and (was.get("annotations") or {}) == (now.get("annotations") or {})
    )


def _differences(live: Any, want: Any, path: str, found: list[str]) -> None:
    if len(found) >= _MAX_REPORTED:
        return
    if isinstance(live, Mapping) and isinstance(want, Mapping):
        for name in sorted(set(live) | set(want)):
            _differences(
                live.get(name), want.get(name), f"{path}.{name}" if path else str(name), found
            )
    elif isinstance(live, list) and isinstance(want, list) and len(live) == len(want):
        for index, (a, b) in enumerate(zip(live, want, strict=True)):
            _differences(a, b, f"{path}[{index}]", found)
    elif live != want:
        found.append(path or "(object)")


def _crd_resources(crd: Obj) -> list[Resource]:
    """The resources a CRD of the slice will serve, so discovery need not wait for it."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, kind, plural = spec.get("group"), names.get("kind"), names.get("plural")
    if not (isinstance(group, str) and isinstance(kind, str) and isinstance(plural, str)):
        return []
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    return [
        Resource(group, version["name"], kind, plural, namespaced)
        for version in spec.get("versions") or []
        if isinstance(version, Mapping)
        and isinstance(version.get("name"), str)
        and version.get("served", True)
    ]


def _established(crd: Mapping[str, Any]) -> bool:
    return health_of(crd).status is not Status.IN_PROGRESS


class ResourceManager:
    """Apply a site's slice to its cluster and keep it there. See the module docstring."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        site: str,
        field_manager: str = "outpost",
        inventory_namespace: str = "outpost-system",
        workers: int = 4,
        crd_timeout_seconds: int = 60,
    ) -> None:
        if not site or len(site) > 63 or not _LABEL_VALUE.match(site):
            raise ConfigError(
                f"site id {site!r} cannot be a Kubernetes label value"
                " (at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
            )
        self.cluster = cluster
        self.site = site
        self.field_manager = field_manager
        self.inventory_namespace = inventory_namespace
        self.workers = max(1, workers)
        self.crd_timeout_seconds = crd_timeout_seconds
        self._prints: dict[ObjectKey, _Print] = {}
        self._prints_loaded = False
        self._prints_dirty = False
        self._stored: Inventory | None = None
        self._in_line: dict[ObjectKey, tuple[str, str] | None] = {}
        self._lock = threading.Lock()

    # -- helpers -----------------------------------------------------------

    def _parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Run ``fn`` over ``items`` on the pool; all errors of the batch become one."""
        results: list[R] = []
        errors: list[OutpostError] = []
        if len(items) <= 1 or self.workers == 1:
            for item in items:
                try:
                    results.append(fn(item))
                except OutpostError as exc:
                    errors.append(exc)
        else:
            from concurrent.futures import ThreadPoolExecutor  # not needed by a quiet tick

            with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
                futures = [pool.submit(fn, item) for item in items]
                for future in futures:
                    try:
                        results.append(future.result())
                    except OutpostError as exc:
                        errors.append(exc)
        if errors:
            raise _combine(errors)
        return results

    def _prepare(self, obj: Obj) -> dict[str, Any]:
        """A copy of a rendered object ready to send: server fields dropped, ownership stamped."""
        body = {k: v for k, v in obj.items() if k != "status"}
        metadata = {
            k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_METADATA
        }
        labels = dict(metadata.get("labels") or {})
        labels[MANAGED_BY_LABEL] = MANAGED_BY
        labels[SITE_LABEL] = self.site
        metadata["labels"] = labels
        body["metadata"] = metadata
        return body

    def _resolve(self, key: ObjectKey, api_version: str) -> Resource:
        try:
            resource = self.cluster.resource(api_version, key.kind)
        except ApplyError as exc:
            raise ApplyError(
                f"{key} ({api_version}): {exc.message}",
                obj=str(key),
                code=exc.code,
                reason=exc.reason,
            ) from exc
        if resource.namespaced and not key.namespace:
            raise ApplyError(
                f"{key}: {key.kind} is namespaced but the object has no metadata.namespace",
                obj=str(key),
            )
        if not resource.namespaced and key.namespace:
            raise ApplyError(
                f"{key}: {key.kind} is cluster-scoped but the object sets"
                f" metadata.namespace {key.namespace!r}",
                obj=str(key),
            )
        return resource

    def _plan(self, objects: Iterable[Obj]) -> list[_Item]:
        items = []
        for obj in objects:
            key = key_of(obj)
            items.append(_Item(key, self._resolve(key, str(obj["apiVersion"])), self._prepare(obj)))
        return items

    def _snapshot(
        self, groups: Iterable[tuple[Resource, str]], *, metadata_only: bool
    ) -> dict[tuple[Resource, str], dict[str, dict[str, Any]]]:
        """LIST each (resource, namespace) once: name → object."""
        return self._listed(dict.fromkeys(groups, not metadata_only))

    def _listed(
        self, groups: Mapping[tuple[Resource, str], bool], *, parallel: bool = True
    ) -> dict[tuple[Resource, str], dict[str, dict[str, Any]]]:
        """LIST each (resource, namespace) of ``groups`` once, whole objects where its value
        is True and metadata only where it is False: name → object. ``parallel=False``
        sends them one after another over one connection."""
        wanted = sorted(groups, key=lambda g: (g[0].api_version, g[0].kind, g[1]))

        def fetch(group: tuple[Resource, str]) -> dict[str, dict[str, Any]]:
            listed = self.cluster.list(group[0], group[1], metadata_only=not groups[group])
            return {item["metadata"]["name"]: item for item in listed}

        if not parallel:
            return {group: fetch(group) for group in wanted}
        return dict(zip(wanted, self._parallel(fetch, wanted), strict=True))

    # -- apply -------------------------------------------------------------

    def apply(
        self, objects: Sequence[Obj], *, revision: str, skip_untouched: bool = True
    ) -> ApplyResult:
        """Server-side apply a slice in stages; see the module docstring for the rules.

        With ``skip_untouched`` (the default) an object whose fingerprint shows
        it is exactly as we last applied it is reported unchanged without a
        request; ``False`` sends every object.

        Raises ApplyError (the slice is bad: an object refused, a kind not
        served, a duplicate) or ClusterUnavailable (try again later). Objects
        of earlier stages stay applied either way; the next apply converges.
        """
        staged = stages(objects)  # validates keys and refuses duplicates before any request
        keys = frozenset(key_of(obj) for _, group in staged for obj in group)
        previous = self._track(keys, revision)
        entries: list[ApplyEntry] = []
        try:
            self._withdraw_bindings(
                previous, [obj for _, group in staged for obj in group], revision
            )
            for stage, group in staged:
                items = self._plan(group)
                before = self._snapshot(
                    ((item.resource, item.key.namespace) for item in items), metadata_only=True
                )

                def one(item: _Item, before: Any = before) -> ApplyEntry:
                    old = before[(item.resource, item.key.namespace)].get(item.key.name)
                    digest = _digest(item.body)
                    if skip_untouched and self._untouched(item.key, item.body, digest, old):
                        return ApplyEntry(item.key, Action.UNCHANGED)
                    stored, created = self.cluster.apply(
                        item.resource,
                        item.body,
                        field_manager=self.field_manager,
                        obj=str(item.key),
                    )
                    self._remember(item.key, _print_of(digest, stored))
                    if created:
                        return ApplyEntry(item.key, Action.CREATED)
                    if old is not None and _same(old, stored):
                        return ApplyEntry(item.key, Action.UNCHANGED)
                    return ApplyEntry(item.key, Action.CONFIGURED)

                entries.extend(self._parallel(one, items))
                if stage == STAGE_CRDS:
                    self._await_crds(items)
        except BaseException:
            self._save_prints_quietly()
            raise
        self._save_prints()
        return ApplyResult(revision, tuple(entries))

    def _withdraw_bindings(
        self, previous: Inventory | None, objects: Sequence[Obj], revision: str
    ) -> list[ObjectKey]:
        """Delete the policy bindings that leave the slice or change, before the payload.

        "Leave" is judged only when this apply takes the cluster to another revision
        (or finishes one that was interrupted): a drift correction sends a few
        objects of the applied revision and must not withdraw the rest. "Change"
        means the body differs from the fingerprint of what we last applied (no
        fingerprint counts as a change). The facts binding stays (see :mod:`.order`).
        """
        if previous is None:
            return []
        keys = {key_of(obj): obj for obj in objects}
        moving = previous.revision != revision or not previous.complete
        candidates: set[ObjectKey] = set()
        if moving:
            candidates |= {key for key in previous.keys - keys.keys() if is_policy_binding(key)}
        with self._lock:
            prints = dict(self._prints)
        for key, obj in keys.items():
            if key in previous.keys and is_policy_binding(key):
                known = prints.get(key)
                if known is None or known.digest != _digest(self._prepare(obj)):
                    candidates.add(key)
        withdrawn = sorted(k for k in candidates if not is_facts_anchor(k))
        done = [k for k in self._parallel(self._delete_owned, withdrawn) if k is not None]
        for key in done:
            self._remember(key, None)
        return done

    def _await_crds(self, items: Sequence[_Item]) -> None:
        """Block until every CRD of the slice is Established and teach discovery its kinds."""

        def one(item: _Item) -> None:
            crd = self.cluster.wait_for(
                item.resource,
                "",
                item.key.name,
                _established,
                timeout_seconds=self.crd_timeout_seconds,
                obj=str(item.key),
            )
            if crd is None:
                raise ClusterUnavailable(
                    f"{item.key}: not Established within {self.crd_timeout_seconds}s;"
                    " custom resources of this slice were not applied"
                )
            verdict = health_of(crd)
            if verdict.status is Status.FAILED:
                raise ApplyError(f"{item.key}: {verdict.reason}", obj=str(item.key))
            for resource in _crd_resources(item.body):
                self.cluster.remember(resource)

        self._parallel(one, items)

    # -- drift -------------------------------------------------------------

    def drift(self, objects: Sequence[Obj]) -> list[Drift]:
        """Objects whose live state differs from what applying them would give, or that are gone.

        Each object is dry-run applied with force (so a field another manager
        took over shows as drift) and compared with the live object — unless
        its fingerprint proves nobody wrote to it since we applied it (read
        from one metadata-only LIST per kind and namespace). Objects a dry
        run finds in line get a fresh fingerprint, stored with the inventory.
        The agent re-applies what is reported: correcting drift is not a
        change and is never gated. Sorted by key.
        """
        stages(objects)  # same validation as apply
        planned: list[tuple[ObjectKey, Resource | None, Obj]] = []
        for obj in objects:
            key = key_of(obj)
            try:
                planned.append((key, self._resolve(key, str(obj["apiVersion"])), obj))
            except ApplyError as exc:
                if exc.code != 404:
                    raise
                planned.append((key, None, obj))  # its CRD is gone
        self._load_prints()
        live = self._snapshot(
            ((r, k.namespace) for k, r, _ in planned if r is not None), metadata_only=True
        )

        def one(entry: tuple[ObjectKey, Resource | None, Obj]) -> Drift | None:
            key, resource, obj = entry
            seen = None if resource is None else live[(resource, key.namespace)].get(key.name)
            if resource is None or seen is None:
                return Drift(key, "missing")
            body = self._prepare(obj)
            digest = _digest(body)
            if self._untouched(key, body, digest, seen):
                return None
            current = self.cluster.get(resource, key.namespace, key.name, obj=str(key))
            if current is None:
                return Drift(key, "missing")
            try:
                want, _ = self.cluster.apply(
                    resource, body, field_manager=self.field_manager, obj=str(key), dry_run=True
                )
            except ApplyError as exc:
                if exc.code == 404:  # deleted between the read and the dry run
                    return Drift(key, "missing")
                raise
            found: list[str] = []
            _differences(_comparable(current), _comparable(want), "", found)
            if found:
                return Drift(key, "changed", tuple(found))
            self._remember(key, _print_of(digest, current))  # in line: skip it next time
            if not _fingerprinted(key):
                with self._lock:  # what `record_secrets` vouches with (no value of it)
                    self._in_line[key] = _version_of(current)
            return None

        try:
            found = [d for d in self._parallel(one, planned) if d is not None]
        except BaseException:
            self._save_prints_quietly()
            raise
        self._save_prints()
        return sorted(found, key=lambda d: d.key)

    def record(self, objects: Sequence[Obj]) -> list[list[Any]] | None:
        """What `look_recorded` needs to vouch for ``objects`` later without their bodies.

        One ``[skeleton, plural, digest]`` per object: the skeleton is its apiVersion, kind,
        name, namespace and the labels and annotations it is sent with (what `_untouched`
        compares), the plural its resource's (the look needs no discovery: a kind no longer
        served there lists nothing, which vouches for nothing), the digest that of the body
        sent. None when an object can never be vouched for by its fingerprint (a Secret: see
        `_fingerprinted`; `record_secrets` has its own way) or its kind is not served.
        """
        entries: list[list[Any]] = []
        for obj in objects:
            key = key_of(obj)
            if not _fingerprinted(key):
                return None
            try:
                resource = self._resolve(key, str(obj["apiVersion"]))
            except ApplyError:
                return None
            body = self._prepare(obj)
            metadata = body.get("metadata") or {}
            skeleton = _skeleton(key, str(obj["apiVersion"]))
            skeleton["metadata"]["labels"] = dict(metadata.get("labels") or {})
            skeleton["metadata"]["annotations"] = dict(metadata.get("annotations") or {})
            entries.append([skeleton, resource.plural, _digest(body)])
        return entries

    def record_secrets(self, objects: Sequence[Obj]) -> list[list[str]] | None:
        """What `look_recorded` needs to vouch for the Secrets ``objects`` later: for each,
        ``[apiVersion, kind, namespace, plural, uid, resourceVersion]`` of the live object as
        `drift` found it in line in this run. None unless `drift` found every one in line.

        Nothing of a Secret's value goes in (no digest, unlike `record`), nor its name: the
        same commit, age key and code decrypt the same Secret, and the same uid and
        resourceVersion are the same stored object (a uid is never reused), so the pair
        says "still as it was when it was in line".
        """
        entries: list[list[str]] = []
        for obj in objects:
            key = key_of(obj)
            with self._lock:
                seen = self._in_line.get(key)
            if seen is None:
                return None
            try:
                resource = self._resolve(key, str(obj["apiVersion"]))
            except ApplyError:
                return None
            api_version = str(obj["apiVersion"])
            entries.append([api_version, key.kind, key.namespace, resource.plural, *seen])
        return entries

    def drift_recorded(self, recorded: Sequence[Any], objects: Sequence[Obj]) -> list[Drift] | None:
        """`drift` of a slice whose other objects are known only by their `record`.

        None as soon as one recorded object is not provably as we last applied it (its
        fingerprint does not match the live metadata, it is gone, its kind is not
        served): only its body can tell then, and the caller renders the slice. When
        every one is, what `drift` would answer for the whole slice: the drift of
        ``objects`` (the Secrets, always dry-run), checked as `drift` checks them.
        """
        if self.look_recorded(recorded, None) is None:
            return None
        return self.drift(objects) if objects else []

    def look_recorded(
        self, recorded: Sequence[Any], secrets: Sequence[Any] | None
    ) -> RecordedLook | None:
        """A quiet tick's whole look at a recorded slice: one LIST per kind and namespace
        (whole objects for kinds whose health is in their status, metadata for the rest),
        in turn, no discovery, no dry run, no Secret decrypted.

        None as soon as one ``recorded`` object (`record`) is not provably as we last
        applied it (its fingerprint does not match the live metadata, it is gone, its kind
        is not served there): only its body can tell then, and the caller renders the
        slice. Otherwise the health of each, as `health` judges it from the same LIST, and
        whether the Secrets are in line: each has the uid and resourceVersion
        `record_secrets` saw in line (``secrets``; None: nothing recorded, not in line).
        A Secret that is not is no verdict: the caller decrypts it and asks `drift`.
        """
        planned = _planned(recorded)
        versions = _versions(secrets)
        if planned is None:
            return None
        groups: dict[tuple[Resource, str], bool] = {}
        for key, resource, _, _ in planned:
            wanted = (resource, key.namespace)
            groups[wanted] = groups.get(wanted, False) or needs_status(key.group, key.kind)
        for wanted, _ in versions or ():
            groups.setdefault(wanted, False)
        self._load_prints()
        # One after another on the one connection the inventory was read over: each LIST is a
        # millisecond or two, and on a node whose API server shares its cores, the threads
        # and TLS handshakes of parallel requests cost more than they save.
        live = self._listed(groups, parallel=False)
        verdicts: list[tuple[ObjectKey, Health]] = []
        for key, resource, skeleton, digest in planned:
            seen = live[(resource, key.namespace)].get(key.name)
            if not self._untouched(key, skeleton, digest, seen):
                return None
            assert seen is not None  # _untouched vouches only for an object that is there
            verdicts.append((key, health_of(seen)))
        in_line = versions is not None and all(
            pair in {_version_of(item) for item in live[wanted].values()}
            for wanted, pair in versions
        )
        return RecordedLook(tuple(verdicts), secrets_in_line=in_line)

    # -- fingerprints ------------------------------------------------------

    def _untouched(self, key: ObjectKey, body: Obj, digest: str, seen: Obj | None) -> bool:
        """Whether ``seen`` (live metadata) is provably the object we last applied as ``body``."""
        if not _fingerprinted(key):
            return False
        with self._lock:
            known = self._prints.get(key)
        if known is None or seen is None or known.digest != digest:
            return False
        metadata = seen.get("metadata") or {}
        if metadata.get("uid") != known.uid:
            return False
        if metadata.get("resourceVersion") == known.version:
            return True
        if known.generation is None or metadata.get("generation") != known.generation:
            return False
        want = body.get("metadata") or {}
        return _contains(metadata.get("labels"), want.get("labels")) and _contains(
            metadata.get("annotations"), want.get("annotations")
        )

    def _remember(self, key: ObjectKey, seen: _Print | None) -> None:
        if not _fingerprinted(key):
            return
        with self._lock:
            if seen is None:
                self._prints.pop(key, None)
            elif self._prints.get(key) != seen:
                self._prints[key] = seen
            else:
                return
            self._prints_dirty = True

    def _load_prints(self) -> None:
        if self._prints_loaded:
            return
        try:
            self._stored = self.read_inventory()
        except ApplyError:
            self._stored = None

    def _save_prints_quietly(self) -> None:
        """Save what was learnt before an error, without hiding that error behind another."""
        with contextlib.suppress(OutpostError):
            self._save_prints()

    def _save_prints(self) -> None:
        """Store new fingerprints with the inventory as it stands (keys and revision unchanged)."""
        if not self._prints_dirty or self._stored is None:
            return
        stored = self._stored  # read or written this run: its namespace exists
        self._write_inventory(
            stored.keys, stored.revision, complete=stored.complete, ensure_namespace=False
        )

    # -- inventory ---------------------------------------------------------

    def _inventory_resource(self) -> Resource:
        return Resource("", "v1", "ConfigMap", "configmaps", True)

    def read_inventory(self) -> Inventory | None:
        """The inventory stored in the cluster; None if there is none yet.

        Raises ApplyError when the ConfigMap exists but cannot be read as an
        inventory of this site (hand-edited, or another site's); the agent's
        state directory holds a copy to fall back on.
        """
        where = f"ConfigMap {self.inventory_namespace}/{INVENTORY_NAME}"
        live = self.cluster.get(
            self._inventory_resource(), self.inventory_namespace, INVENTORY_NAME, obj=where
        )
        if live is None:
            return None
        data = live.get("data") or {}
        try:
            raw = json.loads(data.get("keys", ""))
            if not isinstance(raw, list):
                raise ValueError("keys is not a JSON list")
            keys = frozenset(ObjectKey.parse(str(item)) for item in raw)
        except ValueError as exc:
            raise ApplyError(
                f"the inventory {where} is not readable ({exc}); delete it and the next apply"
                " rewrites it (the agent's state directory keeps a copy of the keys)",
                obj=where,
            ) from exc
        site = str(data.get("site", ""))
        if site != self.site:
            raise ApplyError(
                f"the inventory {where} belongs to site {site!r}, not {self.site!r};"
                " this cluster is enrolled as another site",
                obj=where,
            )
        inventory = Inventory(
            site=site,
            revision=str(data.get("revision", "")),
            keys=keys,
            complete=data.get("complete", "true") == "true",
        )
        self._adopt(inventory, data.get("fingerprints"))
        return inventory

    def _adopt(self, inventory: Inventory, raw: Any) -> None:
        """Take the stored fingerprints (an optimisation: unreadable ones are dropped)."""
        try:
            decoded = json.loads(raw) if isinstance(raw, str) else {}
        except ValueError:
            decoded = {}
        prints: dict[ObjectKey, _Print] = {}
        if isinstance(decoded, dict):
            for text, value in decoded.items():
                try:
                    key = ObjectKey.parse(text)
                except ValueError:
                    continue
                found = _Print.decode(value)
                if found is not None and key in inventory.keys:
                    prints[key] = found
        with self._lock:
            self._prints = prints
            self._prints_loaded = True
            self._prints_dirty = False
            self._stored = inventory

    def write_inventory(self, keys: Iterable[ObjectKey], revision: str) -> Inventory:
        """Record the keys applied for ``revision`` (creating the namespace if missing)."""
        return self._write_inventory(frozenset(keys), revision, complete=True)

    def _write_inventory(
        self,
        keys: frozenset[ObjectKey],
        revision: str,
        *,
        complete: bool,
        ensure_namespace: bool = True,
    ) -> Inventory:
        if ensure_namespace:
            namespace = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": self.inventory_namespace},
            }
            self.cluster.apply(
                Resource("", "v1", "Namespace", "namespaces", False),
                self._prepare(namespace),
                field_manager=self.field_manager,
                obj=f"Namespace/{self.inventory_namespace}",
            )
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": INVENTORY_NAME, "namespace": self.inventory_namespace},
            "data": {
                "site": self.site,
                "revision": revision,
                "complete": "true" if complete else "false",
                "keys": json.dumps(sorted(key.encode() for key in keys), indent=0),
                "fingerprints": self._encoded_prints(keys),
            },
        }
        self.cluster.apply(
            self._inventory_resource(),
            self._prepare(config_map),
            field_manager=self.field_manager,
            obj=f"ConfigMap/{self.inventory_namespace}/{INVENTORY_NAME}",
        )
        inventory = Inventory(self.site, revision, keys, complete)
        with self._lock:
            self._stored = inventory
            self._prints_loaded = True
            self._prints_dirty = False
        return inventory

    def _encoded_prints(self, keys: frozenset[ObjectKey]) -> str:
        with self._lock:
            kept = {k.encode(): p.encode() for k, p in self._prints.items() if k in keys}
        return json.dumps(dict(sorted(kept.items())), separators=(",", ":"))

    def _track(self, keys: frozenset[ObjectKey], revision: str) -> Inventory | None:
        """Widen the stored inventory to cover ``keys`` before they are applied; return the
        inventory as it was before (None when there was none or it was unreadable)."""
        try:
            previous = self.read_inventory()
        except ApplyError:
            previous = None  # unreadable: rewritten below; the state dir keeps the old keys
            with self._lock:
                self._prints, self._prints_loaded = {}, True
        if previous is not None and keys <= previous.keys:
            return previous
        known = previous.keys if previous is not None else frozenset()
        self._write_inventory(known | keys, revision, complete=False)
        return previous

    def _protected(self, key: ObjectKey) -> bool:
        """The inventory and its namespace are never pruned, whatever a slice says."""
        return (key.group, key.kind, key.name) == ("", "Namespace", self.inventory_namespace) or (
            key.group,
            key.kind,
            key.namespace,
            key.name,
        ) == ("", "ConfigMap", self.inventory_namespace, INVENTORY_NAME)

    # -- prune -------------------------------------------------------------

    def prune(
        self, previous_keys: Iterable[ObjectKey], desired_keys: Iterable[ObjectKey]
    ) -> list[ObjectKey]:
        """Delete what left the slice, in reverse apply order; return the keys deleted.

        Skipped, never deleted: objects not labelled as ours for this site,
        objects annotated ``outpost.io/prune: disabled``, objects already gone
        or of a kind the cluster no longer serves, the inventory itself.
        Deletion is ``propagationPolicy: Background`` with the live uid as a
        precondition, so an object re-created by someone else in between is
        left alone. A pruned Namespace or CRD takes everything inside with it,
        as in Flux and ``kubectl apply --prune``.
        """
        gone = set(previous_keys) - set(desired_keys)
        deleted: list[ObjectKey] = []
        for _, keys in prune_order(gone):
            deleted.extend(k for k in self._parallel(self._delete_owned, keys) if k is not None)
        return deleted

    def _delete_owned(self, key: ObjectKey) -> ObjectKey | None:
        """Delete one object if it is ours (see :meth:`prune`); the key when deleted."""
        if self._protected(key):
            return None
        resource = self.cluster.preferred_resource(key.group, key.kind)
        if resource is None or resource.namespaced != bool(key.namespace):
            return None
        live = self.cluster.get(resource, key.namespace, key.name, obj=str(key))
        if live is None:
            return None
        metadata = live.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or site_of(labels) != self.site:
            return None
        if annotations.get(PRUNE_ANNOTATION) == PRUNE_DISABLED:
            return None
        if metadata.get("deletionTimestamp"):
            return None
        removed = self.cluster.delete(
            resource, key.namespace, key.name, obj=str(key), uid=metadata.get("uid")
        )
        return key if removed else None

    # -- health ------------------------------------------------------------

    def health(self, objects: Sequence[Obj]) -> dict[ObjectKey, Health]:
        """One look at every object's health (one LIST per kind and namespace)."""
        items = [(key_of(obj), str(obj["apiVersion"])) for obj in objects]
        return self._look([(key, self._resolve(key, api)) for key, api in items])

    def _look(self, targets: Sequence[tuple[ObjectKey, Resource]]) -> dict[ObjectKey, Health]:
        full = self._snapshot(
            ((r, k.namespace) for k, r in targets if needs_status(k.group, k.kind)),
            metadata_only=False,
        )
        light = self._snapshot(
            ((r, k.namespace) for k, r in targets if not needs_status(k.group, k.kind)),
            metadata_only=True,
        )
        verdicts: dict[ObjectKey, Health] = {}
        for key, resource in targets:
            listed = (full if needs_status(key.group, key.kind) else light)[
                (resource, key.namespace)
            ]
            live = listed.get(key.name)
            verdicts[key] = Health.in_progress("not found") if live is None else health_of(live)
        return verdicts

    def wait_healthy(
        self,
        objects: Sequence[Obj],
        *,
        deadline_seconds: float,
        clock: Clock,
        sleep: Sleep,
        interval_seconds: float = 2.0,
        progress: Callable[[HealthReport], None] | None = None,
        progress_seconds: float = 15.0,
    ) -> HealthReport:
        """Poll until every object is Current, any is Failed, or the deadline passes.

        ``clock`` is a monotonic clock in seconds and ``sleep`` sleeps; both
        come from the agent (tests pass fakes). Objects already Current are
        not asked again. A lasting InProgress past the deadline is reported
        with ``timed_out`` — the agent treats it as a failed rollout.
        ``progress`` is called with the verdicts so far every ``progress_seconds``
        (a wait can last minutes; the operator sees it move). An unhealthy
        result carries, for each workload not ready, what its Pods say.
        """
        targets = [(key_of(obj), str(obj["apiVersion"])) for obj in objects]
        resolved = [(key, self._resolve(key, api)) for key, api in targets]
        bodies = {key_of(obj): obj for obj in objects}
        start = clock()
        reported = start
        verdicts: dict[ObjectKey, Health] = {}
        pending = resolved
        while True:
            verdicts.update(self._look(pending))
            pending = [(k, r) for k, r in pending if verdicts[k].status is not Status.CURRENT]
            now = clock()
            elapsed = now - start
            ordered = tuple((key, verdicts[key]) for key, _ in resolved)
            if any(verdicts[k].status is Status.FAILED for k, _ in pending):
                return HealthReport(Status.FAILED, self._explain(ordered, bodies), False, elapsed)
            if not pending:
                return HealthReport(Status.CURRENT, ordered, False, elapsed)
            if elapsed >= deadline_seconds:
                return HealthReport(
                    Status.IN_PROGRESS, self._explain(ordered, bodies), True, elapsed
                )
            if progress is not None and now - reported >= progress_seconds:
                reported = now
                progress(HealthReport(Status.IN_PROGRESS, ordered, False, elapsed))
            sleep(max(0.0, min(interval_seconds, deadline_seconds - elapsed)))

    def _explain(
        self, verdicts: tuple[tuple[ObjectKey, Health], ...], bodies: Mapping[ObjectKey, Obj]
    ) -> tuple[tuple[ObjectKey, Health], ...]:
        """Add to each unready workload's reason what its Pods say (best effort: a Pod list
        that fails is said, and never hides the verdict itself)."""
        try:
            pods = self.cluster.resource("v1", "Pod")
        except OutpostError:
            return verdicts

        def one(item: tuple[ObjectKey, Health]) -> tuple[ObjectKey, Health]:
            key, health = item
            selector = pod_selector(key.group, key.kind, bodies.get(key, {}))
            if health.status is Status.CURRENT or selector is None:
                return item
            try:
                listed = self.cluster.list(pods, key.namespace, label_selector=selector)
            except OutpostError as exc:
                return key, Health(health.status, f"{health.reason}; pods not listed: {exc}")
            said = explain_pods(listed)
            return (key, Health(health.status, f"{health.reason}; {said}")) if said else item

        return tuple(self._parallel(one, list(verdicts)))
