"""The test control plane works and cleans up after itself.

Waits poll the API until a condition holds or a generous deadline passes; a deadline is a
failure bound, never a timing assertion.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic

from tools.testcluster import (
    BUILD_COMMAND,
    BuildError,
    Cluster,
    MissingBinariesError,
    group_members,
    pinned_versions,
    plan,
    require_binaries,
    running,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
FIELD_MANAGER = "outpost-smoke-test"


def wait_for(what: str, check: Callable[[], Any], deadline: float = 90.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` if it never does."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"gave up waiting for {what}; last observation: {last!r}")


def apply(api_client: client.ApiClient, body: dict[str, Any], namespace: str) -> Any:
    """Server-side apply ``body`` with the dynamic client, as Outpost's apply module will."""
    resource = dynamic.DynamicClient(api_client).resources.get(
        api_version=body["apiVersion"], kind=body["kind"]
    )
    return resource.server_side_apply(
        body=body,
        name=body["metadata"]["name"],
        namespace=namespace,
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )


def deployment(name: str, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "server", "image": "registry.example.com/pos@sha256:" + "0" * 64}
                    ],
                    **pod_spec,
                },
            },
        },
    }


def available(api_client: client.ApiClient, namespace: str, name: str) -> bool:
    status = client.AppsV1Api(api_client).read_namespaced_deployment(name, namespace).status
    conditions = {c.type: c.status for c in status.conditions or ()}
    return conditions.get("Available") == "True" and status.available_replicas == 2


def pods_of(api_client: client.ApiClient, namespace: str, app: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=f"app={app}")
    return list(pods.items)


# --- the control plane as handed over by the fixture -------------------------------------


def test_control_plane_is_the_pinned_version_with_ready_nodes(
    cluster: Cluster, api_client: client.ApiClient
) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.git_version == pinned_versions()["kubernetes"]
    assert cluster.nodes == ("store-edge-1", "gpu-edge-1", "plant-edge-1")
    # The session's cluster is shared: other tests may have registered nodes of their own.
    listed = {n.metadata.name: n for n in client.CoreV1Api(api_client).list_node().items}
    nodes = {name: listed[name] for name in cluster.nodes}
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert [c.status for c in ready] == ["True"], node.metadata.name
    assert nodes["gpu-edge-1"].status.allocatable["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in nodes["store-edge-1"].status.allocatable
    assert nodes["plant-edge-1"].metadata.labels["outpost/site-type"] == "plant"


def test_kubeconfig_and_env_reach_the_cluster(cluster: Cluster) -> None:
    result = subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "get", "nodes", "-o", "name"],
        env={**os.environ, **cluster.env()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert {f"node/{n}" for n in cluster.nodes} <= set(result.stdout.split())


# --- workloads ---------------------------------------------------------------------------


def test_applied_deployment_becomes_available_on_kwok_nodes(
    cluster: Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    applied = apply(api_client, deployment("pos-server"), namespace)
    managers = [m.manager for m in applied.metadata.managedFields]
    assert FIELD_MANAGER in managers
    wait_for(
        "Deployment pos-server Available", lambda: available(api_client, namespace, "pos-server")
    )
    pods = pods_of(api_client, namespace, "pos-server")
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name in cluster.nodes
        assert pod.status.phase == "Running"


def test_node_labels_and_gpu_capacity_steer_scheduling(
    api_client: client.ApiClient, namespace: str
) -> None:
    apply(
        api_client, deployment("historian", nodeSelector={"outpost/site-type": "plant"}), namespace
    )
    gpu = deployment("vision")
    gpu["spec"]["replicas"] = 1
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    apply(api_client, gpu, namespace)
    wait_for("historian Available", lambda: available(api_client, namespace, "historian"))
    wait_for(
        "vision Pod Running",
        lambda: [
            p for p in pods_of(api_client, namespace, "vision") if p.status.phase == "Running"
        ],
    )
    # Other tests may add nodes to the shared cluster, so check properties, not names.
    core = client.CoreV1Api(api_client)
    for pod in pods_of(api_client, namespace, "historian"):
        node = core.read_node(pod.spec.node_name)
        assert node.metadata.labels.get("outpost/site-type") == "plant", node.metadata.name
    [vision] = pods_of(api_client, namespace, "vision")
    node = core.read_node(vision.spec.node_name)
    assert node.status.allocatable.get("nvidia.com/gpu") == "1", node.metadata.name


def test_virtual_machine_round_trips(
    cluster: Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "hmi-line-3", "labels": {"app.kubernetes.io/managed-by": "outpost"}},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "spec": {
                    "domain": {
                        "cpu": {"cores": 2},
                        "memory": {"guest": "4Gi"},
                        "devices": {"disks": [{"name": "system", "disk": {"bus": "virtio"}}]},
                    },
                    "volumes": [
                        {
                            "name": "system",
                            "containerDisk": {
                                "image": "registry.example.com/vm/win10-hmi@sha256:" + "1" * 64
                            },
                        }
                    ],
                }
            },
        },
    }
    apply(api_client, vm, namespace)
    resource = dynamic.DynamicClient(api_client).resources.get(
        api_version="kubevirt.io/v1", kind="VirtualMachine"
    )
    stored = resource.get(name="hmi-line-3", namespace=namespace).to_dict()
    assert stored["spec"] == vm["spec"]
    assert stored["metadata"]["labels"] == vm["metadata"]["labels"]
    # Status is a subresource: written only through /status, as KubeVirt's controller does.
    stored["status"] = {"printableStatus": "Running", "ready": True}
    resource.status.replace(body=stored, namespace=namespace)
    again = resource.get(name="hmi-line-3", namespace=namespace).to_dict()
    assert again["status"] == {"printableStatus": "Running", "ready": True}
    assert again["spec"] == vm["spec"]
    listed = cluster.kubectl("get", "vm", "-n", namespace, "-o", "name").stdout.split()
    assert listed == ["virtualmachine.kubevirt.io/hmi-line-3"]


