"""The site's API server refuses what CI refuses: Outpost's policies in the admission chain.

On the real control plane (kube-apiserver v1.36.3, ValidatingAdmissionPolicy GA):

- every bundled policy enforced at sites gives the same verdict on each of its own
  cases in Outpost's engine and in the API server (server-side dry run), and a real
  difference between the engines is reported as a disagreement;
- after a tick of the store's agent, a Deployment with a ``:latest`` image is denied
  with the policy's message, each bundled policy's failing case is denied with the
  message of a policy Outpost's engine says it breaks, and passing objects are admitted;
- a policy change reaches the admission chain with the next applied commit, an
  exemption admits exactly the exempt app's objects, and a removed policy is pruned.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import test_agent
import yaml
from test_agent import IN_WINDOW, ROOT, T0, Clock

from reconciler.ci.policy_cluster import compare_on_cluster
from reconciler.core.loader import load_document
from reconciler.core.policy import PolicySet, evaluate, load_policies, new_context
from reconciler.node.agent import Agent
from reconciler.node.apply.cluster import Cluster as ApiCluster
from tools.signedfleet import SignedFleet
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

# The store's agent and its signed fleet, as in test_agent.py.
store_node = test_agent.store_node
clean_site = test_agent.clean_site
fleet = test_agent.fleet
node = test_agent.node

DIGEST = "sha256:c8e487af5cf33a49a705273e9ce199c52404fae175c28757a7f79c437f3370c2"
LIMITS = {"limits": {"cpu": "100m", "memory": "64Mi"}}


def bundled(root: Path = ROOT) -> PolicySet:
    docs = [
        load_document(p.read_bytes(), f"policies/{p.name}")
        for p in sorted((root / "policies").glob("*.yaml"))
        if p.stem != "signers"
    ]
    return load_policies(docs, today=date(2027, 2, 1))


def deployment(name: str, image: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **labels}},
                "spec": {"containers": [{"name": "c", "image": image, "resources": LIMITS}]},
            },
        },
    }


def kubectl_apply(
    cluster: Cluster, tmp_path: Path, body: dict[str, Any], *, dry_run: bool = True
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"obj-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(body))
    args = ["apply", "-f", str(path)] + (["--dry-run=server"] if dry_run else [])
    return cluster.kubectl(*args, check=False)


def eventually(check: Callable[[], bool], seconds: float = 15.0) -> None:
    """The API server takes a new policy into admission through an informer: poll briefly."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the admission chain did not reach the expected state")
        time.sleep(0.3)


# --------------------------------------------------------------------------- both engines


def test_every_bundled_policy_agrees_in_both_engines(cluster: Cluster, tmp_path: Path) -> None:
    policies = bundled()
    # What the cluster already holds does not change a verdict: a live pos/pos-server of
    # another selector (as a store's install leaves it) beside the case of that name. An
    # earlier test may have left one already; then that one serves.
    made = cluster.kubectl("get", "namespace", "pos", check=False).returncode != 0
    existing = cluster.kubectl("get", "deployment", "pos-server", "-n", "pos", check=False)
    created = existing.returncode != 0
    if created:
        live = deployment("pos-server", f"registry.example.com/pos/server:1.0@{DIGEST}", "pos")
        live["spec"]["selector"] = {"matchLabels": {"app": "pos", "tier": "server"}}
        live["spec"]["template"]["metadata"]["labels"] = {"app": "pos", "tier": "server"}
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pos"}}
        for body in (namespace, live):
            done = kubectl_apply(cluster, tmp_path, body, dry_run=False)
            assert done.returncode == 0, done.stderr
    before = cluster.kubectl("get", "deployment", "pos-server", "-n", "pos", "-o", "json")
    try:
        with ApiCluster.from_kubeconfig(Path(cluster.kubeconfig)) as api:
            report = compare_on_cluster(policies, api, sleep=time.sleep)
        after = cluster.kubectl("get", "deployment", "pos-server", "-n", "pos", "-o", "json")
        selector = json.loads(after.stdout)["spec"]["selector"]
        assert selector == json.loads(before.stdout)["spec"]["selector"]
        assert selector != {"matchLabels": {"app": "pos-server"}}  # the case's selector
    finally:
        if created:
            cluster.kubectl("delete", "deployment", "pos-server", "-n", "pos", check=False)
        if made:
            cluster.kubectl("delete", "namespace", "pos", "--wait=true", check=False)
    assert report.failed == 0, "\n".join(report.lines())
    exported = [p for p in policies.policies if p.enforce == "everywhere"]
    cases = sum(
        len(p.doc.spec["tests"].get("pass", [])) + len(p.doc.spec["tests"].get("fail", []))
        for p in exported
    )
    assert len(report.verdicts) == cases == 25
    for policy in exported:  # every policy is seen to admit and to deny at the API server
        verdicts = {v.server for v in report.verdicts if v.policy == policy.name}
        assert verdicts == {"admitted", "denied"}, policy.name
    assert {name for name, _ in report.kept} == {
        "devices-declared",
        "no-plaintext-secrets",
        "plant-update-windows",
        "resources-fit",
    }
    assert not report.left
    leftovers = cluster.kubectl("get", "validatingadmissionpolicies", "-o", "name").stdout
    assert "outpost-test-" not in leftovers.replace("outpost-test-keepalive", "")


