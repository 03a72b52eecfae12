"""Rollback in every outcome, on the real control plane.

The fast decision table (``tests/agent/test_agent_tick.py``) drives each outcome through
in-memory fakes; here each runs against kube-apiserver, its admission and its controllers:

- the first commit a site ever gets fails its health check (no last good revision);
- the server refuses an object in the middle of the apply (an invalid object; an
  admission policy's denial) after earlier stages went in;
- a failed commit's new objects are pruned by the rollback;
- the rollback stays unhealthy (degraded) or is itself refused;
- the agent is killed during the rollback.

Each test asserts the cluster's objects, the inventory (the cluster's and the state
directory's) and the status an operator reads. Same store, fleet and clock as
``test_agent.py``, whose fixtures these tests use.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import test_agent
from test_agent import IN_WINDOW, SITE, T0, Clock, read, status_of, write_config

from reconciler.node.agent import Agent
from tools.demo.__main__ import store_node as demo_store_node
from tools.signedfleet import SignedFleet, create
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

# The fixtures of test_agent.py: the store's node, a clean site, a signed fleet, an agent.
store_node = test_agent.store_node
clean_site = test_agent.clean_site
fleet = test_agent.fleet
node = test_agent.node

GOOD_SELECTOR = {"outpost/device.usb": "true"}
# The override's merge adds to the USB selector placement put there.
BAD_SELECTOR = {"outpost/device.usb": "true", "outpost/node": "nowhere"}


def overrides(*patches: str) -> str:
    """sites/<SITE>/overrides.yaml with these patches for the POS app."""
    return (
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n"
        f"  name: {SITE}\nspec:\n  apps:\n    pos:\n      patches:\n" + "".join(patches)
    )


ANCHOR = [
    "admissionregistration.k8s.io/ValidatingAdmissionPolicy//outpost-policy-facts",
    "admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding//outpost-policy-facts",
]
NOWHERE = (
    "        - target: {kind: Deployment, name: pos-server}\n"
    "          merge: {spec: {template: {spec: {nodeSelector: {outpost/node: nowhere}}}}}\n"
)
NOTE = (
    "        - target: {kind: ConfigMap, name: pos-config}\n"
    '          merge: {data: {STORE_NOTE: "from the failed commit"}}\n'
)


def extra_config_map(name: str) -> str:
    """A new object of the POS app (in the first apply stage, before the Deployment)."""
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: {name}\n  namespace: ${{app.namespace}}\n  labels:\n"
        "    app.kubernetes.io/name: pos\n    app.kubernetes.io/part-of: pos\n"
        "    app.kubernetes.io/version: ${app.version}\n"
        'data:\n  NEW: "yes"\n'
    )


def settle(check: Callable[[], Any], deadline: float = 60.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < end, f"condition not reached within {deadline}s"
        time.sleep(0.25)


def state_of(tmp_path: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((tmp_path / "state" / "state.json").read_text())
    return found


def cluster_inventory(cluster: Cluster) -> dict[str, Any]:
    stored = read(cluster, "configmap", "outpost-system", "outpost-inventory")
    assert stored is not None, "the inventory ConfigMap is there"
    data = dict(stored["data"])
    data["keys"] = json.loads(data["keys"])
    return data


def selector_of(cluster: Cluster) -> dict[str, str]:
    deployment = read(cluster, "deployment", "pos", "pos-server")
    assert deployment is not None
    return dict(deployment["spec"]["template"]["spec"].get("nodeSelector") or {})


def assert_back_on(cluster: Cluster, tmp_path: Path, good: str, bad: str) -> None:
    """The site runs ``good`` again, ``bad`` is remembered as failed, inventories agree."""
    assert selector_of(cluster) == GOOD_SELECTOR
    config_map = read(cluster, "configmap", "pos", "pos-config")
    assert config_map is not None and "STORE_NOTE" not in config_map["data"]
    state = state_of(tmp_path)
    assert (state["applied"], state["last_good"]) == (good, good)
    assert bad in state["failed"]
    inventory = cluster_inventory(cluster)
    assert (inventory["revision"], inventory["complete"]) == (good, "true")
    assert sorted(inventory["keys"]) == sorted(state["inventory"])
    status = status_of(tmp_path)
    assert status["applied"]["revision"] == good
    assert status["lastGood"] == good
    assert bad in status["failedRevisions"]


# -- no last good revision --------------------------------------------------------------------


def test_the_first_commit_ever_fails_its_health_check(
    tmp_path: Path, fleet: SignedFleet, fresh_cluster: Cluster
) -> None:
    """Nothing to go back to: what the failed commit applied is removed again (the site ran
    nothing before it), the status says so, the commit is not retried (not even as "drift"
    after the state is recovered from the cluster), and a fix converges.

    The removal keeps the site's facts anchor (the policy and binding that keep Kubernetes'
    ConfigMap parameter informer in use): this Kubernetes stops that informer for good once
    no binding with a ConfigMap paramKind is left (kubernetes/kubernetes#130887), and the
    fix's Pods were then refused by the policies reading the site's facts, its Deployments
    left with "no pods found" (one run alone in three, before the anchor was kept). On a
    control plane of its own, with no other binding of that kind: the anchor is the only
    thing keeping the informer alive here, and removing the whole site would leave every
    later test on a shared control plane denied ("no params found")."""
    cluster = fresh_cluster
    manifest = tmp_path / "node.json"
    manifest.write_text(json.dumps(demo_store_node("edge-1")))
    cluster.kubectl("create", "-f", str(manifest))
    cluster.kubectl("wait", "--for=condition=Ready", "node/edge-1", "--timeout=60s")
    fleet.write(f"sites/{SITE}/overrides.yaml", overrides(NOWHERE))
    bad = fleet.commit("first commit for this store, pinned nowhere", when=T0 + timedelta(hours=1))
    config = write_config(tmp_path, fleet, Path(cluster.kubeconfig), health="10s")
    agent = test_agent.make_agent(config, Clock(IN_WINDOW))

    report = agent.tick()
    assert (report.outcome, report.applied, report.health) == ("failed", None, "failed")
    assert report.error is not None and report.error.startswith(f"{bad[:12]} did not become")
    status = status_of(tmp_path)
    assert (status["outcome"], status["health"]) == ("failed", "failed")
    assert status["applied"]["revision"] is None and status["lastGood"] is None
    assert status["failedRevisions"] == [bad]
    assert status["lastError"] == report.error
    assert status["leftover"]["removed"] > 0 and status["leftover"]["objects"] == []
    assert status["leftover"]["kept"] == ANCHOR
    # What the failed commit created is gone again but the facts anchor; the inventory lists
    # only the anchor and names no revision, so nothing recovers the failed commit as what
    # runs.
    settle(lambda: read(cluster, "deployment", "pos", "pos-server") is None)
    for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        names = cluster.kubectl("get", kind, "-o", "name").stdout.split()
        assert [name.partition("/")[2] for name in names] == ["outpost-policy-facts"], names
    state = state_of(tmp_path)
    assert (state["applied"], state["last_good"], state["failed"]) == (None, None, [bad])
    assert state["inventory"] == ANCHOR
    inventory = cluster_inventory(cluster)
    assert (inventory["revision"], sorted(inventory["keys"])) == ("", ANCHOR)

    again = agent.tick()
    assert (again.outcome, again.pending) == ("failed-before", bad)
    assert again.pending_reason is not None and "commit a fix" in again.pending_reason
    assert read(cluster, "deployment", "pos", "pos-server") is None

    # The fix is applied once the failed install's namespaces are gone.
    settle(lambda: read(cluster, "namespace", "", "pos") is None, deadline=90)
    (fleet.path / f"sites/{SITE}/overrides.yaml").unlink()
    fixed = fleet.commit("unpin", when=T0 + timedelta(hours=2))
    # The fix is judged with the default health deadline: 10 s only made the pinned commit
    # fail fast, and this control plane runs beside the suite's shared one, so on two busy
    # cores its pods may take longer than that to start (a passing tick returns as soon as
    # they are ready).
    agent = test_agent.make_agent(
        write_config(tmp_path, fleet, Path(cluster.kubeconfig)), Clock(IN_WINDOW)
    )
    report = agent.tick()
    assert (report.outcome, report.applied, report.health) == (
        "applied",
        fixed,
        "healthy",
    ), report.error
    assert selector_of(cluster) == GOOD_SELECTOR
    inventory = cluster_inventory(cluster)
    assert (inventory["revision"], inventory["complete"]) == (fixed, "true")


# -- refused mid-apply ------------------------------------------------------------------------


# The probe passes the site's own admission policies (applied with the good revision:
# registry, digest, limits), so only this test's policy can deny it.
PROBE_DIGEST = "sha256:c8e487af5cf33a49a705273e9ce199c52404fae175c28757a7f79c437f3370c2"


@pytest.fixture
def denial(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    """A ValidatingAdmissionPolicy that denies a Deployment carrying this test's annotation
    (cluster-wide objects, removed afterwards; they match nothing else)."""
    token = uuid.uuid4().hex[:10]
    name = f"outpost-test-deny-{token}"
    manifest = tmp_path / "deny.yaml"
    manifest.write_text(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n"
        '      - {apiGroups: ["apps"], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"],'
        ' resources: ["deployments"]}\n'
        "  validations:\n"
        "    - expression: >-\n"
        "        !has(object.metadata.annotations) ||\n"
        "        !('outpost-test/deny' in object.metadata.annotations) ||\n"
        f"        object.metadata.annotations['outpost-test/deny'] != '{token}'\n"
        "      message: denied by the store's admission policy\n"
        "---\n"
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{policyName: {name}, validationActions: [Deny]}}\n"
    )
    cluster.kubectl("apply", "-f", str(manifest))
    probe = tmp_path / "probe.yaml"
    probe.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: probe\n  namespace: default\n"
        f"  annotations: {{outpost-test/deny: '{token}'}}\n"
        "spec:\n  selector: {matchLabels: {app: probe}}\n  template:\n"
        "    metadata: {labels: {app: probe}}\n"
        "    spec: {containers: [{name: c, resources: {limits: {cpu: 100m, memory: 64Mi}},\n"
        f"      image: 'registry.example.com/pos/server:1.0@{PROBE_DIGEST}'}}]}}\n"
    )
    # The policy takes effect a moment after it is created: wait until it denies.
    settle(
        lambda: (
            "denied by the store's admission policy"
            in cluster.kubectl("apply", "--dry-run=server", "-f", str(probe), check=False).stderr
        )
    )
    try:
        yield token
    finally:
        cluster.kubectl("delete", "-f", str(manifest), "--ignore-not-found")


@pytest.mark.parametrize("how", ["invalid object", "admission denial"])
def test_a_refusal_mid_apply_rolls_back_the_stages_already_applied(
    tmp_path: Path,
    fleet: SignedFleet,
    cluster: Cluster,
    node: Callable[..., Agent],
    request: pytest.FixtureRequest,
    how: str,
) -> None:
    agent = node(Clock(IN_WINDOW), health="20s")
    good = agent.tick()
    assert good.outcome == "applied"
    if how == "invalid object":
        refused = (
            "        - target: {kind: Deployment, name: pos-server}\n"
            "          merge: {spec: {replicas: -1}}\n"
        )
        expected = "spec.replicas: Invalid value: -1"
    else:
        token = request.getfixturevalue("denial")
        refused = (
            "        - target: {kind: Deployment, name: pos-server}\n"
            f"          merge: {{metadata: {{annotations: {{outpost-test/deny: '{token}'}}}}}}\n"
        )
        expected = "denied by the store's admission policy"
    # The ConfigMap goes in a stage before the Deployment: it is applied, then undone.
    fleet.write(f"sites/{SITE}/overrides.yaml", overrides(NOTE, refused))
    bad = fleet.commit(f"a commit with an {how}", when=T0 + timedelta(hours=1))

    report = agent.tick()
    assert (report.outcome, report.applied, report.health) == (
        "rolled-back",
        good.applied,
        "healthy",
    ), report
    assert report.error is not None
    assert report.error.startswith(f"{bad[:12]} did not become healthy: the API server refused")
    assert expected in report.error
    assert_back_on(cluster, tmp_path, str(good.applied), bad)
    deployment = read(cluster, "deployment", "pos", "pos-server")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1
    assert "outpost-test/deny" not in (deployment["metadata"].get("annotations") or {})
    assert status_of(tmp_path)["lastError"] == report.error
    assert agent.tick().outcome == "failed-before"


# -- the failed commit's new objects ----------------------------------------------------------


def test_the_failed_commits_new_objects_are_pruned_by_the_rollback(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW), health="15s")
    good = agent.tick()
    assert good.outcome == "applied"
    before = state_of(tmp_path)["inventory"]
    fleet.write("apps/pos/manifests/pos-extra.yaml", extra_config_map("pos-extra"))
    fleet.write(f"sites/{SITE}/overrides.yaml", overrides(NOTE, NOWHERE))
    bad = fleet.commit(
        "a new ConfigMap, and pos-server pinned nowhere", when=T0 + timedelta(hours=1)
    )

    report = agent.tick()
    assert (report.outcome, report.applied, report.health) == (
        "rolled-back",
        good.applied,
        "healthy",
    ), report
    assert "did not become healthy" in str(report.error)
    settle(lambda: read(cluster, "configmap", "pos", "pos-extra") is None)
    assert_back_on(cluster, tmp_path, str(good.applied), bad)
    assert state_of(tmp_path)["inventory"] == before
    assert "/ConfigMap/pos/pos-extra" not in cluster_inventory(cluster)["keys"]


# -- the rollback stays unhealthy, or is refused ------------------------------------------------


def test_a_rollback_that_stays_unhealthy_is_degraded_until_the_cluster_heals(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    """The store's node is cordoned and the POS pod gone: neither the failed commit nor the
    last good one can become healthy. The rollback is done (the good objects are back) but
    the status says degraded. Nothing is retried: once the node is back, the controllers
    schedule the good revision's pod and the status follows."""
    agent = node(Clock(IN_WINDOW), health="10s")
    good = agent.tick()
    assert good.outcome == "applied"
    fleet.write(f"sites/{SITE}/overrides.yaml", overrides(NOTE, NOWHERE))
    bad = fleet.commit("pinned nowhere", when=T0 + timedelta(hours=1))
    cluster.kubectl("cordon", "edge-1")
    try:
        cluster.kubectl("delete", "pods", "-n", "pos", "--all", "--wait=true")
        report = agent.tick()
        assert (report.outcome, report.applied, report.health) == (
            "rolled-back",
            good.applied,
            "degraded",
        ), report
        status = status_of(tmp_path)
        assert (status["outcome"], status["health"]) == ("rolled-back", "degraded")
        assert_back_on(cluster, tmp_path, str(good.applied), bad)
        # The next tick finds nothing to apply and nothing drifted; the site is still sick.
        still = agent.tick()
        assert (still.outcome, still.health) == ("failed-before", "degraded")
        assert status_of(tmp_path)["health"] == "degraded"
    finally:
        cluster.kubectl("uncordon", "edge-1")
    settle(
        lambda: (
            (read(cluster, "deployment", "pos", "pos-server") or {})
            .get("status", {})
            .get("availableReplicas", 0)
            >= 1
        ),
        deadline=90,
    )
    after = agent.tick()
    assert after.outcome == "failed-before"
    assert after.applied == good.applied
    assert status_of(tmp_path)["health"] == "healthy"


@pytest.fixture
def deny_the_good_revision(
    cluster: Cluster, tmp_path: Path
) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """Install and lift (when called) a policy denying pos-server with the good revision's
    node selector, so re-applying the last good revision is refused; removed afterwards."""
    name = f"outpost-test-deny-good-{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "deny-good.yaml"
    manifest.write_text(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n  failurePolicy: Fail\n  matchConstraints:\n"
        "    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: pos}}\n"
        "    resourceRules:\n"
        '      - {apiGroups: ["apps"], apiVersions: ["v1"], operations: ["UPDATE"],'
        ' resources: ["deployments"]}\n'
        "  validations:\n"
        "    - expression: >-\n"
        "        object.metadata.name != 'pos-server' ||\n"
        "        !has(object.spec.template.spec.nodeSelector) ||\n"
        "        !('outpost/device.usb' in object.spec.template.spec.nodeSelector) ||\n"
        "        'outpost/node' in object.spec.template.spec.nodeSelector\n"
        "      message: the USB scanner nodes are closed for maintenance\n"
        "---\n"
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{policyName: {name}, validationActions: [Deny]}}\n"
    )

    def denied() -> bool:
        probe = cluster.kubectl(
            "patch",
            "deployment",
            "pos-server",
            "-n",
            "pos",
            "--dry-run=server",
            "--type=merge",
            "-p",
            json.dumps(
                {
                    "metadata": {"labels": {"outpost-test/probe": "1"}},
                    "spec": {"template": {"spec": {"nodeSelector": {"outpost/node": None}}}},
                }
            ),
            check=False,
        )
        return "closed for maintenance" in probe.stderr

    def install() -> None:
        cluster.kubectl("apply", "-f", str(manifest))
        settle(denied)  # a policy takes effect a moment after it is created

    def lift() -> None:
        cluster.kubectl("delete", "-f", str(manifest), "--ignore-not-found")
        settle(lambda: not denied())

    try:
        yield install, lift
    finally:
        cluster.kubectl("delete", "-f", str(manifest), "--ignore-not-found")


