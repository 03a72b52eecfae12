"""The node's policy check runs in a child that is ended at its deadline."""

from __future__ import annotations

import cel
import pytest

from reconciler.core.errors import PolicyError, ValidationError
from reconciler.node.deadline import call_with_deadline


def test_a_result_comes_back() -> None:
    assert call_with_deadline(lambda: [1, {"a": "b"}], 10, "a step") == [1, {"a": "b"}]


def test_outpost_errors_come_back_as_themselves() -> None:
    def refuse() -> None:
        raise ValidationError("no")

    with pytest.raises(ValidationError, match="no"):
        call_with_deadline(refuse, 10, "a step")


def test_a_cel_evaluation_deaf_to_signals_is_ended_at_the_deadline() -> None:
    """Nine nested all() over ten items: 10^9 steps in the CEL interpreter, which holds the
    GIL and ignores signals; only ending the process stops it."""
    expression = "true"
    for level in range(9):
        expression = f"[0,1,2,3,4,5,6,7,8,9].all(v{level}, {expression})"
    program = cel.compile(expression)
    with pytest.raises(PolicyError, match="did not finish within 1 s and was stopped"):
        call_with_deadline(lambda: program.execute({}), 1, "the policy check")
