"""The JSON Schemas of every document kind: loaded once, compiled once.

The schemas in ``schemas/`` are the contract of the repository format. They are
installed with the package as ``reconciler._schemas`` (see pyproject), so a
node validates its slice with the same contract CI used.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from reconciler.core.errors import ConfigError

_REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _schema_dir() -> Any:
    if (_REPO_SCHEMAS / "site.schema.json").is_file():
        return _REPO_SCHEMAS
    try:
        packaged = resources.files("reconciler._schemas")
        if packaged.joinpath("site.schema.json").is_file():
            return packaged
    except (ModuleNotFoundError, TypeError):
        pass
    raise ConfigError(
        "the Outpost JSON Schemas are not installed (expected reconciler/_schemas or "
        f"{_REPO_SCHEMAS}); reinstall the package"
    )


@cache
def schemas_digest() -> str:
    """A digest of every schema file: what a recorded "this document passed" depends on."""
    import hashlib

    digest = hashlib.sha256()
    for entry in sorted(_schema_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".schema.json"):
            digest.update(entry.name.encode() + b"\0" + entry.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def _by_file() -> dict[str, Any]:
    """Every schema, parsed, by file name."""
    return {
        entry.name: json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(_schema_dir().iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".schema.json")
    }


@cache
def _registry() -> tuple[Any, dict[str, Any]]:
    from referencing import Registry, Resource

    by_file = _by_file()
    resources_ = [
        (schema.get("$id", name), Resource.from_contents(schema))
        for name, schema in by_file.items()
    ]
    # Crawled once here: an uncrawled registry is crawled again on every anchor lookup,
    # and each $dynamicRef of the metaschema an App's parameters are checked against is one
    # (three times the cost of checking an App).
    return Registry().with_resources(resources_).crawl(), by_file


@cache
def schema_of(kind: str) -> Any:
    """The JSON Schema document of one kind, as parsed (read it, do not change it).

    Only its own file is read (no registry, no other schema): a node's tick asks for the
    AgentConfig schema's defaults and nothing else."""
    name = f"{kind.lower()}.schema.json"
    entry = _schema_dir().joinpath(name)
    if not kind.isalnum() or not entry.is_file():
        raise ConfigError(f"no schema for kind {kind!r} (expected {name})")
    return json.loads(entry.read_text(encoding="utf-8"))


