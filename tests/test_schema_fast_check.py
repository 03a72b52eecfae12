"""The compiled schema check agrees with jsonschema, keyword by keyword and document by document.

``schemas.schema_errors`` trusts the compiled check to say "valid" and asks
jsonschema for everything else, so a compiled check that passes what jsonschema
rejects would let a bad document through. These tests compare the two on the
example fleet, the validation corpus, mutated documents and schemas built to
exercise every keyword the compiler models; and, for the Kubernetes API schemas
(`ci.kube_schema` trusts the same check), on every object the example fleet
renders and on mutations of them.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.core.errors import OutpostError
from reconciler.core.loader import KINDS, load_document
from reconciler.core.schemas import (
    Check,
    _fast_check,
    _metaschema_check,
    compile_check,
    is_json_schema,
    schema_errors,
    validator,
)

ROOT = Path(__file__).resolve().parent.parent
FORMATS = Draft202012Validator.FORMAT_CHECKER


def _documents() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    paths = [
        *sorted((ROOT / "sites").rglob("*.yaml")),
        *sorted((ROOT / "fleets").rglob("*.yaml")),
        *sorted((ROOT / "apps").glob("*/app.yaml")),
        *sorted((ROOT / "policies").glob("*.yaml")),
        *sorted((ROOT / "tests" / "corpus").rglob("*.yaml")),
        ROOT / "deploy" / "agent.yaml",
    ]
    for path in paths:
        if "secrets" in path.parts or "manifests" in path.parts or path.name == "expect.yaml":
            continue
        try:
            doc = load_document(path.read_bytes(), path.name)
        except OutpostError:
            continue
        found.append((doc.kind, doc.body))
    return found


DOCUMENTS = _documents()


def _agree(kind: str, body: Any) -> None:
    fast = _fast_check(kind)
    if fast is None:
        return
    expected = validator(kind).is_valid(body)
    assert fast(body) is expected, f"compiled check says {not expected} for {body!r}"


def test_every_outpost_kind_compiles() -> None:
    # App's parameters are themselves a JSON Schema: that $ref goes to jsonschema's
    # own check against the metaschema, the rest of App is compiled.
    assert {kind for kind in KINDS if _fast_check(kind) is not None} == KINDS


def test_corpus_covers_valid_and_invalid_documents() -> None:
    verdicts = {validator(kind).is_valid(body) for kind, body in DOCUMENTS}
    assert verdicts == {True, False}


@pytest.mark.parametrize(("kind", "body"), DOCUMENTS, ids=lambda v: v if isinstance(v, str) else "")
def test_agrees_on_every_example_and_corpus_document(kind: str, body: Any) -> None:
    _agree(kind, body)
    assert [e.message for e in schema_errors(kind, body)] == [
        e.message for e in validator(kind).iter_errors(body)
    ]


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*at, index))
    return found


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [leaf for value in node.values() for leaf in _leaves(value)]
    if isinstance(node, list):
        return [leaf for value in node for leaf in _leaves(value)]
    return [node]


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "mon", "amd64", "usb", "1Ti", "22:30", "5h", "2026-02-30"]),
    st.text(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _mutate(draw: st.DrawFn, body: Any) -> Any:
    """A copy of ``body`` with one to three values replaced, reused, deleted or added."""
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths[1:] or paths))
        parent: Any = body
        for key in path[:-1]:
            parent = parent[key]
        if not path:
            break
        action = draw(st.sampled_from(["replace", "reuse", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(_values)
        elif action == "reuse":
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(_leaves(body) or [None])))
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.text(max_size=6))] = draw(_values)
        elif isinstance(parent[path[-1]], list):
            parent[path[-1]].append(draw(_values))
    return body


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    kind, body = draw(st.sampled_from(DOCUMENTS))
    return kind, _mutate(draw, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_agrees_on_mutated_documents(case: tuple[str, Any]) -> None:
    _agree(*case)


# One small schema per keyword (or keyword pair) the compiler models, so that each
# keyword alone decides some verdicts; with all of them in one schema, one missing
# check would hide behind the others.
SMALL = {"small": {"type": "integer", "maximum": 3}}
KEYWORD_SCHEMAS: list[dict[str, Any]] = [
    {"$defs": SMALL, "$ref": "#/$defs/small"},
    {"type": ["object", "array", "null"]},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["integer", "string"]},
    {"type": ["number", "null"]},
    {"minLength": 2, "maxLength": 3},
    {"pattern": "^[a-z]"},
    {"enum": [1, "x", True, None, [1], {"k": 1}]},
    {"const": 1},
    {"const": {"k": [1]}},
    {"prefixItems": [{"type": "string"}], "items": False},
    {"items": {"type": "integer"}},
    {"contains": {"type": "integer"}, "minContains": 2, "maxContains": 3},
    {"contains": {"type": "integer"}, "maxContains": 1},
    {"contains": {"type": "string"}},
    {"exclusiveMinimum": 0, "exclusiveMaximum": 10},
    {"minimum": 1, "maximum": 5},
    {"multipleOf": 0.5},
    {"multipleOf": 3},
    {"format": "date"},
    {"oneOf": [{"type": "integer"}, {"minimum": 5}]},
    {"anyOf": [{"type": "string"}, {"type": "null"}]},
    {"allOf": [{"type": "integer"}, {"maximum": 4}]},
    {"not": {"type": "boolean"}},
    {"uniqueItems": True},
    {"minItems": 1, "maxItems": 2},
    {"if": {"type": "string"}, "then": {"minLength": 2}, "else": {"type": "integer"}},
    {"if": {"type": "string"}, "then": {"minLength": 2}},
    {"properties": {"a": {"type": "integer"}, "b": True, "c": False}},
    {"properties": {"a": {}}, "patternProperties": {"^x": {"type": "string"}}},
    {"properties": {"a": {}}, "additionalProperties": False},
    {"patternProperties": {"^x": {}}, "additionalProperties": {"type": "integer"}},
    {"propertyNames": {"maxLength": 1}},
    {"required": ["a", "b"]},
    {"minProperties": 1, "maxProperties": 2},
    {"dependentRequired": {"b": ["c"]}},
    {"dependentSchemas": {"d": {"required": ["e"]}}},
    # Objects of many properties, with additionalProperties, nested combinators.
    {"properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
    {"properties": {k: {"type": "integer"} for k in "abcdefghijklmn"}, "required": ["a"]},
    {"properties": {k: {"maximum": 3} for k in "abcdefghijklmn"}, "additionalProperties": False},
    {"properties": {k: {} for k in "abcdefghijklmn"}, "additionalProperties": {"type": "null"}},
    {"properties": {"a": {"properties": {"b": {"const": "x"}}, "required": ["b"]}}},
    {"const": "x"},
    {"if": {"type": "string"}, "else": {"type": "integer"}},
    {"items": False},
    {"uniqueItems": True, "items": {"type": ["integer", "boolean", "string"]}},
    {"items": {"anyOf": [{"type": "integer"}, {"items": {"type": "string"}}]}},
    {"properties": {"k": {"not": {"enum": ["x", "ab"]}}, "x": {"allOf": [{"maxLength": 1}]}}},
]
_keys = st.sampled_from(["a", "b", "c", "d", "e", "x", "xy", "k", "long"])
_small_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 12),
    st.sampled_from([0.5, 1.0, 1.5, 2.5, 10.0]),
    st.sampled_from(["", "x", "ab", "abc", "Abc", "abcd", "2026-02-28", "2026-02-30"]),
)
_small_values = st.one_of(
    _small_scalars,
    st.lists(_small_scalars, max_size=5),
    st.recursive(
        _small_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=4)
        ),
        max_leaves=8,
    ),
)


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS, ids=lambda s: repr(s)[:50])
@settings(max_examples=150, deadline=None)
@given(instance=_small_values)
def test_agrees_keyword_by_keyword(schema: dict[str, Any], instance: Any) -> None:
    check = compile_check(schema, format_checker=FORMATS)
    assert check is not None
    expected = Draft202012Validator(schema, format_checker=FORMATS).is_valid(instance)
    assert check(instance) is expected


@pytest.mark.parametrize(
    ("schema", "instance", "valid"),
    [
        ({"type": "integer"}, 1.0, True),
        ({"type": "integer"}, 1.5, False),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, False, False),
        ({"enum": [1]}, True, False),
        ({"enum": [1.0]}, 1, True),
        ({"const": False}, 0, False),
        ({"uniqueItems": True}, [1, True], True),
        ({"uniqueItems": True}, [{"a": 1}, {"a": 1}], False),
        ({"pattern": "b"}, "abc", True),
        ({"maxLength": 1}, "\U0001f600", True),
        ({"format": "date"}, "2026-02-30", False),
        ({"format": "date"}, 20260230, True),
        ({"items": {"type": "string"}, "prefixItems": [{"type": "integer"}]}, [1, "a"], True),
        ({"contains": {"type": "null"}, "minContains": 0}, [], True),
        ({"additionalProperties": False, "patternProperties": {"^a": {}}}, {"ab": 1}, True),
        ({"additionalProperties": False, "patternProperties": {"^a": {}}}, {"b": 1}, False),
    ],
)
def test_agrees_on_edge_cases(schema: dict[str, Any], instance: Any, valid: bool) -> None:
    check = compile_check(schema, format_checker=FORMATS)
    assert check is not None
    assert Draft202012Validator(schema, format_checker=FORMATS).is_valid(instance) is valid
    assert check(instance) is valid


@pytest.mark.parametrize(
    "schema",
    [
        {"unevaluatedProperties": False},
        {"properties": {"a": {"unevaluatedItems": False}}},
        {"$dynamicRef": "#meta"},
        {"$dynamicAnchor": "meta", "properties": {"a": {"$ref": "#"}}},
        {"$ref": "https://example.com/elsewhere.json"},
        {"$ref": "#anchor"},
        {"type": "widget"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"},
        {"properties": {"a": {"$schema": "https://json-schema.org/draft/2019-09/schema"}}},
        {"properties": {"a": {"$id": "https://example.com/nested", "type": "string"}}},
    ],
)
def test_what_it_does_not_model_is_left_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None


def test_recursive_references_compile() -> None:
    schema = {
        "$defs": {"tree": {"type": "object", "properties": {"kids": {"items": {"$ref": "#"}}}}},
        "$ref": "#/$defs/tree",
    }
    check = compile_check(schema)
    assert check is not None
    for instance, valid in (({"kids": [{"kids": []}]}, True), ({"kids": [{"kids": [5]}]}, False)):
        assert Draft202012Validator(schema).is_valid(instance) is valid
        assert check(instance) is valid


@pytest.mark.parametrize(
    "parameters",
    [
        {"properties": {"a": {"type": "integer"}}},
        {"properties": {"a": {"type": "intgr"}}},
        {"properties": {"a": {"pattern": "("}}},
        {"properties": {"a": {"minimum": "1"}}},
        {"properties": {}, "required": "a"},
        {"properties": {}, "$defs": {"x": {"$ref": "#/$defs/x"}}},
    ],
)
def test_app_parameters_are_checked_against_the_metaschema(parameters: dict[str, Any]) -> None:
    kind, body = next((k, b) for k, b in DOCUMENTS if k == "App")
    body = copy.deepcopy(body)
    body["spec"]["parameters"] = {"type": "object", **parameters, "additionalProperties": False}
    _agree(kind, body)


def _rendered_objects() -> list[tuple[tuple[str, str], Any]]:
    """Every object the example fleet's sites render, with its (apiVersion, kind)."""
    from reconciler.core.model import Repository
    from reconciler.core.render import render_site
    from reconciler.core.source import WorkdirTree

    repo = Repository(WorkdirTree(ROOT))
    found = []
    for site in repo.site_ids:
        for obj in render_site(repo, site).objects:
            found.append(((obj.body["apiVersion"], obj.body["kind"]), obj.body))
    return found


