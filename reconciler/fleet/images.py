"""Every image a site's slice pulls: what to mirror into an air-gapped plant's registry.

An air-gapped plant can only run what its local registry holds. The list is
taken from the *rendered* slice — the objects the node will apply — so it is
exactly what the site needs at that revision, not everything an app has ever
listed. It feeds the tools operators already use to copy images (skopeo,
Hauler, Zarf); Outpost does not move images itself.

Walked, per object:

- pod templates wherever Kubernetes workloads keep them (``Pod.spec``,
  ``spec.template.spec`` of Deployment/StatefulSet/DaemonSet/ReplicaSet/Job/
  ReplicationController, ``spec.jobTemplate.spec.template.spec`` of CronJob):
  ``containers``, ``initContainers``, ``ephemeralContainers`` and image volumes
  (``volumes[].image.reference``);
- KubeVirt (``kubevirt.io``): ``containerDisk`` volumes and ``kernelBoot``
  containers of VirtualMachine, VirtualMachineInstance, VirtualMachinePool and
  VirtualMachineInstanceReplicaSet templates, and the ``registry`` source of
  ``dataVolumeTemplates``;
- CDI ``DataVolume`` objects with a ``registry`` source (``docker://`` dropped).

An image not pinned by digest cannot be mirrored reproducibly (a tag can move
between the copy and the pull); it is listed with ``digest: None`` so the CLI
can say so (the ``image-digest`` policy refuses such slices anyway).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.core.errors import Mark

__all__ = [
    "ImageKind",
    "ImageUse",
    "ImageUser",
    "image_digest",
    "images_of",
    "new_images",
    "site_images",
]

ImageKind = Literal["container", "vm-disk"]

_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_POD_TEMPLATE_PATHS: tuple[tuple[str, ...], ...] = (
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
)
_KUBEVIRT_TEMPLATE_PATHS: tuple[tuple[str, ...], ...] = (
    ("spec",),  # VirtualMachineInstance
    ("spec", "template", "spec"),  # VirtualMachine, VirtualMachineInstanceReplicaSet
    ("spec", "virtualMachineTemplate", "spec", "template", "spec"),  # VirtualMachinePool
)
_DATA_VOLUME_TEMPLATE_PATHS: tuple[tuple[str, ...], ...] = (
    ("spec", "dataVolumeTemplates"),
    ("spec", "virtualMachineTemplate", "spec", "dataVolumeTemplates"),
)


@dataclass(frozen=True, order=True)
class ImageUser:
    """One field of one object that names an image, and where the object came from."""

    object: str
    field: str
    origin: str = ""


@dataclass(frozen=True)
class ImageUse:
    """One image reference and everything in the slice that uses it."""

    image: str
    kind: ImageKind
    users: tuple[ImageUser, ...]

    @property
    def digest(self) -> str | None:
        return image_digest(self.image)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "kind": self.kind,
            "digest": self.digest,
            "usedBy": [
                {"object": u.object, "field": u.field, "origin": u.origin} for u in self.users
            ],
        }


def new_images(before: Iterable[ImageUse], after: Iterable[ImageUse]) -> list[ImageUse]:
    """The images of ``after`` that ``before`` does not use: what a change needs mirrored.

    An image is compared by its whole reference (name and digest): a new digest of a
    known name is a new image to mirror, and an image that left the slice is not listed.
    """
    known = {(use.image, use.kind) for use in before}
    return [use for use in after if (use.image, use.kind) not in known]


def image_digest(image: str) -> str | None:
    """``sha256:<hex>`` when ``image`` is pinned by digest, else None."""
    match = _DIGEST.search(image)
    return match.group(1) if match else None


def site_images(rendered: Any) -> list[ImageUse]:
    """The images of a ``RenderedSite`` (``.objects[]`` with ``.key``, ``.body``, ``.origin``)."""
    return images_of((str(o.key), o.body, o.origin) for o in rendered.objects)


def images_of(
    objects: Iterable[tuple[str, Mapping[str, Any], Mark | str | None]],
) -> list[ImageUse]:
    """Images used by ``(object key, body, origin)`` triples: sorted by image, deduplicated.

    One image used both as a container and as a VM disk is listed once per kind.
    """
    found: dict[tuple[str, ImageKind], set[ImageUser]] = {}
    for key, body, origin in objects:
        where = str(origin) if origin is not None else ""
        for image, kind, field_path in _walk(body):
            found.setdefault((image, kind), set()).add(ImageUser(key, field_path, where))
    return [
        ImageUse(image, kind, tuple(sorted(users)))
        for (image, kind), users in sorted(found.items())
    ]


def _walk(body: Mapping[str, Any]) -> Iterator[tuple[str, ImageKind, str]]:
    api_version = str(body.get("apiVersion", ""))
    group = api_version.rpartition("/")[0]
    kind = str(body.get("kind", ""))
    if group == "kubevirt.io":
        yield from _kubevirt(body)
        return
    if group == "cdi.kubevirt.io" and kind == "DataVolume":
        yield from _registry_source(_get(body, ("spec",)), "spec")
        return
    if kind == "Pod" and group == "":
        yield from _pod_spec(_get(body, ("spec",)), "spec")
        return
    for path in _POD_TEMPLATE_PATHS:
        spec = _get(body, path)
        if spec is not None:
            yield from _pod_spec(spec, ".".join(path))


def _pod_spec(spec: Any, prefix: str) -> Iterator[tuple[str, ImageKind, str]]:
    if not isinstance(spec, Mapping):
        return
    for field_name in ("initContainers", "containers", "ephemeralContainers"):
        for index, container in enumerate(_list(spec.get(field_name))):
            image = container.get("image")
            if isinstance(image, str) and image:
                label = container.get("name", index)
                yield image, "container", f"{prefix}.{field_name}[{label}].image"
    for index, volume in enumerate(_list(spec.get("volumes"))):
        reference = _get(volume, ("image", "reference"))
        if isinstance(reference, str) and reference:
            label = volume.get("name", index)
            yield reference, "container", f"{prefix}.volumes[{label}].image.reference"


def _kubevirt(body: Mapping[str, Any]) -> Iterator[tuple[str, ImageKind, str]]:
    for path in _KUBEVIRT_TEMPLATE_PATHS:
        spec = _get(body, path)
        if not isinstance(spec, Mapping) or ("domain" not in spec and "volumes" not in spec):
            continue
        prefix = ".".join(path)
        for index, volume in enumerate(_list(spec.get("volumes"))):
            image = _get(volume, ("containerDisk", "image"))
            if isinstance(image, str) and image:
                label = volume.get("name", index)
                yield image, "vm-disk", f"{prefix}.volumes[{label}].containerDisk.image"
        kernel = _get(spec, ("domain", "firmware", "kernelBoot", "container", "image"))
        if isinstance(kernel, str) and kernel:
            yield kernel, "vm-disk", f"{prefix}.domain.firmware.kernelBoot.container.image"
    for path in _DATA_VOLUME_TEMPLATE_PATHS:
        for index, template in enumerate(_list(_get(body, path))):
            label = _get(template, ("metadata", "name")) or index
            yield from _registry_source(
                _get(template, ("spec",)), f"{'.'.join(path)}[{label}].spec"
            )


def _registry_source(spec: Any, prefix: str) -> Iterator[tuple[str, ImageKind, str]]:
    url = _get(spec, ("source", "registry", "url"))
    if isinstance(url, str) and url:
        image = url.removeprefix("docker://")
        yield image, "vm-disk", f"{prefix}.source.registry.url"


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _list(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]
