"""ResourceManager against the real API server: apply, update, prune, drift, health, errors.

Each test works in namespaces of its own and keeps its inventory in a namespace of its own,
under a site id of its own, so tests neither see nor prune each other's objects. Waits poll
with a generous deadline; a deadline is a failure bound, never a timing assertion.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.errors import ApplyError, ClusterUnavailable
from reconciler.node.apply import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PRUNE_ANNOTATION,
    SITE_LABEL,
    Action,
    Cluster,
    ObjectKey,
    ResourceManager,
    Status,
    key_of,
)
from tools.testcluster import Cluster as ControlPlane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example.com/pos/server@sha256:" + "a" * 64


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class World:
    """One test's corner of the cluster: names, a manager, and kubectl for out-of-band edits."""

    def __init__(self, testcluster: ControlPlane, kube: Cluster) -> None:
        self.testcluster = testcluster
        self.kube = kube
        self.ns = unique("apply")
        self.site = unique("site")
        self.inventory_ns = unique("inv")
        self.created_namespaces = [self.ns, self.inventory_ns]
        self.manager = ResourceManager(kube, site=self.site, inventory_namespace=self.inventory_ns)

    def kubectl(self, *args: str) -> str:
        return self.testcluster.kubectl(*args).stdout

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        where = ["-n", namespace or self.ns] if namespace != "" else []
        done = self.testcluster.kubectl(
            "get", kind, name, *where, "-o", "json", "--show-managed-fields", check=False
        )
        if done.returncode != 0:
            assert "NotFound" in done.stderr, done.stderr
            return None
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    # documents
    def namespace(self, name: str | None = None) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name or self.ns}}

    def config_map(self, name: str, **data: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.ns},
            "data": data,
        }

    def secret(self, name: str, **data: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": self.ns},
            "stringData": data,
        }

    def service(self, name: str, port: int = 80) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": 8080}]},
        }

    def deployment(
        self, name: str, *, image: str = IMAGE, replicas: int = 1, **pod: Any
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}], **pod}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            },
        }


@pytest.fixture
def kube(cluster: ControlPlane) -> Iterator[Cluster]:
    with Cluster.from_kubeconfig(cluster.kubeconfig) as connected:
        yield connected


@pytest.fixture
def world(cluster: ControlPlane, kube: Cluster) -> Iterator[World]:
    here = World(cluster, kube)
    yield here
    for name in here.created_namespaces:
        cluster.kubectl(
            "delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False
        )


