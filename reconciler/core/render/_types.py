"""What rendering produces: a site's objects, each with its key and the line it came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.errors import Mark
from reconciler.core.loader import YamlDocument
from reconciler.core.model import App, AppAssignment, SiteId

# Kubernetes kinds whose objects have no namespace. Anything not listed is treated
# as namespaced, which is what an unknown custom resource usually is.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
        "VolumeSnapshotClass",
    }
)

# The order objects are applied in: what others depend on first (Helm's install
# order, which Flux's ssa staging follows too), then workloads, then VMs, then
# anything unknown. ``apply`` applies in this order and prunes in reverse.
KIND_ORDER: tuple[str, ...] = (
    "CustomResourceDefinition",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "PriorityClass",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "NetworkAttachmentDefinition",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "DataVolume",
    "VirtualMachine",
)
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}


def kind_rank(kind: str) -> int:
    """Position of ``kind`` in the apply order; unknown kinds go last."""
    return _RANK.get(kind, len(KIND_ORDER))


@dataclass(frozen=True, order=True)
class ObjectKey:
    """The identity of a Kubernetes object: group, version, kind, namespace, name.

    ``str(key)`` is ``group/version/kind/namespace/name`` with empty parts left
    out (``v1/ConfigMap/pos/pos-config``, ``apps/v1/Deployment/pos/pos-server``,
    ``v1/Namespace/pos``). Two keys that differ only in version name the same
    object in the cluster; ``identity`` leaves the version out for that reason.
    """

    group: str
    version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectKey:
        api_version = str(body.get("apiVersion", ""))
        group, _, version = api_version.rpartition("/")
        metadata = body.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        return cls(
            group=group,
            version=version,
            kind=str(body.get("kind", "")),
            namespace=str(metadata.get("namespace", "") or ""),
            name=str(metadata.get("name", "")),
        )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace, self.name)

    def sort_key(self) -> tuple[int, str, str, str, str, str]:
        return (
            kind_rank(self.kind),
            self.group,
            self.kind,
            self.namespace,
            self.name,
            self.version,
        )

    def __str__(self) -> str:
        parts = (self.group, self.version, self.kind, self.namespace, self.name)
        return "/".join(p for p in parts if p)


@dataclass(frozen=True)
class RenderedObject:
    """One object of a site's slice.

    ``body`` is a plain JSON-compatible dict; treat it as read-only (copy it
    before changing it). ``origin`` is the file and line the object came from
    (the app manifest, the VM file, or the site.yaml for generated namespaces):
    policy findings point there, at the line a reviewer would change.
    ``patches`` lists the overrides that changed it. ``mark(*keys)`` finds the
    line of a field inside the manifest when there is one.
    """

    key: ObjectKey
    body: dict[str, Any] = field(hash=False)
    origin: Mark
    app: str | None = None
    patches: tuple[Mark, ...] = ()
    source: YamlDocument | None = field(default=None, compare=False, repr=False, hash=False)
    # Objects of one shape have the same body but for the ``outpost/site`` label render
    # stamps: the same filled manifest, app, version and placement (`placement_key`),
    # nothing patched; or the namespace of one name and app that render adds. None where
    # that is not known. Never the same for two different bodies in a process.
    shape: tuple[object, ...] | None = field(default=None, compare=False, repr=False, hash=False)

    def mark(self, *keys: str | int) -> Mark:
        """The file:line of a field of the object (nearest ancestor in its manifest)."""
        if self.source is None:
            return self.origin
        return self.source.mark(*keys)


@dataclass(frozen=True)
class SecretRef:
    """A SOPS-encrypted ``v1 Secret`` of the site, named but not decrypted.

    Render never runs sops: the node decrypts these files into the apply set
    (``reconciler.core.secrets.decrypt_site_secrets``); CI shows them redacted.
    ``sha256`` is of the encrypted bytes, so a diff can say the file changed
    without knowing what it says.
    """

    path: str
    key: ObjectKey
    sha256: str
    origin: Mark


@dataclass(frozen=True)
class AppInstance:
    """One app as this site runs it: version, namespace and the final parameter values;
    ``assigned``, the assignment that chose the version (a fleet's or the site's)."""

    name: str
    version: str
    namespace: str
    values: dict[str, Any] = field(hash=False)
    assigned: AppAssignment = field(compare=False, repr=False, hash=False)
    app: App = field(compare=False, repr=False, hash=False)

    @property
    def assigned_at(self) -> Mark:
        """Where the version was chosen (file:line), looked up when asked."""
        return self.assigned.mark


@dataclass(frozen=True)
class RenderedSite:
    """A site's whole slice: the objects to apply, the secrets to decrypt, the node labels.

    ``sources`` lists every repository path the slice was read from, sorted.
    ``node_labels`` maps each hardware node to the labels it should carry
    (see ``node_labels``); the agent may apply them to its nodes.
    """

    site: SiteId
    revision: str | None
    objects: tuple[RenderedObject, ...]
    secret_refs: tuple[SecretRef, ...]
    node_labels: Mapping[str, Mapping[str, str]] = field(hash=False)
    apps: tuple[AppInstance, ...]
    sources: tuple[str, ...]

    def object(self, key: ObjectKey | str) -> RenderedObject | None:
        """The object with this key (or ``str(key)``), or None."""
        for obj in self.objects:
            if obj.key == key or str(obj.key) == key:
                return obj
        return None
