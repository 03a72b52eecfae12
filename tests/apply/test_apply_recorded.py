"""ResourceManager's look at a recorded slice (a quiet tick), on the in-memory cluster.

`record` and `record_secrets` are taken after a tick's `drift`, as the agent takes them;
`look_recorded` runs on a new manager, as the next tick's would. It reads one LIST per kind
and namespace and nothing else, and it vouches only for what is provably as it was:
an object edited, deleted or re-created, a Secret written to, a kind gone, a record that
is not one, all lead back to the caller's full check.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from apply_fakes import FakeCluster
from test_apply_manager import SITE, cm, deploy, edit_spec, ns, ready

from reconciler.node.apply import ResourceManager, key_of

PIN = "4711-till-pin"


def secret(name: str = "till", value: str = PIN) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "pos"},
        "stringData": {"pin": value},
    }


SLICE = [ns(), cm("a", x="1"), deploy()]
SECRETS = [secret()]
DEPLOYMENT = ("apps", "Deployment", "pos", "server")
SECRET = ("", "Secret", "pos", "till")


def fresh(fake: FakeCluster) -> ResourceManager:
    """A tick's manager: nothing known but what the cluster holds."""
    return ResourceManager(fake, site=SITE, workers=1)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def recorded(fake: FakeCluster) -> tuple[list[Any], list[Any]]:
    """A slice applied and its inventory written, then a tick that found it in line and
    recorded it: (`record` of the plain objects, `record_secrets` of the Secrets)."""
    applying = fresh(fake)
    applying.apply([*SLICE, *SECRETS], revision="r1")
    fake.objects[DEPLOYMENT]["metadata"]["generation"] = 1
    ready(fake.objects[DEPLOYMENT])
    applying.write_inventory([key_of(o) for o in [*SLICE, *SECRETS]], "r1")
    tick = fresh(fake)
    assert tick.drift([*SLICE, *SECRETS]) == []
    objects, versions = tick.record(SLICE), tick.record_secrets(SECRETS)
    assert objects is not None and versions is not None
    return objects, versions


