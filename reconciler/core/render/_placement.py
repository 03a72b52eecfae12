"""Hardware to placement: node labels from hardware.yaml, and where device workloads may run.

Node labels (``node_labels``), for every node of hardware.yaml:

- ``outpost/node: <name>`` — VMs pinned to a node, or to the node their
  passed-through device hangs off, select it by this label;
- ``kubernetes.io/arch: amd64|arm64`` — the well-known label (k3s sets it too;
  declaring it keeps the inventory and the cluster honest with each other);
- ``outpost/device.<type>: "true"`` for each device type on the node (usb,
  serial, gpu, pci) — apps that ``require`` a device type select it;
- the node's own ``labels`` from hardware.yaml, which cannot override the ones
  above (a typo there must not move a PLC gateway to the wrong machine).

Workloads of an app that requires device types get, on every pod template:

- ``nodeSelector`` ``outpost/device.<type>: "true"`` per type;
- a toleration for the taint ``outpost/device.<type>`` (NoSchedule), so an
  operator may taint device nodes to keep other workloads off them;
- for ``gpu``: a ``limits`` entry on the first container for the GPU's
  extended resource (``nvidia.com/gpu``) with the hardware's ``count``, and a
  toleration for the taint of the same name (the NVIDIA operator's convention).
  The first container is the app's main one by Kubernetes convention; a
  container that already asks for the resource is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.core.errors import RenderError
from reconciler.core.model import AppAssignment, Device, Hardware

NODE_LABEL = "outpost/node"
DEVICE_LABEL = "outpost/device.{type}"
ARCH_LABEL = "kubernetes.io/arch"
DEVICE_TYPES = ("usb", "serial", "gpu", "pci")

# Where the pod template sits in each workload kind.
POD_TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Pod": (),
}


def node_labels(hardware: Hardware | None) -> dict[str, dict[str, str]]:
    """The labels each node of ``hardware`` should carry, by node name."""
    result: dict[str, dict[str, str]] = {}
    if hardware is None:
        return result
    for node in hardware.nodes:
        name = str(node.get("name", ""))
        labels: dict[str, str] = {}
        extra = node.get("labels")
        if isinstance(extra, Mapping):
            labels.update({str(k): str(v) for k, v in extra.items()})
        labels[NODE_LABEL] = name
        arch = node.get("arch")
        if isinstance(arch, str):
            labels[ARCH_LABEL] = arch
        for device in node.get("devices") or []:
            if isinstance(device, Mapping) and device.get("type") in DEVICE_TYPES:
                labels[DEVICE_LABEL.format(type=device["type"])] = "true"
        result[name] = dict(sorted(labels.items()))
    return result


def pod_spec(body: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for kinds without one."""
    path = POD_TEMPLATE_PATHS.get(str(body.get("kind", "")))
    if path is None:
        return None
    node: Any = body
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    spec = node.get("spec") if isinstance(node, dict) else None
    return spec if isinstance(spec, dict) else None


def pod_template_metadata(body: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata of the pod template (created if missing), or None for non-workloads."""
    kind = str(body.get("kind", ""))
    path = POD_TEMPLATE_PATHS.get(kind)
    if path is None or kind == "Pod":
        return None
    node: Any = body
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    metadata = node.setdefault("metadata", {})
    return metadata if isinstance(metadata, dict) else None


def devices_of_type(hardware: Hardware | None, device_type: str) -> list[Device]:
    return [d for d in (hardware.devices if hardware else ()) if d.type == device_type]


def check_requirements(
    app: str,
    required: Sequence[str],
    hardware: Hardware | None,
    assigned: AppAssignment,
    site: str,
) -> None:
    """Fail when the site lacks a device type the app needs: its pods would never schedule.
    The finding points at the assignment (``assigned``) that asked for the app here."""
    for device_type in required:
        if not devices_of_type(hardware, device_type):
            where = f"sites/{site}/hardware.yaml" if hardware else "no hardware.yaml"
            raise RenderError(
                f"app {app!r} requires a {device_type} device, but site {site!r} declares none "
                f"({where}); add the device to hardware.yaml or do not assign the app here",
                mark=assigned.mark,
            )


def placement_key(required: Sequence[str], hardware: Hardware | None) -> tuple[str, ...]:
    """What `place` takes from the site's hardware besides ``required``: the first GPU's
    resource and count (as their ``repr``) for an app that needs a GPU, else nothing. Two
    sites with the same key get the same changes to the same body."""
    if "gpu" not in required:
        return ()
    gpus = devices_of_type(hardware, "gpu")
    if not gpus:
        return ("no gpu",)  # `check_requirements` refuses the site before `place` runs
    spec = gpus[0].spec
    return (repr(spec.get("resource", "nvidia.com/gpu")), repr(spec.get("count", 1)))


def place(body: dict[str, Any], required: Sequence[str], hardware: Hardware | None) -> None:
    """Add nodeSelector, tolerations and GPU limits to a workload of a device-bound app.
    Of the hardware it reads only what `placement_key` names."""
    spec = pod_spec(body)
    if spec is None or not required:
        return
    selector = spec.setdefault("nodeSelector", {})
    tolerations = spec.setdefault("tolerations", [])
    for device_type in required:
        label = DEVICE_LABEL.format(type=device_type)
        selector[label] = "true"
        _tolerate(tolerations, label)
    if "gpu" in required:
        gpu = devices_of_type(hardware, "gpu")[0]
        resource = str(gpu.spec.get("resource", "nvidia.com/gpu"))
        count = gpu.spec.get("count", 1)
        _tolerate(tolerations, resource)
        containers = spec.get("containers")
        if isinstance(containers, list) and containers:
            asks = any(
                isinstance(c, dict) and resource in ((c.get("resources") or {}).get("limits") or {})
                for c in containers
            )
            first = containers[0]
            if not asks and isinstance(first, dict):
                resources = first.setdefault("resources", {})
                limits = resources.setdefault("limits", {})
                limits[resource] = count


def _tolerate(tolerations: list[Any], key: str) -> None:
    wanted = {"key": key, "operator": "Exists", "effect": "NoSchedule"}
    if wanted not in tolerations:
        tolerations.append(wanted)
