"""render_site on a tiny fleet: values, placeholders, patches, labels, placement, VMs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from render_world import (
    APP,
    DIGEST_A,
    FLEET,
    HARDWARE,
    MANIFEST,
    SITE,
    line_of,
    tiny_files,
    workdir_repo,
    write_files,
)

from reconciler.errors import Mark, RenderError
from reconciler.render import (
    RenderedSite,
    dump_yaml,
    node_labels,
    render_site,
    to_json,
    to_yaml,
)


def render(tmp_path: Path, changes: dict[str, str | None] | None = None) -> RenderedSite:
    write_files(tmp_path, tiny_files(changes or {}))
    return render_site(workdir_repo(tmp_path), "s1")


def fails(tmp_path: Path, changes: dict[str, str | None]) -> RenderError:
    with pytest.raises(RenderError) as info:
        render(tmp_path, changes)
    return info.value


def body(rendered: RenderedSite, key: str) -> dict:
    obj = rendered.object(key)
    assert obj is not None, [str(o.key) for o in rendered.objects]
    return obj.body


# -- values and placeholders --------------------------------------------------------------------


def test_whole_placeholders_keep_their_type_and_text_placeholders_interpolate(tmp_path: Path):
    rendered = render(tmp_path)
    deployment = body(rendered, "apps/v1/Deployment/web/web")
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"registry.example.com/web@sha256:{DIGEST_A}"
    assert {"name": "TZ", "value": "Europe/Berlin"} in container["env"]
    assert {"name": "NS", "value": "web"} in container["env"]
    data = body(rendered, "v1/ConfigMap/web/web-config")["data"]
    assert data == {"GREETING": "hello, s1!", "PORT": "8443/tcp", "SHELL": "echo ${HOME}"}


def test_values_layer_defaults_fleet_site_overrides(tmp_path: Path):
    site = SITE + '  apps:\n    web: {version: "1.0.0", values: {greeting: site, replicas: 2}}\n'
    overrides = (
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata: {name: s1}\n"
        "spec:\n  apps:\n    web:\n      values: {replicas: 3}\n"
    )
    rendered = render(tmp_path, {"sites/s1/site.yaml": site, "sites/s1/overrides.yaml": overrides})
    assert body(rendered, "v1/ConfigMap/web/web-config")["data"]["GREETING"] == "site, s1!"
    assert body(rendered, "apps/v1/Deployment/web/web")["spec"]["replicas"] == 3
    (instance,) = rendered.apps
    assert instance.values == {"greeting": "site", "replicas": 3, "tls": {"port": 8443}}


def test_site_version_wins_over_the_fleet(tmp_path: Path):
    site = SITE + '  apps:\n    web: {version: "1.1.0"}\n'
    rendered = render(tmp_path, {"sites/s1/site.yaml": site})
    assert rendered.apps[0].version == "1.1.0"
    image = body(rendered, "apps/v1/Deployment/web/web")["spec"]["template"]["spec"]["containers"][
        0
    ]["image"]
    assert image.endswith("b" * 64)
    labels = body(rendered, "apps/v1/Deployment/web/web")["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "1.1.0"


def test_unknown_placeholder_points_at_the_manifest_line(tmp_path: Path):
    manifest = MANIFEST.replace("${greeting}, ${site.name}!", "${greting}")
    error = fails(tmp_path, {"apps/web/manifests/web.yaml": manifest})
    assert error.mark == Mark("apps/web/manifests/web.yaml", line_of(manifest, "${greting}"))
    assert "unknown placeholder ${greting}" in error.message


def test_unknown_builtin_and_malformed_placeholders_are_errors(tmp_path: Path):
    manifest = MANIFEST.replace("${site.timezone}", "${site.region}")
    assert (
        "unknown placeholder" in fails(tmp_path, {"apps/web/manifests/web.yaml": manifest}).message
    )
    manifest = MANIFEST.replace("${site.timezone}", "${site.timezone")
    assert "malformed" in fails(tmp_path, {"apps/web/manifests/web.yaml": manifest}).message


def test_missing_image_key_is_an_error(tmp_path: Path):
    manifest = MANIFEST.replace("${images.server}", "${images.sidecar}")
    error = fails(tmp_path, {"apps/web/manifests/web.yaml": manifest})
    assert "has no image 'sidecar'" in error.message
    assert error.mark == Mark("apps/web/manifests/web.yaml", line_of(manifest, "images.sidecar"))


def test_unused_parameter_points_at_app_yaml(tmp_path: Path):
    app = APP.replace(
        "      greeting: {type: string}\n",
        "      greeting: {type: string}\n      unused: {type: string}\n",
    )
    error = fails(tmp_path, {"apps/web/app.yaml": app})
    assert error.mark == Mark("apps/web/app.yaml", line_of(app, "unused:"))
    assert "'unused'" in error.message and "no manifest" in error.message


def test_bad_value_points_at_the_layer_that_set_it(tmp_path: Path):
    overrides = (
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata: {name: s1}\n"
        "spec:\n  apps:\n    web:\n      values:\n        replicas: 7\n"
    )
    error = fails(tmp_path, {"sites/s1/overrides.yaml": overrides})
    assert error.mark == Mark("sites/s1/overrides.yaml", line_of(overrides, "replicas: 7"))
    assert "replicas" in error.message and "maximum" in error.message
    fleet = FLEET.replace("greeting: hello", "greeting: 42")
    error = fails(tmp_path, {"fleets/f1.yaml": fleet})
    assert error.mark == Mark("fleets/f1.yaml", line_of(fleet, "greeting: 42"))


def test_misspelt_value_points_at_the_misspelt_key(tmp_path: Path):
    fleet = FLEET.replace("greeting: hello", "greeting: hello\n        replcas: 2")
    error = fails(tmp_path, {"fleets/f1.yaml": fleet})
    assert error.mark == Mark("fleets/f1.yaml", line_of(fleet, "replcas"))


def test_version_not_found_points_at_the_version(tmp_path: Path):
    fleet = FLEET.replace('version: "1.0.0"', 'version: "9.9.9"')
    error = fails(tmp_path, {"fleets/f1.yaml": fleet})
    assert error.mark == Mark("fleets/f1.yaml", line_of(fleet, "9.9.9"))
    assert "versions: 1.0.0, 1.1.0" in error.message


def test_a_version_yaml_reads_as_a_number_is_an_error(tmp_path: Path):
    fleet = FLEET.replace('version: "1.0.0"', "version: 1.10")
    error = fails(tmp_path, {"fleets/f1.yaml": fleet})
    assert error.mark == Mark("fleets/f1.yaml", line_of(fleet, "version: 1.10"))
    assert "quoted string" in error.message


def test_unknown_app_and_unknown_fleet(tmp_path: Path):
    fleet = FLEET.replace("    web:", "    nope:")
    assert "apps/nope/app.yaml does not exist" in fails(tmp_path, {"fleets/f1.yaml": fleet}).message
    site = SITE.replace("fleets: [f1]", "fleets: [f1, f2]")
    error = fails(tmp_path, {"sites/s1/site.yaml": site})
    assert error.mark == Mark("sites/s1/site.yaml", line_of(site, "fleets:"))


def test_fleet_selector_guards_membership(tmp_path: Path):
    site = SITE.replace("region: r1", "region: r2")
    error = fails(tmp_path, {"sites/s1/site.yaml": site})
    assert "selector" in error.message and error.mark.path == "sites/s1/site.yaml"


def test_fleets_that_are_not_a_list_are_an_error(tmp_path: Path):
    error = fails(tmp_path, {"sites/s1/site.yaml": SITE.replace("fleets: [f1]", "fleets: 1")})
    assert "must be a list of fleet names" in error.message
    assert error.mark == Mark("sites/s1/site.yaml", 9)


def test_two_fleets_with_different_versions_name_both_lines(tmp_path: Path):
    other = FLEET.replace("name: f1", "name: f2").replace('"1.0.0"', '"1.1.0"')
    site = SITE.replace("fleets: [f1]", "fleets: [f1, f2]")
    write_files(tmp_path, {"fleets/f2.yaml": other})
    error = fails(tmp_path, {"sites/s1/site.yaml": site})
    assert error.mark == Mark("fleets/f2.yaml", line_of(other, "web:"))
    assert f"fleets/f1.yaml:{line_of(FLEET, 'web:')}" in error.message


def test_two_fleets_with_contradicting_values(tmp_path: Path):
    other = FLEET.replace("name: f1", "name: f2").replace("hello", "bonjour")
    site = SITE.replace("fleets: [f1]", "fleets: [f1, f2]")
    write_files(tmp_path, {"fleets/f2.yaml": other})
    error = fails(tmp_path, {"sites/s1/site.yaml": site})
    assert error.mark == Mark("fleets/f2.yaml", line_of(other, "bonjour"))


# -- patches ------------------------------------------------------------------------------------

OVERRIDES_HEAD = "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata: {name: s1}\nspec:\n  apps:\n    web:\n      patches:\n"


def test_merge_and_json_patches_apply_and_cannot_strip_outpost_labels(tmp_path: Path):
    overrides = OVERRIDES_HEAD + (
        "        - target: {kind: Deployment, name: web}\n"
        "          merge: {metadata: {labels: {outpost/site: null}}, spec: {strategy: {type: Recreate}}}\n"
        "        - target: {kind: ConfigMap, name: web-config}\n"
        "          json:\n"
        "            - {op: test, path: /data/GREETING, value: 'hello, s1!'}\n"
        "            - {op: replace, path: /data/GREETING, value: hi}\n"
        "            - {op: remove, path: /data/SHELL}\n"
    )
    rendered = render(tmp_path, {"sites/s1/overrides.yaml": overrides})
    deployment = rendered.object("apps/v1/Deployment/web/web")
    assert deployment is not None
    assert deployment.body["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment.body["metadata"]["labels"]["outpost/site"] == "s1"
    assert deployment.patches == (
        Mark("sites/s1/overrides.yaml", line_of(overrides, "kind: Deployment")),
    )
    assert body(rendered, "v1/ConfigMap/web/web-config")["data"] == {
        "GREETING": "hi",
        "PORT": "8443/tcp",
    }


def test_patch_target_missing_is_an_error(tmp_path: Path):
    overrides = OVERRIDES_HEAD + (
        "        - target: {kind: Deployment, name: webb}\n          merge: {spec: {replicas: 2}}\n"
    )
    error = fails(tmp_path, {"sites/s1/overrides.yaml": overrides})
    assert error.mark == Mark("sites/s1/overrides.yaml", line_of(overrides, "webb"))
    assert "matches no object" in error.message


def test_failing_json_patch_points_at_the_operation(tmp_path: Path):
    overrides = OVERRIDES_HEAD + (
        "        - target: {kind: ConfigMap, name: web-config}\n"
        "          json:\n"
        "            - {op: add, path: /data/X, value: x}\n"
        "            - {op: test, path: /data/GREETING, value: nope}\n"
    )
    error = fails(tmp_path, {"sites/s1/overrides.yaml": overrides})
    assert error.mark == Mark("sites/s1/overrides.yaml", line_of(overrides, "op: test"))


def test_patch_cannot_rename_an_object(tmp_path: Path):
    overrides = OVERRIDES_HEAD + (
        "        - target: {kind: Deployment, name: web}\n          merge: {metadata: {name: other}}\n"
    )
    assert "which object" in fails(tmp_path, {"sites/s1/overrides.yaml": overrides}).message


def test_overrides_for_an_app_the_site_does_not_run(tmp_path: Path):
    overrides = (
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata: {name: s1}\n"
        "spec:\n  apps:\n    pos:\n      values: {a: 1}\n"
    )
    error = fails(tmp_path, {"sites/s1/overrides.yaml": overrides})
    assert error.mark == Mark("sites/s1/overrides.yaml", line_of(overrides, "pos:"))


# -- namespaces, labels, uniqueness -------------------------------------------------------------


def test_app_namespace_and_foreign_namespace(tmp_path: Path):
    app = APP.replace("spec:\n", "spec:\n  namespace: shop\n", 1)
    rendered = render(tmp_path, {"apps/web/app.yaml": app})
    assert rendered.object("v1/Namespace/shop") is not None
    assert rendered.object("apps/v1/Deployment/shop/web") is not None
    manifest = MANIFEST.replace(
        "  name: web\nspec:", "  name: web\n  namespace: kube-system\nspec:"
    )
    error = fails(tmp_path, {"apps/web/app.yaml": APP, "apps/web/manifests/web.yaml": manifest})
    assert error.mark == Mark("apps/web/manifests/web.yaml", line_of(manifest, "kube-system"))


def test_duplicate_objects_are_an_error(tmp_path: Path):
    manifest = MANIFEST + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config}\n"
    assert "rendered twice" in fails(tmp_path, {"apps/web/manifests/web.yaml": manifest}).message


def test_objects_come_in_apply_order_and_carry_their_origin(tmp_path: Path):
    rendered = render(tmp_path)
    assert [o.key.kind for o in rendered.objects] == ["Namespace", "ConfigMap", "Deployment"]
    deployment = rendered.object("apps/v1/Deployment/web/web")
    assert deployment is not None
    assert deployment.origin == Mark(
        "apps/web/manifests/web.yaml", line_of(MANIFEST, "apiVersion: apps/v1")
    )
    assert deployment.mark("spec", "replicas").line == line_of(MANIFEST, "replicas:")
    assert deployment.app == "web"
    for obj in rendered.objects:
        labels = obj.body["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "outpost"
        assert labels["outpost/site"] == "s1"
        assert labels["outpost/app"] == "web"
    template = deployment.body["spec"]["template"]["metadata"]["labels"]
    assert template["outpost/app"] == "web" and template["app.kubernetes.io/version"] == "1.0.0"
    assert rendered.sources == (
        "apps/web/app.yaml",
        "apps/web/manifests/web.yaml",
        "fleets/f1.yaml",
        "sites/s1/hardware.yaml",
        "sites/s1/site.yaml",
    )


# -- hardware and placement ---------------------------------------------------------------------


def test_node_labels_from_hardware(tmp_path: Path):
    rendered = render(tmp_path)
    assert rendered.node_labels == node_labels(workdir_repo(tmp_path).site("s1").hardware)
    assert rendered.node_labels["n1"] == {
        "kubernetes.io/arch": "amd64",
        "outpost/device.usb": "true",
        "outpost/node": "n1",
        "zone": "front",
    }
    assert rendered.node_labels["n2"]["outpost/device.gpu"] == "true"


def test_gpu_app_gets_selector_toleration_and_limit(tmp_path: Path):
    app = APP + "  requires: {devices: [gpu, usb]}\n"
    pod = body(render(tmp_path, {"apps/web/app.yaml": app}), "apps/v1/Deployment/web/web")["spec"][
        "template"
    ]["spec"]
    assert pod["nodeSelector"] == {"outpost/device.gpu": "true", "outpost/device.usb": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 2}


def test_app_requiring_a_missing_device_type_is_an_error(tmp_path: Path):
    app = APP + "  requires: {devices: [gpu]}\n"
    hardware = HARDWARE.split("        - {name: gpu0")[0]
    error = fails(tmp_path, {"apps/web/app.yaml": app, "sites/s1/hardware.yaml": hardware})
    assert "requires a gpu device" in error.message
    assert error.mark == Mark("fleets/f1.yaml", line_of(FLEET, "web:"))


# -- VMs ----------------------------------------------------------------------------------------

VM = """\
apiVersion: outpost/v1
kind: VirtualMachine
metadata:
  name: hmi
