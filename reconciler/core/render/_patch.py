"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), small and strict.

Why not the ``jsonpatch`` package: the two RFCs fit in a hundred lines, and
owning them lets every failure say which operation broke and why in words an
operator can act on (``/spec/template/spec/containers/3: index 3 is past the
end of a list of 1``), without a third-party exception crossing the render
seam. Both functions work on a deep copy: a patch that fails half-way leaves
nothing half-applied (RFC 6902 §5: the whole document is not changed).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

_MISSING = object()


class PatchError(Exception):
    """A patch cannot be applied; ``index`` is the failing operation (JSON patch only)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 §2: objects merge key by key, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901: ``""`` is the whole document; ``~1`` is ``/`` and ``~0`` is ``~``."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        rest = token.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise PatchError(f"JSON pointer {pointer!r}: '~' must be followed by 0 or 1")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _index(token: str, length: int, pointer: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":  # noqa: S105 - RFC 6901 end-of-list token
        return length
    if not token.isdigit() or (len(token) > 1 and token[0] == "0") or not token.isascii():
        raise PatchError(f"{pointer}: {token!r} is not a list index")
    index = int(token)
    limit = length if allow_end else length - 1
    if index > limit:
        raise PatchError(f"{pointer}: index {index} is past the end of a list of {length}")
    return index


def _get(doc: Any, tokens: Sequence[str], pointer: str) -> Any:
    node = doc
    for depth, token in enumerate(tokens):
        here = "/" + "/".join(tokens[: depth + 1])
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"{pointer}: {here} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), here, allow_end=False)]
        else:
            raise PatchError(f"{pointer}: {here} goes into a value that is neither map nor list")
    return node


def _parent(doc: Any, tokens: Sequence[str], pointer: str) -> Any:
    return _get(doc, tokens[:-1], pointer)


def _add(doc: Any, tokens: Sequence[str], value: Any, pointer: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), pointer, allow_end=True), value)
    else:
        raise PatchError(f"{pointer}: the parent is neither map nor list")
    return doc


def _remove(doc: Any, tokens: Sequence[str], pointer: str) -> tuple[Any, Any]:
    if not tokens:
        raise PatchError("cannot remove the whole object")
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{pointer} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), pointer, allow_end=False))
    raise PatchError(f"{pointer}: the parent is neither map nor list")


def json_equal(a: Any, b: Any) -> bool:
    """RFC 6902 §4.6 equality: same JSON type and value (``1 == 1.0``, ``true != 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _operation(doc: Any, op: Mapping[str, Any]) -> Any:
    name = op.get("op")
    pointer = op.get("path")
    if not isinstance(pointer, str):
        raise PatchError("operation has no 'path' string")
    tokens = parse_pointer(pointer)
    value = op.get("value", _MISSING)
    if name in ("add", "replace", "test") and value is _MISSING:
        raise PatchError(f"{name} {pointer}: the operation needs a 'value'")
    if name == "add":
        return _add(doc, tokens, copy.deepcopy(value), pointer)
    if name == "remove":
        return _remove(doc, tokens, pointer)[0]
    if name == "replace":
        _get(doc, tokens, pointer)  # the target must exist (RFC 6902 §4.3)
        if not tokens:
            return copy.deepcopy(value)
        doc, _ = _remove(doc, tokens, pointer)
        return _add(doc, tokens, copy.deepcopy(value), pointer)
    if name == "test":
        if not json_equal(_get(doc, tokens, pointer), value):
            raise PatchError(f"test {pointer}: the value is not the one the patch expects")
        return doc
    source = op.get("from")
    if name in ("move", "copy"):
        if not isinstance(source, str):
            raise PatchError(f"{name} {pointer}: the operation needs a 'from' pointer")
        from_tokens = parse_pointer(source)
        if name == "copy":
            return _add(doc, tokens, copy.deepcopy(_get(doc, from_tokens, source)), pointer)
        if tokens[: len(from_tokens)] == from_tokens and len(tokens) > len(from_tokens):
            raise PatchError(f"move {source} → {pointer}: cannot move a value into itself")
        if tokens == from_tokens:
            _get(doc, tokens, pointer)
            return doc
        doc, moved = _remove(doc, from_tokens, source)
        return _add(doc, tokens, moved, pointer)
    raise PatchError(f"unknown operation {name!r}; expected add, remove, replace, move, copy, test")


def json_patch(target: Any, operations: Sequence[Any]) -> Any:
    """RFC 6902: apply ``operations`` in order to a copy of ``target``; all or nothing."""
    doc = copy.deepcopy(target)
    for index, op in enumerate(operations):
        if not isinstance(op, Mapping):
            raise PatchError("an operation must be a map with op and path", index)
        try:
            doc = _operation(doc, op)
        except PatchError as exc:
            raise PatchError(exc.message, index) from None
    return doc
