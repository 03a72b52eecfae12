"""Every example site: golden files, and every object valid for the Kubernetes it targets.

Golden files are ``tests/render/golden/<site>.yaml``; after an intended change,
regenerate them with ``python tests/render/update_golden.py`` and review the diff like
any other change to what stores run. The tests only read them: none writes a golden
file and then compares with it.

Built-in kinds are validated against the OpenAPI schemas of Kubernetes 1.36
(the version of the test control plane) shipped by ``kubernetes-validate``,
strictly (unknown fields are errors). KubeVirt VirtualMachines are a custom
resource that package does not know; they are checked against
``kubevirt-vm.schema.json``, a structural schema of the fields Outpost renders
(taken from the kubevirt.io/v1 API reference), plus the cross-references
KubeVirt checks at admission: every disk has a volume and every interface a
network of the same name.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from render_world import example_repo

from reconciler.core.render import render_site, to_yaml

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
KUBERNETES_VERSION = "1.36"
SITES = example_repo().site_ids
VM_SCHEMA = json.loads((HERE / "kubevirt-vm.schema.json").read_text())


def test_the_example_fleet_is_there():
    assert len(SITES) >= 10
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(SITES)


@pytest.mark.parametrize("site", SITES)
def test_golden(site: str):
    text = to_yaml(render_site(example_repo(), site))
    golden = GOLDEN / f"{site}.yaml"
    assert golden.exists(), f"no golden file for {site}; run python tests/render/update_golden.py"
    expected = golden.read_text(encoding="utf-8")
    if text != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), text.splitlines(), str(golden), "rendered", lineterm=""
        )
        pytest.fail(
            f"{site}'s slice differs from {golden}; if the change is intended, regenerate "
            "with python tests/render/update_golden.py and review the diff:\n"
            + "\n".join(list(diff)[:60])
        )


def check_vm(body: dict) -> None:
    jsonschema.validate(body, VM_SCHEMA)
    spec = body["spec"]["template"]["spec"]
    volumes = {v["name"] for v in spec["volumes"]}
    disks = {d["name"] for d in spec["domain"]["devices"]["disks"]}
    assert disks == volumes, f"disks {disks} and volumes {volumes} differ"
    interfaces = {i["name"] for i in spec["domain"]["devices"].get("interfaces", [])}
    networks = {n["name"] for n in spec.get("networks", [])}
    assert interfaces == networks, f"interfaces {interfaces} and networks {networks} differ"


@pytest.mark.parametrize("site", SITES)
def test_every_object_is_valid_kubernetes(site: str):
    rendered = render_site(example_repo(), site)
    assert rendered.objects
    for obj in rendered.objects:
        if obj.key.group == "kubevirt.io":
            check_vm(obj.body)
            continue
        try:
            kubernetes_validate.validate(obj.body, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{site} {obj.key} (from {obj.origin}): {exc.message}")


def test_the_kubernetes_check_can_fail():
    obj = render_site(example_repo(), SITES[0]).objects[-1]
    broken = json.loads(json.dumps(obj.body))
    broken["spec"]["replicaz"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_vm_check_can_fail():
    vms = [
        obj.body
        for site in SITES
        for obj in render_site(example_repo(), site).objects
        if obj.key.kind == "VirtualMachine"
    ]
    assert vms, "the example fleet has VMs"
    broken = json.loads(json.dumps(vms[0]))
    broken["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["bootorder"] = 1
    with pytest.raises(jsonschema.ValidationError):
        check_vm(broken)
    broken = json.loads(json.dumps(vms[0]))
    broken["spec"]["template"]["spec"]["volumes"].pop()
    with pytest.raises(AssertionError):
        check_vm(broken)
