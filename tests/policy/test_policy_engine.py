"""The engine: compile once, fail closed, findings at file:line, exemptions, caching."""

from __future__ import annotations

from datetime import date

import pytest
from policykit import Obj, Rendered, deployment, hardware, policies_from, policy_doc, site

from reconciler.core.errors import Mark, PolicyError
from reconciler.core.findings import ERROR, WARNING
from reconciler.core.policy import PolicyCache, check_site, load_policies

DIGEST = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: digest
spec:
  severity: deny
  match:
    resources:
      - {apiGroups: [apps], kinds: [Deployment]}
  validations:
    - expression: "images(object).all(i, i.contains('@sha256:'))"
      message: images must be pinned by digest
"""

STORES_ONLY = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: stores-only
spec:
  severity: warn
  match:
    resources:
      - {apiGroups: [apps], kinds: [Deployment]}
  validations:
    - expression: "site.spec.type == 'store'"
      messageExpression: "'not at a ' + site.spec.type"
"""


def check(policies, objects, site_doc=None, hw=None, apps=None, cache=None, **kw):
    return check_site(
        policies,
        Rendered(tuple(objects)),
        site_doc or site(),
        hw or hardware(),
        apps or {},
        cache=cache,
        **kw,
    )


def test_violation_points_at_the_manifest_line() -> None:
    policies = policies_from(DIGEST)
    origin = Mark("apps/pos/manifests/server.yaml", 7)
    findings = check(policies, [Obj(deployment(image="registry.example.com/x:1.0"), origin, "pos")])
    assert len(findings) == 1
    f = findings[0]
    assert (f.path, f.line, f.rule, f.site, f.severity) == (
        "apps/pos/manifests/server.yaml",
        7,
        "digest",
        "st-0001",
        ERROR,
    )
    assert "Deployment pos/web" in f.message and "pinned by digest" in f.message


def test_clean_object_has_no_findings() -> None:
    policies = policies_from(DIGEST)
    assert check(policies, [Obj(deployment(), Mark("m.yaml", 1))]) == []


def test_expression_that_does_not_compile_is_a_finding_at_its_line() -> None:
    broken = DIGEST.replace("i.contains('@sha256:'))", "i.contains('@sha256:')")
    policies = policies_from(broken)
    [finding] = [f for f in policies.findings if f.rule == "digest"]
    assert finding.path == "policies/p0.yaml"
    assert finding.line == 11  # the line of `- expression:`
    assert finding.severity == ERROR
    assert "does not compile" in finding.message
    # and it never turns into a pass: the policy still exists, with no runnable check
    assert policies.policies[0].validations[0].program is None


def test_message_expression_that_does_not_compile_is_a_finding() -> None:
    text = STORES_ONLY.replace("'not at a ' + site.spec.type", "'not at a ' +")
    policies = policies_from(text)
    assert any("messageExpression does not compile" in f.message for f in policies.findings)


def test_no_policies_is_an_error() -> None:
    with pytest.raises(PolicyError, match="no policies"):
        load_policies([], today=date(2026, 1, 1))


def test_policy_with_no_resources_is_an_error_finding() -> None:
    text = DIGEST.replace(
        "    resources:\n      - {apiGroups: [apps], kinds: [Deployment]}\n", "    resources: []\n"
    )
    policies = policies_from(text)
    assert policies.policies == ()
    assert any(f.severity == ERROR and "match.resources" in f.message for f in policies.findings)


def test_evaluation_error_is_a_clearly_worded_finding() -> None:
    text = DIGEST.replace(
        "images(object).all(i, i.contains('@sha256:'))", "object.spec.strategy.type == 'Recreate'"
    )
    policies = policies_from(text)
    [f] = check(policies, [Obj(deployment(), Mark("apps/pos/manifests/server.yaml", 3))])
    assert f.severity == ERROR
    assert (f.path, f.line) == ("apps/pos/manifests/server.yaml", 3)
    assert "no such key 'strategy'" in f.message
    assert "has()" in f.message
    assert "policies/p0.yaml:11" in f.message


def test_non_boolean_result_is_a_finding() -> None:
    text = DIGEST.replace("images(object).all(i, i.contains('@sha256:'))", "object.metadata.name")
    [f] = check(policies_from(text), [Obj(deployment(), Mark("m.yaml", 1))])
    assert "returned str 'web'" in f.message


