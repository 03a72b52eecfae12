"""What policies can ask about a site beyond one object: quantities, pod specs, usage, capacity.

CEL (the ``cel`` package, cel-rust underneath) has no Kubernetes quantity type and
no notion of "the containers of whatever workload this is", and our policies need
both. Rather than repeat a ternary over every workload kind in every policy, the
policy engine registers a small function library, implemented here in plain
Python and tested on its own:

``containers(object)``  every container of a pod-bearing object (Pod, Deployment,
                        StatefulSet, DaemonSet, ReplicaSet, Job, CronJob), init and
                        ephemeral containers included; ``[]`` for anything else
``podSpec(object)``     the pod spec of such an object, or ``{}``
``images(object)``      every image the object runs: its containers' images and a
                        KubeVirt VM's containerDisk images
``cpuMillis(q)``        a CPU quantity ("500m", "2", 0.5) in millicores
``memoryBytes(q)``      a memory quantity ("512Mi", "4Gi", "1G") in bytes

A site as a whole (the sum of requests against the declared hardware) is a fact
about the rendered slice, not about one object, so the engine computes it once
per site and hands it to CEL as ``site.status`` (Kubernetes' split: ``spec`` is
what the author wrote, ``status`` what the system observed):

``site.status.usage``     what the slice requests: ``cpuMillis``, ``memoryBytes``
                          (containers × replicas, init containers as Kubernetes
                          counts them, DaemonSets × nodes, KubeVirt VMs that are not
                          Halted), ``resources`` (extended resources such as
                          ``nvidia.com/gpu`` → count), ``devices`` (device names
                          the site's VMs pass through), ``deviceTypes`` (device types
                          the site's apps require)
``site.status.capacity``  what hardware.yaml declares, the same fields summed over
                          the nodes, plus ``nodes``

A quantity that cannot be read is not silently zero: it is reported by
``site_status`` as a problem with the object's origin, and ``cpuMillis`` /
``memoryBytes`` raise (a policy evaluation error, which is a finding).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.core.model import Device

_QUANTITY_RE = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# Resource names Kubernetes owns; any other name in requests/limits is an extended
# resource that a device plugin (a GPU, a USB passthrough plugin) has to provide.
_NATIVE_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")

_POD_TEMPLATE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
)


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity."""


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity as an exact fraction ("1.5Gi", "500m", "1e3", 2, 0.5).

    "4GB" is refused, as the API server refuses it: the suffix is ``G`` or ``Gi``.
    Strings are memoised: a fleet repeats the same few dozen quantities everywhere.
    """
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is a boolean, not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"{value!r} is not a finite quantity")
        return Fraction(str(value))
    raise QuantityError(f"{value!r} is not a quantity (expected a string like '500m' or '4Gi')")


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str) -> Fraction:
    match = _QUANTITY_RE.match(value.strip())
    if match is None:
        raise QuantityError(
            f"{value!r} is not a Kubernetes quantity (expected e.g. '500m', '2', '512Mi', '4Gi', "
            "'1G'; 'GB' and 'MB' are not Kubernetes suffixes)"
        )
    number, exponent, suffix = match.groups()
    result = Fraction(number)
    if exponent:
        result *= Fraction(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        result *= 1024 ** _BINARY[suffix]
    else:
        result *= Fraction(10) ** _DECIMAL[suffix or ""]
    return result


def cpu_millis(value: Any) -> int:
    """CPU in millicores, rounded up as the scheduler does ("250m" → 250, "2" → 2000)."""
    return math.ceil(parse_quantity(value) * 1000)


def memory_bytes(value: Any) -> int:
    """Memory in bytes, rounded up ("512Mi" → 536870912)."""
    return math.ceil(parse_quantity(value))


def pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec of a pod-bearing object, or an empty mapping."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = _get(spec, "jobTemplate", "spec")
    elif kind not in _POD_TEMPLATE_KINDS:
        return {}
    pod = _get(spec, "template", "spec")
    return pod if isinstance(pod, Mapping) else {}


def containers(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every container of a pod-bearing object: init, regular and ephemeral."""
    pod = pod_spec(obj)
    found: list[Mapping[str, Any]] = []
    for field in ("initContainers", "containers", "ephemeralContainers"):
        items = pod.get(field)
        if isinstance(items, list):
            found.extend(c for c in items if isinstance(c, Mapping))
    return found


