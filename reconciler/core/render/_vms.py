"""``kind: VirtualMachine`` (sites/<id>/vms/*.yaml) to KubeVirt ``kubevirt.io/v1`` objects.

- ``cpu`` → ``domain.cpu.cores``; ``memory`` → ``domain.memory.guest`` and
  ``domain.resources.requests.memory`` (KubeVirt adds its own overhead on top).
- Disks in boot order: an ``image`` is a ``containerDisk`` (pinned by digest,
  reset on every start); a ``volume`` is a ``PersistentVolumeClaim`` named
  ``<vm>-<disk>`` rendered next to the VM. A plain PVC rather than a CDI
  DataVolume because a k3s store node has local-path storage and no CDI;
  KubeVirt creates ``disk.img`` in an empty filesystem PVC at first boot.
- Networks: ``pod`` → masquerade on the pod network; ``multus`` → a bridge
  interface on the named NetworkAttachmentDefinition.
- Devices (names from hardware.yaml) are passed through as KubeVirt host
  devices by resource name:

  - usb: ``devices.kubevirt.io/usb-<vendor>-<product>``, permitted in the
    KubeVirt CR (``permittedHostDevices.usb`` with that vendor/product selector);
  - pci: ``devices.kubevirt.io/pci-<vendor>-<product>``, permitted as
    ``permittedHostDevices.pciHostDevices`` (``pciVendorSelector: <vendor>:<product>``);
  - serial: ``devices.outpost.io/serial-<device name>``, advertised by a device
    plugin on the node for each serial port of hardware.yaml and permitted with
    ``externalResourceProvider: true``;
  - gpu: the hardware's ``resource`` (``nvidia.com/gpu``) in ``domain.devices.gpus``.

  KubeVirt has no native tty passthrough, hence the Outpost resource name for
  serial ports: one name per port, so two VMs never get the same PLC line.
- Placement: a VM runs on the node its devices hang off, or on its ``node``
  pin (``nodeSelector: {outpost/node: <name>}``). Devices on two nodes, or a
  pin to another node than the devices', cannot be satisfied and are errors.
"""

from __future__ import annotations

from typing import Any

from reconciler.core.errors import RenderError
from reconciler.core.loader import Document
from reconciler.core.model import Device, Hardware
from reconciler.core.render._placement import NODE_LABEL
from reconciler.core.render._types import ObjectKey, RenderedObject

DEFAULT_NAMESPACE = "vms"
USB_RESOURCE = "devices.kubevirt.io/usb-{vendor}-{product}"
PCI_RESOURCE = "devices.kubevirt.io/pci-{vendor}-{product}"
SERIAL_RESOURCE = "devices.outpost.io/serial-{name}"


def vm_namespace(doc: Document) -> str:
    return str(doc.spec.get("namespace") or DEFAULT_NAMESPACE)


def device_resource(device: Device) -> str:
    """The KubeVirt host-device resource name a device is passed through as."""
    if device.type == "usb":
        return USB_RESOURCE.format(
            vendor=device.spec.get("vendor"), product=device.spec.get("product")
        )
    if device.type == "pci":
        return PCI_RESOURCE.format(
            vendor=device.spec.get("vendor"), product=device.spec.get("product")
        )
    if device.type == "serial":
        return SERIAL_RESOURCE.format(name=device.name)
    return str(device.spec.get("resource", "nvidia.com/gpu"))


def _node_for(
    doc: Document, devices: list[tuple[int, Device]], hardware: Hardware | None
) -> str | None:
    nodes = {str(n.get("name")) for n in (hardware.nodes if hardware else ())}
    pin = doc.spec.get("node")
    if pin is not None and str(pin) not in nodes:
        have = ", ".join(sorted(nodes)) or "none (no hardware.yaml)"
        raise RenderError(
            f"VM {doc.name!r} is pinned to node {pin!r}, which hardware.yaml does not declare "
            f"(nodes: {have})",
            mark=doc.mark("spec", "node"),
        )
    chosen: str | None = str(pin) if pin is not None else None
    for index, device in devices:
        if chosen is not None and device.node != chosen:
            why = "its node pin" if pin is not None else "another of its devices"
            raise RenderError(
                f"VM {doc.name!r}: device {device.name!r} is attached to node {device.node!r}, "
                f"but {why} needs node {chosen!r}; a VM runs on one node",
                mark=doc.mark("spec", "devices", index),
            )
        chosen = device.node
    return chosen