def test_warn_policy_gives_warnings_and_message_expression() -> None:
    policies = policies_from(STORES_ONLY)
    [f] = check(policies, [Obj(deployment(), Mark("m.yaml", 1))], site_doc=site(type_="plant"))
    assert f.severity == WARNING
    assert f.message.endswith("not at a plant")


EXEMPT = (
    DIGEST
    + """\
  exemptions:
    - sites: [st-0001]
      reason: vendor image, ticket OPS-1
      expires: {expires}
    - apps: [legacy]
      reason: legacy app
"""
)


def test_exemption_by_site_and_by_app() -> None:
    policies = policies_from(EXEMPT.replace("{expires}", "2026-12-31"))
    bad = deployment(image="registry.example.com/x:1.0")
    assert policies.findings == ()
    assert check(policies, [Obj(bad, Mark("m.yaml", 1))]) == []
    other = site("st-0002")
    assert len(check(policies, [Obj(bad, Mark("m.yaml", 1))], site_doc=other)) == 1
    assert check(policies, [Obj(bad, Mark("m.yaml", 1), "legacy")], site_doc=other) == []


def test_expired_exemption_is_a_finding_and_stops_exempting() -> None:
    policies = policies_from(EXEMPT.replace("{expires}", "2026-05-31"), today=date(2026, 6, 1))
    [stale] = policies.findings
    assert stale.severity == WARNING
    assert stale.path == "policies/p0.yaml" and stale.line == 16  # the `expires:` line
    assert "expired on 2026-05-31" in stale.message and "OPS-1" in stale.message
    bad = deployment(image="registry.example.com/x:1.0")
    assert len(check(policies, [Obj(bad, Mark("m.yaml", 1))])) == 1


def test_exemption_holds_on_its_last_day() -> None:
    policies = policies_from(EXEMPT.replace("{expires}", "2026-06-01"), today=date(2026, 6, 1))
    assert policies.findings == ()


def test_site_types_and_selector() -> None:
    text = DIGEST.replace(
        "  match:\n",
        "  match:\n    siteTypes: [plant]\n    siteSelector: {matchLabels: {country: fr}}\n",
    )
    policies = policies_from(text)
    bad = [Obj(deployment(image="x:1"), Mark("m.yaml", 1))]
    assert check(policies, bad, site_doc=site(type_="store", country="fr")) == []
    assert check(policies, bad, site_doc=site(type_="plant", country="de")) == []
    assert len(check(policies, bad, site_doc=site(type_="plant", country="fr"))) == 1


def test_reserved_source_annotation_cannot_be_claimed() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "pos", "annotations": {"outpost/source": "sops"}},
        "stringData": {"token": "x"},
    }
    findings = check(policies_from(DIGEST), [Obj(secret, Mark("apps/pos/manifests/s.yaml", 2))])
    assert [f.rule for f in findings] == ["policy"]
    assert "reserved" in findings[0].message