def test_a_quiet_look_is_one_list_per_kind_and_namespace(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    fake.calls.clear()
    look = fresh(fake).look_recorded(*recorded)
    assert look is not None and look.healthy and look.secrets_in_line
    assert [str(key) for key, _ in look.objects] == [str(key_of(o)) for o in SLICE]
    assert sorted(fake.calls) == sorted(
        [
            ("list", "Namespace/"),
            ("list", "ConfigMap/pos"),
            ("list", "Deployment/pos"),
            ("list", "Secret/pos"),
            ("get", "ConfigMap outpost-system/outpost-inventory"),  # the fingerprints
        ]
    )


def test_no_discovery_the_record_names_each_resource(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    def undiscovered(api_version: str, kind: str) -> Any:
        raise AssertionError(f"discovery asked for {kind} ({api_version})")

    fake.resource = undiscovered  # type: ignore[method-assign]
    assert fresh(fake).look_recorded(*recorded) is not None


def test_the_record_holds_nothing_of_a_secret_but_where_it_is(
    recorded: tuple[list[Any], list[Any]],
) -> None:
    objects, versions = recorded
    assert [entry[1] for entry in objects] == ["namespaces", "configmaps", "deployments"]
    text = json.dumps(recorded)
    assert PIN not in text and '"till"' not in text
    assert versions[0][:4] == ["v1", "Secret", "pos", "secrets"]


def test_a_secret_is_recorded_only_when_drift_found_it_in_line(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    assert fresh(fake).record_secrets(SECRETS) is None  # this manager's drift saw nothing
    fake.edit(SECRET, lambda o: o.update(stringData={"pin": "0000"}))
    tick = fresh(fake)
    assert [str(d.key) for d in tick.drift(SECRETS)] == ["Secret/pos/till"]
    assert tick.record_secrets(SECRETS) is None
    assert fresh(fake).record([*SLICE, *SECRETS]) is None  # a Secret has no fingerprint


def test_a_secret_written_to_is_not_in_line(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    fake.edit(SECRET, lambda o: o["metadata"].setdefault("annotations", {}).update(a="b"))
    look = fresh(fake).look_recorded(*recorded)
    assert look is not None and not look.secrets_in_line


def test_a_secret_deleted_and_made_again_is_not_in_line(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    again = dict(fake.objects.pop(SECRET))
    again["metadata"] = {k: v for k, v in again["metadata"].items() if k != "uid"}
    fake.put(again)  # same name, same value: a new uid
    look = fresh(fake).look_recorded(*recorded)
    assert look is not None and not look.secrets_in_line
    del fake.objects[SECRET]
    look = fresh(fake).look_recorded(*recorded)
    assert look is not None and not look.secrets_in_line


def test_secrets_not_recorded_are_not_in_line(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    objects, _ = recorded
    look = fresh(fake).look_recorded(objects, None)
    assert look is not None and not look.secrets_in_line
    look = fresh(fake).look_recorded(objects, [])  # a slice without Secrets
    assert look is not None and look.secrets_in_line


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda o: o.update(data={"x": "2"}), id="data edited"),
        pytest.param(lambda o: o["metadata"]["labels"].pop("outpost/site"), id="label taken"),
    ],
)
def test_an_object_written_to_is_not_vouched_for(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]], change: Any
) -> None:
    fake.edit(("", "ConfigMap", "pos", "a"), change)
    assert fresh(fake).look_recorded(*recorded) is None


def test_a_deleted_object_is_not_vouched_for(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    del fake.objects[("", "Namespace", "", "pos")]
    assert fresh(fake).look_recorded(*recorded) is None


def test_a_spec_edit_is_not_vouched_for_but_a_status_write_is(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    fake.edit(DEPLOYMENT, lambda o: o["status"].update(availableReplicas=0))
    look = fresh(fake).look_recorded(*recorded)
    assert look is not None and not look.healthy  # the health is the same LIST's
    fake.edit(DEPLOYMENT, edit_spec)
    assert fresh(fake).look_recorded(*recorded) is None


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda r: "not a list", id="not a list"),
        pytest.param(lambda r: [r[0][:2]], id="short entry"),
        pytest.param(lambda r: [["skeleton", "configmaps", "d"]], id="skeleton not an object"),
        pytest.param(lambda r: [[r[0][0], "", r[0][2]]], id="no plural"),
        pytest.param(lambda r: [[r[0][0], "namespaces", 7]], id="digest not a string"),
        pytest.param(lambda r: [[{"kind": "Namespace"}, "namespaces", "d"]], id="no name"),
        pytest.param(lambda r: [[{**r[0][0], "apiVersion": 1}, "namespaces", "d"]], id="version"),
    ],
)
def test_a_record_that_is_not_one_vouches_for_nothing(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]], spoil: Any
) -> None:
    objects, versions = recorded
    assert fresh(fake).look_recorded(spoil(json.loads(json.dumps(objects))), versions) is None


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda v: "not a list", id="not a list"),
        pytest.param(lambda v: [v[0][:5]], id="short entry"),
        pytest.param(lambda v: [[*v[0][:4], "", v[0][5]]], id="no uid"),
        pytest.param(lambda v: [[*v[0][:3], None, *v[0][4:]]], id="no plural"),
        pytest.param(lambda v: [[*v[0][:2], 3, *v[0][3:]]], id="namespace not a string"),
    ],
)
def test_secret_versions_that_are_not_some_are_not_in_line(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]], spoil: Any
) -> None:
    objects, versions = recorded
    look = fresh(fake).look_recorded(objects, spoil(json.loads(json.dumps(versions))))
    assert look is not None and not look.secrets_in_line


def test_drift_recorded_is_the_look_then_drift_of_the_secrets(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]]
) -> None:
    objects, _ = recorded
    assert fresh(fake).drift_recorded(objects, []) == []
    fake.edit(SECRET, lambda o: o.update(stringData={"pin": "0000"}))
    found = fresh(fake).drift_recorded(objects, SECRETS)
    assert found is not None and [str(d.key) for d in found] == ["Secret/pos/till"]
    del fake.objects[("", "Namespace", "", "pos")]
    assert fresh(fake).drift_recorded(objects, SECRETS) is None


def test_the_look_lists_in_turn_on_the_callers_thread(
    fake: FakeCluster, recorded: tuple[list[Any], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pool of threads, each with its own connection: one LIST after another."""
    threads: set[str] = set()
    listing = fake.list

    def watched(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return listing(*args, **kwargs)

    monkeypatch.setattr(fake, "list", watched)
    manager = ResourceManager(fake, site=SITE, workers=4)  # type: ignore[arg-type]
    assert manager.look_recorded(*recorded) is not None
    assert threads == {threading.current_thread().name}


def test_an_object_of_a_kind_not_served_is_not_recorded(fake: FakeCluster) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert fresh(fake).record([cm("a"), widget]) is None