RENDERED = _rendered_objects()


@cache
def _kube_checks(key: tuple[str, str]) -> tuple[Any, Check] | None:
    """jsonschema's validator and the compiled check of a kind, as `kube_schema` builds them."""
    from reconciler.ci.kube_schema import _for

    built = _for((1, 31))._build(*key)
    if built is None:  # no schema for the kind (KubeVirt, Multus): not checked at all
        return None
    validator_, schema, registry = built
    check = compile_check(schema, registry)
    assert check is not None
    return validator_, check


def _kube_agree(key: tuple[str, str], body: Any) -> None:
    checks = _kube_checks(key)
    if checks is None:
        return
    validator_, check = checks
    expected = validator_.is_valid(body)
    assert check(body) is expected, f"compiled check says {not expected} for {body!r}"


def test_the_example_fleet_renders_objects_of_kinds_with_kubernetes_schemas() -> None:
    from reconciler.ci.kube_schema import _for

    kinds = {key for key, _ in RENDERED if _for((1, 31))._build(*key) is not None}
    assert {("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Namespace")} <= kinds


@pytest.mark.parametrize(
    ("key", "body"), RENDERED, ids=lambda v: "/".join(v) if isinstance(v, tuple) else ""
)
def test_kubernetes_checks_agree_on_every_rendered_object(key: tuple[str, str], body: Any) -> None:
    _kube_agree(key, body)