spec:
  cpu: 2
  memory: 4Gi
  disks:
    - {name: system, image: "registry.example.com/vm/hmi@sha256:%s", bus: sata}
    - {name: data, volume: {size: 40Gi, storageClass: local-path}}
  networks:
    - {name: default, type: pod}
    - {name: floor, type: multus, network: floor-vlan}
  devices: [plc, nic, gpu0]
  runStrategy: Manual
""" % ("c" * 64)


def test_vm_renders_to_kubevirt_with_devices_and_node(tmp_path: Path):
    rendered = render(tmp_path, {"sites/s1/vms/hmi.yaml": VM})
    vm = body(rendered, "kubevirt.io/v1/VirtualMachine/vms/hmi")
    spec = vm["spec"]["template"]["spec"]
    assert vm["spec"]["runStrategy"] == "Manual"
    assert spec["domain"]["cpu"] == {"cores": 2}
    assert spec["domain"]["memory"] == {"guest": "4Gi"}
    assert spec["domain"]["resources"] == {"requests": {"memory": "4Gi"}}
    assert spec["domain"]["devices"]["hostDevices"] == [
        {"name": "plc", "deviceName": "devices.outpost.io/serial-plc"},
        {"name": "nic", "deviceName": "devices.kubevirt.io/pci-8086-1533"},
    ]
    assert spec["domain"]["devices"]["gpus"] == [{"name": "gpu0", "deviceName": "nvidia.com/gpu"}]
    assert spec["nodeSelector"] == {"outpost/node": "n2"}
    assert spec["volumes"][1] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "hmi-data"},
    }
    assert spec["networks"][1] == {"name": "floor", "multus": {"networkName": "floor-vlan"}}
    pvc = body(rendered, "v1/PersistentVolumeClaim/vms/hmi-data")
    assert pvc["spec"]["resources"] == {"requests": {"storage": "40Gi"}}
    assert pvc["spec"]["storageClassName"] == "local-path"
    assert rendered.object("v1/Namespace/vms") is not None
    assert rendered.object("kubevirt.io/v1/VirtualMachine/vms/hmi").origin == Mark(  # type: ignore[union-attr]
        "sites/s1/vms/hmi.yaml", 1
    )


def test_usb_passthrough_resource_name(tmp_path: Path):
    vm = VM.replace("devices: [plc, nic, gpu0]", "devices: [scanner]")
    spec = body(
        render(tmp_path, {"sites/s1/vms/hmi.yaml": vm}), "kubevirt.io/v1/VirtualMachine/vms/hmi"
    )
    assert spec["spec"]["template"]["spec"]["domain"]["devices"]["hostDevices"] == [
        {"name": "scanner", "deviceName": "devices.kubevirt.io/usb-05e0-1200"}
    ]
    assert spec["spec"]["template"]["spec"]["nodeSelector"] == {"outpost/node": "n1"}


def test_vm_device_errors(tmp_path: Path):
    vm = VM.replace("devices: [plc, nic, gpu0]", "devices: [plc, scanner]")
    error = fails(tmp_path, {"sites/s1/vms/hmi.yaml": vm})
    assert "a VM runs on one node" in error.message
    vm = VM.replace("devices: [plc, nic, gpu0]", "devices: [modem]")
    error = fails(tmp_path, {"sites/s1/vms/hmi.yaml": vm})
    assert error.mark == Mark("sites/s1/vms/hmi.yaml", line_of(vm, "modem"))
    vm = VM.replace("runStrategy: Manual", "runStrategy: Manual\n  node: n1")
    assert "needs node 'n1'" in fails(tmp_path, {"sites/s1/vms/hmi.yaml": vm}).message
    vm = VM.replace("runStrategy: Manual", "runStrategy: Manual\n  node: n9")
    assert "does not declare" in fails(tmp_path, {"sites/s1/vms/hmi.yaml": vm}).message


# -- secrets and output -------------------------------------------------------------------------

SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: web
type: Opaque
data:
  password: ENC[AES256_GCM,data:abc=,iv:abc=,tag:abc=,type:str]
sops:
  version: 3.11.0
"""


