"""ResourceManager decisions on an in-memory cluster: stages, errors, inventory, prune, health wait."""

from __future__ import annotations

import json
from typing import Any

import pytest
from apply_fakes import FakeCluster, FakeTime

from reconciler.core.errors import ApplyError, ClusterUnavailable, ConfigError
from reconciler.node.apply import (
    INVENTORY_NAME,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PRUNE_ANNOTATION,
    SITE_LABEL,
    Action,
    ObjectKey,
    ResourceManager,
    Status,
    key_of,
)

SITE = "de-ber-0042"


def cm(name: str, ns: str = "pos", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


def ns(name: str = "pos") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deploy(name: str = "server", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "pos"},
        "spec": {"replicas": replicas},
    }


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets"},
        "versions": [{"name": "v1", "served": True, "storage": True}],
    },
}
WIDGET = {
    "apiVersion": "example.com/v1",
    "kind": "Widget",
    "metadata": {"name": "w", "namespace": "pos"},
}


@pytest.fixture
def fake() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def manager(fake: FakeCluster) -> ResourceManager:
    return ResourceManager(fake, site=SITE, workers=1)  # type: ignore[arg-type]


def applied(fake: FakeCluster) -> list[str]:
    return [what for verb, what in fake.calls if verb == "apply"]


# -- apply -------------------------------------------------------------------


