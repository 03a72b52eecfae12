"""Object identity and dependency order: which object goes to the API server when.

Identity is ``(group, kind, namespace, name)`` with no version, as in Flux's
inventory and cli-utils' ``ObjMetadata``: ``apps/v1`` and ``apps/v1beta2``
Deployments of the same name are one object, so a version bump in the repo is
an update, never a prune of one object and the creation of another.

Order follows the rule that a thing must exist before what uses it
(``kubectl``/Helm/Flux use the same idea):

0. CustomResourceDefinitions — custom resources of the same slice need them
   served (``Established``) first;
1. Namespaces — every namespaced object needs its namespace;
2. configuration: RBAC, ServiceAccounts, ConfigMaps, Secrets, storage,
   Services, quotas, network policies — what workloads mount or call — and
   ValidatingAdmissionPolicies with their parameter ConfigMaps (see below);
3. everything else (custom resources, Ingress, PodDisruptionBudget, HPA, ...);
4. workloads: Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod, Job, CronJob;
5. KubeVirt virtual machines — last of the payload: a legacy HMI VM boots
   against services that are already there;
6. admission: ValidatingAdmissionPolicyBindings and webhooks — a webhook
   applied early could reject the rest of its own slice while its backend is
   not yet running.

Pruning walks the same stages backwards, so a Namespace or CRD goes last,
after the objects inside it.

Outpost's own policies at the API server (``core/policy/_export``) must never block
the slice they come with, forwards or in a rollback. A policy acts only through
its binding, and every object of a slice has passed that slice's policies on the
node already; what can block an apply is the *other* revision's policies still
being in force. So, per apply (``ResourceManager.apply``):

- bindings that leave the slice or change are withdrawn (deleted) before the
  first stage: a removed or relaxed policy (a new allowed registry, deny → warn)
  stops denying before the workloads that need the relaxation arrive, and in a
  rollback the failed revision's new policies stop denying the old workloads;
- the policies themselves and their parameters go with the configuration (stage
  2), before the workloads: a relaxed expression or a new allow-listed app is in
  force when its workloads arrive; a tightened one passes them too, since they
  were checked against it;
- bindings are (re)created last (stage 6), once the payload is in: a new policy
  starts denying only after the workloads it was checked with are there, and
  pods their controllers create afterwards conform.

The price is a window of a few seconds per changed policy in which it is not
enforced at the site (the node enforced it before applying, and CI before
that). The binding of the site's policy facts is never withdrawn (it is the
anchor that keeps Kubernetes' ConfigMap parameter informer alive, see
``_export``). The API server takes a new policy, binding or parameter into
admission through its informers, a few milliseconds after the write; the
stages in between are normally longer than that, and a refusal in that gap is
an ApplyError the agent treats like any other (rollback, retried on the next
commit).

Everything here is pure: object dicts in, keys and stages out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.core.errors import ApplyError

__all__ = [
    "STAGE_NAMES",
    "ObjectKey",
    "api_group",
    "is_policy_binding",
    "key_of",
    "keys_of",
    "prune_order",
    "sort_objects",
    "stage_of",
    "stages",
]

STAGE_CRDS = 0
STAGE_NAMESPACES = 1
STAGE_CONFIG = 2
STAGE_OTHER = 3
STAGE_WORKLOADS = 4
STAGE_VMS = 5
STAGE_ADMISSION = 6

STAGE_NAMES: tuple[str, ...] = (
    "crds",
    "namespaces",
    "config",
    "other",
    "workloads",
    "virtual-machines",
    "admission",
)

_RBAC = "rbac.authorization.k8s.io"
_ADMISSION = "admissionregistration.k8s.io"

# (group, kind) -> stage. Keyed by group as well as kind: a custom resource
# whose kind happens to be "Deployment" is not an apps/v1 Deployment.
_STAGE: dict[tuple[str, str], int] = {
    ("apiextensions.k8s.io", "CustomResourceDefinition"): STAGE_CRDS,
    ("", "Namespace"): STAGE_NAMESPACES,
    ("", "ResourceQuota"): STAGE_CONFIG,
    ("", "LimitRange"): STAGE_CONFIG,
    ("scheduling.k8s.io", "PriorityClass"): STAGE_CONFIG,
    ("storage.k8s.io", "StorageClass"): STAGE_CONFIG,
    ("", "ServiceAccount"): STAGE_CONFIG,
    (_RBAC, "ClusterRole"): STAGE_CONFIG,
    (_RBAC, "ClusterRoleBinding"): STAGE_CONFIG,
    (_RBAC, "Role"): STAGE_CONFIG,
    (_RBAC, "RoleBinding"): STAGE_CONFIG,
    ("", "ConfigMap"): STAGE_CONFIG,
    ("", "Secret"): STAGE_CONFIG,
    ("", "PersistentVolume"): STAGE_CONFIG,
    ("", "PersistentVolumeClaim"): STAGE_CONFIG,
    ("", "Service"): STAGE_CONFIG,
    ("networking.k8s.io", "NetworkPolicy"): STAGE_CONFIG,
    ("apps", "Deployment"): STAGE_WORKLOADS,
    ("apps", "StatefulSet"): STAGE_WORKLOADS,
    ("apps", "DaemonSet"): STAGE_WORKLOADS,
    ("apps", "ReplicaSet"): STAGE_WORKLOADS,
    ("", "Pod"): STAGE_WORKLOADS,
    ("batch", "Job"): STAGE_WORKLOADS,
    ("batch", "CronJob"): STAGE_WORKLOADS,
    ("kubevirt.io", "VirtualMachine"): STAGE_VMS,
    ("kubevirt.io", "VirtualMachineInstance"): STAGE_VMS,
    (_ADMISSION, "MutatingWebhookConfiguration"): STAGE_ADMISSION,
    (_ADMISSION, "ValidatingWebhookConfiguration"): STAGE_ADMISSION,
    (_ADMISSION, "ValidatingAdmissionPolicy"): STAGE_CONFIG,
    (_ADMISSION, "ValidatingAdmissionPolicyBinding"): STAGE_ADMISSION,
}


@dataclass(frozen=True, order=True)
class ObjectKey:
    """The identity of one Kubernetes object, without its API version.

    ``encode()`` is the stable storage form (``group/Kind/namespace/name``,
    empty segments for the core group and for cluster-scoped objects; no
    segment can contain ``/``), ``str()`` the form for people
    (``Deployment.apps/pos/server``, ``Namespace/pos``).
    """

    group: str
    kind: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        for part in (self.group, self.kind, self.namespace, self.name):
            if "/" in part:
                raise ValueError(f"object key segment {part!r} must not contain '/'")
        if not self.kind or not self.name:
            raise ValueError("an object key needs a kind and a name")

    @property
    def group_kind(self) -> tuple[str, str]:
        return (self.group, self.kind)

    def encode(self) -> str:
        return f"{self.group}/{self.kind}/{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        """Inverse of :meth:`encode`; raises ``ValueError`` on anything else."""
        parts = text.split("/")
        if len(parts) != 4:
            raise ValueError(f"object key {text!r} is not group/Kind/namespace/name")
        return cls(group=parts[0], kind=parts[1], namespace=parts[2], name=parts[3])

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{kind}/{where}"


def api_group(api_version: str) -> str:
    """``apps/v1`` → ``apps``; ``v1`` (the core group) → ``""``."""
    return api_version.rpartition("/")[0]


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    """The identity of a rendered object; an object without kind or name is refused."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    namespace = metadata.get("namespace", "") if isinstance(metadata, Mapping) else ""
    if not (isinstance(api_version, str) and api_version):
        raise ApplyError(f"object {kind or '?'}/{name or '?'} has no apiVersion")
    if not (isinstance(kind, str) and kind):
        raise ApplyError(f"object {api_version} {name or '?'} has no kind")
    if not (isinstance(name, str) and name):
        raise ApplyError(f"object {api_version} {kind} has no metadata.name")
    if not isinstance(namespace, str):
        raise ApplyError(f"object {kind}/{name} has a metadata.namespace that is not a string")
    try:
        return ObjectKey(api_group(api_version), kind, namespace or "", name)
    except ValueError as exc:
        raise ApplyError(f"object {api_version} {kind} {name!r}: {exc}") from exc