def test_a_rollback_the_server_refuses_is_interrupted_and_drift_finishes_it(
    tmp_path: Path,
    fleet: SignedFleet,
    cluster: Cluster,
    node: Callable[..., Agent],
    deny_the_good_revision: tuple[Callable[[], None], Callable[[], None]],
) -> None:
    agent = node(Clock(IN_WINDOW), health="10s")
    good = agent.tick()
    assert good.outcome == "applied"
    fleet.write(f"sites/{SITE}/overrides.yaml", overrides(NOWHERE))
    bad = fleet.commit("pinned nowhere", when=T0 + timedelta(hours=1))
    # pos-server on the USB nodes alone is now denied: the bad commit's apply (which pins it
    # elsewhere too) goes in, re-applying the good one is refused.
    install, lift = deny_the_good_revision
    install()
    report = agent.tick()
    assert report.outcome == "interrupted", report
    assert not report.temporary  # refused, not unreachable: retrying now would not help
    assert report.error is not None
    assert report.error.startswith(f"{bad[:12]} did not become healthy")
    assert "; rolling back was interrupted: " in report.error
    assert "the USB scanner nodes are closed for maintenance" in report.error
    # What runs: the failed commit's Deployment; what the state says: still the good one.
    assert selector_of(cluster) == BAD_SELECTOR
    state = state_of(tmp_path)
    assert (state["applied"], state["failed"]) == (good.applied, [bad])
    status = status_of(tmp_path)
    assert (status["outcome"], status["lastError"]) == ("interrupted", report.error)
    assert status["applied"]["revision"] == good.applied
    # While denied, each tick's drift correction is refused too, and says so.
    still = agent.tick()
    assert still.outcome == "failed-before"
    assert any("drift check failed" in w for w in still.warnings), still.warnings
    # The maintenance ends: the next tick's drift correction puts the good revision back.
    lift()
    healed = agent.tick()
    assert healed.outcome == "failed-before"
    assert healed.corrected >= 1
    assert selector_of(cluster) == GOOD_SELECTOR
    assert_back_on(cluster, tmp_path, str(good.applied), bad)


