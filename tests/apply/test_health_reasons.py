"""A failed health check says why, in the Pods' own words.

The Pods below are written in the shape the kubelet and the scheduler report them
(field for field from `kubectl get pod -o json` of each case). The test control
plane runs kwok instead of a kubelet: it can show a real Unschedulable Pod (see
``tests/cluster/test_agent_explains.py``) but never pulls an image or restarts a
container, so image pull errors and crash loops are tested on these documents.
"""

from __future__ import annotations

from typing import Any

import pytest
from apply_fakes import FakeCluster, FakeTime

from reconciler.node.apply.cluster import Resource
from reconciler.node.apply.health import explain_pods, pod_problems, pod_selector
from reconciler.node.apply.manager import HealthReport, ResourceManager

POD = Resource("", "v1", "Pod", "pods", True)
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "server", "namespace": "pos"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pos-server"}}},
}
CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "a", "namespace": "pos"},
}


def pod(name: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "status": status}


UNSCHEDULABLE = pod(
    "pos-server-7d9f-abcde",
    phase="Pending",
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node "
            "affinity/selector. preemption: 0/3 nodes are available.",
        }
    ],
)
IMAGE_PULL = pod(
    "pos-server-7d9f-fghij",
    phase="Pending",
    conditions=[{"type": "PodScheduled", "status": "True"}],
    containerStatuses=[
        {
            "name": "server",
            "ready": False,
            "restartCount": 0,
            "state": {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": 'Back-off pulling image "registry.example/pos@sha256:00"',
                }
            },
        }
    ],
)
CRASH_LOOP = pod(
    "pos-server-7d9f-klmno",
    phase="Running",
    containerStatuses=[
        {
            "name": "server",
            "ready": False,
            "restartCount": 5,
            "state": {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 2m40s restarting failed container=server",
                }
            },
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
        }
    ],
)
STARTING = pod(
    "pos-server-7d9f-pqrst",
    phase="Pending",
    containerStatuses=[
        {"name": "server", "state": {"waiting": {"reason": "ContainerCreating"}}},
    ],
)
EVICTED = pod(
    "historian-0",
    phase="Failed",
    reason="Evicted",
    message="The node was low on resource: memory.",
)
INIT_FAILED = pod(
    "historian-1",
    phase="Pending",
    initContainerStatuses=[
        {"name": "migrate", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
    ],
)


@pytest.mark.parametrize(
    ("pod_", "expected"),
    [
        (
            UNSCHEDULABLE,
            ["Unschedulable: 0/3 nodes are available: 3 node(s) didn't match Pod's node "
             "affinity/selector. preemption: 0/3 nodes are available."],
        ),
        (
            IMAGE_PULL,
            ['container server: ImagePullBackOff: Back-off pulling image '
             '"registry.example/pos@sha256:00"'],
        ),
        (
            CRASH_LOOP,
            ["container server: CrashLoopBackOff: back-off 2m40s restarting failed "
             "container=server (last exit code 1, Error, 5 restarts)"],
        ),
        (STARTING, []),
        (EVICTED, ["Evicted: The node was low on resource: memory."]),
        (INIT_FAILED, ["container migrate: terminated with exit code 3 (Error)"]),
        (pod("fine", phase="Running"), []),
        ({"metadata": {"name": "odd"}, "status": {"containerStatuses": ["x", None]}}, []),
    ],
    ids=["unschedulable", "image-pull", "crash-loop", "starting", "evicted", "init", "ok", "odd"],
)  # fmt: skip
def test_pod_problems(pod_: dict[str, Any], expected: list[str]) -> None:
    assert pod_problems(pod_) == expected


def test_explain_groups_pods_with_the_same_problem() -> None:
    second = {**UNSCHEDULABLE, "metadata": {"name": "pos-server-7d9f-zzzzz"}}
    text = explain_pods([UNSCHEDULABLE, IMAGE_PULL, second, STARTING])
    first, other = text.split("; pod ")
    assert first.startswith("2 pods (pos-server-7d9f-abcde, …): Unschedulable: 0/3 nodes")
    assert other.startswith("pos-server-7d9f-fghij: container server: ImagePullBackOff")
    assert explain_pods([]) == "no pods found for it"
    assert explain_pods([STARTING]) == ""
    many = [pod(f"p{i}", phase="Failed", reason=f"R{i}") for i in range(5)]
    assert explain_pods(many, limit=3).endswith("and 2 more problem(s)")


@pytest.mark.parametrize(
    ("group", "kind", "obj", "selector"),
    [
        ("apps", "Deployment", {"spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}}}}, "a=1,b=2"),
        ("apps", "DaemonSet", {"spec": {"selector": {"matchLabels": {"app": "x"}}}}, "app=x"),
        ("batch", "Job", {"metadata": {"name": "migrate"}}, "job-name=migrate"),
        ("apps", "Deployment", {"spec": {}}, None),
        ("", "ConfigMap", {}, None),
    ],
)  # fmt: skip
def test_pod_selector(group: str, kind: str, obj: dict[str, Any], selector: str | None) -> None:
    assert pod_selector(group, kind, obj) == selector


def _manager(fake: FakeCluster) -> ResourceManager:
    return ResourceManager(fake, site="de-ber-0042", workers=1)  # type: ignore[arg-type]


def test_an_unhealthy_wait_says_what_the_pods_say() -> None:
    fake = FakeCluster()
    fake.served[("", "Pod")] = POD
    manager = _manager(fake)
    slice_ = [CONFIG_MAP, DEPLOYMENT]
    manager.apply(slice_, revision="r1")
    fake.objects[("", "Pod", "pos", "pos-server-7d9f-abcde")] = {
        **UNSCHEDULABLE,
        "metadata": {"name": "pos-server-7d9f-abcde", "namespace": "pos"},
    }
    selectors: list[str] = []
    listing = fake.list

    def list_(resource: Resource, namespace: str = "", **options: Any) -> list[dict[str, Any]]:
        if resource.kind == "Pod":
            selectors.append(options.get("label_selector", ""))
        return listing(resource, namespace, **options)

    fake.list = list_  # type: ignore[method-assign]
    time = FakeTime()
    report = manager.wait_healthy(slice_, deadline_seconds=4, clock=time.clock, sleep=time.sleep)
    assert report.timed_out
    assert selectors == ["app=pos-server"]  # the Deployment's own Pods, asked once, at the end
    assert report.summary() == (
        "1 of 2 objects not ready after 4s: Deployment.apps/pos/server: the Deployment "
        "controller has not reported status yet; pod pos-server-7d9f-abcde: Unschedulable: "
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/3 nodes are available."
    )


def test_a_cluster_without_pods_leaves_the_verdict_as_it_is() -> None:
    manager = _manager(FakeCluster())  # serves no Pod resource: nothing to add, nothing hidden
    manager.apply([DEPLOYMENT], revision="r1")
    time = FakeTime()
    report = manager.wait_healthy(
        [DEPLOYMENT], deadline_seconds=0, clock=time.clock, sleep=time.sleep
    )
    assert report.objects[0][1].reason == "the Deployment controller has not reported status yet"


def test_the_wait_reports_progress_while_it_waits() -> None:
    manager = _manager(FakeCluster())
    slice_ = [CONFIG_MAP, DEPLOYMENT]
    manager.apply(slice_, revision="r1")
    time = FakeTime()
    seen: list[HealthReport] = []
    report = manager.wait_healthy(
        slice_,
        deadline_seconds=60,
        clock=time.clock,
        sleep=time.sleep,
        interval_seconds=5,
        progress=seen.append,
        progress_seconds=20,
    )
    assert report.timed_out
    assert [round(r.elapsed_seconds) for r in seen] == [20, 40]
    line = seen[0].progress(60)
    assert line.startswith("1 of 2 objects ready after 20s (deadline 60s); waiting for ")
    assert "Deployment.apps/pos/server: the Deployment controller" in line


def test_the_agent_logs_the_wait_as_it_goes(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from reconciler.node.pipeline import ManagerCluster

    manager = _manager(FakeCluster())
    slice_ = [CONFIG_MAP, DEPLOYMENT]
    manager.apply(slice_, revision="r1")
    time = FakeTime()
    cluster = ManagerCluster(manager, monotonic=time.clock, sleep=time.sleep)
    logger = logging.getLogger("outpost.agent")
    logger.addHandler(caplog.handler)  # the CLI may have stopped "outpost" from propagating
    try:
        with caplog.at_level(logging.INFO, logger="outpost.agent"):
            cluster.wait_healthy(slice_, deadline_seconds=40)
    finally:
        logger.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if "waiting for health" in r.getMessage()]
    assert lines[0].startswith("waiting for health: 1 of 2 objects ready after 16s (deadline 40s)")
    assert len(set(lines)) == 2  # every 15 s of a 40 s wait (a record may reach caplog twice)
