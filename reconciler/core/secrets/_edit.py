"""Minimal textual edits of YAML files people maintain by hand.

``init-site`` and ``rotate-site`` change one value in a ``site.yaml`` that
someone wrote, with comments and an order that mean something to them. A YAML
re-dump would drop the comments and reorder keys, so we compose the file once to
learn where the value sits (PyYAML marks carry character offsets) and splice
the new text into exactly that span. The result is parsed again and compared
with the original: if anything but the one value changed, the edit is refused.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from reconciler.core.errors import DocumentError, Mark
from reconciler.core.loader import yaml_error

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Keys that follow `sops` in the contract's order: the new line goes before the first present.
_AFTER_SOPS = ("updateWindows", "maintenance", "freezes", "apps")


def _compose(text: str, path: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        error = yaml_error(exc, text, path)
        raise DocumentError(
            f"cannot edit: not valid YAML ({error.message})", mark=error.mark
        ) from None
    if not isinstance(node, yaml.MappingNode):
        raise DocumentError("cannot edit: the document is not a mapping", mark=Mark(path))
    return node


def _get(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def double_quoted(value: str) -> str:
    """``value`` as a double-quoted YAML scalar."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _splice(text: str, path: str, at: tuple[str, ...], key: str, value: str) -> str:
    """Set mapping ``at`` → ``key`` to the string ``value``; create the mapping if missing.

    ``at`` is (parent, child): the parent must exist as a block or flow mapping.
    """
    root = _compose(text, path)
    parent_key, child_key = at
    parent_pair = _get(root, parent_key)  # type: ignore[arg-type]
    if parent_pair is None or not isinstance(parent_pair[1], yaml.MappingNode):
        raise DocumentError(f"cannot edit: no {parent_key} mapping", mark=Mark(path))
    parent = parent_pair[1]
    quoted = double_quoted(value)
    child_pair = _get(parent, child_key)
    if child_pair is not None:
        child_key_node, child = child_pair
        if isinstance(child, yaml.MappingNode):
            entry = _get(child, key)
            if entry is not None:
                start, end = entry[1].start_mark.index, entry[1].end_mark.index
                return text[:start] + quoted + text[end:]
            if child.flow_style or not child.value:
                # `{}` or `{a: b}`: insert right after the brace.
                brace = text.index("{", child.start_mark.index)
                sep = ", " if child.value else ""
                return text[: brace + 1] + f"{key}: {quoted}{sep}" + text[brace + 1 :]
            first_key = child.value[0][0]
            indent = " " * first_key.start_mark.column
            at_line = _line_start(text, first_key.start_mark.index)
            return text[:at_line] + f"{indent}{key}: {quoted}\n" + text[at_line:]
        if isinstance(child, yaml.ScalarNode) and child.tag.endswith(":null"):
            start = child_key_node.start_mark.index
            end = max(child.end_mark.index, child_key_node.end_mark.index)
            rest = text[end:]
            if rest.startswith(":"):
                rest = rest[1:]
            return text[:start] + f"{child_key}: {{{key}: {quoted}}}" + rest
        raise DocumentError(
            f"cannot edit: {parent_key}.{child_key} is not a mapping",
            mark=Mark(path, child.start_mark.line + 1),
        )
    new_entry = f"{child_key}: {{{key}: {quoted}}}"
    if parent.flow_style or not parent.value:
        brace = text.index("{", parent.start_mark.index)
        sep = ", " if parent.value else ""
        return text[: brace + 1] + new_entry + sep + text[brace + 1 :]
    indent = " " * parent.value[0][0].start_mark.column
    before = next(
        (k for k, _ in parent.value if isinstance(k, yaml.ScalarNode) and k.value in _AFTER_SOPS),
        None,
    )
    if before is not None:
        at_line = _above_comments(text, _line_start(text, before.start_mark.index))
        return text[:at_line] + f"{indent}{new_entry}\n" + text[at_line:]
    # Nothing comes after `sops` in the contract's order: append after the last entry.
    end = content_end(parent.value[-1][1])
    newline = text.find("\n", end)
    if newline < 0:
        return text + f"\n{indent}{new_entry}\n"
    return text[: newline + 1] + f"{indent}{new_entry}\n" + text[newline + 1 :]


def content_end(node: yaml.Node) -> int:
    """Where a value's own text ends (a block collection's end mark can lie past comments)."""
    if (
        isinstance(node, yaml.MappingNode | yaml.SequenceNode)
        and node.value
        and not node.flow_style
    ):
        last = node.value[-1]
        return content_end(last[1] if isinstance(last, tuple) else last)
    return int(node.end_mark.index)


def _above_comments(text: str, line_start: int) -> int:
    """Move an insertion point up over the comment lines that belong to the next key."""
    while line_start > 0:
        previous = _line_start(text, line_start - 1)
        if not text[previous:line_start].strip().startswith("#"):
            break
        line_start = previous
    return line_start


def _without(body: Any, at: tuple[str, ...], key: str, drop_empty: bool) -> Any:
    body = copy.deepcopy(body)
    parent = body.get(at[0]) if isinstance(body, dict) else None
    child = parent.get(at[1]) if isinstance(parent, dict) else None
    if isinstance(child, dict):
        child.pop(key, None)
        if drop_empty and not child:
            parent.pop(at[1])  # type: ignore[union-attr]
    elif child is None and isinstance(parent, dict) and drop_empty:
        parent.pop(at[1], None)
    return body


def set_value(text: str, path: str, at: tuple[str, str], key: str, value: str) -> str:
    """``text`` with ``at[0].at[1].key`` set to ``value``, everything else byte-identical.

    Used for ``spec.sops.recipient`` in a site.yaml. Raises DocumentError if the
    file cannot be edited safely.
    """
    new_text = _splice(text, path, at, key, value)
    try:
        old = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
        new = yaml.load(new_text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        error = yaml_error(exc, new_text, path)
        raise DocumentError(f"cannot edit safely: {error.message}", mark=error.mark) from None
    parent = new.get(at[0]) if isinstance(new, dict) else None
    child = parent.get(at[1]) if isinstance(parent, dict) else None
    old_parent = old.get(at[0]) if isinstance(old, dict) else None
    had_child = isinstance(old_parent, dict) and isinstance(old_parent.get(at[1]), dict)
    if (
        not isinstance(child, dict)
        or child.get(key) != value
        or _without(old, at, key, not had_child) != _without(new, at, key, not had_child)
    ):
        raise DocumentError(
            f"cannot edit {'.'.join((*at, key))} safely in this file's layout; set it by hand "
            f"to {value}",
            mark=Mark(path),
        )
    return new_text