NOTE_POLICY = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: short-note
spec:
  severity: deny
  match:
    resources:
      - {apiGroups: [""], kinds: [ConfigMap]}
  validations:
    - expression: >-
        !has(object.metadata.annotations) || !('note' in object.metadata.annotations)
        || object.metadata.annotations['note'].size() <= 3
      message: the note is longer than three characters
  tests:
    pass:
      - name: short ASCII note
        object: {apiVersion: v1, kind: ConfigMap, metadata: {name: n, annotations: {note: abc}}}
    fail:
      - name: three accented letters
        object: {apiVersion: v1, kind: ConfigMap, metadata: {name: n, annotations: {note: héé}}}
"""


TYPED_POLICY = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: mixed-types
spec:
  severity: deny
  match:
    resources:
      - {apiGroups: [""], kinds: [ConfigMap]}
  validations:
    - expression: "'a' == 1 || has(object.data)"
      message: a ConfigMap needs data
  tests:
    pass:
      - object: {apiVersion: v1, kind: ConfigMap, metadata: {name: m}, data: {a: b}}
    fail:
      - object: {apiVersion: v1, kind: ConfigMap, metadata: {name: m}}
"""


def test_a_difference_between_the_engines_is_reported(cluster: Cluster, tmp_path: Path) -> None:
    # cel-rust's size() of a string counts UTF-8 bytes, cel-go's (and the CEL spec's) code
    # points: 'héé' is 5 long here and 3 long at the API server. And cel-rust evaluates
    # 'a' == 1 (false), where the API server's type checker refuses the whole policy.
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "short-note.yaml").write_text(NOTE_POLICY, encoding="utf-8")
    (folder / "mixed-types.yaml").write_text(TYPED_POLICY, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "policy", "test", str(tmp_path), "--cluster"],
        env={**os.environ, **cluster.env()},
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "policy tests: 4 passed, 0 failed" in done.stdout
    assert (
        "DISAGREE policies/short-note.yaml:20: short-note fail[0] 'three accented letters': "
        "Outpost's engine says denied, the API server says admitted"
    ) in done.stdout
    refused = [line for line in done.stdout.splitlines() if "mixed-types" in line]
    assert len(refused) == 2, done.stdout
    for line in refused:
        assert line.startswith("FAIL policies/mixed-types.yaml:")
        assert "the API server refused the exported policy (policies/mixed-types.yaml)" in line
        assert "no matching overload" in line
    assert "both engines: 1 cases agree, 3 do not" in done.stdout


# --------------------------------------------------------------------------- at the site


def outpost_verdict(
    policies: PolicySet, body: dict[str, Any], app: dict[str, Any]
) -> dict[str, str]:
    """Policy name → first message, for every exported policy Outpost's engine says ``body`` breaks."""
    found = {}
    for policy in policies.policies:
        if policy.enforce != "everywhere":
            continue
        group = body["apiVersion"].rpartition("/")[0]
        if not policy.matches_kind(group, body["kind"]):
            continue
        assert policy.uses <= {"app"}, "the site test binds only app for now"
        outcome = evaluate(policy, new_context({"object": body, "app": app}))
        if outcome:
            found[policy.name] = outcome[0][1]
    return found