def test_apply_reports_created_unchanged_configured(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    slice_ = [ns(), cm("settings", currency="EUR"), deploy()]
    first = manager.apply(slice_, revision="r1")
    assert [e.action for e in first.entries] == [Action.CREATED] * 3
    again = manager.apply(slice_, revision="r1")
    assert [e.action for e in again.entries] == [Action.UNCHANGED] * 3
    assert not again.changed
    changed = manager.apply([ns(), cm("settings", currency="USD"), deploy()], revision="r2")
    assert changed.configured == (key_of(cm("settings")),)
    assert set(changed.unchanged) == {key_of(ns()), key_of(deploy())}
    assert changed.keys == first.keys


def test_apply_stamps_ownership_and_drops_server_fields(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    copied = cm("settings", a="1")
    copied["metadata"].update(
        resourceVersion="42", uid="u", managedFields=[{}], labels={"app": "pos"}
    )
    copied["status"] = {"x": 1}
    manager.apply([copied], revision="r1")
    live = fake.objects[("", "ConfigMap", "pos", "settings")]
    assert live["metadata"]["labels"] == {
        "app": "pos",
        MANAGED_BY_LABEL: MANAGED_BY,
        SITE_LABEL: SITE,
    }
    assert "managedFields" not in live["metadata"]
    assert live["metadata"]["uid"] != "u"
    assert "status" not in live
    assert copied["metadata"]["labels"] == {"app": "pos"}, "the caller's object is not modified"


def test_apply_goes_stage_by_stage(fake: FakeCluster, manager: ResourceManager) -> None:
    manager.apply([WIDGET, deploy(), cm("settings"), ns(), CRD], revision="r1")
    order = [call for call in fake.calls if call[0] in ("apply", "wait", "remember")]
    inventory = [c for c in order if "outpost" in c[1]]
    payload = [c for c in order if c not in inventory]
    assert payload == [
        ("apply", "CustomResourceDefinition.apiextensions.k8s.io/widgets.example.com"),
        ("wait", "CustomResourceDefinition.apiextensions.k8s.io/widgets.example.com"),
        ("remember", "Widget"),
        ("apply", "Namespace/pos"),
        ("apply", "ConfigMap/pos/settings"),
        ("apply", "Widget.example.com/pos/w"),
        ("apply", "Deployment.apps/pos/server"),
    ]
    assert order.index(inventory[-1]) < order.index(payload[0]), "the inventory is widened first"


def test_crd_not_established_is_temporary_and_stops_the_apply(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    fake.crds_established = False
    with pytest.raises(ClusterUnavailable, match="not Established within"):
        manager.apply([CRD, WIDGET], revision="r1")
    assert "Widget.example.com/pos/w" not in applied(fake)


def test_refused_objects_are_named_together_and_later_stages_wait(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    fake.fail_apply["a"] = ApplyError(
        "apply ConfigMap/pos/a: refused (422 Invalid): bad", obj="x", code=422
    )
    fake.fail_apply["b"] = ApplyError(
        "apply ConfigMap/pos/b: refused (403 Forbidden): no", code=403
    )
    with pytest.raises(ApplyError) as caught:
        manager.apply([ns(), cm("a"), cm("b"), cm("c"), deploy()], revision="r1")
    message = str(caught.value)
    assert message.startswith("2 objects were refused")
    assert "ConfigMap/pos/a" in message and "ConfigMap/pos/b" in message
    assert caught.value.code == 422
    assert "ConfigMap/pos/c" in applied(fake), "the rest of the stage is still applied"
    assert "Deployment.apps/pos/server" not in applied(fake), "the next stage is not"


def test_a_refusal_beats_an_outage_in_the_same_stage(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    fake.fail_apply["a"] = ClusterUnavailable("timeout")
    fake.fail_apply["b"] = ApplyError("refused", code=422)
    with pytest.raises(ApplyError, match="refused"):
        manager.apply([cm("a"), cm("b")], revision="r1")


def test_an_outage_alone_is_temporary_and_the_next_apply_converges(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    fake.fail_apply["a"] = ClusterUnavailable("connection refused")
    with pytest.raises(ClusterUnavailable, match="connection refused"):
        manager.apply([ns(), cm("a"), cm("b"), deploy()], revision="r1")
    del fake.fail_apply["a"]
    result = ResourceManager(fake, site=SITE).apply(  # type: ignore[arg-type]
        [ns(), cm("a"), cm("b"), deploy()], revision="r1"
    )
    assert set(result.created) == {key_of(cm("a")), key_of(deploy())}
    assert set(result.unchanged) == {key_of(ns()), key_of(cm("b"))}


def test_a_refusal_is_not_hidden_by_an_outage_while_saving(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    fake.fail_apply["bad"] = ApplyError("apply ConfigMap/pos/bad: refused (422 Invalid)", code=422)
    fake.fail_apply[INVENTORY_NAME] = ClusterUnavailable("gone")
    fake.objects[("", "ConfigMap", "outpost-system", INVENTORY_NAME)] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": INVENTORY_NAME, "namespace": "outpost-system", "uid": "u"},
        "data": {"site": SITE, "keys": json.dumps(["/ConfigMap/pos/good", "/ConfigMap/pos/bad"])},
    }
    with pytest.raises(ApplyError, match="422"):
        manager.apply([cm("good"), cm("bad")], revision="r1")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
            "namespaced but the object has no",
        ),
        (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}},
            "cluster-scoped",
        ),
        (
            {
                "apiVersion": "example.com/v1",
                "kind": "Gadget",
                "metadata": {"name": "g", "namespace": "pos"},
            },
            r"Gadget.example.com/pos/g \(example.com/v1\): the cluster does not serve",
        ),
    ],
)
def test_objects_the_cluster_cannot_take_are_refused(
    manager: ResourceManager, document: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApplyError, match=message):
        manager.apply([document], revision="r1")


def test_parallel_apply_gives_the_same_result(fake: FakeCluster) -> None:
    manager = ResourceManager(fake, site=SITE, workers=4)  # type: ignore[arg-type]
    slice_ = (
        [ns()] + [cm(f"c{i}", v=str(i)) for i in range(20)] + [deploy(f"d{i}") for i in range(5)]
    )
    result = manager.apply(slice_, revision="r1")
    assert [e.key for e in result.entries][:1] == [key_of(ns())]
    assert len(result.created) == 26
    assert len(manager.apply(slice_, revision="r1").unchanged) == 26


@pytest.mark.parametrize("site", ["", "a" * 64, "-x", "de ber", "x/y"])
def test_site_must_be_a_label_value(fake: FakeCluster, site: str) -> None:
    with pytest.raises(ConfigError, match="label value"):
        ResourceManager(fake, site=site)  # type: ignore[arg-type]


# -- inventory ---------------------------------------------------------------


def test_inventory_round_trip_and_widening(fake: FakeCluster, manager: ResourceManager) -> None:
    assert manager.read_inventory() is None
    one = manager.apply([ns(), cm("a"), cm("b")], revision="r1")
    during = manager.read_inventory()
    assert during is not None and not during.complete and during.keys == one.keys
    manager.write_inventory(one.keys, "r1")
    done = manager.read_inventory()
    assert done is not None and done.complete and done.revision == "r1" and done.site == SITE
    two = manager.apply([ns(), cm("a"), cm("c")], revision="r2")
    widened = manager.read_inventory()
    assert widened is not None
    assert widened.keys == one.keys | two.keys and not widened.complete and widened.revision == "r2"
    stored = fake.objects[("", "ConfigMap", "outpost-system", INVENTORY_NAME)]
    assert json.loads(stored["data"]["keys"]) == sorted(k.encode() for k in widened.keys)
    assert ("", "Namespace", "", "outpost-system") in fake.objects


def test_reapplying_a_tracked_slice_does_not_rewrite_the_inventory(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    result = manager.apply([ns(), cm("a")], revision="r1")
    manager.write_inventory(result.keys, "r1")
    fake.calls.clear()
    manager.apply([cm("a")], revision="r1", skip_untouched=False)  # a drift correction
    assert [c for c in fake.calls if c[0] == "apply"] == [("apply", "ConfigMap/pos/a")]


# -- fingerprints ------------------------------------------------------------


def test_untouched_objects_are_not_sent_again(fake: FakeCluster, manager: ResourceManager) -> None:
    slice_ = [ns(), cm("a", x="1"), cm("b"), deploy()]
    first = manager.apply(slice_, revision="r1")
    manager.write_inventory(first.keys, "r1")
    fresh = ResourceManager(fake, site=SITE, workers=1)  # type: ignore[arg-type]  # next tick
    fake.calls.clear()
    again = fresh.apply(slice_, revision="r1")
    assert {e.action for e in again.entries} == {Action.UNCHANGED}
    assert [c for c in fake.calls if c[0] in ("apply", "get", "dry-run")] == [
        ("get", "ConfigMap outpost-system/outpost-inventory")
    ]
    fake.calls.clear()
    assert fresh.drift(slice_) == []
    assert [c for c in fake.calls if c[0] in ("apply", "dry-run")] == []


def test_secrets_are_never_fingerprinted(fake: FakeCluster, manager: ResourceManager) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "till-pin", "namespace": "pos"},
        "stringData": {"pin": "4711"},
    }
    result = manager.apply([cm("a"), secret], revision="r1")
    manager.write_inventory(result.keys, "r1")
    stored = fake.objects[("", "ConfigMap", "outpost-system", INVENTORY_NAME)]["data"]
    assert list(json.loads(stored["fingerprints"])) == ["/ConfigMap/pos/a"]
    assert "4711" not in json.dumps(stored)
    fake.calls.clear()
    assert set(manager.apply([cm("a"), secret], revision="r1").unchanged) == result.keys
    assert [c for c in fake.calls if c[0] == "apply"] == [("apply", "Secret/pos/till-pin")]
    fake.calls.clear()
    assert manager.drift([cm("a"), secret]) == []
    assert [c for c in fake.calls if c[0] == "dry-run"] == [("dry-run", "Secret/pos/till-pin")]


