"""Parameter values and ``${...}`` placeholders.

Values are layered: the app's defaults, then each fleet's values, then the
site's own (``spec.apps`` in site.yaml), then ``overrides.yaml``. Maps merge key
by key at every depth; a list or a scalar replaces what was there. The result
must satisfy the app's parameter schema; a value that breaks it is reported at
the line of the layer that set it, so the reviewer sees the store's override,
not the app's schema.

Placeholders (the contract): ``${name}`` is a parameter, ``${name.key}`` a key
of an object parameter; built-ins are ``${images.<key>}``, ``${app.name}``,
``${app.version}``, ``${app.namespace}``, ``${site.name}``, ``${site.timezone}``,
``${site.type}``. A string that is exactly one placeholder takes the value's
type (``replicas: ${replicas}`` stays an integer); inside longer text the value
is written as text. ``$${`` writes a literal ``${`` (for shell snippets in
manifests). An unknown placeholder, one without a value, and a declared
parameter no manifest uses are all errors: an empty string in production is
worse than a red pull request.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reconciler.core.errors import Mark, RenderError
from reconciler.core.loader import Document, YamlDocument
from reconciler.core.memo import ByIdentity

PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
BUILTIN_ROOTS = ("images", "app", "site")
BUILTIN_NAMES = (
    "app.name",
    "app.version",
    "app.namespace",
    "site.name",
    "site.timezone",
    "site.type",
)

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Layer:
    """One source of values: the values and where in which document they sit."""

    values: Mapping[str, Any]
    doc: Document
    at: Path_
    what: str

    def mark(self, *keys: str | int) -> Mark:
        return self.doc.mark(*self.at, *keys)

    def has(self, path: Sequence[str | int]) -> bool:
        node: Any = self.values
        for key in path:
            if isinstance(node, Mapping):
                found = key in node
            else:
                found = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
            if not found:
                return False
            node = node[key]
        return True


def deep_merge(base: Any, over: Any) -> Any:
    """Maps merge key by key; anything else in ``over`` replaces ``base``."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = deep_merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def merge_layers(layers: Sequence[Layer]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.values)
    return merged


def locate(layers: Sequence[Layer], path: Sequence[str | int]) -> Mark:
    """The line of the last layer that set ``path`` (or its nearest set ancestor)."""
    probe = list(path)
    while probe:
        for layer in reversed(layers):
            if layer.has(probe):
                return layer.mark(*probe)
        probe.pop()
    return layers[-1].mark()


def _schema_error_path(error: Any, properties: Mapping[str, Any]) -> list[str | int]:
    path: list[str | int] = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        extra = sorted(k for k in error.instance if k not in properties)
        if extra and not path:
            path.append(extra[0])
    return path


@lru_cache(maxsize=512)
def _validator(schema_text: str) -> Any:
    """A compiled validator for a schema (by its canonical text), or why it is refused.

    Checking and compiling a schema costs more than rendering an app, and CI
    renders the same app version at hundreds of sites: the cache is keyed by
    the schema's content, so it cannot go stale. Compiling goes through
    ``core.schema_guard``: no remote ``$ref``, no reference loop, patterns on RE2.
    The validator comes with the schema's compiled check (``schemas.compile_check``),
    which answers "valid" without jsonschema's per-keyword overhead; jsonschema
    reports the errors.
    """
    from reconciler.core.schema_guard import compile_parameters

    return compile_parameters(schema_text)


def _is_valid(check: Any, values: Mapping[str, Any]) -> bool:
    try:
        return check is not None and bool(check(values))
    except Exception:  # jsonschema decides what the compiled check cannot
        return False


