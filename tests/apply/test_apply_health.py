"""kstatus health rules, one table per kind, on plain object dicts."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.node.apply.health import Status, health_of, needs_status

CURRENT, IN_PROGRESS, FAILED = Status.CURRENT, Status.IN_PROGRESS, Status.FAILED


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict[str, str]:
    found = {"type": type_, "status": status}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


def deployment(
    *,
    replicas: int | None = 3,
    generation: int = 2,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    found: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server", "namespace": "pos", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        found["status"] = status
    return found


def rolled_out(n: int = 3, **over: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 2,
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
        "conditions": [
            cond("Available", reason="MinimumReplicasAvailable"),
            cond("Progressing", reason="NewReplicaSetAvailable"),
        ],
    }
    status.update(over)
    return status


DEPLOYMENTS = [
    ("rolled out", deployment(status=rolled_out()), CURRENT, "3 of 3 replicas available"),
    ("no status yet", deployment(), IN_PROGRESS, "has not reported status"),
    (
        "status without observedGeneration",
        deployment(status={"replicas": 0}),
        IN_PROGRESS,
        "not reported",
    ),
    (
        "old generation observed",
        deployment(generation=3, status=rolled_out()),
        IN_PROGRESS,
        "not yet seen generation 3 (observed 2)",
    ),
    (
        "updating",
        deployment(status=rolled_out(updatedReplicas=1)),
        IN_PROGRESS,
        "1 of 3 replicas updated",
    ),
    (
        "old replicas left",
        deployment(status=rolled_out(replicas=4)),
        IN_PROGRESS,
        "1 old replicas pending",
    ),
    (
        "not available",
        deployment(status=rolled_out(availableReplicas=2)),
        IN_PROGRESS,
        "2 of 3 updated replicas",
    ),
    (
        "Available condition false",
        deployment(
            status=rolled_out(conditions=[cond("Available", "False", "MinimumReplicasUnavailable")])
        ),
        IN_PROGRESS,
        "not Available (MinimumReplicasUnavailable)",
    ),
    (
        "no conditions",
        deployment(status=rolled_out(conditions=[])),
        IN_PROGRESS,
        "no Available condition",
    ),
    (
        "progress deadline exceeded",
        deployment(
            status=rolled_out(
                updatedReplicas=1,
                conditions=[
                    cond(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        'ReplicaSet "x" has timed out',
                    ),
                ],
            )
        ),
        FAILED,
        'ProgressDeadlineExceeded: ReplicaSet "x" has timed out',
    ),
    ("scaled to zero", deployment(replicas=0, status=rolled_out(0)), CURRENT, "0 of 0"),
    ("replicas default to one", deployment(replicas=None, status=rolled_out(1)), CURRENT, "1 of 1"),
    (
        "replicas default to one, none yet",
        deployment(replicas=None, status=rolled_out(0)),
        IN_PROGRESS,
        "0 of 1 replicas updated",
    ),
]


def statefulset(spec: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "pos", "generation": 1},
        "spec": spec,
    }
    if status is not None:
        found["status"] = status
    return found


def sts_status(**over: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "replicas": 3,
        "readyReplicas": 3,
        "updatedReplicas": 3,
        "currentReplicas": 3,
        "currentRevision": "db-1",
        "updateRevision": "db-1",
    }
    status.update(over)
    return status


STATEFULSETS = [
    ("ready", statefulset({"replicas": 3}, sts_status()), CURRENT, "3 of 3 replicas ready"),
    ("no status", statefulset({"replicas": 3}, None), IN_PROGRESS, "not reported status"),
    (
        "not ready",
        statefulset({"replicas": 3}, sts_status(readyReplicas=1)),
        IN_PROGRESS,
        "1 of 3 replicas ready",
    ),
    (
        "not updated",
        statefulset({"replicas": 3}, sts_status(updatedReplicas=2)),
        IN_PROGRESS,
        "2 of 3",
    ),
    (
        "revision rolling",
        statefulset({"replicas": 3}, sts_status(updateRevision="db-2")),
        IN_PROGRESS,
        "revision db-1 is still rolling to db-2",
    ),
    (
        "scaling down",
        statefulset({"replicas": 2}, sts_status()),
        IN_PROGRESS,
        "1 replicas pending termination",
    ),
    (
        "partition reached",
        statefulset(
            {
                "replicas": 3,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            },
            sts_status(updatedReplicas=1, updateRevision="db-2"),
        ),
        CURRENT,
        "partition 2",
    ),
    (
        "partition not reached",
        statefulset(
            {
                "replicas": 3,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
            },
            sts_status(updatedReplicas=1, updateRevision="db-2"),
        ),
        IN_PROGRESS,
        "1 of 2 replicas above partition 1",
    ),
    (
        "OnDelete",
        statefulset(
            {"replicas": 3, "updateStrategy": {"type": "OnDelete"}}, sts_status(updatedReplicas=0)
        ),
        CURRENT,
        "OnDelete",
    ),
]


def daemonset(status: dict[str, Any] | None, strategy: str = "RollingUpdate") -> dict[str, Any]:
    found: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "pos", "generation": 4},
        "spec": {"updateStrategy": {"type": strategy}},
    }
    if status is not None:
        found["status"] = status
    return found


def ds_status(**over: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 4,
        "desiredNumberScheduled": 3,
        "currentNumberScheduled": 3,
        "updatedNumberScheduled": 3,
        "numberAvailable": 3,
        "numberReady": 3,
    }
    status.update(over)
    return status


DAEMONSETS = [
    ("everywhere", daemonset(ds_status()), CURRENT, "available on 3 of 3 nodes"),
    ("no status", daemonset(None), IN_PROGRESS, "not reported status"),
    ("not counted", daemonset({"observedGeneration": 4}), IN_PROGRESS, "not counted nodes"),
    ("old generation", daemonset(ds_status(observedGeneration=3)), IN_PROGRESS, "generation 4"),
    (
        "not scheduled",
        daemonset(ds_status(currentNumberScheduled=2)),
        IN_PROGRESS,
        "scheduled on 2 of 3",
    ),
    (
        "not updated",
        daemonset(ds_status(updatedNumberScheduled=1)),
        IN_PROGRESS,
        "updated on 1 of 3",
    ),
    (
        "OnDelete does not wait for updates",
        daemonset(ds_status(updatedNumberScheduled=1), "OnDelete"),
        CURRENT,
        "",
    ),
    (
        "not ready",
        daemonset(ds_status(numberReady=2, numberAvailable=2)),
        IN_PROGRESS,
        "ready on 2 of 3",
    ),
    ("not available", daemonset(ds_status(numberAvailable=2)), IN_PROGRESS, "available on 2 of 3"),
    (
        "no nodes",
        daemonset({**dict.fromkeys(ds_status(), 0), "observedGeneration": 4}),
        CURRENT,
        "0 of 0",
    ),
]


def job(conditions: list[dict[str, str]], **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "pos", "generation": 1},
        "spec": {"completions": 2},
        "status": {"conditions": conditions, **status},
    }


JOBS = [
    ("complete", job([cond("Complete")], succeeded=2), CURRENT, "Job complete"),
    (
        "failed",
        job([cond("Failed", reason="BackoffLimitExceeded")]),
        FAILED,
        "BackoffLimitExceeded",
    ),
    ("running", job([], succeeded=1), IN_PROGRESS, "1 of 2 completions"),
    ("complete false", job([cond("Complete", "False")]), IN_PROGRESS, "running"),
    ("suspended", job([cond("Suspended")]), CURRENT, "suspended"),
]


def vm(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "hmi", "namespace": "plant", "generation": 1},
        "spec": spec,
    }
    if status is not None:
        found["status"] = status
    return found


VMS = [
    (
        "ready",
        vm({"runStrategy": "Always"}, {"ready": True, "printableStatus": "Running"}),
        CURRENT,
        "running",
    ),
    (
        "printable running",
        vm({"runStrategy": "Always"}, {"printableStatus": "Running"}),
        CURRENT,
        "running",
    ),
    (
        "starting",
        vm({"runStrategy": "Always"}, {"printableStatus": "Starting"}),
        IN_PROGRESS,
        "Starting",
    ),
    (
        "unschedulable is not final",
        vm({"runStrategy": "Always"}, {"printableStatus": "ErrorUnschedulable"}),
        IN_PROGRESS,
        "ErrorUnschedulable",
    ),
    ("never observed", vm({"runStrategy": "Always"}), IN_PROGRESS, "not yet observed by KubeVirt"),
    ("running: true", vm({"running": True}, {"ready": True}), CURRENT, "running"),
    (
        "halted and stopped",
        vm({"runStrategy": "Halted"}, {"printableStatus": "Stopped"}),
        CURRENT,
        "stopped",
    ),
    (
        "running: false and stopped",
        vm({"running": False}, {"printableStatus": "Stopped"}),
        CURRENT,
        "stopped",
    ),
    (
        "halted but still running",
        vm({"runStrategy": "Halted"}, {"printableStatus": "Stopping", "ready": True}),
        IN_PROGRESS,
        "Stopping",
    ),
    ("halted never observed", vm({"runStrategy": "Halted"}), IN_PROGRESS, "not yet observed"),
    (
        "manual and stopped",
        vm({"runStrategy": "Manual"}, {"printableStatus": "Stopped"}),
        CURRENT,
        "Manual",
    ),
    (
        "old generation",
        vm({"runStrategy": "Always"}, {"ready": True, "observedGeneration": 0}),
        IN_PROGRESS,
        "generation 1",
    ),
]


def crd(conditions: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com", "generation": 1},
        "status": {"conditions": conditions},
    }


OTHERS = [
    ("crd established", crd([cond("NamesAccepted"), cond("Established")]), CURRENT, "established"),
    ("crd pending", crd([cond("NamesAccepted")]), IN_PROGRESS, "not yet Established"),
    (
        "crd name conflict",
        crd([cond("NamesAccepted", "False", "ListKindConflict", "WidgetList is already in use")]),
        FAILED,
        "ListKindConflict",
    ),
    (
        "namespace",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pos"}},
        CURRENT,
        "active",
    ),
    (
        "namespace terminating",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "pos"},
            "status": {"phase": "Terminating"},
        },
        IN_PROGRESS,
        "terminating",
    ),
    (
        "config map",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        CURRENT,
        "exists",
    ),
    (
        "service",
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
        CURRENT,
        "exists",
    ),
    (
        "pending pvc still exists",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "d"},
            "status": {"phase": "Pending"},
        },
        CURRENT,
        "exists",
    ),
    (
        "cron job",
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "r"}},
        CURRENT,
        "exists",
    ),
    (
        "being deleted",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        },
        IN_PROGRESS,
        "being deleted",
    ),
    (
        "custom resource stalled",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "status": {
                "conditions": [cond("Stalled", reason="BadConfig", message="size must be even")]
            },
        },
        FAILED,
        "Stalled: BadConfig: size must be even",
    ),
    (
        "custom resource reconciling",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "status": {"conditions": [cond("Reconciling", reason="Progressing")]},
        },
        IN_PROGRESS,
        "Reconciling: Progressing",
    ),
    (
        "custom resource behind",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "generation": 5},
            "status": {"observedGeneration": 4},
        },
        IN_PROGRESS,
        "generation 5",
    ),
    (
        "a custom kind named Deployment is not judged as one",
        {"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        CURRENT,
        "exists",
    ),
    (
        "garbage status is not a crash",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "status": ["nonsense"],
        },
        IN_PROGRESS,
        "not reported status",
    ),
    ("nothing at all", {}, CURRENT, "exists"),
]


@pytest.mark.parametrize(
    ("obj", "status", "reason"),
    [
        pytest.param(o, s, r, id=f"{table}: {name}")
        for table, rows in [
            ("Deployment", DEPLOYMENTS),
            ("StatefulSet", STATEFULSETS),
            ("DaemonSet", DAEMONSETS),
            ("Job", JOBS),
            ("VirtualMachine", VMS),
            ("other", OTHERS),
        ]
        for name, o, s, r in rows
    ],
)
def test_health(obj: dict[str, Any], status: Status, reason: str) -> None:
    verdict = health_of(obj)
    assert verdict.status is status, verdict
    assert reason in verdict.reason


def test_statusless_kinds_are_judged_on_metadata() -> None:
    assert not needs_status("", "ConfigMap")
    assert not needs_status("rbac.authorization.k8s.io", "RoleBinding")
    assert needs_status("apps", "Deployment")
    assert needs_status("example.com", "Widget")  # a custom resource may carry Stalled