def test_a_status_write_does_not_defeat_the_fingerprint(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    manager.apply([deploy()], revision="r1")
    fake.edit(("apps", "Deployment", "pos", "server"), lambda o: o.update(status={"replicas": 1}))
    fake.calls.clear()
    assert manager.apply([deploy()], revision="r1").unchanged == (key_of(deploy()),)
    assert [c for c in fake.calls if c[0] == "apply"] == []


def edit_data(obj: dict[str, Any]) -> None:
    obj["data"] = {"x": "by hand"}


def edit_spec(obj: dict[str, Any]) -> None:
    obj["spec"]["replicas"] = 9


def drop_label(obj: dict[str, Any]) -> None:
    del obj["metadata"]["labels"][SITE_LABEL]


@pytest.mark.parametrize(
    ("document", "key", "change"),
    [
        (cm("a", x="1"), ("", "ConfigMap", "pos", "a"), edit_data),
        (deploy(), ("apps", "Deployment", "pos", "server"), edit_spec),
        (deploy(), ("apps", "Deployment", "pos", "server"), drop_label),
    ],
    ids=["data edited", "spec edited (generation moves)", "our label removed"],
)
def test_touched_objects_are_checked_and_sent(
    fake: FakeCluster, manager: ResourceManager, document: dict[str, Any], key: Any, change: Any
) -> None:
    manager.apply([document], revision="r1")
    fake.edit(key, change)
    assert [d.key for d in manager.drift([document])] == [key_of(document)]
    fake.calls.clear()
    result = manager.apply([document], revision="r1")
    assert result.configured == (key_of(document),)
    assert manager.drift([document]) == []


def test_a_recreated_object_is_not_taken_for_ours(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    manager.apply([cm("a", x="1")], revision="r1")
    stored = fake.objects.pop(("", "ConfigMap", "pos", "a"))
    stored["metadata"]["uid"] = "someone-else"
    stored["metadata"]["resourceVersion"] = "1"
    fake.objects[("", "ConfigMap", "pos", "a")] = stored
    fake.calls.clear()
    manager.apply([cm("a", x="1")], revision="r1")
    assert ("apply", "ConfigMap/pos/a") in fake.calls


def test_a_new_body_is_sent(fake: FakeCluster, manager: ResourceManager) -> None:
    manager.apply([cm("a", x="1")], revision="r1")
    assert manager.apply([cm("a", x="2")], revision="r2").configured == (key_of(cm("a")),)


def test_drift_that_finds_an_object_in_line_remembers_it(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    manager.apply([cm("a", x="1")], revision="r1")
    manager.write_inventory([key_of(cm("a"))], "r1")
    # someone adds a label of their own: the object moved (and has no generation), ours did not
    fake.edit(("", "ConfigMap", "pos", "a"), lambda o: o["metadata"]["labels"].update(team="ops"))
    fresh = ResourceManager(fake, site=SITE, workers=1)  # type: ignore[arg-type]
    fake.calls.clear()
    assert fresh.drift([cm("a", x="1")]) == []
    assert ("dry-run", "ConfigMap/pos/a") in fake.calls
    fake.calls.clear()
    again = ResourceManager(fake, site=SITE, workers=1)  # type: ignore[arg-type]
    assert again.drift([cm("a", x="1")]) == []
    assert ("dry-run", "ConfigMap/pos/a") not in fake.calls


def test_a_controllers_annotation_needs_no_dry_run(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    manager.apply([deploy()], revision="r1")
    fake.edit(
        ("apps", "Deployment", "pos", "server"),
        lambda o: o["metadata"].setdefault("annotations", {}).update(revision="2"),
    )
    fake.calls.clear()
    assert manager.drift([deploy()]) == []
    assert ("dry-run", "Deployment.apps/pos/server") not in fake.calls


def test_unreadable_fingerprints_are_only_a_slower_path(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    result = manager.apply([cm("a")], revision="r1")
    manager.write_inventory(result.keys, "r1")
    fake.objects[("", "ConfigMap", "outpost-system", INVENTORY_NAME)]["data"]["fingerprints"] = "{"
    fresh = ResourceManager(fake, site=SITE, workers=1)  # type: ignore[arg-type]
    fake.calls.clear()
    assert fresh.drift([cm("a")]) == []
    assert ("dry-run", "ConfigMap/pos/a") in fake.calls


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"site": SITE, "keys": "not json"}, "not readable"),
        ({"site": SITE, "keys": '{"a": 1}'}, "not a JSON list"),
        ({"site": SITE, "keys": '["apps/Deployment"]'}, "not group/Kind/namespace/name"),
        ({"site": "other-site", "keys": "[]"}, "belongs to site 'other-site'"),
    ],
)
def test_unreadable_inventory(
    fake: FakeCluster, manager: ResourceManager, data: dict[str, str], message: str
) -> None:
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": INVENTORY_NAME, "namespace": "outpost-system"},
            "data": data,
        }
    )
    with pytest.raises(ApplyError, match=message):
        manager.read_inventory()
    manager.apply([cm("a")], revision="r1")  # an apply is not blocked by it, and repairs it
    repaired = manager.read_inventory()
    assert repaired is not None and repaired.keys == {key_of(cm("a"))}