def is_policy_binding(key: ObjectKey) -> bool:
    """A ValidatingAdmissionPolicyBinding: withdrawn before an apply when it leaves or changes."""
    return key.group_kind == (_ADMISSION, "ValidatingAdmissionPolicyBinding")


# The site's policy-facts anchor: the policy and binding Outpost names after the facts
# (``core.policy.FACTS_NAME``, spelled here: the node's apply order imports no policy code).
FACTS_ANCHOR_NAME = "outpost-policy-facts"
_ANCHOR_KINDS = frozenset(
    {(_ADMISSION, "ValidatingAdmissionPolicy"), (_ADMISSION, "ValidatingAdmissionPolicyBinding")}
)


def is_facts_anchor(key: ObjectKey) -> bool:
    """The site's facts policy or its binding: never withdrawn nor pruned with a failed first
    install (removing it can stop the API server's ConfigMap parameter informer)."""
    return key.name == FACTS_ANCHOR_NAME and not key.namespace and key.group_kind in _ANCHOR_KINDS


def stage_of(key: ObjectKey) -> int:
    """The apply stage of an object (see the module docstring); unknown kinds are 'other'."""
    return _STAGE.get(key.group_kind, STAGE_OTHER)


def _sort_key(key: ObjectKey) -> tuple[int, str, str, str, str]:
    return (stage_of(key), key.group, key.kind, key.namespace, key.name)


