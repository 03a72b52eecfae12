"""Policies for the API server: the CEL rewrite, what cannot be exported, a site's objects.

That the rewritten policies mean at the API server what they mean in Outpost's engine
is shown against a real kube-apiserver in ``tests/cluster/test_policy_admission.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policykit import hardware, policies_from, site

from reconciler.core.errors import PolicyError
from reconciler.core.findings import ERROR
from reconciler.core.policy import SYSTEM_NAMESPACES, export_site, facts_data
from reconciler.core.policy._translate import FactPath, NotExportable, translate_expression

ROOT = Path(__file__).resolve().parents[2]


def policy(
    name: str,
    expression: str,
    *,
    kinds: str = "{apiGroups: [apps], kinds: [Deployment]}",
    extra: str = "",
) -> str:
    return (
        "apiVersion: outpost/v1\nkind: Policy\nmetadata:\n"
        f"  name: {name}\nspec:\n  severity: deny\n{extra}"
        f"  match:\n    resources:\n      - {kinds}\n"
        f'  validations:\n    - expression: "{expression}"\n      message: {name} says no\n'
    )


# --------------------------------------------------------------------------- the rewrite


@pytest.mark.parametrize(
    ("source", "expected", "variables"),
    [
        (
            "images(object).all(i, i.contains('@'))",
            "variables.images.all(i, i.contains('@'))",
            {"images"},
        ),
        ("has(podSpec(object).hostNetwork)", "has(variables.podSpec.hostNetwork)", {"podSpec"}),
        (
            "containers( object ).all(c, has(c.resources))",
            "variables.containers.all(c, has(c.resources))",
            {"containers"},
        ),
        # Names inside string literals, fields called like a variable, macro variables: untouched.
        ("object.metadata.name != 'site.spec.images(object)'", None, set()),
        ('object.spec.site == "app"', None, set()),
        ("object.spec.items.all(c, c.app.size() > 0)", None, set()),
        (r"object.metadata.name.matches(r'^site\.')", None, set()),
    ],
)
def test_functions_become_policy_variables(
    source: str, expected: str | None, variables: set[str]
) -> None:
    form = translate_expression(source)
    assert form.expression == (expected or source)
    assert form.variables == variables
    assert not form.facts


def test_outpost_variables_become_reads_of_the_typed_facts() -> None:
    form = translate_expression("has(site.spec.type) && site.spec.type == 'store'")
    assert form.facts == {FactPath("site", ("spec", "type"))}
    assert form.expression.startswith("('site.spec.type' in params.data) && (")
    assert "params.data['site.spec.type'].startsWith('s:')" in form.expression
    app = translate_expression("has(app.spec.allow) && app.spec.allow.privileged == true")
    assert app.variables == {"outpostApp"}
    assert "('app.' + variables.outpostApp + '.spec.allow') in params.data" in app.expression


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("cpuMillis(object.spec.cpu) < 100", "cpuMillis"),
        ("memoryBytes('1Gi') > 0", "memoryBytes"),
        ("containers(object.spec).size() == 1", "something other than object"),
        ("'gpu0' in site.status.capacity.devices", "as a list or map"),
        ("site.status.usage.resources.all(r, r != '')", "as a list or map"),
        ("hardware.spec.nodes[0].cpu > 2", "as a list or map"),
        ("site == null", "as a whole"),
        ("object.spec.xs.all(site, site > 0)", "macro variable"),
    ],
)
def test_what_the_api_server_cannot_evaluate_says_why(source: str, reason: str) -> None:
    with pytest.raises(NotExportable, match=reason):
        translate_expression(source)


_PLAIN = st.sampled_from(
    [
        "object.metadata.name",
        "object.spec.replicas",
        "'text with site.spec and images(object)'",
        '"double \\" quoted"',
        "1",
        "2.5e3",
        "true",
        "[1, 2]",
        "{'a': 1}",
        "size(object.metadata.name)",
    ]
)


@given(st.lists(st.tuples(_PLAIN, st.sampled_from([" && ", " || ", " == ", " + "])), min_size=1))
def test_expressions_without_outpost_names_pass_unchanged(parts: list[tuple[str, str]]) -> None:
    source = "".join(a + op for a, op in parts) + "true"
    assert translate_expression(source).expression == source


@given(st.text(max_size=60))
def test_any_text_is_translated_or_refused_with_a_reason(text: str) -> None:
    try:
        translate_expression(text)
    except NotExportable as exc:
        assert str(exc)


# --------------------------------------------------------------------------- loading


def test_a_policy_the_api_server_cannot_evaluate_must_be_marked() -> None:
    text = policy(
        "fits", "site.status.usage.cpuMillis <= 4000", kinds="{apiGroups: [outpost], kinds: [Site]}"
    )
    unmarked = policies_from(text)
    [finding] = [f for f in unmarked.findings if f.severity == ERROR]
    assert finding.rule == "fits"
    assert "cannot enforce this policy" in finding.message
    assert "enforce: ci-and-node" in finding.message
    assert "group outpost" in finding.message
    marked = policies_from(
        text.replace("  severity: deny\n", "  severity: deny\n  enforce: ci-and-node\n")
    )
    assert not marked.findings
    assert marked.policies[0].enforce == "ci-and-node"


def test_an_unknown_enforce_value_is_an_error() -> None:
    text = policy("p", "true", extra="  enforce: nowhere\n")
    [finding] = policies_from(text).findings
    assert "enforce is 'nowhere'" in finding.message


def test_bundled_policies_load_clean_and_four_stay_with_ci_and_the_node() -> None:
    from reconciler.core.loader import load_document
    from reconciler.core.policy import load_policies

    docs = [
        load_document(p.read_bytes(), f"policies/{p.name}")
        for p in sorted((ROOT / "policies").glob("*.yaml"))
        if p.stem != "signers"
    ]
    policies = load_policies(docs, today=date(2026, 6, 1))
    assert not policies.findings
    kept = {p.name for p in policies.policies if p.enforce == "ci-and-node"}
    assert kept == {
        "devices-declared",
        "no-plaintext-secrets",
        "plant-update-windows",
        "resources-fit",
    }
    assert all(p.admission is not None for p in policies.policies if p.name not in kept)


# --------------------------------------------------------------------------- a site


def export(*texts: str, today: date = date(2026, 6, 1), strict: bool = True, **site_kw: str):  # type: ignore[no-untyped-def]
    return export_site(
        policies_from(*texts, today=today),
        site_id="st-0001",
        site={**site(**site_kw), "status": {"usage": {"cpuMillis": 500}}},
        hardware=hardware(),
        apps={"pos": {"metadata": {"name": "pos"}, "spec": {"allow": {"privileged": True}}}},
        app_namespaces={"pos": ["pos", ""]},
        strict=strict,
    )


def by_name(objects: tuple[dict, ...], kind: str, name: str) -> dict:  # type: ignore[type-arg]
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_a_site_gets_a_policy_and_binding_per_policy_with_its_message() -> None:
    result = export(policy("tags", "images(object).all(i, !i.endsWith(':latest'))"))
    assert result.exported == ("tags",)
    vap = by_name(result.objects, "ValidatingAdmissionPolicy", "outpost-tags")
    assert vap["spec"]["failurePolicy"] == "Fail"
    assert vap["spec"]["validations"] == [
        {"expression": "variables.images.all(i, !i.endsWith(':latest'))", "message": "tags says no"}
    ]
    assert [v["name"] for v in vap["spec"]["variables"]] == ["podSpec", "containers", "images"]
    assert vap["spec"]["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["apps"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["deployments"],
        }
    ]
    assert "paramKind" not in vap["spec"]
    binding = by_name(result.objects, "ValidatingAdmissionPolicyBinding", "outpost-tags")
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "paramRef" not in binding["spec"]
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
    assert selector["operator"] == "NotIn" and selector["values"] == list(SYSTEM_NAMESPACES)
    assert vap["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "outpost",
        "outpost/site": "st-0001",
    }


def test_facts_reach_the_api_server_through_the_parameter_configmap() -> None:
    result = export(
        policy("stores", "site.spec.type == 'store' && site.status.usage.cpuMillis < 1000"),
        policy("allow", "has(app.spec.allow.privileged)").replace(
            "severity: deny", "severity: warn"
        ),
    )
    facts = by_name(result.objects, "ConfigMap", "outpost-policy-facts")
    assert facts["metadata"]["namespace"] == "outpost-system"
    assert facts["data"] == {
        "app.pos.spec": "m:",
        "app.pos.spec.allow": "m:",
        "app.pos.spec.allow.privileged": "b:true",
        "outpost-app.pos": ",pos",
        "site.spec": "m:",
        "site.spec.type": "s:store",
        "site.status": "m:",
        "site.status.usage": "m:",
        "site.status.usage.cpuMillis": "i:500",
    }
    stores = by_name(result.objects, "ValidatingAdmissionPolicyBinding", "outpost-stores")
    assert stores["spec"]["paramRef"] == {
        "namespace": "outpost-system",
        "name": "outpost-policy-facts",
        "parameterNotFoundAction": "Deny",
    }
    allow = by_name(result.objects, "ValidatingAdmissionPolicyBinding", "outpost-allow")
    assert allow["spec"]["validationActions"] == ["Warn", "Audit"]
    anchor = by_name(result.objects, "ValidatingAdmissionPolicyBinding", "outpost-policy-facts")
    assert anchor["spec"]["paramRef"]["parameterNotFoundAction"] == "Allow"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(True, "b:true"), (False, "b:false"), (3, "i:3"), (1.5, "d:1.5"), ("x", "s:x"), (None, "n:")],
)
def test_facts_are_typed(value: object, encoded: str) -> None:
    data = facts_data(
        [FactPath("site", ("spec", "v"))],
        site={"spec": {"v": value}},
        hardware={},
        apps={},
        app_namespaces={},
    )
    assert data["site.spec.v"] == encoded


def test_app_exemptions_become_a_match_condition_and_site_exemptions_keep_the_policy() -> None:
    exempt_app = "  exemptions:\n    - {apps: [pos], reason: vendor image, expires: 2026-12-31}\n"
    exempt_site = "  exemptions:\n    - {sites: [st-0001], reason: pilot store}\n"
    expired = "  exemptions:\n    - {apps: [pos], reason: old, expires: 2026-01-01}\n"
    result = export(
        policy("a", "true", extra=exempt_app),
        policy("b", "true", extra=exempt_site),
        policy("c", "true", extra=expired),
    )
    [condition] = by_name(result.objects, "ValidatingAdmissionPolicy", "outpost-a")["spec"][
        "matchConditions"
    ]
    assert condition["name"] == "outpost-exemptions"
    assert "in ['pos@', 'pos@pos']" in condition["expression"]
    assert (
        "matchConditions"
        not in by_name(result.objects, "ValidatingAdmissionPolicy", "outpost-c")["spec"]
    )
    assert result.exported == ("a", "c")
    assert ("b", "this site is exempt: pilot store (policies/p1.yaml:8)") in result.kept


def test_policies_kept_from_the_api_server_are_listed_with_the_reason() -> None:
    result = export(
        policy("secrets", "true", extra="  enforce: ci-and-node\n"),
        policy("plants", "true").replace(
            "  validations:", "    siteTypes: [plant]\n  validations:"
        ),
    )
    assert result.exported == ()
    # Only the facts and their anchor, which every site keeps (see _export's docstring).
    assert [(o["kind"], o["metadata"]["name"]) for o in result.objects] == [
        ("ConfigMap", "outpost-policy-facts"),
        ("ValidatingAdmissionPolicy", "outpost-policy-facts"),
        ("ValidatingAdmissionPolicyBinding", "outpost-policy-facts"),
    ]
    assert dict(result.kept) == {
        "secrets": "marked enforce: ci-and-node",
        "plants": "does not apply to this site (match.siteTypes/siteSelector)",
    }


def test_an_unexportable_unmarked_policy_is_never_left_out_silently() -> None:
    text = policy("fits", "'gpu' in site.status.capacity.devices")
    with pytest.raises(PolicyError, match="cannot enforce it"):
        export(text)
    # Re-applying a revision accepted before (a rollback) lists it instead of refusing.
    lenient = export(text, strict=False)
    assert lenient.exported == ()
    assert "as a list or map" in dict(lenient.kept)["fits"]


def test_outpost_policy_export_prints_the_demo_store(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "policy", "export", "de-muc-0007", "-o", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["exported"] == [
        "host-access",
        "image-digest",
        "image-registry",
        "no-latest-tag",
        "resource-limits",
    ]
    kinds = [(o["kind"], o["metadata"]["name"]) for o in data["objects"]]
    assert kinds[:3] == [
        ("ConfigMap", "outpost-policy-facts"),
        ("ValidatingAdmissionPolicy", "outpost-policy-facts"),
        ("ValidatingAdmissionPolicyBinding", "outpost-policy-facts"),
    ]
    assert {k["policy"] for k in data["kept"]} == {
        "devices-declared",
        "no-plaintext-secrets",
        "plant-update-windows",
        "resources-fit",
    }
    text = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "policy", "export", "de-muc-0007"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "# CI and node only: no-plaintext-secrets: marked enforce: ci-and-node" in text


def test_outpost_policy_export_of_an_unknown_site_is_an_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "policy", "export", "xx-nowhere"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "xx-nowhere" in done.stderr
    assert "Traceback" not in done.stderr


def test_policy_test_names_the_line_of_an_unmarked_policy_the_api_server_cannot_take(
    tmp_path: Path,
) -> None:
    text = (ROOT / "policies/resources-fit.yaml").read_text()
    unmarked = text.replace(
        "  # It checks Outpost documents (group outpost), which never reach the API server.\n"
        "  enforce: ci-and-node\n",
        "",
    )
    assert unmarked != text
    (tmp_path / "resources-fit.yaml").write_text(unmarked)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "policy", "test", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    [line] = [x for x in done.stdout.splitlines() if "cannot enforce" in x]
    assert line.startswith("FAIL resources-fit.yaml:5: resources-fit: the site's API server")
    assert "mark it `enforce: ci-and-node`" in line.replace("Mark", "mark")