def _vm_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The VMI spec of a KubeVirt VirtualMachine (``spec.template.spec``), or ``{}``."""
    if obj.get("kind") != "VirtualMachine" or not str(obj.get("apiVersion", "")).startswith(
        "kubevirt.io/"
    ):
        return {}
    spec = _get(obj, "spec", "template", "spec")
    return spec if isinstance(spec, Mapping) else {}


def images(obj: Mapping[str, Any]) -> list[str]:
    """Every image an object runs: container images and KubeVirt containerDisk images."""
    found = [str(c.get("image", "")) for c in containers(obj) if "image" in c]
    for volume in _list(_vm_spec(obj).get("volumes")):
        disk = volume.get("containerDisk")
        if isinstance(disk, Mapping) and "image" in disk:
            found.append(str(disk["image"]))
    return found


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass
class _Tally:
    cpu: int = 0
    memory: int = 0

    def add(self, other: _Tally, times: int = 1) -> None:
        self.cpu += other.cpu * times
        self.memory += other.memory * times


@dataclass(frozen=True)
class QuantityProblem:
    """A request or limit that is not a quantity; ``index`` is the object's position."""

    index: int
    field: str
    message: str


def _container_requests(
    container: Mapping[str, Any], extended: dict[str, int], problems: list[str]
) -> _Tally:
    """A container's requests; a resource with only a limit requests its limit (Kubernetes)."""
    resources = container.get("resources")
    resources = resources if isinstance(resources, Mapping) else {}
    requests = resources.get("requests")
    limits = resources.get("limits")
    requests = requests if isinstance(requests, Mapping) else {}
    limits = limits if isinstance(limits, Mapping) else {}
    tally = _Tally()
    name = container.get("name", "?")
    for resource in {*requests, *limits}:
        value = requests.get(resource, limits.get(resource))
        try:
            if resource == "cpu":
                tally.cpu = cpu_millis(value)
            elif resource == "memory":
                tally.memory = memory_bytes(value)
            elif resource not in _NATIVE_RESOURCES and not resource.startswith("hugepages-"):
                extended[resource] = extended.get(resource, 0) + math.ceil(parse_quantity(value))
        except QuantityError as exc:
            problems.append(f"container {name!r} resources {resource}: {exc}")
    return tally


def _pod_requests(pod: Mapping[str, Any], extended: dict[str, int], problems: list[str]) -> _Tally:
    """Kubernetes' effective pod request: max(sum of containers, largest init container)."""
    total = _Tally()
    for container in _list(pod.get("containers")):
        total.add(_container_requests(container, extended, problems))
    init_extended: dict[str, int] = {}
    for container in _list(pod.get("initContainers")):
        init = _container_requests(container, init_extended, problems)
        total.cpu = max(total.cpu, init.cpu)
        total.memory = max(total.memory, init.memory)
    for resource, count in init_extended.items():
        extended[resource] = max(extended.get(resource, 0), count)
    return total


def _replicas(obj: Mapping[str, Any], nodes: int) -> int:
    kind = obj.get("kind")
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    if kind in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"):
        return _int(spec.get("replicas"), 1)
    if kind == "DaemonSet":
        return max(nodes, 1)
    if kind == "Job":
        return _int(spec.get("parallelism"), 1)
    return 1


def _vm_requests(obj: Mapping[str, Any], extended: dict[str, int], problems: list[str]) -> _Tally:
    """A KubeVirt VM: explicit requests win, else cores × sockets × threads and guest memory."""
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    if spec.get("runStrategy") == "Halted" or spec.get("running") is False:
        return _Tally()
    domain = _get(_vm_spec(obj), "domain")
    domain = domain if isinstance(domain, Mapping) else {}
    tally = _Tally()
    requests = _get(domain, "resources", "requests")
    requests = requests if isinstance(requests, Mapping) else {}
    try:
        if "cpu" in requests:
            tally.cpu = cpu_millis(requests["cpu"])
        else:
            cpu = domain.get("cpu")
            cpu = cpu if isinstance(cpu, Mapping) else {}
            cores = _int(cpu.get("cores"), 1) * _int(cpu.get("sockets"), 1)
            tally.cpu = cores * _int(cpu.get("threads"), 1) * 1000
        if "memory" in requests:
            tally.memory = memory_bytes(requests["memory"])
        elif _get(domain, "memory", "guest") is not None:
            tally.memory = memory_bytes(_get(domain, "memory", "guest"))
    except QuantityError as exc:
        problems.append(f"VM resources: {exc}")
    devices = domain.get("devices")
    devices = devices if isinstance(devices, Mapping) else {}
    for field in ("gpus", "hostDevices"):
        for device in _list(devices.get(field)):
            name = device.get("deviceName")
            if isinstance(name, str):
                extended[name] = extended.get(name, 0) + 1
    return tally


@functools.cache
def _naming() -> tuple[type[Device], Callable[[Device], str]]:
    """Render's device naming, imported at its first use (once: a site has many devices)."""
    from reconciler.core.model import Device
    from reconciler.core.render import device_resource

    return Device, device_resource


def _device_resource(node: str, device: Mapping[str, Any]) -> str:
    """The resource name a device is offered under: render's naming (one source of truth)."""
    device_type, device_resource = _naming()
    return device_resource(
        device_type(
            node=node,
            name=str(device.get("name", "")),
            type=str(device.get("type", "")),
            spec=device,
        )
    )