@cache
def validator(kind: str) -> Any:
    """A compiled Draft 2020-12 validator for one document kind (``Site`` → site.schema.json)."""
    from jsonschema import Draft202012Validator

    registry, by_file = _registry()
    schema = by_file.get(f"{kind.lower()}.schema.json")
    if schema is None:
        raise ConfigError(f"no schema for kind {kind!r} (expected {kind.lower()}.schema.json)")
    return Draft202012Validator(
        schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


@cache
def _fast_check(kind: str) -> Check | None:
    from jsonschema import Draft202012Validator

    registry, by_file = _registry()
    return compile_check(
        by_file[f"{kind.lower()}.schema.json"], registry, Draft202012Validator.FORMAT_CHECKER
    )


def prepare(*kinds: str) -> None:
    """Build the checks of ``kinds`` now (jsonschema's validator and the compiled check of
    each, and the compiled metaschema an App's parameters are checked against): a run over
    a few sites does it while git lists the changes."""
    from jsonschema import Draft202012Validator

    for kind in kinds:
        validator(kind)
        _fast_check(kind)
    _metaschema_check(Draft202012Validator.FORMAT_CHECKER)


def schema_errors(kind: str, body: Any) -> list[Any]:
    """jsonschema's errors for ``body`` against ``kind``'s schema; empty when it is valid.

    Most documents are valid, and jsonschema walks a valid document as slowly as an
    invalid one (a validator object per subschema visited, a registry lookup per
    ``$ref``). A check compiled from the same schema says "valid" about ten times
    faster; jsonschema still produces every error, so messages and paths do not
    depend on the fast path. The fast check is trusted only to say "valid". It is
    compiled at a kind's first document: that costs about what jsonschema takes for one
    App (a few milliseconds), and an App's parameters are checked against the compiled
    metaschema (`_metaschema_check`) instead of by jsonschema.
    """
    full = validator(kind)
    fast = _fast_check(kind)
    try:
        if fast is not None and fast(body):
            return []
    except Exception:  # noqa: S110 -- jsonschema decides what the fast check cannot
        pass
    return list(full.iter_errors(body))


# --------------------------------------------------------------------------- fast path

Check = Callable[[Any], bool]


_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


class _Unsupported(Exception):
    """The schema uses something the fast check does not model; jsonschema decides alone."""


def _always(_instance: Any) -> bool:
    return True


def _never(_instance: Any) -> bool:
    return False


def _all(checks: list[Check]) -> Check:
    """One check passing where every one of ``checks`` passes, in their order. Two or
    three (most of a schema's nodes: a type and a group of keywords) are called directly:
    a generator around them costs more than they do."""
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda instance: first(instance) and second(instance)
    if len(checks) == 3:
        first, second, third = checks
        return lambda instance: first(instance) and second(instance) and third(instance)
    return lambda instance: all(each(instance) for each in checks)


class _Compiler:
    """Compiles a draft 2020-12 schema into one function ``instance -> is valid``.

    Every keyword jsonschema's ``Draft202012Validator`` validates is either modelled
    here with jsonschema's own semantics (its type checker, its ``equal`` and ``uniq``,
    ``re.search`` for patterns, the same format checker) or makes the whole schema
    unsupported; keywords jsonschema ignores (annotations) are ignored here too.
    """

    # Consumed by another keyword's check (then/else by if, minContains by contains, ...).
    _COMPANIONS = frozenset({"then", "else", "minContains", "maxContains"})
    _UNSUPPORTED = frozenset({"$dynamicRef", "unevaluatedItems", "unevaluatedProperties"})

    def __init__(
        self,
        registry: Any,
        format_checker: Any,
        search: Callable[[str], Check] | None = None,
        *,
        meta: bool = False,
    ) -> None:
        from jsonschema import Draft202012Validator
        from jsonschema._utils import equal, uniq

        self.registry = registry
        self.format_checker = format_checker
        self.validators = frozenset(Draft202012Validator.VALIDATORS)
        self.type_checker = Draft202012Validator.TYPE_CHECKER
        self.equal = equal
        self.uniq = uniq
        self.refs: dict[str, list[Check]] = {}
        self.search: Callable[[str], Check] = search or _re_search
        # Compiling the dialect's own metaschema (`_metaschema_check`), entered at its root.
        self.meta = meta

    def root(self, schema: Any) -> Check:
        base = schema.get("$id", "") if isinstance(schema, dict) else ""
        return self.compile(schema, str(base), root=True)

    def compile(self, schema: Any, base: str, *, root: bool = False) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise _Unsupported(f"schema {schema!r}")
        if "$id" in schema:
            if not root:
                raise _Unsupported("$id below a resource's root")
            base = urljoin(base, str(schema["$id"]))
        if schema.get("$schema", _DRAFT_2020_12) != _DRAFT_2020_12:
            raise _Unsupported("another dialect: jsonschema switches validators for it")
        keywords = schema.keys() & self.validators
        checks: list[Check] = []
        if self.meta and schema.get("$dynamicRef") == "#meta":
            # Entered at the metaschema's root, every "#meta" of its vocabularies resolves
            # to that root: the outermost resource of the dynamic scope with that anchor.
            keywords -= {"$dynamicRef"}
            checks.append(self._ref(_DRAFT_2020_12, _DRAFT_2020_12))
        elif "$dynamicAnchor" in schema and not self.meta:
            # Another resource's anchor would change where the metaschema's "#meta" goes.
            raise _Unsupported("$dynamicAnchor")
        if keywords & self._UNSUPPORTED:
            raise _Unsupported(", ".join(sorted(keywords & self._UNSUPPORTED)))
        if "type" in schema:
            checks.append(self._type(schema["type"]))
        if "$ref" in schema:
            checks.append(self._ref(str(schema["$ref"]), base))
        for group in (self._object, self._array, self._string, self._number):
            check = group(schema, base)
            if check is not None:
                checks.append(check)
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        if "const" in schema:
            checks.append(self._const(schema["const"]))
        if "format" in schema and self.format_checker is not None:
            checks.append(self._format(schema["format"]))
        checks.extend(self._combinators(schema, base))
        return _all(checks)

    # -- keywords -----------------------------------------------------------------------------

    def _type(self, types: Any) -> Check:
        from jsonschema.exceptions import UndefinedTypeCheck, UnknownType

        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _Unsupported(f"type {types!r}")
        checker = self.type_checker
        for name in names:
            try:
                checker.is_type(None, name)
            except (UndefinedTypeCheck, UnknownType):
                raise _Unsupported(f"type {name!r}") from None
        fast = {"object": dict, "array": list, "string": str}
        if len(names) == 1 and names[0] in fast:
            python_type = fast[names[0]]
            return lambda instance: isinstance(instance, python_type)
        if all(name in _TYPE_TESTS for name in names):
            tests = tuple(_TYPE_TESTS[name] for name in names)
            if len(tests) == 1:
                return tests[0]
            return lambda instance: any(test(instance) for test in tests)
        return lambda instance: any(checker.is_type(instance, name) for name in names)

    def _ref(self, ref: str, base: str) -> Check:
        from urllib.parse import urldefrag

        if ref.startswith("#"):
            uri, fragment = base, ref[1:]
        else:
            uri, fragment = urldefrag(urljoin(base, ref))
        key = f"{uri}#{fragment}"
        cell = self.refs.get(key)
        if cell is None and not fragment and uri.rstrip("#") == _DRAFT_2020_12:
            # The dialect's metaschema (an App's parameters must be a JSON Schema), with
            # the format checker a $ref into it would use.
            cell = self.refs[key] = [_metaschema_check(self.format_checker)]
        if cell is None:
            if fragment and not fragment.startswith("/"):
                raise _Unsupported(f"anchor reference {ref!r}")
            try:
                resolved = self.registry.resolver(base).lookup(ref)
            except Exception as exc:  # unresolvable: jsonschema reports it in its own words
                raise _Unsupported(f"reference {ref!r}") from exc
            if fragment:
                node: Any = self.registry.contents(uri)
                for part in fragment.split("/")[1:-1]:
                    part = part.replace("~1", "/").replace("~0", "~")
                    node = node[int(part)] if isinstance(node, list) else node[part]
                    if isinstance(node, dict) and "$id" in node:
                        raise _Unsupported(f"$id on the way to {ref!r}")
            cell = []
            self.refs[key] = cell
            cell.append(self.compile(resolved.contents, uri, root=not fragment))
        if cell:  # compiled already: called directly (only a recursive one is still empty)
            return cell[0]
        return lambda instance: cell[0](instance)

    def _object(self, schema: dict[str, Any], base: str) -> Check | None:
        names = ("properties", "required", "additionalProperties", "patternProperties",
                 "propertyNames", "minProperties", "maxProperties", "dependentRequired",
                 "dependentSchemas")  # fmt: skip
        if not any(name in schema for name in names):
            return None
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        patterns = schema.get("patternProperties", {})
        if not isinstance(properties, dict) or not isinstance(required, list):
            raise _Unsupported("properties or required")
        if not isinstance(patterns, dict):
            raise _Unsupported("patternProperties")
        props = {str(k): self.compile(v, base) for k, v in properties.items()}
        pattern_checks = [(self.search(p), self.compile(v, base)) for p, v in patterns.items()]
        searches = [search for search, _ in pattern_checks]
        joined = (lambda key: any(s(key) for s in searches)) if patterns else None
        declared = frozenset(properties)
        additional = None
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            additional = (
                self.compile(extra, base)
                if isinstance(extra, dict)
                else (_always if extra else _never)
            )
        names_check = (
            self.compile(schema["propertyNames"], base) if "propertyNames" in schema else None
        )
        min_p, max_p = schema.get("minProperties"), schema.get("maxProperties")
        dep_required = schema.get("dependentRequired", {})
        dependent = schema.get("dependentSchemas", {})
        if not isinstance(dep_required, dict) or not isinstance(dependent, dict):
            raise _Unsupported("dependentRequired or dependentSchemas")
        dep_schemas = [(k, self.compile(v, base)) for k, v in dependent.items()]
        # Without patternProperties, additionalProperties is every key properties lacks.
        simple = self._properties(required, props, None if patterns else additional)
        others = (patterns, names_check, dep_required, dep_schemas)
        if not any(others) and min_p is None and max_p is None:
            return simple

        def check(instance: Any) -> bool:
            if not simple(instance):
                return False
            if not isinstance(instance, dict):
                return True
            for search, sub in pattern_checks:
                for key, value in instance.items():
                    if search(key) and not sub(value):
                        return False
            if additional is not None and patterns:
                for key, value in instance.items():
                    if key in declared or (joined is not None and joined(key)):
                        continue
                    if not additional(value):
                        return False
            if names_check is not None:
                for key in instance:
                    if not names_check(key):
                        return False
            if min_p is not None and len(instance) < min_p:
                return False
            if max_p is not None and len(instance) > max_p:
                return False
            for name, needed in dep_required.items():
                if name in instance and any(each not in instance for each in needed):
                    return False
            return all(name not in instance or sub(instance) for name, sub in dep_schemas)

        return check

    @staticmethod
    def _properties(
        required: list[Any], props: dict[str, Check], additional: Check | None
    ) -> Check:
        """``required``, ``properties`` and (``additional``: for every key ``properties``
        lacks) ``additionalProperties``: the whole check of most objects, the first part
        of the rest. A walk over the instance's keys, each looked up once, rather than
        over every declared property (an API object's schema declares dozens; an
        instance sets a few). Which keys are checked, and against what, is the same."""
        get = props.get

        def check(instance: Any) -> bool:
            if not isinstance(instance, dict):
                return True
            for name in required:
                if name not in instance:
                    return False
            for key, value in instance.items():
                sub = get(key)
                if sub is None:
                    if additional is not None and not additional(value):
                        return False
                elif not sub(value):
                    return False
            return True

        return check

    def _array(self, schema: dict[str, Any], base: str) -> Check | None:
        names = ("items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains")
        if not any(name in schema for name in names):
            return None
        prefix = [self.compile(s, base) for s in schema.get("prefixItems", [])]
        items = self.compile(schema["items"], base) if "items" in schema else None
        min_i, max_i = schema.get("minItems"), schema.get("maxItems")
        unique = bool(schema.get("uniqueItems", False))
        contains = self.compile(schema["contains"], base) if "contains" in schema else None
        min_c = schema.get("minContains", 1)
        max_c = schema.get("maxContains")
        uniq = self.uniq

        def check(instance: Any) -> bool:
            if not isinstance(instance, list):
                return True
            for sub, item in zip(prefix, instance, strict=False):
                if not sub(item):
                    return False
            if items is not None:
                for item in instance[len(prefix) :]:
                    if not items(item):
                        return False
            if min_i is not None and len(instance) < min_i:
                return False
            if max_i is not None and len(instance) > max_i:
                return False
            if unique and not uniq(instance):
                return False
            if contains is not None:
                matches = sum(1 for item in instance if contains(item))
                if max_c is not None and matches > max_c:
                    return False
                if matches < min_c:
                    return False
            return True

        return check

    def _string(self, schema: dict[str, Any], base: str) -> Check | None:
        if not any(name in schema for name in ("pattern", "minLength", "maxLength")):
            return None
        search = self.search(schema["pattern"]) if "pattern" in schema else None
        min_l, max_l = schema.get("minLength"), schema.get("maxLength")

        def check(instance: Any) -> bool:
            if not isinstance(instance, str):
                return True
            if min_l is not None and len(instance) < min_l:
                return False
            if max_l is not None and len(instance) > max_l:
                return False
            return search is None or bool(search(instance))

        return check

    def _number(self, schema: dict[str, Any], base: str) -> Check | None:
        names = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
        if not any(name in schema for name in names):
            return None
        low, high = schema.get("minimum"), schema.get("maximum")
        x_low, x_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        multiple = schema.get("multipleOf")

        def check(instance: Any) -> bool:
            if isinstance(instance, bool) or not isinstance(instance, numbers.Number):
                return True
            value: Any = instance
            if low is not None and value < low:
                return False
            if high is not None and value > high:
                return False
            if x_low is not None and value <= x_low:
                return False
            if x_high is not None and value >= x_high:
                return False
            return multiple is None or _is_multiple(value, multiple)

        return check

    def _enum(self, values: Any) -> Check:
        if not isinstance(values, list):
            raise _Unsupported("enum")
        strings = frozenset(v for v in values if isinstance(v, str))
        others = [v for v in values if not isinstance(v, str)]
        equal = self.equal

        def check(instance: Any) -> bool:
            if isinstance(instance, str):
                return instance in strings
            return any(equal(each, instance) for each in others)

        return check

    def _const(self, value: Any) -> Check:
        equal = self.equal
        return lambda instance: bool(equal(instance, value))

    def _format(self, name: Any) -> Check:
        checker = self.format_checker
        return lambda instance: bool(checker.conforms(instance, name))

    def _combinators(self, schema: dict[str, Any], base: str) -> list[Check]:
        checks: list[Check] = []
        if "allOf" in schema:
            checks.append(_all([self.compile(s, base) for s in schema["allOf"]]))
        if "anyOf" in schema:
            any_of = [self.compile(s, base) for s in schema["anyOf"]]
            checks.append(lambda instance: any(sub(instance) for sub in any_of))
        if "oneOf" in schema:
            one_of = [self.compile(s, base) for s in schema["oneOf"]]
            checks.append(lambda instance: sum(1 for sub in one_of if sub(instance)) == 1)
        if "not" in schema:
            negated = self.compile(schema["not"], base)
            checks.append(lambda instance: not negated(instance))
        if "if" in schema:
            condition = self.compile(schema["if"], base)
            then = self.compile(schema["then"], base) if "then" in schema else _always
            otherwise = self.compile(schema["else"], base) if "else" in schema else _always
            checks.append(
                lambda instance: then(instance) if condition(instance) else otherwise(instance)
            )
        return checks


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    if type(value) is int or type(value) is float:  # the loader's numbers, without the ABC
        return True
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


# Draft 2020-12's types (jsonschema's TYPE_CHECKER, whose every answer goes through a
# persistent map and a function of four arguments), answered in one call each.
_TYPE_TESTS: dict[str, Check] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


def _re_search(pattern: str) -> Check:
    """Whether ``pattern`` is found in a string; the answers kept per string (a fleet's
    documents ask about the same names, zones and versions thousands of times)."""
    search = re.compile(pattern).search
    known: dict[str, bool] = {}

    def check(text: str) -> bool:
        found = known.get(text)
        if found is None:
            found = search(text) is not None
            if len(known) >= _PATTERN_ANSWERS:
                known.clear()
            known[text] = found
        return found

    return check


_PATTERN_ANSWERS = 4096  # per pattern


def _is_multiple(value: Any, divisor: Any) -> bool:
    """jsonschema's multipleOf arithmetic, float quotient first, Fraction when it overflows."""
    if isinstance(divisor, float):
        quotient = value / divisor
        try:
            return bool(int(quotient) == quotient)
        except OverflowError:
            from fractions import Fraction

            return (Fraction(value) / Fraction(divisor)).denominator == 1
    return not (value % divisor)


@cache
def _metaschema_check(format_checker: Any) -> Check:
    """Whether a schema is a draft 2020-12 JSON Schema, as jsonschema's validator over the
    dialect's metaschema says (``check_schema``), compiled like any other schema: checking
    an App's parameters was most of checking the App.

    The metaschema's vocabularies point back at it with ``$dynamicRef: "#meta"``; entered
    at its root (a ``$ref`` to the metaschema, or this check), the outermost resource
    holding that anchor is the root itself, so each is a reference to the root here. A
    schema that declares a ``$dynamicAnchor`` of its own is not compiled (jsonschema
    decides), nor is anything the compiler does not model: jsonschema's validator then.
    """
    from jsonschema import Draft202012Validator
    from jsonschema_specifications import REGISTRY

    compiler = _Compiler(REGISTRY, format_checker, meta=True)
    cell: list[Check] = []
    compiler.refs[f"{_DRAFT_2020_12}#"] = cell
    try:
        cell.append(compiler.root(Draft202012Validator.META_SCHEMA))
    except (_Unsupported, re.error, TypeError, KeyError, IndexError, ValueError):
        meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=format_checker)
        check: Check = meta.is_valid
        return check
    return cell[0]