def validate_values(
    values: Mapping[str, Any], schema: Mapping[str, Any], layers: Sequence[Layer], app: Document
) -> None:
    """Check ``values`` against the app's parameter schema (JSON Schema draft 2020-12)."""
    schema_mark = app.mark("spec", "parameters")
    from reconciler.core.schema_guard import SchemaProblem

    compiled = _validator(json.dumps(schema, sort_keys=True))
    if isinstance(compiled, SchemaProblem):
        raise RenderError(
            f"spec.parameters of app {app.name!r}: {compiled.message}",
            mark=app.mark("spec", "parameters", *compiled.at),
        )
    if _is_valid(compiled.check, values):
        return
    try:
        errors = sorted(
            compiled.validator.iter_errors(values),
            key=lambda e: ([str(p) for p in e.absolute_path], e.message),
        )
    except Exception as exc:  # the jsonschema seam: the guard should have refused this schema
        raise RenderError(
            f"the parameter schema of app {app.name!r} cannot be evaluated "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            mark=schema_mark,
        ) from None
    if not errors:
        return
    error = errors[0]
    properties = schema.get("properties")
    path = _schema_error_path(error, properties if isinstance(properties, Mapping) else {})
    where = ".".join(str(p) for p in path) or "(all values)"
    more = f" ({len(errors) - 1} more problem(s) after this one)" if len(errors) > 1 else ""
    raise RenderError(
        f"value {where} of app {app.name!r} breaks the app's parameter schema "
        f"({schema_mark}): {error.message}{more}",
        mark=locate(layers, path),
    )


# -- placeholders ------------------------------------------------------------------------------


def iter_placeholders(text: str) -> Iterator[tuple[re.Match[str], str | None]]:
    """Each ``${...}`` in ``text`` with its name; ``$${`` escapes come back with name None."""
    for match in PLACEHOLDER.finditer(text):
        if match.group(0) == "$${":
            yield match, None
        elif match.group(1) is None:
            yield match, ""
        else:
            yield match, match.group(1)