def test_a_reserved_annotation_in_a_shaped_object_is_found_at_every_site() -> None:
    """Objects of one shape share what policies see of them, and whether they claim the
    source annotation: each site still gets its own finding, at its own object."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Shaped(Obj):
        shape: tuple[object, ...] | None = None

    findings = []
    for number, name in enumerate(["st-0001", "st-0002", "st-0003"]):
        claimed = deployment(site=name)
        claimed["metadata"]["annotations"] = {"outpost/source": "sops"}
        plain = deployment(site=name)
        plain["metadata"]["name"] = "other"
        objects = [
            Shaped(claimed, Mark("apps/pos/manifests/a.yaml", 2), "pos", ("a",)),
            Shaped(plain, Mark("apps/pos/manifests/b.yaml", 2), "pos", ("b",)),
        ]
        found = check(policies_from(DIGEST), objects, site_doc=site(name), hw=hardware(name))
        findings += [(f.site, f.path) for f in found if "reserved" in f.message]
        assert len(found) == 1, (number, found)
    assert findings == [
        (name, "apps/pos/manifests/a.yaml") for name in ("st-0001", "st-0002", "st-0003")
    ]


def test_identical_objects_are_evaluated_once_across_sites() -> None:
    policies = policies_from(DIGEST)
    cache = PolicyCache()
    for i in range(5):
        name = f"st-{i:04d}"
        # render stamps the site id on every object; the policy never sees it
        obj = Obj(deployment(site=name), Mark("m.yaml", 1))
        assert check(policies, [obj], site_doc=site(name), hw=hardware(name), cache=cache) == []
    assert cache.misses == 1 and cache.hits == 4


def test_site_dependent_results_are_not_shared_across_sites() -> None:
    policies = policies_from(STORES_ONLY, DIGEST)
    cache = PolicyCache()
    obj = Obj(deployment(), Mark("m.yaml", 1))
    store = check(policies, [obj], site_doc=site("st-0001", "store"), cache=cache)
    plant = check(policies, [obj], site_doc=site("pl-0001", "plant"), cache=cache)
    store2 = check(policies, [obj], site_doc=site("st-0001", "store"), cache=cache)
    assert store == [] and store2 == []
    assert [(f.rule, f.site) for f in plant] == [("stores-only", "pl-0001")]
    # the digest policy does not read `site`: one evaluation for all three
    assert cache.misses == 3  # digest once, stores-only once per distinct site


def test_hardware_dependent_results_are_not_shared() -> None:
    text = DIGEST.replace(
        "images(object).all(i, i.contains('@sha256:'))",
        "hardware.spec.nodes.exists(n, n.cpu >= 8)",
    )
    policies = policies_from(text)
    cache = PolicyCache()
    obj = Obj(deployment(), Mark("m.yaml", 1))
    assert check(policies, [obj], hw=hardware(cpu=8), cache=cache) == []
    assert len(check(policies, [obj], hw=hardware(cpu=4), cache=cache)) == 1


def test_app_dependent_results_are_not_shared() -> None:
    text = DIGEST.replace(
        "images(object).all(i, i.contains('@sha256:'))",
        "has(app.spec.allow) && app.spec.allow.privileged",
    )
    policies = policies_from(text)
    cache = PolicyCache()
    obj = Obj(deployment(), Mark("m.yaml", 1), "pos")
    allowed = {"pos": {"metadata": {"name": "pos"}, "spec": {"allow": {"privileged": True}}}}
    denied = {"pos": {"metadata": {"name": "pos"}, "spec": {"allow": {"privileged": False}}}}
    assert check(policies, [obj], apps=allowed, cache=cache) == []
    assert len(check(policies, [obj], apps=denied, cache=cache)) == 1


def test_site_label_hidden_from_policies_but_not_from_the_body() -> None:
    text = DIGEST.replace(
        "images(object).all(i, i.contains('@sha256:'))",
        "!('outpost/site' in object.metadata.labels)",
    )
    body = deployment(site="st-0001")
    assert check(policies_from(text), [Obj(body, Mark("m.yaml", 1))]) == []
    assert body["metadata"]["labels"]["outpost/site"] == "st-0001"
    assert body["spec"]["template"]["metadata"]["labels"]["outpost/site"] == "st-0001"


def test_outpost_documents_are_checked_with_their_marks() -> None:
    text = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: windows
spec:
  severity: deny
  match:
    resources: [{apiGroups: [outpost], kinds: [Site]}]
    siteTypes: [plant]
  validations:
    - expression: "has(object.spec.updateWindows)"
"""
    doc = policy_doc(
        "apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: pl-0001\nspec:\n  type: plant\n",
        "sites/pl-0001/site.yaml",
    )
    [f] = check_site(policies_from(text), Rendered(()), doc, None, {})
    assert (f.path, f.line, f.site) == ("sites/pl-0001/site.yaml", 4, "pl-0001")
    assert "failed: has(object.spec.updateWindows)" in f.message


def test_duplicate_policy_names_are_findings() -> None:
    policies = policies_from(DIGEST, DIGEST)
    assert len(policies.policies) == 1
    assert any("already used" in f.message for f in policies.findings)


def test_node_recheck_of_its_own_slice(tmp_path) -> None:
    import shutil
    from pathlib import Path

    from reconciler.core.model import Repository
    from reconciler.core.policy import check_rendered_site
    from reconciler.core.render import render_site
    from reconciler.core.source import WorkdirTree

    root = Path(__file__).resolve().parents[2]
    for top in ("apps", "fleets", "sites", "policies"):
        shutil.copytree(root / top, tmp_path / top)
    repo = Repository(WorkdirTree(tmp_path))
    site_id = "plant-lyon"
    rendered = render_site(repo, site_id)
    assert check_rendered_site(repo, site_id, rendered, today=date(2026, 6, 1)) == []
    for path in (tmp_path / "policies").glob("*.yaml"):
        if path.name != "signers.yaml":
            path.unlink()
    with pytest.raises(PolicyError):
        check_rendered_site(
            Repository(WorkdirTree(tmp_path)), site_id, rendered, today=date(2026, 6, 1)
        )