def is_json_schema(schema: Any) -> bool:
    """Whether ``schema`` passes ``Draft202012Validator.check_schema`` (quickly: compiled);
    False also where the compiled check cannot decide: jsonschema's ``check_schema`` then
    does, and words what is wrong."""
    from jsonschema import Draft202012Validator

    try:
        return _metaschema_check(Draft202012Validator.FORMAT_CHECKER)(schema)
    except Exception:  # as in schema_errors: jsonschema decides
        return False


def compile_check(
    schema: Any,
    registry: Any = None,
    format_checker: Any = None,
    *,
    search: Callable[[str], Check] | None = None,
) -> Check | None:
    """A fast ``instance -> is valid`` for ``schema``, or None if it uses an unmodelled keyword.

    Only "valid" is trusted: callers ask jsonschema for the errors (their messages,
    paths and order) whenever the fast check says no or cannot decide. ``search`` turns a
    pattern into a search function (default: Python's ``re``; RE2 for schemas from the
    repository, see ``core.schema_guard``).
    """
    if registry is None:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        resource = Resource.from_contents(schema, default_specification=DRAFT202012)
        registry = Registry().with_resource(resource.id() or "", resource)
    try:
        return _Compiler(registry, format_checker, search).root(schema)
    except (_Unsupported, re.error, TypeError, KeyError, IndexError, ValueError, RecursionError):
        return None