def walk_strings(node: Any, at: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    """Every string of a manifest (keys and values) with the path that marks its line."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*at, key), str(key)
            yield from walk_strings(value, (*at, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk_strings(item, (*at, index))
    elif isinstance(node, str):
        yield at, node


@dataclass(frozen=True)
class Scope:
    """What placeholders of one app at one site may resolve to."""

    app: str
    site: str
    declared: frozenset[str]
    values: Mapping[str, Any]
    builtins: Mapping[str, Any]
    images: Mapping[str, Any]
    version: str

    def check_name(self, name: str, mark: Mark) -> str | None:
        """The parameter ``name`` refers to, None for a built-in; RenderError if unknown."""
        if not name or not NAME.match(name):
            raise RenderError(
                f"malformed placeholder ${{{name}}}; expected ${{parameter}} or a built-in "
                "such as ${images.server} (write $${ for a literal '${')",
                mark=mark,
            )
        if name in self.declared:
            return name
        root = name.split(".", 1)[0]
        if name in BUILTIN_NAMES or (root == "images" and "." in name):
            return None
        if root in self.declared:
            return root
        known = ", ".join(sorted(self.declared)) or "none"
        raise RenderError(
            f"unknown placeholder ${{{name}}} in app {self.app!r}: it is neither a parameter "
            f"declared in apps/{self.app}/app.yaml spec.parameters (declared: {known}) nor a "
            f"built-in ({', '.join(BUILTIN_NAMES)}, images.<key>)",
            mark=mark,
        )

    def resolve(self, name: str, mark: Mark) -> Any:
        param = self.check_name(name, mark)
        if param is None:
            if name.startswith("images."):
                key = name[len("images.") :]
                if key not in self.images:
                    have = ", ".join(sorted(self.images)) or "none"
                    raise RenderError(
                        f"${{{name}}}: version {self.version} of app {self.app!r} has no image "
                        f"{key!r} (images of that version: {have})",
                        mark=mark,
                    )
                return self.images[key]
            return self.builtins[name]
        if param not in self.values:
            raise RenderError(
                f"${{{name}}}: parameter {param!r} of app {self.app!r} has no value at site "
                f"{self.site!r}; give it a default in app.yaml or a value in the fleet, the "
                "site or its overrides",
                mark=mark,
            )
        value = self.values[param]
        rest = name[len(param) + 1 :].split(".") if name != param else []
        for depth, key in enumerate(rest):
            if not isinstance(value, Mapping) or key not in value:
                missing = ".".join([param, *rest[: depth + 1]])
                raise RenderError(
                    f"${{{name}}}: {missing} has no value at site {self.site!r}", mark=mark
                )
            value = value[key]
        return copy.deepcopy(value)


def _as_text(name: str, value: Any, mark: Mark) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    kind = "null" if value is None else "a map" if isinstance(value, Mapping) else "a list"
    raise RenderError(
        f"${{{name}}} is {kind} and cannot be written inside text; "
        "use the placeholder as the whole value",
        mark=mark,
    )


@dataclass(frozen=True)
class _Template:
    """Where a manifest's placeholders are: every string (key or value) holding ``${``.

    ``slots`` come in ``walk_strings`` order, so the first bad placeholder found is the
    same one a full walk finds. ``keyed``: a key holds a placeholder (or is not a
    string), so filling may rename keys and the manifest takes the general path.
    """

    slots: tuple[tuple[Path_, str, bool], ...]
    keyed: bool
    names: frozenset[str]


def _find_slots(node: Any, at: Path_, slots: list[tuple[Path_, str, bool]]) -> bool:
    keyed = False
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str) or "${" in key:
                keyed = True
                slots.append(((*at, key), str(key), True))
            keyed = _find_slots(value, (*at, key), slots) or keyed
    elif isinstance(node, list):
        for index, item in enumerate(node):
            keyed = _find_slots(item, (*at, index), slots) or keyed
    elif isinstance(node, str) and "${" in node:
        slots.append((at, node, False))
    return keyed


_TEMPLATES = ByIdentity(512)
_USED = ByIdentity(128)


def _template(doc: YamlDocument) -> _Template:
    found: _Template | None = _TEMPLATES.get(doc)
    if found is None:
        slots: list[tuple[Path_, str, bool]] = []
        keyed = _find_slots(doc.body, (), slots)
        names = frozenset(n for _, text, _ in slots for _, n in iter_placeholders(text) if n)
        found = _TEMPLATES.put(doc, _Template(tuple(slots), keyed, names))
    return found


def used_parameters(manifests: Sequence[YamlDocument], scope: Scope) -> set[str]:
    """Parameters the manifests refer to; RenderError for the first unknown placeholder.

    The answer depends on the manifests and the declared parameters only, so it is
    kept per manifests object: an app's manifests are walked once per run, not once
    per site.
    """
    known: dict[frozenset[str], frozenset[str]] | None = _USED.get(manifests)
    if known is not None and scope.declared in known:
        return set(known[scope.declared])
    used: set[str] = set()
    for doc in manifests:
        for at, text, _ in _template(doc).slots:
            for _, name in iter_placeholders(text):
                if name is None:
                    continue
                param = scope.check_name(name, doc.mark(*at))
                if param is not None:
                    used.add(param)
    if known is None:
        known = _USED.put(manifests, {})
    assert known is not None
    known[scope.declared] = frozenset(used)
    return used


def placeholder_names(doc: YamlDocument) -> frozenset[str]:
    """Every name the manifest's placeholders use (parameters and built-ins alike)."""
    return _template(doc).names


def snapshot(node: Any) -> Any:
    """``node`` kept to be copied again and again (`from_snapshot`): as ``marshal``'s bytes,
    which C rebuilds about twice as fast as `_copy` copies, or as it is if marshal
    cannot write a value of it."""
    import marshal

    try:
        return marshal.dumps(node, 4)
    except ValueError:
        return node


def from_snapshot(kept: Any) -> Any:
    """A fresh deep copy of what `snapshot` kept."""
    import marshal

    if type(kept) is bytes:
        return marshal.loads(kept)  # noqa: S302  -- this process's own bytes, from `snapshot`
    return _copy(kept)


def _copy(node: Any) -> Any:
    """A deep copy of plain data (dicts, lists, scalars), several times quicker than deepcopy."""
    if type(node) is dict:
        return {key: _copy(value) for key, value in node.items()}
    if type(node) is list:
        return [_copy(item) for item in node]
    return node


def fill(doc: YamlDocument, scope: Scope) -> Any:
    """``substitute(doc.body, doc, scope)``, touching only the strings that hold placeholders.

    A manifest that names the site (``${site.name}``) is filled at every site, but most of
    it comes out the same at each: the strings without that name are filled once per
    everything else they can depend on (`_prefilled`), and only the site's strings at
    each site. A placeholder that cannot be filled is never kept: the error is raised
    by a whole fill, so it is the first one in the manifest and names this site.
    """
    template = _template(doc)
    if template.keyed:
        return substitute(doc.body, doc, scope)
    if _SITE_NAME in template.names:
        prefilled = _prefilled(doc, template, scope)
        if prefilled is not None:
            kept, later = prefilled
            try:
                return _fill_slots(from_snapshot(kept), later, doc, scope)
            except RenderError:
                pass  # raised again below, by the fill that meets it first
    return _fill_slots(_copy(doc.body), template.slots, doc, scope)


_SITE_NAME = "site.name"
# Per manifest, per everything but the site's name that its strings can depend on: the
# manifest with the other strings filled (as `snapshot` keeps it) and the strings left.
_PREFILLED = ByIdentity(512)
_PREFILLED_PER_MANIFEST = 256


def _prefilled(
    doc: YamlDocument, template: _Template, scope: Scope
) -> tuple[Any, tuple[tuple[Path_, str, bool], ...]] | None:
    """The manifest with every string that does not use ``${site.name}`` filled, and the
    slots of those that do; None when the whole manifest is one string or a string
    cannot be filled (`fill` then fills it whole, and raises)."""
    if any(not at for at, _, _ in template.slots):
        return None
    key = (
        scope.version,
        repr(scope.values),
        scope.declared,
        tuple(sorted((k, repr(v)) for k, v in scope.images.items())),
        tuple((k, v) for k, v in scope.builtins.items() if k != _SITE_NAME),
    )
    known: dict[Any, Any] | None = _PREFILLED.get(doc)
    if known is None:
        known = _PREFILLED.put(doc, {})
    assert known is not None
    found = known.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    now: list[tuple[Path_, str, bool]] = []
    later: list[tuple[Path_, str, bool]] = []
    for slot in template.slots:
        uses = any(name == _SITE_NAME for _, name in iter_placeholders(slot[1]))
        (later if uses else now).append(slot)
    try:
        body = _fill_slots(_copy(doc.body), now, doc, scope)
    except RenderError:
        return None
    if len(known) >= _PREFILLED_PER_MANIFEST:
        del known[next(iter(known))]
    found = known[key] = (snapshot(body), tuple(later))
    return found


def _fill_slots(
    body: Any, slots: Sequence[tuple[Path_, str, bool]], doc: YamlDocument, scope: Scope
) -> Any:
    """``body`` with the strings at ``slots`` (none of them a key) filled, in their order."""
    for at, text, _ in slots:
        value = _fill_text(text, doc, scope, at, key=False)
        if not at:
            return value
        parent = body
        for key in at[:-1]:
            parent = parent[key]
        parent[at[-1]] = value
    return body


def substitute(node: Any, doc: YamlDocument, scope: Scope, at: Path_ = ()) -> Any:
    """A copy of ``node`` with every placeholder filled in."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            new_key = _fill_text(str(key), doc, scope, (*at, key), key=True)
            if new_key in out:
                raise RenderError(
                    f"key {new_key!r} appears twice after placeholders are filled in",
                    mark=doc.mark(*at, key),
                )
            out[new_key] = substitute(value, doc, scope, (*at, key))
        return out
    if isinstance(node, list):
        return [substitute(item, doc, scope, (*at, i)) for i, item in enumerate(node)]
    if isinstance(node, str):
        return _fill_text(node, doc, scope, at, key=False)
    return node


def _fill_text(text: str, doc: YamlDocument, scope: Scope, at: Path_, *, key: bool) -> Any:
    if "${" not in text:
        return text
    try:  # the line is looked up only for an error: filling again raises it with the line
        return _filled(text, Mark(doc.path), scope, key=key)
    except RenderError:
        return _filled(text, doc.mark(*at), scope, key=key)


def _filled(text: str, mark: Mark, scope: Scope, *, key: bool) -> Any:
    matches = list(iter_placeholders(text))
    if not key and len(matches) == 1:
        match, name = matches[0]
        if name is not None and match.start() == 0 and match.end() == len(text):
            return scope.resolve(name, mark)
    parts: list[str] = []
    last = 0
    for match, name in matches:
        parts.append(text[last : match.start()])
        if name is None:
            parts.append("${")
        else:
            parts.append(_as_text(name, scope.resolve(name, mark), mark))
        last = match.end()
    parts.append(text[last:])
    return "".join(parts)
