"""Parameter schemas from the repository: no network, no endless references, no backtracking."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.core.schema_guard import (
    Guarded,
    SchemaProblem,
    compile_parameters,
    offline_registry,
    problems,
)


def compiled(schema: dict[str, Any]) -> Guarded | SchemaProblem:
    return compile_parameters(json.dumps(schema, sort_keys=True))


@pytest.mark.parametrize(
    ("schema", "at", "message"),
    [
        ({"$ref": "#"}, ("$ref",), "references loop"),
        (
            {
                "$defs": {
                    "a": {"allOf": [{"$ref": "#/$defs/b"}]},
                    "b": {"not": {"$ref": "#/$defs/a"}},
                },
                "$ref": "#/$defs/a",
            },
            None,
            "references loop",
        ),
        (
            {"properties": {"x": {"$ref": "http://203.0.113.7/s.json"}}},
            ("properties", "x", "$ref"),
            "points outside",
        ),
        (
            {"properties": {"x": {"$ref": "other.json#/a"}}},
            ("properties", "x", "$ref"),
            "points outside",
        ),
        (
            {"properties": {"x": {"$ref": "#/$defs/missing"}}},
            ("properties", "x", "$ref"),
            "points at nothing",
        ),
        (
            {"properties": {"x": {"$dynamicRef": "#meta"}}},
            ("properties", "x", "$dynamicRef"),
            "not supported",
        ),
        (
            {"properties": {"x": {"$id": "http://x/", "type": "string"}}},
            ("properties", "x", "$id"),
            "only at the root",
        ),
        (
            {"properties": {"x": {"type": "string", "pattern": "(a)\\1"}}},
            ("properties", "x", "pattern"),
            "RE2",
        ),
        ({"patternProperties": {"(?=a)b": {}}}, ("patternProperties", "(?=a)b"), "lookaround"),
    ],
)
def test_refused_schemas_name_the_place(
    schema: dict[str, Any], at: tuple[str, ...] | None, message: str
) -> None:
    result = compiled(schema)
    assert isinstance(result, SchemaProblem), result
    assert message in result.message
    if at is not None:
        assert result.at == at


def test_a_recursive_schema_that_descends_is_fine() -> None:
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    result = compiled(tree)
    assert isinstance(result, Guarded)
    deep: dict[str, Any] = {"children": []}
    for _ in range(20):
        deep = {"children": [deep]}
    assert list(result.validator.iter_errors(deep)) == []
    assert result.check is not None and result.check(deep)


def test_backtracking_patterns_run_in_linear_time() -> None:
    """``^(a+)+$`` takes hours on Python's re for this value; RE2 answers at once."""
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(x+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    result = compiled(schema)
    assert isinstance(result, Guarded)
    value = {"id": "a" * 5000 + "b", "x" * 5000 + "y": 1}
    assert result.check is not None and not result.check(value)
    messages = sorted(e.message for e in result.validator.iter_errors(value))
    assert any("does not match '^(a+)+$'" in m for m in messages)
    assert any("do" in m and "not match any of the regexes" in m for m in messages)


def test_anchors_resolve_locally() -> None:
    schema = {
        "$defs": {"c": {"$anchor": "currency", "enum": ["EUR"]}},
        "properties": {"c": {"$ref": "#currency"}},
    }
    result = compiled(schema)
    assert isinstance(result, Guarded)
    assert [e.message for e in result.validator.iter_errors({"c": "USD"})] == [
        "'USD' is not one of ['EUR']"
    ]


def test_the_registry_refuses_retrieval() -> None:
    from referencing.exceptions import Unresolvable

    registry = offline_registry({"type": "object"})
    with pytest.raises(Unresolvable):
        registry.resolver().lookup("http://203.0.113.7/schema.json")


def test_problems_of_a_valid_schema_is_empty() -> None:
    assert (
        problems({"type": "object", "properties": {"a": {"type": "string", "pattern": "^[a-z]+$"}}})
        == []
    )