# -- killed during the rollback -----------------------------------------------------------------


def test_a_kill_during_the_rollback_is_finished_by_the_next_run(
    tmp_path: Path, cluster: Cluster, clean_site: None
) -> None:
    """The real CLI is killed after it logged the failed rollout, while it rolls back.
    The failure was on record before the rollback began: the next run does not apply the
    failed commit again, and finishes going back (the failed commit's new object pruned)."""
    now = datetime.now(UTC)
    signed = create(tmp_path / "repo", when=now - timedelta(hours=2))
    config = write_config(tmp_path, signed, Path(cluster.kubeconfig), health="10s")
    argv = [sys.executable, "-m", "reconciler.cli", "agent", "run", "--once"]
    argv += ["--config", str(config), "--log-format", "json"]  # the lines the kill waits for
    env = {**os.environ, **cluster.env()}
    # The CLI reads the real clock: emergencies (root-signed) pass any window or freeze.
    signed.edit("fleets/retail-eu.yaml", lambda t: t + "# emergency change\n")
    good = signed.commit("hotfix", when=now - timedelta(minutes=40), emergency="card terminal fix")
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert status_of(tmp_path)["applied"]["revision"] == good
    signed.write("apps/pos/manifests/pos-extra.yaml", extra_config_map("pos-extra"))
    signed.write(f"sites/{SITE}/overrides.yaml", overrides(NOTE, NOWHERE))
    bad = signed.commit(
        "pinned nowhere", when=now - timedelta(minutes=30), emergency="card terminal fix"
    )

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if b'"msg": "rollout failed"' in line:
            break
    else:
        raise AssertionError(f"the run ended without a failed rollout: {seen!r}")
    time.sleep(random.Random(11).uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run was through before its kill"
    state = state_of(tmp_path)
    assert state["applied"] == good  # the kill left the record of the last good revision
    assert state["failed"] == [bad]  # and of the failure
    assert "/ConfigMap/pos/pos-extra" in state["inventory"]  # and the failed commit's objects

    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr  # failed before: a finding, not an error
    logged = [json.loads(line).get("msg") for line in done.stderr.splitlines() if line[:1] == "{"]
    assert "rollout failed" not in logged  # the failed commit was not applied again
    status = status_of(tmp_path)
    assert (status["outcome"], status["health"]) == ("failed-before", "healthy")
    assert status["pending"]["revision"] == bad
    settle(lambda: read(cluster, "configmap", "pos", "pos-extra") is None)
    assert_back_on(cluster, tmp_path, good, bad)
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1
    assert status_of(tmp_path)["outcome"] == "failed-before"
