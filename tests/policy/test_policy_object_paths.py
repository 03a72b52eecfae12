"""A policy that reads ``object`` only through ``.field`` chains is cached by the values at
those fields: the Site documents of 10,000 stores all differ, but what ``object.kind`` and
``object.spec.devices`` give does not. The key must never join two objects the policy
could tell apart, errors included (a property test compares with a fresh cache)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policykit import Obj, Rendered, hardware, policies_from, site

from reconciler.core.errors import Mark
from reconciler.core.policy import PolicyCache, check_site
from reconciler.core.policy._load import _object_paths, _site_status_only

DEVICES = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: devices
spec:
  severity: deny
  match:
    resources:
      - {apiGroups: [outpost], kinds: [Site]}
  validations:
    - expression: >-
        object.kind != 'Site' || !has(object.spec.devices)
        || object.spec.devices.all(d, d in ['scanner', 'printer'])
      messageExpression: "'undeclared devices: ' + object.spec.devices.join(', ')"
"""

# Every way a field chain can fail: no such key, a list or a scalar where a map belongs.
PICKY = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: picky
spec:
  severity: deny
  match:
    resources:
      - {apiGroups: [outpost], kinds: [Site]}
  validations:
    - expression: "object.spec.mode.level > 1"
    - expression: "object.metadata.labels.size() < 3"
      messageExpression: "'labels: ' + string(object.metadata.labels.size())"
"""


def _findings(policies: Any, body: dict[str, Any], cache: PolicyCache) -> list[str]:
    name = str(body.get("metadata", {}).get("name", "st-0001"))
    found = check_site(
        policies,
        Rendered(()),
        Obj(body, Mark("sites/x/site.yaml", 1)).body,
        hardware(name),
        {},
        cache=cache,
    )
    return sorted(f"{f.rule} {f.severity} {f.message}" for f in found)


def test_sites_that_agree_on_the_fields_read_share_one_evaluation() -> None:
    policies = policies_from(DEVICES)
    (policy,) = policies.policies
    assert policy.object_paths == (("kind",), ("spec", "devices"))
    cache = PolicyCache()
    for index in range(50):
        body = site(f"st-{index:04d}", region=f"r{index % 7}")
        body["spec"]["address"] = {"street": f"{index} Main St"}
        assert _findings(policies, body, cache) == []
    assert (cache.misses, cache.hits) == (1, 49)
    odd = site("st-0099")
    odd["spec"]["devices"] = ["scanner", "gpu0"]
    assert _findings(policies, odd, cache) == [
        "devices error Site st-0099: undeclared devices: scanner, gpu0"
    ]
    assert cache.misses == 2


@pytest.mark.parametrize(
    ("source", "paths"),
    [
        ("object.kind == 'Site'", (("kind",),)),
        ("has(object.spec.devices) && object.spec.devices.all(d, d != '')", (("spec", "devices"),)),
        ("object.spec.x > 0 && object.spec.x.y == 1", (("spec", "x"),)),  # the longer is inside
        ("object.kind.startsWith('S')", (("kind",),)),  # a method ends the path
        ("object.spec['x'] == 1", (("spec",),)),  # so does an index
        ("object.metadata.?labels.orValue({}).size() == 0", (("metadata",),)),  # and .?
        ("x.object == object . spec . y", (("spec", "y"),)),  # a field named object
        ("'object' + string(object.spec.n)", (("spec", "n"),)),  # 'object' in a string
        ("object == {}", None),  # the whole object
        ("containers(object).all(c, true)", None),  # given to a function
        ("object.?spec.x", None),
        ("[1].all(object, object > 0)", None),  # a comprehension's own variable
        ("r'x' + string(object.spec.n)", None),  # raw strings are not read
        ("object.spec.n // object.status", None),  # nor comments
    ],
)
def test_only_a_sure_reading_narrows_object(
    source: str, paths: tuple[tuple[str, ...], ...] | None
) -> None:
    assert _object_paths([source]) == paths


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "b"]))
# Maps below the top hold one key at most: the CEL engine walks a map's keys in an order of
# its own, which may differ between two evaluations of one body (``join`` over a map).
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["mode", "level", "labels", "x"]), inner, max_size=1),
    ),
    max_leaves=8,
)
_MAPS = st.dictionaries(st.sampled_from(["mode", "level", "labels", "devices"]), _VALUES)


@settings(max_examples=150, deadline=None)
@given(bodies=st.lists(st.tuples(_MAPS, _MAPS), min_size=2, max_size=6))
def test_a_shared_cache_finds_what_a_fresh_one_finds(
    bodies: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    policies = policies_from(DEVICES, PICKY)
    shared = PolicyCache()
    for index, (spec, metadata) in enumerate(bodies):
        body = {
            "apiVersion": "outpost/v1",
            "kind": "Site",
            "metadata": {**metadata, "name": f"st-{index:04d}"},
            "spec": spec,
        }
        assert _findings(policies, body, shared) == _findings(policies, body, PolicyCache())


def test_long_and_deep_expressions_are_read_in_one_pass() -> None:
    """The readings look back from each use instead of slicing the text before it: 200,000
    uses in 3 MB, or a use under 600 parentheses, are read as a short expression is."""
    many = " && ".join(["object.kind == site.status.x"] * 200_000)
    assert _object_paths([many]) == (("kind",),)
    assert _site_status_only([many])
    deep = "(" * 600 + "object.spec.x > 0" + ")" * 600
    assert _object_paths([deep]) == (("spec", "x"),)
    assert _object_paths(["(" * 600 + "object" + ")" * 600]) is None  # the whole object