# -- prune -------------------------------------------------------------------


def test_prune_deletes_what_left_in_reverse_order(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    old = manager.apply([ns("old"), cm("a", "old"), deploy(), cm("keep")], revision="r1")
    new = manager.apply([cm("keep")], revision="r2")
    fake.calls.clear()
    deleted = manager.prune(old.keys, new.keys)
    assert deleted == [key_of(deploy()), key_of(cm("a", "old")), key_of(ns("old"))]
    assert [what for verb, what in fake.calls if verb == "delete"] == [str(k) for k in deleted]
    assert ("", "ConfigMap", "pos", "keep") in fake.objects


def test_prune_leaves_what_is_not_ours(fake: FakeCluster, manager: ResourceManager) -> None:
    ours = manager.apply([cm("opt-out"), cm("mine")], revision="r1")
    live = fake.objects[("", "ConfigMap", "pos", "opt-out")]
    live["metadata"]["annotations"] = {PRUNE_ANNOTATION: "disabled"}
    fake.put(cm("foreign"))  # same name space, no labels
    other = fake.put(cm("other-site"))
    other["metadata"]["labels"] = {MANAGED_BY_LABEL: MANAGED_BY, SITE_LABEL: "fr-par-0001"}
    helm = fake.put(cm("helm"))
    helm["metadata"]["labels"] = {MANAGED_BY_LABEL: "Helm", SITE_LABEL: SITE}
    previous = set(ours.keys) | {key_of(cm(n)) for n in ("foreign", "other-site", "helm", "gone")}
    previous |= {
        ObjectKey("example.com", "Widget", "pos", "w"),
        ObjectKey("", "ConfigMap", "", "bad"),
    }
    deleted = manager.prune(previous, set())
    assert deleted == [key_of(cm("mine"))]
    for name in ("opt-out", "foreign", "other-site", "helm"):
        assert ("", "ConfigMap", "pos", name) in fake.objects


def test_prune_never_touches_the_inventory(fake: FakeCluster, manager: ResourceManager) -> None:
    manager.write_inventory([], "r0")
    inventory_keys = {
        ObjectKey("", "Namespace", "", "outpost-system"),
        ObjectKey("", "ConfigMap", "outpost-system", INVENTORY_NAME),
    }
    assert manager.prune(inventory_keys, set()) == []
    assert manager.read_inventory() is not None


def test_prune_respects_a_replaced_object(fake: FakeCluster, manager: ResourceManager) -> None:
    manager.apply([cm("a")], revision="r1")
    original_get = fake.get

    def replaced_in_between(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        found = original_get(*args, **kwargs)
        fake.objects[("", "ConfigMap", "pos", "a")]["metadata"]["uid"] = "someone-else"
        return found

    fake.get = replaced_in_between  # type: ignore[method-assign]
    assert manager.prune({key_of(cm("a"))}, set()) == []
    assert ("", "ConfigMap", "pos", "a") in fake.objects


# -- drift -------------------------------------------------------------------


def test_drift(fake: FakeCluster, manager: ResourceManager) -> None:
    slice_ = [ns(), cm("a", x="1"), cm("b"), deploy(replicas=2)]
    manager.apply(slice_, revision="r1")
    assert manager.drift(slice_) == []
    fake.edit(
        ("", "ConfigMap", "pos", "a"), lambda o: o.update(data={"x": "2", "added-by-hand": "ok"})
    )
    fake.edit(("apps", "Deployment", "pos", "server"), edit_spec)
    fake.edit(("", "ConfigMap", "pos", "b"), lambda o: None)  # a write that changed nothing
    del fake.objects[("", "Namespace", "", "pos")]
    found = {str(d.key): d for d in manager.drift(slice_)}
    assert set(found) == {"ConfigMap/pos/a", "Deployment.apps/pos/server", "Namespace/pos"}
    assert found["ConfigMap/pos/a"].fields == ("data.x",)
    assert found["Deployment.apps/pos/server"].fields == ("spec.replicas",)
    assert found["Namespace/pos"].reason == "missing"
    assert str(found["ConfigMap/pos/a"]) == "ConfigMap/pos/a: changed (data.x)"


def test_drift_of_a_custom_resource_whose_crd_is_gone(manager: ResourceManager) -> None:
    assert [(str(d.key), d.reason) for d in manager.drift([WIDGET])] == [
        ("Widget.example.com/pos/w", "missing")
    ]


# -- health wait -------------------------------------------------------------


def ready(obj: dict[str, Any]) -> None:
    obj["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }


def test_wait_until_current(fake: FakeCluster, manager: ResourceManager) -> None:
    slice_ = [ns(), cm("a"), deploy()]
    manager.apply(slice_, revision="r1")
    live = fake.objects[("apps", "Deployment", "pos", "server")]
    live["metadata"]["generation"] = 1
    polls = {"n": 0}

    def controller(obj: dict[str, Any]) -> None:
        if obj is live:
            polls["n"] += 1
            if polls["n"] == 3:
                ready(obj)

    fake.on_get = controller
    time = FakeTime()
    report = manager.wait_healthy(
        slice_, deadline_seconds=60, clock=time.clock, sleep=time.sleep, interval_seconds=5
    )
    assert report.healthy and not report.timed_out
    assert report.status is Status.CURRENT
    assert time.slept == [5, 5]
    assert report.elapsed_seconds == 10
    assert report.summary() == "all 3 objects healthy"
    assert [str(k) for k, _ in report.objects] == [
        "Namespace/pos",
        "ConfigMap/pos/a",
        "Deployment.apps/pos/server",
    ]


def test_wait_gives_up_at_the_deadline(fake: FakeCluster, manager: ResourceManager) -> None:
    slice_ = [cm("a"), deploy()]
    manager.apply(slice_, revision="r1")
    time = FakeTime()
    report = manager.wait_healthy(
        slice_, deadline_seconds=7, clock=time.clock, sleep=time.sleep, interval_seconds=2
    )
    assert report.status is Status.IN_PROGRESS and report.timed_out and not report.healthy
    assert sum(time.slept) == 7 and time.slept[-1] == 1
    assert [str(k) for k, _ in report.pending] == ["Deployment.apps/pos/server"]
    assert (
        "1 of 2 objects not ready after 7s: Deployment.apps/pos/server: the Deployment controller"
        in report.summary()
    )


def test_wait_stops_at_the_first_failure(fake: FakeCluster, manager: ResourceManager) -> None:
    slice_ = [deploy("ok"), deploy("stuck")]
    manager.apply(slice_, revision="r1")
    fake.objects[("apps", "Deployment", "pos", "stuck")]["status"] = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    }
    time = FakeTime()
    report = manager.wait_healthy(slice_, deadline_seconds=600, clock=time.clock, sleep=time.sleep)
    assert report.status is Status.FAILED and not report.timed_out
    assert time.slept == []
    assert [str(k) for k, _ in report.failed] == ["Deployment.apps/pos/stuck"]
    assert report.summary().startswith(
        "1 of 2 objects failed: Deployment.apps/pos/stuck: rollout stuck"
    )


def test_wait_counts_a_missing_object_as_not_ready(manager: ResourceManager) -> None:
    time = FakeTime()
    report = manager.wait_healthy(
        [cm("never-applied")], deadline_seconds=0, clock=time.clock, sleep=time.sleep
    )
    assert report.timed_out
    assert report.objects[0][1].reason == "not found"


def test_wait_on_nothing_is_healthy(manager: ResourceManager) -> None:
    time = FakeTime()
    assert manager.wait_healthy([], deadline_seconds=10, clock=time.clock, sleep=time.sleep).healthy


def test_one_site_label_and_objects_with_the_older_key_are_still_pruned(
    fake: FakeCluster, manager: ResourceManager
) -> None:
    """Render and apply stamp the same key; an object applied by an earlier version, which
    carries only ``outpost.io/site``, is still recognised as this site's and pruned."""
    from reconciler.core.labels import LEGACY_SITE_LABELS
    from reconciler.core.labels import SITE_LABEL as CORE_SITE_LABEL
    from reconciler.core.render._site import SITE_LABEL as RENDER_SITE_LABEL

    assert SITE_LABEL == CORE_SITE_LABEL == RENDER_SITE_LABEL == "outpost/site"
    applied = manager.apply([cm("current"), cm("legacy"), cm("other")], revision="r1")
    live = fake.objects[("", "ConfigMap", "pos", "current")]
    assert live["metadata"]["labels"][SITE_LABEL] == SITE
    assert not set(live["metadata"]["labels"]) & set(LEGACY_SITE_LABELS)
    # As an earlier version left them: the old key only (decrypted Secrets had no other).
    fake.objects[("", "ConfigMap", "pos", "legacy")]["metadata"]["labels"] = {
        MANAGED_BY_LABEL: MANAGED_BY,
        "outpost.io/site": SITE,
    }
    fake.objects[("", "ConfigMap", "pos", "other")]["metadata"]["labels"] = {
        MANAGED_BY_LABEL: MANAGED_BY,
        "outpost.io/site": "fr-par-0001",
    }
    deleted = manager.prune(applied.keys, set())
    assert sorted(k.name for k in deleted) == ["current", "legacy"]
    assert ("", "ConfigMap", "pos", "other") in fake.objects
