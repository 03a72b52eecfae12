"""JSON Schemas written in the repository (an app's ``spec.parameters``), compiled under guard.

Our own schemas (``schemas/``) are trusted code; a parameter schema is input, read by
CI and by every node that runs the app. jsonschema trusts its schema, so this module
refuses, with the place in the schema, whatever would make validating a value hang,
crash or reach the network:

- a ``$ref`` that is not local (``http://…``, ``other.json``): jsonschema would fetch it
  (a node reading a commit must open no socket; CI must not depend on a web server).
  Validators built here also carry a registry that refuses every retrieval, so a
  reference this walk missed fails closed instead of fetching;
- a ``$ref`` that points at nothing, ``$dynamicRef``, ``$id`` below the root and another
  ``$schema`` dialect: each changes how references resolve, beyond what is checked here;
- references that loop without consuming the value (``$ref: "#"`` at the root, two
  ``$defs`` referring to each other through ``allOf``): jsonschema recurses until
  Python's stack runs out. A recursive schema that descends (a tree's ``items: {$ref:
  "#"}``) is fine: the value is finite;
- a ``pattern`` or ``patternProperties`` key the linear-time engine (RE2) cannot run
  (backreferences, lookaround). Patterns are matched with RE2, never with Python's
  backtracking ``re``: ``^(a+)+$`` against a site's value takes microseconds, not hours.
  ``unevaluatedProperties`` next to ``patternProperties`` is refused because jsonschema
  matches those keys with ``re`` internally.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Path_ = tuple[str | int, ...]
Search = Callable[[str], bool]

_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_ONE = ("additionalProperties", "unevaluatedProperties", "items", "contains", "propertyNames",
        "not", "if", "then", "else", "unevaluatedItems")  # fmt: skip
_MANY = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
# Keywords that apply their subschemas to the same value: a loop through only these
# never ends.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")


@dataclass(frozen=True)
class SchemaProblem:
    """Why a parameter schema is refused, and where in it (a path below ``spec.parameters``)."""

    at: Path_
    message: str


class PatternError(Exception):
    """A regular expression RE2 cannot compile."""


@lru_cache(maxsize=1024)
def search(pattern: str) -> Search:
    """``re.search`` semantics for ``pattern``, on RE2 (linear time in the text's length)."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options)
    except Exception as exc:  # re2 raises its own error type; nothing of it escapes
        text = str(exc)
        if text.startswith(("b'", 'b"')):
            text = text[2:-1]
        raise PatternError(text) from None
    return lambda text: compiled.search(text) is not None


def _subschemas(schema: Any, at: Path_) -> Iterator[tuple[Path_, Any]]:
    """Every subschema of ``schema`` (itself included) with its path."""
    stack: list[tuple[Path_, Any]] = [(at, schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for key in _ONE:
            if key in node:
                stack.append(((*path, key), node[key]))
        for key in _MANY:
            children = node.get(key)
            if isinstance(children, dict):
                stack.extend(((*path, key, name), sub) for name, sub in children.items())
        for key in _LIST:
            children = node.get(key)
            if isinstance(children, list):
                stack.extend(((*path, key, i), sub) for i, sub in enumerate(children))


def _resolve(root: Any, ref: str, anchors: dict[str, Path_]) -> Path_ | None:
    """The path ``ref`` (local: ``#``, ``#/json/pointer`` or ``#anchor``) points at, or None."""
    fragment = ref[1:]
    if fragment and not fragment.startswith("/"):
        return anchors.get(fragment)
    node = root
    path: list[str | int] = []
    for raw in fragment.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            path.append(int(part))
        elif isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        else:
            return None
    return tuple(path) if isinstance(node, dict | bool) else None


def _in_place(node: dict[str, Any], path: Path_) -> Iterator[Path_]:
    for key in _IN_PLACE_ONE:
        if isinstance(node.get(key), dict):
            yield (*path, key)
    for key in _IN_PLACE_LIST:
        children = node.get(key)
        if isinstance(children, list):
            yield from ((*path, key, i) for i, sub in enumerate(children) if isinstance(sub, dict))
    dependent = node.get("dependentSchemas")
    if isinstance(dependent, dict):
        yield from (
            (*path, "dependentSchemas", k) for k, v in dependent.items() if isinstance(v, dict)
        )


def problems(schema: Any) -> list[SchemaProblem]:
    """Everything in ``schema`` that this module refuses (see the module docstring)."""
    if not isinstance(schema, dict):
        return []
    found: list[SchemaProblem] = []
    nodes = dict(_subschemas(schema, ()))
    anchors = {
        str(node["$anchor"]): path
        for path, node in nodes.items()
        if isinstance(node.get("$anchor"), str)
    }
    edges: dict[Path_, list[Path_]] = {}
    has_patterns = False
    for path, node in nodes.items():
        if path and "$id" in node:
            found.append(
                SchemaProblem(
                    (*path, "$id"), "$id is allowed only at the root of a parameter schema"
                )
            )
        if "$schema" in node and node["$schema"] != _DRAFT_2020_12:
            found.append(
                SchemaProblem(
                    (*path, "$schema"), f"parameter schemas are JSON Schema {_DRAFT_2020_12}"
                )
            )
        if "$dynamicRef" in node:
            found.append(
                SchemaProblem(
                    (*path, "$dynamicRef"), "$dynamicRef is not supported in parameter schemas"
                )
            )
        targets = list(_in_place(node, path))
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#"):
                found.append(
                    SchemaProblem(
                        (*path, "$ref"),
                        f"$ref {ref!r} points outside the schema; validation never fetches "
                        "anything, so a parameter schema must be self-contained: copy the "
                        "definition into $defs and refer to it as '#/$defs/<name>'",
                    )
                )
            else:
                target = _resolve(schema, ref, anchors)
                if target is None:
                    found.append(
                        SchemaProblem(
                            (*path, "$ref"), f"$ref {ref!r} points at nothing in this schema"
                        )
                    )
                else:
                    targets.append(target)
        edges[path] = targets
        pattern = node.get("pattern")
        patterns: list[tuple[Path_, str]] = (
            [(("pattern",), pattern)] if isinstance(pattern, str) else []
        )
        by_key = node.get("patternProperties")
        if isinstance(by_key, dict):
            has_patterns = True
            patterns += [(("patternProperties", str(k)), str(k)) for k in by_key]
        for where, text in patterns:
            try:
                search(text)
            except PatternError as exc:
                found.append(
                    SchemaProblem(
                        (*path, *where),
                        f"pattern {text!r} cannot run on the linear-time regular expression "
                        f"engine (RE2: {exc}); backreferences and lookaround are not supported",
                    )
                )
    if has_patterns and any("unevaluatedProperties" in node for node in nodes.values()):
        at = next(p for p, n in nodes.items() if "unevaluatedProperties" in n)
        found.append(
            SchemaProblem(
                (*at, "unevaluatedProperties"),
                "unevaluatedProperties cannot be combined with patternProperties in a parameter "
                "schema; use additionalProperties",
            )
        )
    loop = _loop(edges)
    if loop is not None:
        shown = " → ".join("#" + "".join(f"/{part}" for part in p) for p in loop)
        found.append(
            SchemaProblem(
                (*loop[0], "$ref") if "$ref" in nodes.get(loop[0], {}) else loop[0],
                f"references loop without descending into the value ({shown}); validating "
                "would never end",
            )
        )
    return found


def _loop(edges: dict[Path_, list[Path_]]) -> list[Path_] | None:
    """A cycle in ``edges`` (iterative depth-first search), as the list of its nodes."""
    state: dict[Path_, int] = {}
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[Path_, Iterator[Path_]]] = [(start, iter(edges.get(start, ())))]
        on_path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.pop()
                state[node] = 2
                continue
            if state.get(child) == 1:
                return [*on_path[on_path.index(child) :], child]
            if not state.get(child):
                state[child] = 1
                on_path.append(child)
                stack.append((child, iter(edges.get(child, ()))))
    return None


# --------------------------------------------------------------------------- validator


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not search(patrn)(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        matches = search(pattern)
        for key, value in instance.items():
            if matches(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [search(p) for p in schema.get("patternProperties", {})]
    extras = [
        key for key in instance if key not in properties and not any(m(key) for m in patterns)
    ]
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        shown = ", ".join(repr(each) for each in sorted(extras, key=str))
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{shown} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({shown} {verb} unexpected)"
            )


@lru_cache(maxsize=1)
def _validator_class() -> Any:
    from jsonschema import Draft202012Validator, validators

    return validators.extend(
        Draft202012Validator,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )


def _refuse(uri: str) -> Any:
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


def offline_registry(schema: Any) -> Any:
    """A registry holding ``schema`` only, whose retrieval of anything else fails."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry: Any = Registry(retrieve=_refuse)  # type: ignore[call-arg]
    return registry.with_resource(resource.id() or "", resource)


@dataclass(frozen=True)
class Guarded:
    """A parameter schema that passed the guard: jsonschema's validator and the fast check."""

    validator: Any
    check: Callable[[Any], bool] | None


@lru_cache(maxsize=512)
def compile_parameters(schema_text: str) -> Guarded | SchemaProblem:
    """Compile a parameter schema (canonical JSON text), or the first reason it is refused."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    from reconciler.core.schemas import compile_check, is_json_schema

    schema = json.loads(schema_text)
    try:
        if not is_json_schema(schema):  # jsonschema words what is wrong
            Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return SchemaProblem(tuple(exc.absolute_path), f"not a valid JSON Schema: {exc.message}")
    refused = problems(schema)
    if refused:
        return refused[0]
    registry = offline_registry(schema)
    formats = Draft202012Validator.FORMAT_CHECKER
    return Guarded(
        _validator_class()(schema, registry=registry, format_checker=formats),
        compile_check(schema, registry, formats, search=search),
    )