def hardware_capacity(hardware: Mapping[str, Any]) -> dict[str, Any]:
    """What hardware.yaml declares, summed over nodes (unreadable memory counts as 0).

    ``resources`` holds every device under the resource name render passes it through
    as (``nvidia.com/gpu`` × count, ``devices.kubevirt.io/usb-<vendor>-<product>``,
    ``devices.outpost.io/serial-<name>``...), so a request matches its declaration.
    """
    nodes = _list(_get(hardware, "spec", "nodes"))
    cpu = 0
    memory = 0
    resources: dict[str, int] = {}
    devices: list[str] = []
    types: set[str] = set()
    for node in nodes:
        cpu += _int(node.get("cpu"), 0) * 1000
        # An unreadable memory is reported by the schema at its line; it just does not count.
        with contextlib.suppress(QuantityError):
            memory += memory_bytes(node.get("memory", 0))
        for device in _list(node.get("devices")):
            devices.append(str(device.get("name", "")))
            types.add(str(device.get("type", "")))
            resource = _device_resource(str(node.get("name", "")), device)
            count = _int(device.get("count"), 1) if device.get("type") == "gpu" else 1
            resources[resource] = resources.get(resource, 0) + count
    return {
        "nodes": len(nodes),
        "cpuMillis": cpu,
        "memoryBytes": memory,
        "resources": resources,
        "devices": sorted(set(devices)),
        "deviceTypes": sorted(types),
    }


# An object's own requests: (what one copy requests, or None if it runs nothing; whether
# its replicas multiply it; its extended resources; what could not be read).
_Requests = tuple[_Tally | None, bool, dict[str, int], list[str]]
# The requests of rendered objects by their shape (``RenderedObject.shape``): objects of
# one shape differ only in a label, so each site after the first reads them for free.
_BY_SHAPE: dict[Hashable, _Requests] = {}
_BY_SHAPE_MAX = 4096


def _requests(obj: Mapping[str, Any]) -> _Requests:
    own: dict[str, int] = {}
    messages: list[str] = []
    if _vm_spec(obj):
        return _vm_requests(obj, own, messages), False, own, messages
    pod = pod_spec(obj)
    if not pod:
        return None, False, own, messages
    return _pod_requests(pod, own, messages), True, own, messages


def site_status(
    objects: Sequence[Mapping[str, Any]],
    hardware: Mapping[str, Any],
    vm_documents: Iterable[Mapping[str, Any]] = (),
    app_documents: Iterable[Mapping[str, Any]] = (),
    *,
    shapes: Sequence[Hashable | None] = (),
) -> tuple[dict[str, Any], list[QuantityProblem]]:
    """``site.status`` for CEL: usage of the rendered ``objects`` and capacity of ``hardware``.

    ``vm_documents`` are the site's Outpost VirtualMachine documents (their device
    names) and ``app_documents`` the App documents it runs (their required device
    types). ``shapes``, when given, holds each object's ``RenderedObject.shape`` (None:
    unknown). Returns the status and the quantities that could not be read.
    """
    capacity = hardware_capacity(hardware)
    total = _Tally()
    extended: dict[str, int] = {}
    problems: list[QuantityProblem] = []
    for index, obj in enumerate(objects):
        shape = shapes[index] if shapes else None
        found = _BY_SHAPE.get(shape) if shape is not None else None
        if found is None:
            found = _requests(obj)
            if shape is not None:
                if len(_BY_SHAPE) >= _BY_SHAPE_MAX:
                    _BY_SHAPE.clear()
                _BY_SHAPE[shape] = found
        tally, scaled, own, messages = found
        if tally is not None:
            times = _replicas(obj, capacity["nodes"]) if scaled else 1
            total.add(tally, times)
            for resource, count in own.items():
                extended[resource] = extended.get(resource, 0) + count * times
        problems.extend(QuantityProblem(index, "resources", m) for m in messages)
    devices: set[str] = set()
    for vm in vm_documents:
        devices.update(str(d) for d in _get(vm, "spec", "devices") or [])
    types: set[str] = set()
    for app in app_documents:
        types.update(str(t) for t in _get(app, "spec", "requires", "devices") or [])
    usage = {
        "cpuMillis": total.cpu,
        "memoryBytes": total.memory,
        "resources": extended,
        "devices": sorted(devices),
        "deviceTypes": sorted(types),
    }
    return {"usage": usage, "capacity": capacity}, problems


def _cel_pod_spec(obj: Any) -> Any:
    return dict(pod_spec(obj)) if isinstance(obj, Mapping) else {}


def _cel_containers(obj: Any) -> Any:
    return [dict(c) for c in containers(obj)] if isinstance(obj, Mapping) else []


def _cel_images(obj: Any) -> Any:
    return images(obj) if isinstance(obj, Mapping) else []


# The functions registered in every CEL context the policy engine builds.
CEL_FUNCTIONS = {
    "podSpec": _cel_pod_spec,
    "containers": _cel_containers,
    "images": _cel_images,
    "cpuMillis": cpu_millis,
    "memoryBytes": memory_bytes,
}
