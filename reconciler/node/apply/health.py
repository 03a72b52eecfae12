"""Is a live object done? kstatus rules on plain object dicts.

The rules follow sigs.k8s.io/cli-utils ``kstatus`` (what Flux, kpt and
``kubectl wait``-style tooling use) with the object kinds a store or plant
runs:

- every object: being deleted → InProgress; a ``Stalled=True`` condition →
  Failed; ``Reconciling=True`` → InProgress; ``status.observedGeneration``
  behind ``metadata.generation`` → InProgress (the controller has not yet
  looked at our change, so any other status field describes the old spec);
- Deployment: ``Available``, all replicas updated and available, no old
  replicas left; ``Progressing`` with reason ``ProgressDeadlineExceeded`` →
  Failed — the only workload signal Kubernetes itself calls final;
- StatefulSet: ready and updated replicas, ``currentRevision ==
  updateRevision`` (a partitioned rollout is done at its partition;
  ``OnDelete`` is done once observed);
- DaemonSet: scheduled, updated and available on every desired node;
- Job: ``Complete`` → Current, ``Failed`` → Failed, otherwise InProgress;
- KubeVirt VirtualMachine: ``status.ready`` or ``printableStatus: Running``;
  a VM whose run strategy is ``Halted`` is done when it is ``Stopped``;
- CustomResourceDefinition: ``Established`` (``NamesAccepted=False`` → Failed);
- everything else: Current once it exists.

Anything not final (image pull errors, unschedulable pods, a VM in
``ErrorUnschedulable``) is InProgress with the reason; the health deadline
turns a lasting InProgress into a failed rollout. Only signals that cannot
get better by waiting are Failed, because Failed ends the wait at once and
sends the site back to its last good revision.

A workload's own status says *that* it is not ready ("0 of 1 replicas
available"), not *why*. When a wait ends unhealthy, :func:`explain_pods` adds
the reasons its Pods give, the way ``kubectl describe`` would show them: a
scheduler's ``Unschedulable`` and its message, a container waiting in
``ImagePullBackOff``/``ErrImagePull``/``CrashLoopBackOff`` (with the last exit
code), a container that terminated with an error, an evicted Pod.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.node.apply.order import api_group

__all__ = [
    "Health",
    "Status",
    "explain_pods",
    "health_of",
    "needs_status",
    "pod_problems",
    "pod_selector",
]


class Status(enum.StrEnum):
    CURRENT = "Current"
    IN_PROGRESS = "InProgress"
    FAILED = "Failed"


@dataclass(frozen=True)
class Health:
    """The verdict on one object: its status and a reason an operator can act on."""

    status: Status
    reason: str = ""

    @classmethod
    def current(cls, reason: str = "") -> Health:
        return cls(Status.CURRENT, reason)

    @classmethod
    def in_progress(cls, reason: str) -> Health:
        return cls(Status.IN_PROGRESS, reason)

    @classmethod
    def failed(cls, reason: str) -> Health:
        return cls(Status.FAILED, reason)


Obj = Mapping[str, Any]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _conditions(obj: Obj) -> dict[str, Mapping[str, Any]]:
    found = _map(obj.get("status")).get("conditions")
    if not isinstance(found, list):
        return {}
    return {
        c["type"]: c for c in found if isinstance(c, Mapping) and isinstance(c.get("type"), str)
    }


def _is_true(cond: Mapping[str, Any] | None) -> bool:
    return cond is not None and cond.get("status") == "True"


def _says(cond: Mapping[str, Any]) -> str:
    parts = [str(cond.get(k)) for k in ("reason", "message") if cond.get(k)]
    return ": ".join(parts) if parts else str(cond.get("type"))


def _generic(obj: Obj) -> Health | None:
    """Rules for every kind; None when they have nothing to say."""
    metadata = _map(obj.get("metadata"))
    if metadata.get("deletionTimestamp"):
        return Health.in_progress("being deleted")
    conditions = _conditions(obj)
    stalled = conditions.get("Stalled")
    if _is_true(stalled):
        assert stalled is not None
        return Health.failed(f"Stalled: {_says(stalled)}")
    reconciling = conditions.get("Reconciling")
    if _is_true(reconciling):
        assert reconciling is not None
        return Health.in_progress(f"Reconciling: {_says(reconciling)}")
    status = _map(obj.get("status"))
    generation = metadata.get("generation")
    observed = status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        return Health.in_progress(
            f"the controller has not yet seen generation {generation} (observed {observed})"
        )
    return None


def _observed(obj: Obj, kind: str) -> Health | None:
    """Workload controllers always write observedGeneration; until then nothing is known."""
    if "observedGeneration" not in _map(obj.get("status")):
        return Health.in_progress(f"the {kind} controller has not reported status yet")
    return None


def _deployment(obj: Obj) -> Health:
    if (pending := _observed(obj, "Deployment")) is not None:
        return pending
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    conditions = _conditions(obj)
    progressing = conditions.get("Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health.failed(f"rollout stuck: {_says(progressing)}")
    want = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < want:
        return Health.in_progress(f"{updated} of {want} replicas updated")
    if total > updated:
        return Health.in_progress(f"{total - updated} old replicas pending termination")
    if available < updated:
        return Health.in_progress(f"{available} of {updated} updated replicas available")
    avail = conditions.get("Available")
    if not _is_true(avail):
        detail = _says(avail) if avail is not None else "no Available condition yet"
        return Health.in_progress(f"not Available ({detail})")
    return Health.current(f"{available} of {want} replicas available")


def _statefulset(obj: Obj) -> Health:
    if (pending := _observed(obj, "StatefulSet")) is not None:
        return pending
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    strategy = _map(spec.get("updateStrategy"))
    if strategy.get("type") == "OnDelete":
        return Health.current("OnDelete update strategy: pods change when deleted")
    want = _int(spec.get("replicas"), 1)
    total = _int(status.get("replicas"))
    ready = _int(status.get("readyReplicas"))
    updated = _int(status.get("updatedReplicas"))
    if total > want:
        return Health.in_progress(f"{total - want} replicas pending termination")
    if ready < want:
        return Health.in_progress(f"{ready} of {want} replicas ready")
    partition = _int(_map(strategy.get("rollingUpdate")).get("partition"))
    if partition > 0:
        if updated < want - partition:
            return Health.in_progress(
                f"{updated} of {want - partition} replicas above partition {partition} updated"
            )
        return Health.current(f"partitioned rollout done at partition {partition}")
    if updated < want:
        return Health.in_progress(f"{updated} of {want} replicas updated")
    current, update = status.get("currentRevision"), status.get("updateRevision")
    if current != update:
        return Health.in_progress(f"revision {current} is still rolling to {update}")
    return Health.current(f"{ready} of {want} replicas ready")


def _daemonset(obj: Obj) -> Health:
    if (pending := _observed(obj, "DaemonSet")) is not None:
        return pending
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    if "desiredNumberScheduled" not in status:
        return Health.in_progress("the DaemonSet controller has not counted nodes yet")
    desired = _int(status.get("desiredNumberScheduled"))
    scheduled = _int(status.get("currentNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    ready = _int(status.get("numberReady"))
    if scheduled < desired:
        return Health.in_progress(f"scheduled on {scheduled} of {desired} nodes")
    on_delete = _map(spec.get("updateStrategy")).get("type") == "OnDelete"
    if not on_delete and updated < desired:
        return Health.in_progress(f"updated on {updated} of {desired} nodes")
    if ready < desired:
        return Health.in_progress(f"ready on {ready} of {desired} nodes")
    if available < desired:
        return Health.in_progress(f"available on {available} of {desired} nodes")
    return Health.current(f"available on {available} of {desired} nodes")


def _job(obj: Obj) -> Health:
    conditions = _conditions(obj)
    failed = conditions.get("Failed")
    if _is_true(failed):
        assert failed is not None
        return Health.failed(f"Job failed: {_says(failed)}")
    if _is_true(conditions.get("Complete")):
        return Health.current("Job complete")
    if _is_true(conditions.get("Suspended")):
        return Health.current("Job suspended")
    status, spec = _map(obj.get("status")), _map(obj.get("spec"))
    succeeded = _int(status.get("succeeded"))
    completions = _int(spec.get("completions"), 1)
    return Health.in_progress(f"Job running: {succeeded} of {completions} completions")


def _run_strategy(spec: Mapping[str, Any]) -> str:
    strategy = spec.get("runStrategy")
    if isinstance(strategy, str):
        return strategy
    running = spec.get("running")
    if running is True:
        return "Always"
    if running is False:
        return "Halted"
    return "Always"


def _virtual_machine(obj: Obj) -> Health:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    printable = status.get("printableStatus")
    strategy = _run_strategy(spec)
    if strategy == "Halted":
        if printable == "Stopped" and status.get("ready") is not True:
            return Health.current("VM stopped, as its run strategy Halted asks")
        state = printable or "not yet observed by KubeVirt"
        return Health.in_progress(f"run strategy Halted, VM is {state}")
    if status.get("ready") is True or printable == "Running":
        return Health.current("VM running")
    if strategy == "Manual" and printable == "Stopped":
        return Health.current("VM stopped; run strategy Manual leaves it to the operator")
    state = printable or "not yet observed by KubeVirt"
    return Health.in_progress(f"VM is {state} (run strategy {strategy})")


def _crd(obj: Obj) -> Health:
    conditions = _conditions(obj)
    names = conditions.get("NamesAccepted")
    if names is not None and names.get("status") == "False":
        return Health.failed(f"names not accepted: {_says(names)}")
    if _is_true(conditions.get("Established")):
        return Health.current("established")
    return Health.in_progress("not yet Established")


def _namespace(obj: Obj) -> Health:
    if _map(obj.get("status")).get("phase") == "Terminating":
        return Health.in_progress("namespace is terminating")
    return Health.current("active")


_RULES: dict[tuple[str, str], Callable[[Obj], Health]] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("kubevirt.io", "VirtualMachine"): _virtual_machine,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("", "Namespace"): _namespace,
}


# Kinds without a status: existing is all there is to know, so a health poll
# may read their metadata only (a ConfigMap's data can be large).
_STATUSLESS: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "LimitRange"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("storage.k8s.io", "StorageClass"),
    }
)


# Kinds whose health depends on Pods they own, found by their selector.
_WORKLOADS: frozenset[tuple[str, str]] = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("batch", "Job"),
    }
)
# A container waiting for one of these reasons is on its way; anything else is a problem.
_NORMAL_WAITS = frozenset({"ContainerCreating", "PodInitializing"})


def pod_selector(group: str, kind: str, obj: Obj) -> str | None:
    """The label selector of the Pods a workload owns, or None for kinds without Pods."""
    if (group, kind) not in _WORKLOADS:
        return None
    spec = _map(obj.get("spec"))
    if kind == "Job":
        name = _map(obj.get("metadata")).get("name")
        return f"job-name={name}" if isinstance(name, str) else None
    labels = _map(_map(spec.get("selector")).get("matchLabels"))
    if not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def pod_problems(pod: Obj) -> list[str]:
    """What keeps one Pod from running, in its own words; empty when nothing does."""
    status = _map(pod.get("status"))
    problems: list[str] = []
    if status.get("phase") == "Failed":
        problems.append(_says({"reason": status.get("reason") or "Failed", **status}))
    scheduled = _conditions(pod).get("PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        problems.append(_says({"reason": scheduled.get("reason") or "NotScheduled", **scheduled}))
    containers = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in containers:
        if not isinstance(container, Mapping):
            continue
        name = container.get("name", "?")
        state = _map(container.get("state"))
        waiting = _map(state.get("waiting"))
        terminated = _map(state.get("terminated"))
        reason = waiting.get("reason")
        if isinstance(reason, str) and reason not in _NORMAL_WAITS:
            text = f"container {name}: {_says(waiting)}"
            last = _map(_map(container.get("lastState")).get("terminated"))
            if last:
                text += (
                    f" (last exit code {last.get('exitCode')}"
                    + (f", {last['reason']}" if last.get("reason") else "")
                    + f", {_int(container.get('restartCount'))} restarts)"
                )
            problems.append(text)
        elif terminated and _int(terminated.get("exitCode")) != 0:
            problems.append(
                f"container {name}: terminated with exit code {terminated.get('exitCode')}"
                + (f" ({terminated['reason']})" if terminated.get("reason") else "")
            )
    return problems


def explain_pods(pods: Sequence[Obj], *, limit: int = 3) -> str:
    """The distinct problems of a workload's Pods, most common first, with how many Pods
    have each: ``pod web-7d9f: Unschedulable: 0/1 nodes are available: ...``."""
    if not pods:
        return "no pods found for it"
    seen: dict[str, list[str]] = {}
    for pod in pods:
        name = str(_map(pod.get("metadata")).get("name", "?"))
        for problem in pod_problems(pod):
            seen.setdefault(problem, []).append(name)
    if not seen:
        return ""
    ranked = sorted(seen.items(), key=lambda item: -len(item[1]))
    parts = []
    for problem, names in ranked[:limit]:
        who = f"pod {names[0]}" if len(names) == 1 else f"{len(names)} pods ({names[0]}, …)"
        parts.append(f"{who}: {problem}")
    if len(ranked) > limit:
        parts.append(f"and {len(ranked) - limit} more problem(s)")
    return "; ".join(parts)


def needs_status(group: str, kind: str) -> bool:
    """Whether judging a kind needs its whole object, or its metadata is enough."""
    return (group, kind) not in _STATUSLESS


def health_of(obj: Obj) -> Health:
    """The kstatus verdict on a live object as the API server returned it."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    group = api_group(api_version) if isinstance(api_version, str) else ""
    rule = _RULES.get((group, kind if isinstance(kind, str) else ""))
    generic = _generic(obj)
    if generic is not None:
        return generic
    if rule is None:
        return Health.current("exists")
    return rule(obj)
