"""outpost images: the images an air-gapped plant must have in its local registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airgap_world import PLANT, REPO_ROOT, History

from reconciler.cli import main
from reconciler.core.model import Repository
from reconciler.core.render import render_site
from reconciler.core.source import WorkdirTree
from reconciler.fleet.images import image_digest, images_of, site_images

HMI_DISK = (
    "registry.example.com/vm/win7e-hmi@sha256:"
    "a0ef79f0e1369e3987a3048342bad12f67d0458fe761edc5a59d66fbb4431170"
)
D1 = "@sha256:" + "1" * 64
D2 = "@sha256:" + "2" * 64


def test_the_example_plant_needs_its_vm_disk_and_container_images_by_digest() -> None:
    rendered = render_site(Repository(WorkdirTree(REPO_ROOT)), PLANT)
    images = site_images(rendered)

    names = [i.image for i in images]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    disks = [i for i in images if i.kind == "vm-disk"]
    assert [d.image for d in disks] == [HMI_DISK]
    [user] = disks[0].users
    assert user.object == "kubevirt.io/v1/VirtualMachine/vms/hmi"
    assert user.field == "spec.template.spec.volumes[system].containerDisk.image"
    assert user.origin.startswith(f"sites/{PLANT}/vms/")
    containers = [i.image for i in images if i.kind == "container"]
    assert any("/plant/historian@sha256:" in c for c in containers)
    assert any("/plant/opcua-gateway@sha256:" in c for c in containers)
    assert all(i.digest is not None and i.digest.startswith("sha256:") for i in images)
    # Exactly the images the rendered objects name, nothing from versions it does not run.
    text = json.dumps([o.body for o in rendered.objects])
    assert all(name in text for name in names)
    assert text.count("@sha256:") == sum(len(i.users) for i in images)


def test_outpost_images_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", PLANT, "--repo", str(REPO_ROOT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert HMI_DISK in lines
    assert lines == sorted(set(lines))

    assert main(["images", PLANT, "--repo", str(REPO_ROOT), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["site"] == PLANT
    by_image = {i["image"]: i for i in document["images"]}
    assert by_image[HMI_DISK]["kind"] == "vm-disk"
    assert by_image[HMI_DISK]["usedBy"][0]["object"] == "kubevirt.io/v1/VirtualMachine/vms/hmi"
    assert sorted(by_image) == lines


def test_outpost_images_at_a_revision_of_a_signed_clone(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["images", PLANT, "--repo", str(history.repo.path), "--rev", history.b]) == 0
    assert HMI_DISK in capsys.readouterr().out.splitlines()


def test_outpost_images_unknown_site(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "plant-nowhere", "--repo", str(REPO_ROOT)]) == 2
    assert "plant-nowhere" in capsys.readouterr().err


def pod(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"containers": containers, **extra}


def walk(*bodies: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    objects = [(f"obj{i}", body, f"file{i}.yaml:1") for i, body in enumerate(bodies)]
    return [
        (u.image, u.kind, [f"{x.object} {x.field}" for x in u.users]) for u in images_of(objects)
    ]


def test_every_place_a_workload_or_vm_names_an_image() -> None:
    found = walk(
        {"apiVersion": "v1", "kind": "Pod", "spec": pod(
            [{"name": "a", "image": "r/a" + D1}],
            initContainers=[{"name": "init", "image": "r/init" + D1}],
            ephemeralContainers=[{"name": "debug", "image": "r/debug" + D1}],
            volumes=[{"name": "models", "image": {"reference": "r/models" + D1}}],
        )},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "spec": {"template": {"spec": pod([{"name": "a", "image": "r/a" + D1}])}}},
        {"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {
            "template": {"spec": pod([{"name": "job", "image": "r/job:1.0"}])}}}}},
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "spec": {
            "dataVolumeTemplates": [{"metadata": {"name": "root"}, "spec": {
                "source": {"registry": {"url": "docker://r/disk" + D2}}}}],
            "template": {"spec": {"domain": {"firmware": {"kernelBoot": {
                "container": {"image": "r/kernel" + D2}}}},
                "volumes": [{"name": "boot", "containerDisk": {"image": "r/disk" + D1}}]}}}},
        {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
         "spec": {"source": {"registry": {"url": "docker://r/dv" + D2}}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "data": {"image": "not/an/image"}},
    )  # fmt: skip
    assert found == [
        ("r/a" + D1, "container", [
            "obj0 spec.containers[a].image",
            "obj1 spec.template.spec.containers[a].image",
        ]),
        ("r/debug" + D1, "container", ["obj0 spec.ephemeralContainers[debug].image"]),
        ("r/disk" + D1, "vm-disk", ["obj3 spec.template.spec.volumes[boot].containerDisk.image"]),
        ("r/disk" + D2, "vm-disk", [
            "obj3 spec.dataVolumeTemplates[root].spec.source.registry.url",
        ]),
        ("r/dv" + D2, "vm-disk", ["obj4 spec.source.registry.url"]),
        ("r/init" + D1, "container", ["obj0 spec.initContainers[init].image"]),
        ("r/job:1.0", "container", [
            "obj2 spec.jobTemplate.spec.template.spec.containers[job].image",
        ]),
        ("r/kernel" + D2, "vm-disk", [
            "obj3 spec.template.spec.domain.firmware.kernelBoot.container.image",
        ]),
        ("r/models" + D1, "container", ["obj0 spec.volumes[models].image.reference"]),
    ]  # fmt: skip


def test_digests() -> None:
    assert image_digest("r/a" + D1) == "sha256:" + "1" * 64
    assert image_digest("r/a:1.0") is None
    assert image_digest("r/a:1.0@sha256:abc") is None
    assert image_digest("r/a@sha256:" + "A" * 64) is None


def test_malformed_bodies_are_skipped_not_crashed_on() -> None:
    assert (
        walk(
            {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": "x"}}},
            {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": ["x", {"image": ""}]}},
            {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "spec": None},
        )
        == []
    )


def test_a_tag_only_image_is_listed_and_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outpost images` exits 1 when an image cannot be mirrored reproducibly."""
    import shutil

    tree = tmp_path / "tree"
    for name in ("sites", "fleets", "apps", "policies"):
        shutil.copytree(REPO_ROOT / name, tree / name)
    vm = next((tree / "sites" / PLANT / "vms").glob("*.yaml"))
    vm.write_text(vm.read_text().replace(HMI_DISK, "registry.example.com/vm/win7e-hmi:latest"))

    assert main(["images", PLANT, "--repo", str(tree)]) == 1
    printed = capsys.readouterr()
    assert "registry.example.com/vm/win7e-hmi:latest" in printed.out.splitlines()
    assert "is not pinned by digest" in printed.err