def test_the_stores_api_server_refuses_what_ci_refuses(
    tmp_path: Path, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW))
    assert agent.tick().outcome == "applied"
    cluster.kubectl("create", "namespace", "vms", check=False)

    # A technician's Deployment with a :latest tag (pinned otherwise, with limits).
    latest = deployment("adhoc", f"registry.example.com/pos/server:latest@{DIGEST}", "pos")
    eventually(lambda: kubectl_apply(cluster, tmp_path, latest, dry_run=False).returncode != 0)
    refused = kubectl_apply(cluster, tmp_path, latest, dry_run=False)
    assert (
        "ValidatingAdmissionPolicy 'outpost-no-latest-tag' with binding 'outpost-no-latest-tag' "
        f"denied request: images tagged :latest: registry.example.com/pos/server:latest@{DIGEST}"
    ) in refused.stderr
    assert cluster.kubectl("get", "deployment", "adhoc", "-n", "pos", check=False).returncode != 0
    fine = deployment("adhoc", f"registry.example.com/pos/server@{DIGEST}", "pos")
    assert kubectl_apply(cluster, tmp_path, fine).returncode == 0

    # Every case of every bundled policy, as a technician would send it (no app label),
    # and the pass cases of allow-listed apps labelled as those apps' objects.
    policies = bundled()
    apps = {
        "pos": yaml.safe_load((ROOT / "apps/pos/app.yaml").read_text()),
        "node-metrics": yaml.safe_load((ROOT / "apps/node-metrics/app.yaml").read_text()),
    }
    admitted: list[str] = []
    denied = 0
    for policy in policies.policies:
        if policy.enforce != "everywhere":
            continue
        for expect in ("pass", "fail"):
            for case in policy.doc.spec["tests"][expect]:
                body = copy.deepcopy(case["object"])
                # Its own name: a dry run onto the store's own object would be an update.
                body["metadata"]["name"] = "tech-" + body["metadata"]["name"]
                name = ((case.get("app") or {}).get("metadata") or {}).get("name")
                app: dict[str, Any] = {}
                if expect == "pass" and name in apps:
                    body["metadata"].setdefault("labels", {})["outpost/app"] = name
                    app = apps[name]
                broken = outpost_verdict(policies, body, app)
                done = kubectl_apply(cluster, tmp_path, body)
                label = f"{policy.name} {expect} {case.get('name')}"
                if not broken:
                    assert done.returncode == 0, (label, done.stderr)
                    admitted.append(label)
                    continue
                assert done.returncode != 0, label
                assert any(
                    f"'outpost-{name}' denied request: {message}" in done.stderr
                    or f"'outpost-{name}' with binding 'outpost-{name}' denied request: {message}"
                    in done.stderr
                    for name, message in broken.items()
                ), (label, broken, done.stderr)
                denied += 1
        # each policy's fail cases break at least that policy
        for case in policy.doc.spec["tests"]["fail"]:
            assert policy.name in outpost_verdict(policies, case["object"], {})
    # Not vacuous: objects that pass every policy are admitted, all others denied.
    assert sorted(admitted) == [
        "image-digest pass VM containerDisk pinned by digest",
        "resource-limits pass both limits",
    ]
    assert denied == 23

    # Kubernetes' own namespaces are not Outpost's to police.
    system = deployment("k3s-style", "rancher/mirrored-coredns-coredns:1.12.0", "kube-system")
    assert kubectl_apply(cluster, tmp_path, system).returncode == 0


def _exempt_pos(text: str) -> str:
    return text.replace(
        "  validations:\n",
        "  exemptions:\n"
        "    - {apps: [pos], reason: vendor debug image, expires: 2027-12-31}\n"
        "  validations:\n",
        1,
    )


def _allow_quay(text: str) -> str:
    return text.replace("['registry.example.com/']", "['registry.example.com/', 'quay.io/']")