def test_secrets_are_references_and_never_content(tmp_path: Path):
    rendered = render(tmp_path, {"sites/s1/secrets/db.sops.yaml": SECRET})
    (ref,) = rendered.secret_refs
    assert str(ref.key) == "v1/Secret/web/db"
    assert ref.path == "sites/s1/secrets/db.sops.yaml"
    assert rendered.object("v1/Secret/web/db") is None
    for text in (to_yaml(rendered), to_json(rendered)):
        assert "ENC[" not in text and "sites/s1/secrets/db.sops.yaml" in text


def test_output_is_byte_stable_and_sorted(tmp_path: Path):
    first = render(tmp_path)
    second = render_site(workdir_repo(tmp_path), "s1")
    assert to_yaml(first) == to_yaml(second)
    assert to_json(first) == to_json(second)
    text = to_yaml(first)
    for doc in text.split("---\n")[1:]:
        top = [line.split(":")[0] for line in doc.splitlines() if line and not line.startswith(" ")]
        assert top == sorted(top)


@pytest.mark.parametrize("text", ["\x85", "\x85, s1!", "a\n\x85b", "\u2028", "a\rb"])
def test_yaml_output_keeps_unicode_line_breaks(text: str):
    for fast in (False, True):
        assert yaml.safe_load(dump_yaml({"k": text}, fast=fast)) == {"k": text}


@pytest.mark.parametrize(
    "broken",
    [
        HARDWARE.replace(
            "      devices:\n        - {name: scanner", "      devices: 7\n        # {name: scanner"
        ),
        HARDWARE.replace("  nodes:\n    - name: n1", "  nodes: 5\n  other:\n    - name: n1"),
    ],
)
def test_a_document_that_breaks_its_schema_is_a_render_error_not_a_crash(
    tmp_path: Path, broken: str
) -> None:
    """Render trusts the schemas; fed a document that does not pass them, it still fails
    closed with a RenderError (the node refuses the commit) instead of a TypeError."""
    error = fails(tmp_path, {"sites/s1/hardware.yaml": broken})
    assert error.mark is not None and error.mark.path.startswith("sites/s1")
    assert "outpost validate" in error.message or "hardware" in error.message