def sort_objects(objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Objects in apply order: by stage, then group, kind, namespace, name (deterministic)."""
    return sorted(objects, key=lambda obj: _sort_key(key_of(obj)))


def stages(objects: Iterable[Mapping[str, Any]]) -> list[tuple[int, list[Mapping[str, Any]]]]:
    """Objects grouped by stage, stages ascending, each group in deterministic order.

    Objects inside one stage do not depend on each other and may be sent in
    parallel; a stage starts only when the one before it has finished.
    Duplicate keys are refused: two documents for one object would make the
    result depend on which one the server saw last.
    """
    seen: dict[ObjectKey, int] = {}
    grouped: dict[int, list[Mapping[str, Any]]] = {}
    for index, obj in enumerate(objects):
        key = key_of(obj)
        if key in seen:
            raise ApplyError(
                f"{key} appears twice in the slice (documents {seen[key] + 1} and {index + 1});"
                " each object must be rendered once",
                obj=str(key),
            )
        seen[key] = index
        grouped.setdefault(stage_of(key), []).append(obj)
    return [
        (stage, sorted(grouped[stage], key=lambda obj: _sort_key(key_of(obj))))
        for stage in sorted(grouped)
    ]


def prune_order(keys: Iterable[ObjectKey]) -> list[tuple[int, list[ObjectKey]]]:
    """Keys grouped by stage in reverse apply order (VMs first, Namespaces and CRDs last)."""
    grouped: dict[int, list[ObjectKey]] = {}
    for key in set(keys):
        grouped.setdefault(stage_of(key), []).append(key)
    return [
        (stage, sorted(grouped[stage], key=_sort_key)) for stage in sorted(grouped, reverse=True)
    ]


def keys_of(objects: Sequence[Mapping[str, Any]]) -> frozenset[ObjectKey]:
    """The set of identities of a slice."""
    return frozenset(key_of(obj) for obj in objects)
