"""An in-memory stand-in for :class:`reconciler.node.apply.Cluster`, for the manager's decision logic.

It answers the seam's methods the way the API server does where the manager
depends on it (201 on create, resourceVersion unchanged on a no-op apply, fields
the apply does not set kept, uid preconditions on delete). Everything about
real server-side apply is tested against the real API server in
``tests/cluster/test_apply.py``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.core.errors import OutpostError
from reconciler.node.apply.cluster import Resource

BUILTIN = [
    Resource("", "v1", "Namespace", "namespaces", False),
    Resource("", "v1", "ConfigMap", "configmaps", True),
    Resource("", "v1", "Secret", "secrets", True),
    Resource("", "v1", "Service", "services", True),
    Resource("apps", "v1", "Deployment", "deployments", True),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Resource(
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False
    ),
    Resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", True),
    Resource(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        False,
    ),
    Resource(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        False,
    ),
]

Key = tuple[str, str, str, str]


def merge(live: Any, patch: Any) -> Any:
    if isinstance(live, Mapping) and isinstance(patch, Mapping):
        out = dict(live)
        for name, value in patch.items():
            out[name] = merge(live.get(name), value)
        return out
    return copy.deepcopy(patch)


class FakeCluster:
    def __init__(self) -> None:
        self.served: dict[tuple[str, str], Resource] = {(r.group, r.kind): r for r in BUILTIN}
        self.objects: dict[Key, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_apply: dict[str, OutpostError] = {}  # object name -> error to raise
        self.on_get: Callable[[dict[str, Any]], None] | None = None
        self.crds_established = True
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)

    # discovery
    def remember(self, resource: Resource) -> None:
        self.calls.append(("remember", resource.kind))
        self.served[(resource.group, resource.kind)] = resource

    def resource(self, api_version: str, kind: str) -> Resource:
        from reconciler.core.errors import ApplyError

        group = api_version.rpartition("/")[0]
        found = self.served.get((group, kind))
        if found is None:
            raise ApplyError(
                f"the cluster does not serve {api_version}", code=404, reason="NotFound"
            )
        return found

    def preferred_resource(self, group: str, kind: str) -> Resource | None:
        return self.served.get((group, kind))

    # helpers
    def key(self, resource: Resource, namespace: str, name: str) -> Key:
        return (resource.group, resource.kind, namespace, name)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object directly, as another tool would."""
        group = obj["apiVersion"].rpartition("/")[0]
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[(group, obj["kind"], metadata.get("namespace", ""), metadata["name"])] = obj
        return obj

    def edit(self, key: Key, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Change a stored object as another client would: new resourceVersion, and a new
        generation when the spec changed."""
        live = self.objects[key]
        spec = copy.deepcopy(live.get("spec"))
        change(live)
        live["metadata"]["resourceVersion"] = str(next(self._versions))
        if live.get("spec") != spec and "generation" in live["metadata"]:
            live["metadata"]["generation"] += 1
        return live

    # verbs
    def apply(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        field_manager: str,
        obj: str,
        dry_run: bool = False,
        force: bool = True,
    ) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        self.calls.append(("dry-run" if dry_run else "apply", obj))
        if name in self.fail_apply:
            raise self.fail_apply[name]
        key = self.key(resource, body["metadata"].get("namespace", ""), name)
        live = self.objects.get(key)
        merged = merge(live or {}, body)
        merged["apiVersion"] = resource.api_version
        if live is None:
            merged["metadata"]["uid"] = f"uid-{next(self._uids)}"
            merged["metadata"]["resourceVersion"] = "" if dry_run else str(next(self._versions))
            if "spec" in merged:
                merged["metadata"]["generation"] = 1
            if resource.kind == "CustomResourceDefinition" and self.crds_established:
                merged["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
        elif merged != live:
            merged["metadata"]["resourceVersion"] = str(next(self._versions))
            if merged.get("spec") != live.get("spec") and "generation" in merged["metadata"]:
                merged["metadata"]["generation"] += 1
        if not dry_run:
            self.objects[key] = merged
        return copy.deepcopy(merged), live is None

    def get(
        self, resource: Resource, namespace: str, name: str, *, obj: str
    ) -> dict[str, Any] | None:
        self.calls.append(("get", obj))
        found = self.objects.get(self.key(resource, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self,
        resource: Resource,
        namespace: str = "",
        *,
        metadata_only: bool = False,
        label_selector: str = "",
    ) -> list[dict[str, Any]]:
        self.calls.append(("list", f"{resource.kind}/{namespace}"))
        found = []
        for (group, kind, ns, _), value in self.objects.items():
            if (group, kind) == (resource.group, resource.kind) and (
                ns == namespace or not namespace
            ):
                if self.on_get is not None:
                    self.on_get(value)
                item = copy.deepcopy(value)
                if metadata_only:
                    item = {"metadata": item["metadata"]}
                item["apiVersion"], item["kind"] = resource.api_version, resource.kind
                found.append(item)
        return found

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        *,
        obj: str,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        self.calls.append(("delete", obj))
        key = self.key(resource, namespace, name)
        live = self.objects.get(key)
        if live is None or (uid and live["metadata"].get("uid") != uid):
            return False
        del self.objects[key]
        return True

    def wait_for(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        condition: Callable[[Mapping[str, Any]], bool],
        *,
        timeout_seconds: int,
        obj: str,
    ) -> dict[str, Any] | None:
        self.calls.append(("wait", obj))
        live = self.objects.get(self.key(resource, namespace, name))
        return copy.deepcopy(live) if live is not None and condition(live) else None


class FakeTime:
    """A clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds
