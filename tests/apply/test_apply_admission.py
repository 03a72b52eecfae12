"""Outpost's own admission policies never block the slice they come with (see apply/order.py).

Bindings that leave the slice or change are withdrawn before the first object is sent
and (re)created last; policies and their facts go with the configuration; a drift
correction of the applied revision withdraws nothing; the facts binding is never
withdrawn. What the API server then does with them is shown in
``tests/cluster/test_policy_admission.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from apply_fakes import FakeCluster

from reconciler.node.apply import ResourceManager, key_of
from reconciler.node.apply.order import STAGE_ADMISSION, STAGE_CONFIG, stage_of

SITE = "de-muc-0007"
API = "admissionregistration.k8s.io/v1"


def policy(name: str, expression: str = "true") -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"validations": [{"expression": expression}]},
    }


def binding(name: str, actions: tuple[str, ...] = ("Deny",)) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": list(actions)},
    }


def deploy(image: str = "registry.example.com/pos@sha256:" + "a" * 64) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server", "namespace": "pos"},
        "spec": {"template": {"spec": {"containers": [{"name": "s", "image": image}]}}},
    }


@pytest.fixture
def fake() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def manager(fake: FakeCluster) -> ResourceManager:
    return ResourceManager(fake, site=SITE, workers=1)  # type: ignore[arg-type]


def verbs(fake: FakeCluster) -> list[tuple[str, str]]:
    return [(verb, what) for verb, what in fake.calls if verb in ("apply", "delete")]


def bound(fake: FakeCluster, name: str) -> dict[str, Any] | None:
    return fake.objects.get(
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding", "", name)
    )


def test_policies_go_with_the_configuration_and_bindings_last() -> None:
    assert stage_of(key_of(policy("p"))) == STAGE_CONFIG
    assert stage_of(key_of(binding("p"))) == STAGE_ADMISSION


def test_a_new_policy_is_bound_only_after_the_workloads(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    manager.apply([deploy(), policy("outpost-a"), binding("outpost-a")], revision="r1")
    sent = [what for verb, what in verbs(fake) if verb == "apply" and "inventory" not in what]
    assert sent.index(
        "ValidatingAdmissionPolicy.admissionregistration.k8s.io/outpost-a"
    ) < sent.index("Deployment.apps/pos/server")
    assert sent[-1] == "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io/outpost-a"


def test_a_binding_that_leaves_is_withdrawn_before_the_payload(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    manager.apply([deploy(), policy("outpost-a"), binding("outpost-a")], revision="r1")
    fake.calls.clear()
    manager.apply([deploy("registry.example.com/pos:4.2.1"), policy("outpost-a")], revision="r2")
    calls = verbs(fake)
    withdrawn = (
        "delete",
        "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io/outpost-a",
    )
    assert calls.index(withdrawn) < calls.index(("apply", "Deployment.apps/pos/server"))
    assert bound(fake, "outpost-a") is None


def test_a_changed_binding_is_withdrawn_first_and_bound_again_last(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    manager.apply([deploy(), policy("outpost-a"), binding("outpost-a")], revision="r1")
    fake.calls.clear()
    relaxed = binding("outpost-a", ("Warn", "Audit"))
    manager.apply(
        [deploy("registry.example.com/pos:4.2.1"), policy("outpost-a"), relaxed], revision="r2"
    )
    calls = verbs(fake)
    name = "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io/outpost-a"
    assert calls[0] == ("delete", name)
    assert calls.index(("apply", "Deployment.apps/pos/server")) < calls.index(("apply", name))
    live = bound(fake, "outpost-a")
    assert live is not None and live["spec"]["validationActions"] == ["Warn", "Audit"]


def test_an_unchanged_binding_stays_in_force(fake: FakeCluster, manager: ResourceManager) -> None:
    manager.apply([deploy(), policy("outpost-a"), binding("outpost-a")], revision="r1")
    manager.write_inventory(
        [key_of(o) for o in (deploy(), policy("outpost-a"), binding("outpost-a"))], "r1"
    )
    fake.calls.clear()
    manager.apply(
        [deploy("registry.example.com/pos:4.2.1"), policy("outpost-a"), binding("outpost-a")],
        revision="r2",
    )
    assert not [c for c in verbs(fake) if c[0] == "delete"]
    assert bound(fake, "outpost-a") is not None


def test_a_drift_correction_withdraws_nothing(fake: FakeCluster, manager: ResourceManager) -> None:
    slice_ = [
        deploy(),
        policy("outpost-a"),
        binding("outpost-a"),
        binding("outpost-b"),
        policy("outpost-b"),
    ]
    manager.apply(slice_, revision="r1")
    manager.write_inventory([key_of(o) for o in slice_], "r1")
    fake.calls.clear()
    manager.apply([deploy()], revision="r1", skip_untouched=False)  # what drift sends
    assert not [c for c in verbs(fake) if c[0] == "delete"]


def test_a_rollback_withdraws_the_failed_revisions_new_binding_first(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    good = [deploy("registry.example.com/pos:4.2.1")]
    manager.apply(good, revision="r1")
    manager.write_inventory([key_of(o) for o in good], "r1")
    manager.apply([deploy(), policy("outpost-tags"), binding("outpost-tags")], revision="r2")
    fake.calls.clear()  # r2 is unhealthy: the agent re-applies r1
    manager.apply(good, revision="r1")
    calls = verbs(fake)
    withdrawn = (
        "delete",
        "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io/outpost-tags",
    )
    assert calls.index(withdrawn) < calls.index(("apply", "Deployment.apps/pos/server"))


def test_the_facts_binding_is_never_withdrawn(fake: FakeCluster, manager: ResourceManager) -> None:
    manager.apply([binding("outpost-policy-facts")], revision="r1")
    fake.calls.clear()
    manager.apply([binding("outpost-policy-facts", ("Deny", "Audit"))], revision="r2")
    manager.apply([], revision="r3")
    assert not [c for c in verbs(fake) if c[0] == "delete"]
    live = bound(fake, "outpost-policy-facts")
    assert live is not None and live["spec"]["validationActions"] == ["Deny", "Audit"]
