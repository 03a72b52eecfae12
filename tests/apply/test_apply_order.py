"""Object identity and apply/prune order (pure, no cluster)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.errors import ApplyError, PermanentError
from reconciler.node.apply.order import (
    STAGE_NAMES,
    ObjectKey,
    is_facts_anchor,
    key_of,
    keys_of,
    prune_order,
    sort_objects,
    stage_of,
    stages,
)


def obj(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


CRD = obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com")
NS = obj("v1", "Namespace", "pos")
SA = obj("v1", "ServiceAccount", "pos", "pos")
ROLE = obj("rbac.authorization.k8s.io/v1", "ClusterRole", "pos-reader")
CM = obj("v1", "ConfigMap", "settings", "pos")
SECRET = obj("v1", "Secret", "creds", "pos")
PVC = obj("v1", "PersistentVolumeClaim", "data", "pos")
SVC = obj("v1", "Service", "pos", "pos")
INGRESS = obj("networking.k8s.io/v1", "Ingress", "pos", "pos")
WIDGET = obj("example.com/v1", "Widget", "w", "pos")
DEPLOY = obj("apps/v1", "Deployment", "server", "pos")
STS = obj("apps/v1", "StatefulSet", "db", "pos")
DS = obj("apps/v1", "DaemonSet", "agent", "pos")
JOB = obj("batch/v1", "Job", "migrate", "pos")
CRON = obj("batch/v1", "CronJob", "report", "pos")
VM = obj("kubevirt.io/v1", "VirtualMachine", "hmi", "plant")
WEBHOOK = obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "pos")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (DEPLOY, ObjectKey("apps", "Deployment", "pos", "server")),
        (CM, ObjectKey("", "ConfigMap", "pos", "settings")),
        (NS, ObjectKey("", "Namespace", "", "pos")),
        (VM, ObjectKey("kubevirt.io", "VirtualMachine", "plant", "hmi")),
        # the version is not part of the identity
        (
            obj("apps/v1beta2", "Deployment", "server", "pos"),
            ObjectKey("apps", "Deployment", "pos", "server"),
        ),
    ],
)
def test_key_of(document: dict[str, Any], expected: ObjectKey) -> None:
    assert key_of(document) == expected


@pytest.mark.parametrize(
    ("key", "encoded", "shown"),
    [
        (
            ObjectKey("apps", "Deployment", "pos", "server"),
            "apps/Deployment/pos/server",
            "Deployment.apps/pos/server",
        ),
        (
            ObjectKey("", "ConfigMap", "pos", "settings"),
            "/ConfigMap/pos/settings",
            "ConfigMap/pos/settings",
        ),
        (ObjectKey("", "Namespace", "", "pos"), "/Namespace//pos", "Namespace/pos"),
        (
            ObjectKey("rbac.authorization.k8s.io", "ClusterRole", "", "r"),
            "rbac.authorization.k8s.io/ClusterRole//r",
            "ClusterRole.rbac.authorization.k8s.io/r",
        ),
    ],
)
def test_key_forms(key: ObjectKey, encoded: str, shown: str) -> None:
    assert key.encode() == encoded
    assert str(key) == shown
    assert ObjectKey.parse(encoded) == key


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=0, max_size=20)


@settings(max_examples=200)
@given(group=_segment, kind=_segment.filter(bool), namespace=_segment, name=_segment.filter(bool))
def test_encode_parse_round_trip(group: str, kind: str, namespace: str, name: str) -> None:
    key = ObjectKey(group, kind, namespace, name)
    assert ObjectKey.parse(key.encode()) == key


@pytest.mark.parametrize(
    "text", ["", "a/b/c", "a/b/c/d/e", "apps//pos/server", "apps/Deployment/pos/"]
)
def test_parse_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        ObjectKey.parse(text)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"kind": "ConfigMap", "metadata": {"name": "x"}}, "no apiVersion"),
        ({"apiVersion": "v1", "metadata": {"name": "x"}}, "no kind"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, "no metadata.name"),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "no metadata.name"),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": 3}},
            "not a string",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a/b"}},
            "must not contain",
        ),
    ],
)
def test_key_of_refuses_incomplete_objects(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ApplyError, match=message) as caught:
        key_of(document)
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize(
    ("document", "stage"),
    [
        (CRD, "crds"),
        (NS, "namespaces"),
        (SA, "config"),
        (ROLE, "config"),
        (CM, "config"),
        (SECRET, "config"),
        (PVC, "config"),
        (SVC, "config"),
        (INGRESS, "other"),
        (WIDGET, "other"),
        (DEPLOY, "workloads"),
        (STS, "workloads"),
        (DS, "workloads"),
        (JOB, "workloads"),
        (CRON, "workloads"),
        (VM, "virtual-machines"),
        (WEBHOOK, "admission"),
        # a custom kind that shares a name with a built-in one is not that built-in
        (obj("example.com/v1", "Deployment", "d", "pos"), "other"),
        (obj("example.com/v1", "Namespace", "n"), "other"),
    ],
)
def test_stage_of(document: dict[str, Any], stage: str) -> None:
    assert STAGE_NAMES[stage_of(key_of(document))] == stage


ALL = [
    CRD,
    NS,
    SA,
    ROLE,
    CM,
    SECRET,
    PVC,
    SVC,
    INGRESS,
    WIDGET,
    DEPLOY,
    STS,
    DS,
    JOB,
    CRON,
    VM,
    WEBHOOK,
]


def test_stages_follow_dependencies_whatever_the_input_order() -> None:
    shuffled = list(ALL)
    random.Random(7).shuffle(shuffled)
    grouped = stages(shuffled)
    names = [STAGE_NAMES[stage] for stage, _ in grouped]
    assert names == [
        "crds",
        "namespaces",
        "config",
        "other",
        "workloads",
        "virtual-machines",
        "admission",
    ]
    assert [key_of(o) for o in grouped[0][1]] == [key_of(CRD)]
    assert [key_of(o) for o in grouped[1][1]] == [key_of(NS)]
    assert [key_of(o) for o in grouped[-1][1]] == [key_of(WEBHOOK)]
    flat = [key_of(o) for _, group in grouped for o in group]
    assert flat == [key_of(o) for o in sort_objects(shuffled)]


@settings(max_examples=50)
@given(st.permutations(ALL))
def test_order_is_deterministic(permuted: list[dict[str, Any]]) -> None:
    assert [key_of(o) for o in sort_objects(permuted)] == [key_of(o) for o in sort_objects(ALL)]


def test_stages_of_nothing() -> None:
    assert stages([]) == []
    assert prune_order([]) == []


def test_duplicate_objects_are_refused() -> None:
    twin = obj("apps/v1beta2", "Deployment", "server", "pos")  # same identity, other version
    with pytest.raises(
        ApplyError, match=r"Deployment.apps/pos/server appears twice .*documents 2 and 4"
    ):
        stages([CM, DEPLOY, SVC, twin])


def test_same_name_in_other_namespace_or_kind_is_not_a_duplicate() -> None:
    grouped = stages(
        [CM, obj("v1", "ConfigMap", "settings", "other"), obj("v1", "Secret", "settings", "pos")]
    )
    assert sum(len(group) for _, group in grouped) == 3


def test_prune_order_is_apply_order_reversed() -> None:
    keys = keys_of(ALL)
    pruned = prune_order(keys)
    names = [STAGE_NAMES[stage] for stage, _ in pruned]
    assert names == [
        "admission",
        "virtual-machines",
        "workloads",
        "other",
        "config",
        "namespaces",
        "crds",
    ]
    assert {k for _, group in pruned for k in group} == keys


def test_the_facts_anchor_is_the_policy_and_binding_the_policy_export_names() -> None:
    from reconciler.core.policy import ADMISSION_API, FACTS_NAME
    from reconciler.core.policy._export import _anchor

    anchor = _anchor({"outpost/site": "s1"})
    keys = [key_of(body) for body in anchor]
    assert {k.kind for k in keys} == {
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    assert all(is_facts_anchor(k) for k in keys)
    assert all(is_facts_anchor(ObjectKey.parse(k.encode())) for k in keys)
    group = ADMISSION_API.partition("/")[0]
    # the same name elsewhere, in another kind or a namespace, is an ordinary object
    for other in (
        ObjectKey(group, "ValidatingAdmissionPolicyBinding", "", FACTS_NAME + "-2"),
        ObjectKey(group, "MutatingAdmissionPolicy", "", FACTS_NAME),
        ObjectKey("", "ConfigMap", "outpost-system", FACTS_NAME),
        ObjectKey("example.com", "ValidatingAdmissionPolicy", "", FACTS_NAME),
    ):
        assert not is_facts_anchor(other), other