def settle(check: Callable[[], Any], deadline: float = 60.0) -> Any:
    """Poll until ``check`` returns something truthy; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < end, f"condition not reached within {deadline}s"
        time.sleep(0.2)


def wait(manager: ResourceManager, objects: list[dict[str, Any]], deadline: float) -> Any:
    return manager.wait_healthy(
        objects,
        deadline_seconds=deadline,
        clock=time.monotonic,
        sleep=time.sleep,
        interval_seconds=0.25,
    )


# -- apply and update --------------------------------------------------------


def test_apply_then_reapply_is_unchanged(world: World) -> None:
    slice_ = [
        world.deployment("server"),
        world.service("server"),
        world.secret("creds", token="s3cret"),
        world.config_map("settings", currency="EUR"),
        world.namespace(),
    ]
    first = world.manager.apply(slice_, revision="r1")
    assert [str(e.key) for e in first.entries] == [
        f"Namespace/{world.ns}",
        f"ConfigMap/{world.ns}/settings",
        f"Secret/{world.ns}/creds",
        f"Service/{world.ns}/server",
        f"Deployment.apps/{world.ns}/server",
    ]
    assert {e.action for e in first.entries} == {Action.CREATED}
    version = world.get("configmap", "settings")["metadata"]["resourceVersion"]  # type: ignore[index]
    generation = world.get("deployment", "server")["metadata"]["generation"]  # type: ignore[index]

    again = world.manager.apply(slice_, revision="r1")
    assert {e.action for e in again.entries} == {Action.UNCHANGED}, again.entries
    # nothing was written: no new resourceVersion (a ConfigMap has no controller writing
    # to it), no new generation (the Deployment controller keeps writing its status)
    assert world.get("configmap", "settings")["metadata"]["resourceVersion"] == version  # type: ignore[index]
    assert world.get("deployment", "server")["metadata"]["generation"] == generation  # type: ignore[index]

    # the next tick is a new process: it trusts only what the inventory recorded
    fresh = ResourceManager(world.kube, site=world.site, inventory_namespace=world.inventory_ns)
    assert {e.action for e in fresh.apply(slice_, revision="r1").entries} == {Action.UNCHANGED}
    assert fresh.drift(slice_) == []
    stored = world.get("configmap", "outpost-inventory", world.inventory_ns)
    assert stored is not None
    assert set(json.loads(stored["data"]["fingerprints"])) == {
        k.encode() for k in first.keys if k.kind != "Secret"
    }

    live = world.get("configmap", "settings")
    assert live is not None
    assert live["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY, SITE_LABEL: world.site}
    managers = {entry["manager"] for entry in live["metadata"]["managedFields"]}
    assert managers == {"outpost"}


def test_update_changes_only_what_changed(world: World) -> None:
    base = [
        world.namespace(),
        world.config_map("settings", currency="EUR"),
        world.config_map("menu", items="3"),
        world.deployment("server"),
        world.service("server"),
    ]
    world.manager.apply(base, revision="r1")
    generation = world.get("deployment", "server")["metadata"]["generation"]  # type: ignore[index]

    newer = IMAGE.replace("a" * 64, "b" * 64)
    update = [
        world.namespace(),
        world.config_map("settings", currency="USD"),
        world.config_map("menu", items="3"),
        world.deployment("server", image=newer),
        world.service("server"),
    ]
    result = world.manager.apply(update, revision="r2")
    assert {str(k) for k in result.configured} == {
        f"ConfigMap/{world.ns}/settings",
        f"Deployment.apps/{world.ns}/server",
    }
    assert {str(k) for k in result.unchanged} == {
        f"Namespace/{world.ns}",
        f"ConfigMap/{world.ns}/menu",
        f"Service/{world.ns}/server",
    }
    assert world.get("configmap", "settings")["data"] == {"currency": "USD"}  # type: ignore[index]
    deployment = world.get("deployment", "server")
    assert deployment is not None
    assert deployment["metadata"]["generation"] == generation + 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == newer


def test_invalid_object_is_refused_with_the_servers_message(world: World) -> None:
    broken = world.deployment("broken")
    del broken["spec"]["selector"]
    with pytest.raises(ApplyError) as caught:
        world.manager.apply([world.namespace(), world.config_map("fine"), broken], revision="r1")
    error = caught.value
    assert error.code == 422 and error.reason == "Invalid"
    assert f"Deployment.apps/{world.ns}/broken" in str(error)
    assert "spec.selector: Required value" in str(error)
    assert world.get("configmap", "fine") is not None, "earlier stages stay applied"


def test_object_in_a_missing_namespace_is_refused(world: World) -> None:
    with pytest.raises(ApplyError, match=r'namespaces "' + world.ns + '" not found') as caught:
        world.manager.apply([world.config_map("orphan")], revision="r1")
    assert caught.value.code == 404


# -- inventory and prune -----------------------------------------------------


def test_inventory_lives_in_the_cluster(world: World) -> None:
    assert world.manager.read_inventory() is None
    result = world.manager.apply([world.namespace(), world.config_map("a")], revision="r1")
    pending = world.manager.read_inventory()
    assert pending is not None and not pending.complete and pending.keys == result.keys
    world.manager.write_inventory(result.keys, "r1")
    stored = world.get("configmap", "outpost-inventory", world.inventory_ns)
    assert stored is not None
    assert stored["data"]["revision"] == "r1" and stored["data"]["site"] == world.site
    assert json.loads(stored["data"]["keys"]) == sorted(k.encode() for k in result.keys)
    done = world.manager.read_inventory()
    assert done is not None and done.complete and done.keys == result.keys


def test_prune_removes_what_left_keeps_opt_outs_and_foreign_objects(world: World) -> None:
    kept = world.config_map("kept")
    opt_out = world.config_map("opt-out")
    opt_out["metadata"]["annotations"] = {PRUNE_ANNOTATION: "disabled"}
    leaving = [
        world.config_map("leaving"),
        world.deployment("old-server"),
        world.service("old-server"),
    ]
    r1 = world.manager.apply([world.namespace(), kept, opt_out, *leaving], revision="r1")
    world.manager.write_inventory(r1.keys, "r1")
    world.kubectl("create", "configmap", "foreign", "-n", world.ns, "--from-literal=x=1")
    world.kubectl("create", "configmap", "look-alike", "-n", world.ns)
    world.kubectl(
        "label",
        "configmap",
        "look-alike",
        "-n",
        world.ns,
        f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        f"{SITE_LABEL}=another-site",
    )

    r2 = world.manager.apply([world.namespace(), kept], revision="r2")
    previous = world.manager.read_inventory()
    assert previous is not None
    # an inventory gone wrong names objects we never created: they must survive a prune
    suspicious = {
        key_of(world.config_map("foreign")),
        key_of(world.config_map("look-alike")),
        key_of(world.config_map("never-existed")),
        ObjectKey("example.invalid", "Gadget", world.ns, "g"),
    }
    deleted = world.manager.prune(previous.keys | suspicious, r2.keys)
    world.manager.write_inventory(r2.keys, "r2")

    assert [str(k) for k in deleted] == [
        f"Deployment.apps/{world.ns}/old-server",
        f"ConfigMap/{world.ns}/leaving",
        f"Service/{world.ns}/old-server",
    ]
    settle(lambda: world.get("deployment", "old-server") is None)
    assert world.get("configmap", "leaving") is None
    for name in ("kept", "opt-out", "foreign", "look-alike"):
        assert world.get("configmap", name) is not None, name
    assert world.manager.prune(previous.keys, r2.keys) == [], "a second prune finds nothing"


def test_prune_of_a_namespace_goes_after_its_contents(world: World) -> None:
    extra = unique("apply-extra")
    world.created_namespaces.append(extra)
    cm = world.config_map("inside")
    cm["metadata"]["namespace"] = extra
    r1 = world.manager.apply([world.namespace(extra), cm], revision="r1")
    deleted = world.manager.prune(r1.keys, set())
    assert [str(k) for k in deleted] == [f"ConfigMap/{extra}/inside", f"Namespace/{extra}"]


# -- drift -------------------------------------------------------------------


def test_drift_from_a_hand_edit_is_reported_and_corrected(world: World) -> None:
    api = world.deployment("api")
    api["metadata"]["annotations"] = {"outpost.test/owner": "pos-team"}
    slice_ = [
        world.namespace(),
        world.config_map("settings", currency="EUR"),
        world.deployment("server", replicas=2),
        world.config_map("menu", items="3"),
        api,
    ]
    world.manager.apply(slice_, revision="r1")
    assert world.manager.drift(slice_) == []
    world.kubectl(
        "annotate",
        "deployment/api",
        "-n",
        world.ns,
        "--overwrite",
        "outpost.test/owner=someone-else",
        "outpost.test/extra=fine",
    )
    assert [(str(d.key), d.fields) for d in world.manager.drift(slice_)] == [
        (f"Deployment.apps/{world.ns}/api", ("metadata.annotations.outpost.test/owner",))
    ]
    world.manager.apply(slice_, revision="r1")
    assert world.manager.drift(slice_) == []

    world.kubectl("scale", "deployment/server", "-n", world.ns, "--replicas=5")
    world.kubectl(
        "patch",
        "configmap/settings",
        "-n",
        world.ns,
        "--type=merge",
        "-p",
        '{"data": {"currency": "JPY", "added-by-hand": "yes"}}',
    )
    world.kubectl("label", "configmap/settings", "-n", world.ns, "owner=ops")
    world.kubectl("delete", "configmap/menu", "-n", world.ns)

    drifted = {str(d.key): d for d in world.manager.drift(slice_)}
    assert set(drifted) == {
        f"Deployment.apps/{world.ns}/server",
        f"ConfigMap/{world.ns}/settings",
        f"ConfigMap/{world.ns}/menu",
    }
    assert drifted[f"Deployment.apps/{world.ns}/server"].fields == ("spec.replicas",)
    assert drifted[f"ConfigMap/{world.ns}/settings"].fields == ("data.currency",)
    assert drifted[f"ConfigMap/{world.ns}/menu"].reason == "missing"

    corrected = world.manager.apply(slice_, revision="r1")
    assert {str(k) for k in corrected.configured} == {
        f"Deployment.apps/{world.ns}/server",
        f"ConfigMap/{world.ns}/settings",
    }
    assert corrected.created == (key_of(world.config_map("menu")),)
    assert world.manager.drift(slice_) == []
    live = world.get("configmap", "settings")
    assert live is not None
    assert live["data"] == {"currency": "EUR", "added-by-hand": "yes"}, "fields we do not set stay"
    assert live["metadata"]["labels"]["owner"] == "ops"
    assert world.get("deployment", "server")["spec"]["replicas"] == 2  # type: ignore[index]


# -- health ------------------------------------------------------------------


def test_healthy_slice_becomes_current(world: World) -> None:
    slice_ = [
        world.namespace(),
        world.config_map("settings"),
        world.deployment("server", replicas=2),
        world.service("server"),
    ]
    world.manager.apply(slice_, revision="r1")
    report = wait(world.manager, slice_, deadline=90)
    assert report.healthy, report.summary()
    assert all(h.status is Status.CURRENT for _, h in report.objects)


def test_deployment_that_never_schedules_is_not_healthy_by_the_deadline(world: World) -> None:
    stuck = world.deployment("stuck", nodeSelector={"outpost.test/no-such-node": "true"})
    slice_ = [world.namespace(), stuck]
    world.manager.apply(slice_, revision="r1")
    report = wait(world.manager, slice_, deadline=3)
    assert not report.healthy
    assert report.timed_out and report.status is Status.IN_PROGRESS
    assert [str(k) for k, _ in report.pending] == [f"Deployment.apps/{world.ns}/stuck"]


def test_deployment_past_its_progress_deadline_fails(world: World) -> None:
    stuck = world.deployment("stuck", nodeSelector={"outpost.test/no-such-node": "true"})
    stuck["spec"]["progressDeadlineSeconds"] = 1
    slice_ = [world.namespace(), stuck]
    world.manager.apply(slice_, revision="r1")
    report = wait(world.manager, slice_, deadline=120)
    assert report.status is Status.FAILED, report.summary()
    assert not report.timed_out
    assert "ProgressDeadlineExceeded" in report.failed[0][1].reason


# -- custom resources --------------------------------------------------------


def test_crd_and_its_custom_resources_in_one_apply(world: World) -> None:
    group = f"{uuid.uuid4().hex[:8]}.outpost.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"tills.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": "tills",
                "singular": "till",
                "kind": "Till",
                "listKind": "TillList",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"lane": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    till = {
        "apiVersion": f"{group}/v1",
        "kind": "Till",
        "metadata": {"name": "lane-1", "namespace": world.ns},
        "spec": {"lane": 1},
    }
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "hmi", "namespace": world.ns},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}},
    }
    slice_ = [vm, till, world.namespace(), crd]
    try:
        result = world.manager.apply(slice_, revision="r1")
        assert [e.action for e in result.entries] == [Action.CREATED] * 4
        assert [str(e.key) for e in result.entries] == [
            f"CustomResourceDefinition.apiextensions.k8s.io/tills.{group}",
            f"Namespace/{world.ns}",
            f"Till.{group}/{world.ns}/lane-1",
            f"VirtualMachine.kubevirt.io/{world.ns}/hmi",
        ]
        assert world.get(f"tills.{group}", "lane-1")["spec"] == {"lane": 1}  # type: ignore[index]
        assert world.manager.drift(slice_) == []

        # nothing runs KubeVirt here: play its part and report the VM stopped
        world.kubectl(
            "patch",
            "virtualmachine/hmi",
            "-n",
            world.ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"printableStatus": "Stopped"}}',
        )
        report = wait(world.manager, slice_, deadline=30)
        assert report.healthy, report.summary()

        wrong = dict(till, spec={"lane": "one"})
        with pytest.raises(ApplyError, match="expected numeric"):
            world.manager.apply([wrong], revision="r2")
    finally:
        world.testcluster.kubectl("delete", "crd", f"tills.{group}", "--wait=false", check=False)


def test_custom_resource_without_its_crd_is_refused(world: World) -> None:
    world.manager.apply([world.namespace()], revision="r1")
    gadget = {
        "apiVersion": "gadgets.outpost.test/v1",
        "kind": "Gadget",
        "metadata": {"name": "g", "namespace": world.ns},
    }
    with pytest.raises(ApplyError, match=r"does not serve API version gadgets\.outpost\.test/v1"):
        world.manager.apply([gadget], revision="r2")


# -- the API server away -----------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_unreachable_api_server_is_temporary(
    world: World, cluster: ControlPlane, tmp_path: Path
) -> None:
    text = Path(cluster.kubeconfig).read_text()
    moved = re.sub(r"https://127\.0\.0\.1:\d+", f"https://127.0.0.1:{closed_port()}", text)
    assert moved != text
    (tmp_path / "kubeconfig").write_text(moved)
    with Cluster.from_kubeconfig(tmp_path / "kubeconfig", timeout_seconds=5) as away:
        manager = ResourceManager(away, site=world.site, inventory_namespace=world.inventory_ns)
        slice_ = [world.namespace(), world.config_map("a")]
        calls: list[Callable[[], Any]] = [
            lambda: manager.apply(slice_, revision="r1"),
            lambda: manager.drift(slice_),
            lambda: manager.read_inventory(),
            lambda: manager.write_inventory([], "r1"),
            lambda: manager.prune({key_of(world.config_map("a"))}, set()),
            lambda: manager.wait_healthy(
                slice_, deadline_seconds=1, clock=time.monotonic, sleep=time.sleep
            ),
            lambda: away.version(),
        ]
        for call in calls:
            with pytest.raises(ClusterUnavailable, match="did not answer"):
                call()


# -- credentials ---------------------------------------------------------------


def mint_client_certificate(cluster: ControlPlane) -> tuple[bytes, bytes]:
    """An admin client certificate signed by the test cluster's CA (as k3s issues them)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pki = Path(cluster.workdir) / "pki"
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "outpost-cert-test"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def kubeconfig_with(cluster: ControlPlane, path: Path, user: dict[str, Any]) -> Path:
    import base64

    import yaml

    ca = base64.b64encode(Path(cluster.ca_file).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "t", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "t", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return path


PROBE = """
import json, sys
from reconciler.node.apply import Cluster, ResourceManager
cluster = Cluster.from_kubeconfig(sys.argv[1])
manager = ResourceManager(cluster, site=sys.argv[3], inventory_namespace=sys.argv[4])
namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": sys.argv[2]}}
result = manager.apply([namespace], revision="probe")
print(json.dumps({"actions": [e.action for e in result.entries],
                  "kubernetes imported": "kubernetes" in sys.modules}))
"""


@pytest.mark.parametrize("credential", ["token", "client certificate"])
def test_common_kubeconfigs_need_no_kubernetes_package(
    world: World, cluster: ControlPlane, tmp_path: Path, credential: str
) -> None:
    if credential == "token":
        path = Path(cluster.kubeconfig)
    else:
        cert, key = mint_client_certificate(cluster)
        user = {
            "client-certificate-data": base64_text(cert),
            "client-key-data": base64_text(key),
        }
        path = kubeconfig_with(cluster, tmp_path / "kubeconfig", user)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), world.ns, world.site, world.inventory_ns],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"actions": ["created"], "kubernetes imported": False}


def test_exec_plugin_kubeconfig_goes_through_the_kubernetes_library(
    world: World, cluster: ControlPlane, tmp_path: Path
) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": cluster.token},
    }
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
            "interactiveMode": "Never",
        }
    }
    path = kubeconfig_with(cluster, tmp_path / "kubeconfig", user)
    with Cluster.from_kubeconfig(path) as via_plugin:
        manager = ResourceManager(
            via_plugin, site=world.site, inventory_namespace=world.inventory_ns
        )
        result = manager.apply([world.namespace()], revision="r1")
        assert result.created == (key_of(world.namespace()),)


def test_an_api_client_can_be_handed_over(cluster: ControlPlane) -> None:
    with Cluster.from_api_client(cluster.api_client()) as handed:
        assert handed.version()["gitVersion"].startswith("v1.")


def test_rejected_credentials_are_temporary(cluster: ControlPlane, tmp_path: Path) -> None:
    path = kubeconfig_with(cluster, tmp_path / "kubeconfig", {"token": "not-a-valid-token"})
    with (
        Cluster.from_kubeconfig(path) as rejected,
        pytest.raises(ClusterUnavailable, match=r"401 Unauthorized.*credentials were rejected"),
    ):
        rejected.version()


def base64_text(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