def render_vm(
    doc: Document, site_id: str, hardware: Hardware | None, labels: dict[str, str]
) -> list[RenderedObject]:
    """The KubeVirt VirtualMachine and the PVCs of its volumes."""
    spec = doc.spec
    name = doc.name
    namespace = vm_namespace(doc)
    own = {str(k): str(v) for k, v in doc.labels.items()}
    vm_labels = {**own, "app.kubernetes.io/name": name, **labels, "outpost/vm": name}
    by_name = {d.name: d for d in (hardware.devices if hardware else ())}
    devices: list[tuple[int, Device]] = []
    for index, device_name in enumerate(spec.get("devices") or []):
        device = by_name.get(str(device_name))
        if device is None:
            have = ", ".join(sorted(by_name)) or "none"
            raise RenderError(
                f"VM {name!r} passes through device {device_name!r}, which "
                f"sites/{site_id}/hardware.yaml does not declare (devices: {have})",
                mark=doc.mark("spec", "devices", index),
            )
        devices.append((index, device))
    node = _node_for(doc, devices, hardware)

    objects: list[RenderedObject] = []
    disks: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    for index, disk in enumerate(spec.get("disks") or []):
        disk_name = str(disk.get("name"))
        disks.append(
            {"name": disk_name, "bootOrder": index + 1, "disk": {"bus": disk.get("bus", "virtio")}}
        )
        if "image" in disk:
            volumes.append({"name": disk_name, "containerDisk": {"image": disk["image"]}})
            continue
        volume = disk.get("volume") or {}
        claim = f"{name}-{disk_name}"
        pvc_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": str(volume.get("size"))}},
        }
        if volume.get("storageClass"):
            pvc_spec["storageClassName"] = volume["storageClass"]
        pvc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace, "labels": dict(vm_labels)},
            "spec": pvc_spec,
        }
        objects.append(
            RenderedObject(
                ObjectKey.of(pvc), pvc, doc.mark("spec", "disks", index), None, source=doc
            )
        )
        volumes.append({"name": disk_name, "persistentVolumeClaim": {"claimName": claim}})

    interfaces: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    for net in spec.get("networks") or []:
        net_name = str(net.get("name"))
        if net.get("type") == "multus":
            interfaces.append({"name": net_name, "bridge": {}})
            networks.append({"name": net_name, "multus": {"networkName": str(net.get("network"))}})
        else:
            interfaces.append({"name": net_name, "masquerade": {}})
            networks.append({"name": net_name, "pod": {}})

    domain_devices: dict[str, Any] = {"disks": disks}
    if interfaces:
        domain_devices["interfaces"] = interfaces
    host_devices = [
        {"name": d.name, "deviceName": device_resource(d)} for _, d in devices if d.type != "gpu"
    ]
    gpus = [
        {"name": d.name, "deviceName": device_resource(d)} for _, d in devices if d.type == "gpu"
    ]
    if host_devices:
        domain_devices["hostDevices"] = host_devices
    if gpus:
        domain_devices["gpus"] = gpus

    memory = str(spec.get("memory"))
    template_spec: dict[str, Any] = {
        "domain": {
            "cpu": {"cores": spec.get("cpu")},
            "memory": {"guest": memory},
            "resources": {"requests": {"memory": memory}},
            "devices": domain_devices,
        },
        "volumes": volumes,
    }
    if networks:
        template_spec["networks"] = networks
    if node is not None:
        template_spec["nodeSelector"] = {NODE_LABEL: node}
    vm: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(vm_labels)},
        "spec": {
            "runStrategy": str(spec.get("runStrategy", "Always")),
            "template": {"metadata": {"labels": dict(vm_labels)}, "spec": template_spec},
        },
    }
    description = spec.get("description")
    if isinstance(description, str) and description:
        vm["metadata"]["annotations"] = {"outpost/description": description}
    objects.insert(0, RenderedObject(ObjectKey.of(vm), vm, doc.mark(), None, source=doc))
    return objects