def test_policy_changes_exemptions_and_removals_reach_the_admission_chain(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW))
    assert agent.tick().outcome == "applied"
    quay = deployment("vendor", f"quay.io/vendor/tool@{DIGEST}", "pos")
    latest_pos = deployment(
        "dbg", f"registry.example.com/pos/server:latest@{DIGEST}", "pos", **{"outpost/app": "pos"}
    )
    latest_other = deployment(
        "dbg",
        f"registry.example.com/pos/server:latest@{DIGEST}",
        "default",
        **{"outpost/app": "pos"},
    )
    eventually(lambda: kubectl_apply(cluster, tmp_path, quay).returncode != 0)
    assert "outpost-image-registry" in kubectl_apply(cluster, tmp_path, quay).stderr
    assert kubectl_apply(cluster, tmp_path, latest_pos).returncode != 0

    # A binding deleted by hand is drift: the next tick puts it back, window or not.
    cluster.kubectl("delete", "validatingadmissionpolicybinding", "outpost-image-registry")
    eventually(lambda: kubectl_apply(cluster, tmp_path, quay).returncode == 0)
    drift = test_agent.make_agent_at(agent, IN_WINDOW + timedelta(hours=12)).tick()
    assert (drift.outcome, drift.corrected) == ("unchanged", 1), drift
    eventually(lambda: kubectl_apply(cluster, tmp_path, quay).returncode != 0)

    # A relaxed policy and an exemption, in one signed commit.
    fleet.edit("policies/image-registry.yaml", _allow_quay)
    fleet.edit("policies/no-latest-tag.yaml", _exempt_pos)
    changed = fleet.commit(
        "policies: allow quay.io; exempt pos from no-latest-tag", when=T0 + timedelta(hours=1)
    )
    report = agent.tick()
    assert (report.outcome, report.applied) == ("applied", changed), report
    eventually(lambda: kubectl_apply(cluster, tmp_path, quay).returncode == 0)
    assert kubectl_apply(cluster, tmp_path, latest_pos).returncode == 0, "the exempt app's object"
    outside = kubectl_apply(cluster, tmp_path, latest_other)
    assert outside.returncode != 0, "the label alone exempts nothing outside the app's namespace"
    assert "outpost-no-latest-tag" in outside.stderr
    unlabelled = deployment("dbg", f"registry.example.com/pos/server:latest@{DIGEST}", "pos")
    assert kubectl_apply(cluster, tmp_path, unlabelled).returncode != 0

    # A removed policy leaves the admission chain with the next applied commit.
    (fleet.path / "policies/no-latest-tag.yaml").unlink()
    removed = fleet.commit("policies: drop no-latest-tag", when=T0 + timedelta(hours=2))
    report = agent.tick()
    assert (report.outcome, report.applied) == ("applied", removed), report
    names = cluster.kubectl(
        "get", "validatingadmissionpolicies,validatingadmissionpolicybindings", "-o", "name"
    ).stdout
    assert "outpost-no-latest-tag" not in names
    assert "outpost-image-registry" in names
    eventually(lambda: kubectl_apply(cluster, tmp_path, unlabelled).returncode == 0)
    state = json.loads((tmp_path / "state/state.json").read_text())
    assert not any("no-latest-tag" in key for key in state["inventory"])


def test_a_policy_deleted_by_hand_returns_with_the_next_commit_and_its_new_facts(
    fresh_cluster: Cluster, tmp_path: Path
) -> None:
    """A technician deletes the only policy that reads facts; the next commit changes the
    facts and brings the policy back: the API server judges by the new facts.

    This is the sequence in which Kubernetes' ConfigMap parameter informer can freeze
    (kubernetes/kubernetes#130887; the facts anchor in core/policy/_export.py is there for
    it). In these runs the freeze did not reproduce through this sequence even without the
    anchor, so this test shows the behaviour, not that the anchor is needed.
    """
    from reconciler.core.model import Repository
    from reconciler.core.policy import export_rendered_site
    from reconciler.core.render import render_site
    from reconciler.core.source import WorkdirTree
    from reconciler.node.apply import ResourceManager, key_of

    site = test_agent.SITE
    repo = Repository(WorkdirTree(ROOT))
    export = export_rendered_site(repo, site, render_site(repo, site), today=date(2027, 2, 1))
    full = list(export.objects)
    revoked = copy.deepcopy(full)  # the next commit: the POS app loses its privileged allowance
    [facts] = [o for o in revoked if o["kind"] == "ConfigMap"]
    facts["data"]["app.pos.spec.allow.privileged"] = "b:false"
    fresh_cluster.kubectl("create", "namespace", "pos")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bridge", "namespace": "pos", "labels": {"outpost/app": "pos"}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": f"registry.example.com/pos/bridge@{DIGEST}",
                    "resources": LIMITS,
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    with ApiCluster.from_kubeconfig(Path(fresh_cluster.kubeconfig)) as api:
        manager = ResourceManager(api, site=site)
        manager.apply(full, revision="r1")
        manager.write_inventory([key_of(o) for o in full], "r1")
        # The POS app may run privileged: its facts are in use.
        eventually(lambda: kubectl_apply(fresh_cluster, tmp_path, pod).returncode == 0)
        fresh_cluster.kubectl(
            "delete",
            "validatingadmissionpolicy,validatingadmissionpolicybinding",
            "outpost-host-access",
        )
        time.sleep(5)  # several of the API server's one-second policy refreshes
        manager.apply(revoked, revision="r2")
    denial = "binding 'outpost-host-access' denied request: privileged containers (c)"
    eventually(lambda: denial in kubectl_apply(fresh_cluster, tmp_path, pod).stderr)
