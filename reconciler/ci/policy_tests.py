"""A policy's own test cases: objects it must accept and objects it must reject.

A policy is code that decides whether 2,000 stores get a change, so a change to a
policy is tested like code (the conftest/gator practice). Each case gives the CEL
variables (``object`` and, when the expressions need them, ``site``, ``hardware``,
``app``); a variable a case does not give is absent, and an expression that reads
it fails to evaluate, which fails the case rather than passing it silently.

- a ``pass`` case passes when every validation returns true;
- a ``fail`` case passes when at least one validation returns false and nothing
  fails to evaluate. An evaluation error does not count as a rejection: a fail
  case that only "fails" because of a typo would hide the typo. The
  ``messageExpression`` of a rejecting validation must yield a string too, since a
  broken one would only show when a real site is rejected;
- either case fails when the policy's ``match.resources`` does not select the
  case's object (the policy would never see it), or when a validation of the
  policy does not compile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.core.errors import Mark
from reconciler.core.policy import Policy, PolicySet, evaluate, new_context


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one test case of one policy."""

    policy: str
    expect: str  # "pass" or "fail"
    index: int
    name: str
    mark: Mark
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        title = f" {self.name!r}" if self.name else ""
        text = f"{status} {self.mark}: {self.policy} {self.expect}[{self.index}]{title}"
        return f"{text}: {self.detail}" if self.detail else text


def _run_case(policy: Policy, expect: str, index: int, case: Any) -> CaseResult:
    doc = policy.doc
    mark = doc.mark("spec", "tests", expect, index)
    case = case if isinstance(case, dict) else {}
    name = str(case.get("name", ""))

    def result(ok: bool, detail: str = "") -> CaseResult:
        return CaseResult(policy.name, expect, index, name, mark, ok, detail)

    obj = case.get("object")
    if not isinstance(obj, dict):
        return result(False, "the case has no object")
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    kind = str(obj.get("kind", ""))
    if not policy.matches_kind(group, kind):
        return result(
            False,
            f"the object (group {group!r}, kind {kind!r}) is not selected by spec.match.resources, "
            "so the policy would never see it",
        )
    broken = [v for v in policy.validations if v.program is None]
    if broken:
        return result(False, f"the expression at {broken[0].mark} does not compile")
    variables = {k: case[k] for k in ("object", "site", "hardware", "app") if k in case}
    outcome = evaluate(policy, new_context(variables), strict_messages=True, variables=variables)
    errors = [message for kind_, message in outcome if kind_ == "error"]
    violations = [message for kind_, message in outcome if kind_ == "violation"]
    if expect == "pass":
        if errors:
            return result(False, errors[0])
        if violations:
            return result(False, f"expected to pass, but was rejected: {violations[0]}")
        return result(True)
    if violations and not errors:
        return result(True, violations[0])
    if errors:
        return result(False, f"expected a rejection, but evaluation failed: {errors[0]}")
    return result(False, "expected to be rejected, but every validation accepted it")


def run_tests(policies: PolicySet | Sequence[Policy]) -> list[CaseResult]:
    """Run every test case of every policy, in file order."""
    items = policies.policies if isinstance(policies, PolicySet) else policies
    results: list[CaseResult] = []
    for policy in items:
        tests = policy.doc.spec.get("tests")
        tests = tests if isinstance(tests, dict) else {}
        for expect in ("pass", "fail"):
            cases = tests.get(expect)
            for index, case in enumerate(cases if isinstance(cases, list) else []):
                results.append(_run_case(policy, expect, index, case))
    return results


def untested(policies: PolicySet | Sequence[Policy]) -> list[Policy]:
    """Policies without at least one pass and one fail case."""
    items = policies.policies if isinstance(policies, PolicySet) else policies
    missing = []
    for policy in items:
        tests = policy.doc.spec.get("tests")
        tests = tests if isinstance(tests, dict) else {}
        if not tests.get("pass") or not tests.get("fail"):
            missing.append(policy)
    return missing
