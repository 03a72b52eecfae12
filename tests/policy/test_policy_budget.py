"""A CEL expression's nested comprehensions are costed before they run; over budget, a finding."""

from __future__ import annotations

from policykit import Obj, Rendered, deployment, hardware, policies_from, site

from reconciler.core.cel_cost import BUDGET, analyse, estimate
from reconciler.core.errors import Mark
from reconciler.core.findings import ERROR
from reconciler.core.policy import check_site

LIST = "[" + ",".join(str(i) for i in range(10)) + "]"


def nested(depth: int) -> str:
    body = "true"
    for level in range(depth):
        body = f"{LIST}.all(v{level}, {body})"
    return body


def policy(expression: str) -> str:
    return f"""\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: heavy
spec:
  severity: deny
  match:
    resources:
      - {{apiGroups: [apps], kinds: [Deployment]}}
  validations:
    - expression: "{expression}"
      message: heavy check failed
"""


def run(expression: str) -> list[str]:
    policies = policies_from(policy(expression))
    obj = Obj(deployment(), Mark("apps/pos/manifests/deployment.yaml", 1), "pos")
    findings = check_site(policies, Rendered((obj,)), site(), hardware(), {})
    return [f.message for f in findings if f.severity == ERROR]


def test_a_shallow_expression_runs() -> None:
    assert run(nested(2)) == []


def test_nested_comprehensions_past_the_budget_are_a_finding_naming_the_policy() -> None:
    """Ten nested all() over ten items would run 10^10 steps (hours, deaf to Ctrl-C)."""
    messages = run(nested(10))
    assert len(messages) == 1
    assert "was not evaluated" in messages[0]
    assert f"over the budget of {BUDGET:,} per evaluation" in messages[0]
    assert "policy heavy cannot decide" in messages[0]
    assert "policies/p0.yaml:" in messages[0]


def test_the_estimate_follows_the_data() -> None:
    cost = analyse("object.spec.containers.all(c, c.env.all(e, e.name != 'x'))")
    assert cost.nested
    assert estimate(cost, 10) < estimate(cost, 1000) <= BUDGET
    assert estimate(cost, 100_000) > BUDGET


def test_strings_and_chains_are_not_nesting() -> None:
    assert not analyse("'x.all(a, b.all(c, d))' == object.kind").nested
    assert not analyse("a.all(x, x > 0) && b.exists(y, y < 0)").nested
    assert analyse("a.map(x, a).all(y, y.all(z, z > 0))").nested