# --- the build cache ---------------------------------------------------------------------


def test_second_build_reuses_the_cache_without_running_go(tmp_path: Path) -> None:
    """A cached build must not touch Go: a `go` on PATH that records every call stays unused."""
    calls = tmp_path / "go-calls"
    fake_go = tmp_path / "bin" / "go"
    fake_go.parent.mkdir()
    fake_go.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 99\n')
    fake_go.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_go.parent}:{os.environ['PATH']}"}
    assert plan().status == "cached"
    for argv in (["build", "--plan"], ["build"]):
        result = subprocess.run(
            [sys.executable, "-m", "tools.testcluster", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "cached" in result.stdout + result.stderr
    assert not calls.exists(), calls.read_text()


def test_missing_binaries_fail_with_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(MissingBinariesError) as raised:
        require_binaries(tmp_path / "empty-cache")
    assert BUILD_COMMAND in str(raised.value)
    assert isinstance(raised.value, BuildError)


def test_fixture_fails_not_skips_without_binaries(tmp_path: Path) -> None:
    """A run without binaries must go red, naming the build command; never skipped."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEs",
            f"{Path(__file__)}::test_control_plane_is_the_pinned_version_with_ready_nodes",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "OUTPOST_TESTCLUSTER_CACHE": str(tmp_path / "empty-cache")},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
    assert BUILD_COMMAND in result.stdout


# --- teardown leaves nothing behind ------------------------------------------------------


def _alive(pids: list[int]) -> list[int]:
    """Pids (or members of their process groups) that still run and are not zombies."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state not in ("gone", "Z") or any(group_members(pid)):
            alive.append(pid)
    return alive


def test_up_env_down_leaves_no_process(tmp_path: Path) -> None:
    workdir = tmp_path / "cluster"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.testcluster", *args, "--dir", str(workdir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    up = cli("up")
    try:
        assert up.returncode == 0, up.stderr
        pids = [p["pid"] for p in json.loads((workdir / "cluster.json").read_text())["processes"]]
        assert len(pids) == 5
        assert _alive(pids) == pids
        env = cli("env")
        assert env.returncode == 0, env.stderr
        assert env.stdout == up.stdout
        script = f"{env.stdout}\nkubectl get nodes -o name"
        nodes = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
        assert len(nodes.stdout.split()) == 3
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert _alive(pids) == []
    assert not workdir.exists()
    assert cli("env").returncode == 1


def test_port_taken_before_bind_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports are picked free, but another process may take one before etcd binds it."""
    from tools.testcluster import _cluster

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = _cluster._free_ports
    picks: list[list[int]] = []

    def first_pick_collides(count: int) -> list[int]:
        ports = real(count)
        if not picks:
            ports[0] = taken  # etcd's client port
        picks.append(ports)
        return ports

    monkeypatch.setattr(_cluster, "_free_ports", first_pick_collides)
    try:
        with running(tmp_path / "cluster") as retried:
            assert len(picks) == 2
            assert f"127.0.0.1:{taken}" in (tmp_path / "cluster" / "logs" / "etcd.log").read_text()
            assert str(taken) not in retried.server
            assert retried.kubectl("get", "nodes", "-o", "name").stdout.count("node/") == 3
    finally:
        squatter.close()


SESSION = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tools.testcluster import running
with running(Path({workdir!r})) as cluster:
    print(json.dumps(cluster.pids()), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_session_leaves_no_process(tmp_path: Path, how: signal.Signals) -> None:
    """CI cancelling a job sends SIGTERM; an OOM kill or timeout sends SIGKILL."""
    script = SESSION.format(root=str(ROOT), workdir=str(tmp_path / "cluster"))
    session = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert session.stdout is not None
        line = session.stdout.readline()
        assert line, session.stderr.read() if session.stderr else ""
        pids = json.loads(line)
        assert len(pids) == 5
        assert _alive(pids) == pids
        session.send_signal(how)
        session.wait(timeout=60)
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    wait_for("every control plane process to exit", lambda: not _alive(pids), deadline=30)