@st.composite
def mutated_objects(draw: st.DrawFn) -> tuple[tuple[str, str], Any]:
    key, body = draw(st.sampled_from(RENDERED))
    return key, _mutate(draw, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_objects())
def test_kubernetes_checks_agree_on_mutated_objects(case: tuple[tuple[str, str], Any]) -> None:
    _kube_agree(*case)


# The metaschema an App's parameters must pass (``schema_guard.compile_parameters`` and the
# App schema's ``$ref`` to it): compiled, it must judge every schema as jsonschema does.
META = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=FORMATS)


def _schemas() -> list[Any]:
    import json

    found: list[Any] = [Draft202012Validator.META_SCHEMA, *KEYWORD_SCHEMAS]
    found += [json.loads(p.read_text()) for p in sorted((ROOT / "schemas").glob("*.json"))]
    found += [b["spec"]["parameters"] for k, b in DOCUMENTS if k == "App" and "spec" in b]
    return [s for s in found if isinstance(s, dict | bool)]


SCHEMAS = _schemas()
_NOT_SCHEMAS = [
    3,
    None,
    [],
    {"type": 5},
    {"type": "intgr"},
    {"type": ["string", "string"]},
    {"minimum": "1"},
    {"pattern": "("},
    {"format": 3},
    {"required": "a"},
    {"required": [1]},
    {"enum": 3},
    {"items": {"enum": 3}},
    {"$anchor": "1x"},
    {"$dynamicAnchor": "no way"},
    {"$ref": 3},
    {"$defs": {"a": {"maxLength": -1}}},
    {"dependencies": {"a": [1]}},
    {"dependentRequired": {"a": "b"}},
    {"properties": {"a": {"properties": {"b": {"minItems": 1.5}}}}},
    {"prefixItems": []},
    {"unevaluatedProperties": 3},
    {"$schema": 3},
    {"$vocabulary": {"x": "y"}},
]


