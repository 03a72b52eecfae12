"""A policy on a site's figures alone (``site.status``, no ``object``) is evaluated once per
distinct status across sites, and only a policy whose text says so for sure is cached that way."""

from __future__ import annotations

import pytest
from policykit import Obj, Rendered, deployment, hardware, policies_from, site

from reconciler.core.errors import Mark
from reconciler.core.policy import PolicyCache, check_site
from reconciler.core.policy._load import _site_status_only

FITS = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: fits
spec:
  severity: deny
  match:
    resources:
      - {apiGroups: [outpost], kinds: [Site]}
  validations:
    - expression: "site.status.usage.cpuMillis <= site.status.capacity.cpuMillis"
      messageExpression: >-
        'the site requests ' + string(site.status.usage.cpuMillis) + 'm, the site has '
        + string(site.status.capacity.cpuMillis) + 'm'
"""

NAMED = FITS.replace(
    "site.status.usage.cpuMillis <= site.status.capacity.cpuMillis",
    "site.metadata.name.startsWith('st-')",
)


def _check(policies, name: str, cpu: int, cache: PolicyCache) -> list[str]:
    obj = Obj(deployment(resources={"requests": {"cpu": "2"}}), Mark("m.yaml", 1))
    found = check_site(
        policies,
        Rendered((obj,)),
        site(name),
        hardware(name, cpu=cpu),
        {},
        cache=cache,
    )
    return [f.message for f in found]


def test_a_policy_on_the_status_alone_is_evaluated_once_per_distinct_status() -> None:
    (policy,) = policies_from(FITS).policies
    assert policy.site_status_only and not policy.reads_object
    policies = policies_from(FITS)
    cache = PolicyCache()
    for index in range(4):
        assert _check(policies, f"st-{index:04d}", 4, cache) == []
    assert (cache.misses, cache.hits) == (1, 3)
    # another status is another evaluation, with its own figures in the message
    assert _check(policies, "st-0009", 1, cache) == [
        "Site st-0009: the site requests 2000m, the site has 1000m"
    ]
    assert cache.misses == 2


def test_a_policy_reading_more_of_the_site_is_evaluated_per_site() -> None:
    policies = policies_from(NAMED)
    (policy,) = policies.policies
    assert not policy.site_status_only
    cache = PolicyCache()
    assert _check(policies, "st-0001", 4, cache) == []
    assert len(_check(policies, "pl-0001", 4, cache)) == 1
    assert cache.misses == 2


@pytest.mark.parametrize(
    ("source", "only"),
    [
        ("site.status.a <= site.status.b", True),
        ("has(site.status.x) && site . status.y > 0", True),
        ("'the site requests ' + string(site.status.x)", True),  # 'site' in a string
        (r"""'it\'s the site' + "a \"site\"" + '''site''' + site.status.x""", True),
        ("object.site.name == site.status.x", True),  # a field named site
        ("site.spec.type == 'store'", False),
        ("site.status.x > 0 && site.metadata.name != ''", False),
        ("[1].all(site, site > 0)", False),  # a comprehension's own variable
        ("site['status'].x", False),
        ("site.status().x", False),
        ("r'site' + site.status.x", False),  # raw strings are not read
        ("site.status.x // site.spec", False),  # nor comments
        ("'unterminated + site.status.x", False),
    ],
)
def test_only_a_sure_reading_narrows_site(source: str, only: bool) -> None:
    assert _site_status_only([source]) is only
