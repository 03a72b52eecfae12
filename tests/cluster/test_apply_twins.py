"""Real-API-server twins of apply behaviours first shown on the in-memory fake.

``tests/apply/test_apply_manager.py`` shows them on ``FakeCluster``; here the same
promises hold against kube-apiserver itself, whose answers the fake only imitates:

- prune leaves alone an object someone replaced between its read and its delete (the
  server refuses the delete's uid precondition with 409, which means "not ours now");
- a write to an object's status (a controller's, or kubectl's ``--subresource=status``)
  moves its resourceVersion but not its generation, and does not make the next apply
  send it again;
- the uid precondition itself: a delete with another uid is answered 409 and deletes
  nothing, with the right uid it deletes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_apply
from test_apply import World, settle

from reconciler.node.apply import Action, key_of

pytestmark = pytest.mark.cluster

# The same fixtures as test_apply.py: a connected Cluster and one test's corner of it.
kube = test_apply.kube
world = test_apply.world


def recording(world: World, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every apply (and dry-run apply) request the manager sends."""
    sent: list[tuple[str, str]] = []
    original: Callable[..., Any] = world.kube.apply

    def apply(resource: Any, body: Any, **options: Any) -> Any:
        sent.append(("dry-run" if options.get("dry_run") else "apply", options["obj"]))
        return original(resource, body, **options)

    monkeypatch.setattr(world.kube, "apply", apply)
    return sent


def test_prune_leaves_an_object_replaced_between_read_and_delete(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    leaving = world.config_map("leaving", owner="outpost")
    r1 = world.manager.apply([world.namespace(), leaving], revision="r1")
    world.manager.write_inventory(r1.keys, "r1")
    before = world.get("configmap", "leaving")
    assert before is not None
    original_get = world.kube.get

    def get_then_replace(resource: Any, namespace: str, name: str, *, obj: str) -> Any:
        found = original_get(resource, namespace, name, obj=obj)
        if name == "leaving":
            # Someone deletes it and creates their own, same name and labels, new uid.
            replacement = json.loads(json.dumps(before))
            for field in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
                replacement["metadata"].pop(field, None)
            replacement["data"] = {"owner": "someone else"}
            world.kubectl("delete", "configmap", "leaving", "-n", world.ns, "--wait=true")
            manifest = tmp_path / "replacement.json"
            manifest.write_text(json.dumps(replacement))
            world.kubectl("create", "-f", str(manifest))
        return found

    monkeypatch.setattr(world.kube, "get", get_then_replace)
    deleted = world.manager.prune(r1.keys, {key_of(world.namespace())})
    monkeypatch.undo()

    assert deleted == []
    after = world.get("configmap", "leaving")
    assert after is not None, "the replacement survived the prune"
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert after["data"] == {"owner": "someone else"}


def test_a_delete_with_another_uid_is_refused_by_the_server(world: World) -> None:
    world.manager.apply([world.namespace(), world.config_map("target")], revision="r1")
    live = world.get("configmap", "target")
    assert live is not None
    resource = world.kube.resource("v1", "ConfigMap")
    # The API server answers 409 Conflict to the failed precondition: not deleted, not ours.
    assert (
        world.kube.delete(
            resource, world.ns, "target", obj="ConfigMap/target", uid="0" * 8 + "-not-its-uid"
        )
        is False
    )
    assert world.get("configmap", "target") is not None
    assert (
        world.kube.delete(
            resource, world.ns, "target", obj="ConfigMap/target", uid=live["metadata"]["uid"]
        )
        is True
    )
    settle(lambda: world.get("configmap", "target") is None)
    # Already gone: False again (404), never an error.
    assert world.kube.delete(resource, world.ns, "target", obj="ConfigMap/target") is False


def test_a_status_write_does_not_make_the_next_apply_send_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VirtualMachine (nothing in the test cluster acts on it) gets a status written by
    hand through the status subresource, as KubeVirt's controller would."""
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "hmi", "namespace": world.ns},
        "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}},
    }
    first = world.manager.apply([world.namespace(), vm], revision="r1")
    world.manager.write_inventory(first.keys, "r1")
    before = world.get("virtualmachine", "hmi")
    assert before is not None
    world.kubectl(
        "patch",
        "virtualmachine",
        "hmi",
        "-n",
        world.ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"printableStatus": "Running", "ready": true}}',
    )
    written = world.get("virtualmachine", "hmi")
    assert written is not None
    assert written["status"]["printableStatus"] == "Running"
    assert written["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    assert written["metadata"]["generation"] == before["metadata"]["generation"]

    sent = recording(world, monkeypatch)
    again = world.manager.apply([world.namespace(), vm], revision="r1")
    assert {e.action for e in again.entries} == {Action.UNCHANGED}
    assert sent == [], "nothing is sent for an object only its status changed on"
    after = world.get("virtualmachine", "hmi")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    assert after["status"]["printableStatus"] == "Running", "our apply kept the status"

    # The other half: a hand edit of the spec moves the generation and is sent again.
    world.kubectl(
        "patch",
        "virtualmachine",
        "hmi",
        "-n",
        world.ns,
        "--type=merge",
        "-p",
        '{"spec": {"runStrategy": "Halted"}}',
    )
    fixed = world.manager.apply([world.namespace(), vm], revision="r1")
    assert [str(k) for k in fixed.configured] == [f"VirtualMachine.kubevirt.io/{world.ns}/hmi"]
    assert ("apply", f"VirtualMachine.kubevirt.io/{world.ns}/hmi") in sent
    live = world.get("virtualmachine", "hmi")
    assert live is not None and live["spec"]["runStrategy"] == "Always"