def test_the_metaschema_is_compiled_not_left_to_jsonschema() -> None:
    check = _metaschema_check(FORMATS)
    assert getattr(check, "__self__", None) is None  # not a jsonschema validator's is_valid
    assert is_json_schema({"type": "object", "properties": {"a": {"type": "integer"}}})


@pytest.mark.parametrize("schema", SCHEMAS + _NOT_SCHEMAS, ids=lambda s: repr(s)[:50])
def test_the_metaschema_judges_schemas_as_jsonschema_does(schema: Any) -> None:
    assert is_json_schema(schema) is META.is_valid(schema)


_schema_values = st.one_of(
    _values,
    st.sampled_from(
        ["object", "string", "integer", "nope", "(", "^a$", "#/$defs/x", "date", "1x", "meta"]
    ),
    st.lists(st.sampled_from(["a", "b", 1, "a"]), max_size=3),
)
_KEYWORDS = sorted(
    set(Draft202012Validator.META_SCHEMA["properties"])  # definitions, dependencies, ...
    | {
        "type", "enum", "const", "minimum", "maxLength", "pattern", "required", "items",
        "prefixItems", "properties", "additionalProperties", "$defs", "$ref", "$anchor",
        "$dynamicAnchor", "$id", "$schema", "format", "allOf", "anyOf", "not", "if",
        "dependentRequired", "dependentSchemas", "minContains", "uniqueItems", "$vocabulary",
        "contentMediaType", "deprecated", "examples", "propertyNames", "multipleOf",
    }
)  # fmt: skip


@st.composite
def mutated_schemas(draw: st.DrawFn) -> Any:
    schema = _mutate(draw, draw(st.sampled_from([s for s in SCHEMAS if _leaves(s)])))
    for _ in range(draw(st.integers(0, 2))):  # a keyword of the dialect, somewhere
        nodes = [n for n in _nodes(schema) if isinstance(n, dict)]
        if nodes:
            draw(st.sampled_from(nodes))[draw(st.sampled_from(_KEYWORDS))] = draw(_schema_values)
    return schema


def _nodes(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [node, *(n for value in node.values() for n in _nodes(value))]
    if isinstance(node, list):
        return [n for value in node for n in _nodes(value)]
    return []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_schemas())
def test_the_metaschema_judges_mutated_schemas_as_jsonschema_does(schema: Any) -> None:
    assert is_json_schema(schema) is META.is_valid(schema)
