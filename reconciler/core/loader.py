"""Read YAML from the repository into plain data, remembering where every value came from.

PyYAML's ordinary loaders are wrong for a GitOps repository in ways that bite
in production, so this module composes the node graph itself and refuses:

- duplicate mapping keys (PyYAML silently keeps the last one: a reviewer reads
  the first ``replicas:`` and the node runs the second);
- anchors, aliases and merge keys (the "billion laughs" expansion bomb, and
  values that change in two places when a reviewer sees one);
- files over ``MAX_FILE_BYTES``, documents over ``MAX_NODES`` nodes and values nested
  deeper than ``MAX_DEPTH`` (libyaml's composer recurses in C and crashes the process
  on a few hundred thousand ``[``; every reader after it recurses in Python);
- integers written with more than ``MAX_INT_CHARS`` characters (no schema allows one,
  and Python's own limit on digits would raise mid-parse), and explicit tags YAML cannot apply
  (``!!bool maybe``, ``!!int abc``) or that make no JSON value (``!!binary``, ``!!set``);
- bytes that are not UTF-8, control characters, and empty files;
- several documents where one is expected, and unknown ``apiVersion``/``kind``.

Mapping keys are always the text the author wrote (``1.10`` stays ``"1.10"``),
and timestamps stay strings, so every body is JSON-compatible and schemas see
exactly what is in the file. Every value keeps a 1-based line: findings and
errors point at ``file:line``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from sys import intern
from typing import Any, ClassVar

import yaml

from reconciler.core.errors import DocumentError, Mark

API_VERSION = "outpost/v1"
KINDS = frozenset(
    {
        "Site",
        "Hardware",
        "Fleet",
        "App",
        "VirtualMachine",
        "SiteOverrides",
        "Policy",
        "Signers",
        "AgentConfig",
        "Promotion",
        "Halt",
    }
)
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_INT_CHARS = 100

# Below this many nesting indicators a document cannot be deep enough to hurt the composer.
_SAFE_INDICATORS = 2000
# Every YAML line break (PyYAML's: CR, LF, NEL, LS, PS) and every indicator that opens a level.
_DEPTH_INDICATORS = (
    b"\n", b"\r", "\x85".encode(), "\u2028".encode(), "\u2029".encode(),
    b"-", b"?", b":", b"[", b"{",
)  # fmt: skip

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALAR = yaml.ScalarNode
_MAPPING = yaml.MappingNode
_SEQUENCE = yaml.SequenceNode
# Keys and short strings are interned: across a fleet's 30,000 documents the same keys
# and values (``apiVersion``, ``amd64``, ``Europe/Berlin``) come back thousands of times,
# and one copy of each halves the memory the loaded documents take.
_INTERN_MAX = 64
_RESOLVED_MAX = 1 << 16


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader, remembering which tag each plain scalar resolves to.

    Composing calls the (Python) resolver for every scalar, and it tries a handful of
    regular expressions each time; across a fleet's files the same plain scalars
    (keys, ``amd64``, ``usb``, ``true``) come back thousands of times. For a plain
    scalar the tag depends on its text alone, as the safe loader has no path
    resolvers; other calls go to the resolver as before.
    """

    _resolved: ClassVar[dict[str, str]] = {}
    # No path resolvers, whatever is registered on PyYAML's own loaders: a node's tag
    # depends on the node alone.
    yaml_path_resolvers: ClassVar[dict[Any, Any]] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is _SCALAR:
            if not implicit[0]:  # quoted: a string, as the resolver says
                return _STR
            tag = self._resolved.get(value)
            if tag is None:
                if len(self._resolved) >= _RESOLVED_MAX:
                    self._resolved.clear()
                tag = self._resolved[value] = super().resolve(kind, value, implicit)
            return tag
        if kind is _MAPPING:
            return _MAP
        if kind is _SEQUENCE:
            return _SEQ
        return super().resolve(kind, value, implicit)

    # Composing calls these around every node to follow path resolvers; there are none.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_BOOLS: dict[str, bool] = dict(yaml.constructor.SafeConstructor.bool_values)
# Scalars the converter constructs: JSON's types. Anything else (binary, set, omap,
# pairs, python/...) is refused with its line.
_SCALAR_TAGS = frozenset({_INT, "tag:yaml.org,2002:float", _BOOL, _NULL})
_COLLECTION_TAGS = frozenset({_MAP, _SEQ})

Path_ = tuple[str | int, ...]

# The line of one value: a scalar's is its line; a mapping's is (line, children) with
# children a flat tuple (key, entry, key, entry, ...) in the document's order; a
# sequence's is (line, [entry, ...]). Flat tuples take half the memory of dicts, and a
# fleet's validation holds the lines of 30,000 documents; mappings are small, so a
# key is found by a scan as fast as a hash.
_Entry = Any


def _child(children: Any, key: str | int) -> _Entry:
    if type(children) is tuple:
        # A mapping's keys are strings and its entries are lines (int) or tuples: a string
        # found in the flat tuple is a key, and its entry follows it.
        if type(key) is not str:
            return None
        try:
            return children[children.index(key) + 1]
        except ValueError:
            return None
    if type(children) is list and isinstance(key, int) and 0 <= key < len(children):
        return children[key]
    return None


class Lines(Mapping[Path_, int]):
    """The line of every value of a document, shaped like the document.

    A mapping of paths (``("spec", "nodes", 0, "name")``) to 1-based lines, stored as
    a tree that mirrors the body, so loading allocates no path per value. A key's
    own line stands for its value (a finding about ``spec.fleets`` points at the
    ``fleets:`` line); a list item's line is where the item starts.
    """

    __slots__ = ("_root",)

    def __init__(self, root: _Entry) -> None:
        self._root = root

    @property
    def tree(self) -> _Entry:
        """The lines as stored: a line, or (line, children) shaped like the value."""
        return self._root

    def nearest(self, keys: Path_) -> int:
        """The line of ``keys``, or of the longest prefix of it that is in the document."""
        entry = self._root
        line, children = (entry, None) if type(entry) is int else entry
        for key in keys:
            entry = _child(children, key)
            if entry is None:
                break
            line, children = (entry, None) if type(entry) is int else entry
        return int(line)

    def _find(self, path: Path_) -> int | None:
        entry = self._root
        for key in path:
            entry = _child(None if type(entry) is int else entry[1], key)
            if entry is None:
                return None
        return int(entry if type(entry) is int else entry[0])

    def __getitem__(self, path: Path_) -> int:
        line = self._find(tuple(path))
        if line is None:
            raise KeyError(path)
        return line

    def __iter__(self) -> Iterator[Path_]:
        stack: list[tuple[Path_, _Entry]] = [((), self._root)]
        while stack:
            path, entry = stack.pop()
            yield path
            children = None if type(entry) is int else entry[1]
            if type(children) is tuple:
                pairs = [(children[i], children[i + 1]) for i in range(0, len(children), 2)]
                stack.extend(((*path, k), e) for k, e in reversed(pairs))
            elif type(children) is list:
                stack.extend(((*path, i), e) for i, e in reversed(list(enumerate(children))))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(frozen=True)
class YamlDocument:
    """One YAML document: its plain-data body and the line of every value in it."""

    path: str
    body: Any
    lines: Lines = field(repr=False, compare=False)
    index: int = 0

    def mark(self, *keys: str | int) -> Mark:
        """The file:line of ``keys`` (a path into the body), or of its nearest ancestor."""
        return Mark(self.path, self.lines.nearest(keys))


@dataclass(frozen=True)
class Document(YamlDocument):
    """An Outpost document: a YAML document with ``apiVersion: outpost/v1`` and a known kind."""

    kind: str = ""
    name: str = ""

    @cached_property
    def spec(self) -> dict[str, Any]:
        """``spec`` of the body, or empty; asked for thousands of times per site, and a
        document's body is never changed once loaded."""
        spec = self.body.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def labels(self) -> dict[str, str]:
        metadata = self.body.get("metadata")
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        return labels if isinstance(labels, dict) else {}


def expect(doc: Document, kind: str, name: str | None = None) -> Document:
    """Check that the file at a kind's path holds that kind and the name its path gives."""
    if doc.kind != kind:
        raise DocumentError(
            f"expected kind {kind!r} at this path, found {doc.kind!r}", mark=doc.mark("kind")
        )
    if name is not None and doc.name != name:
        raise DocumentError(
            f"metadata.name is {doc.name!r} but the path says {name!r}; they must match",
            mark=doc.mark("metadata", "name"),
        )
    return doc


YAML_SUFFIXES = (".yaml", ".yml")


def yaml_path(tree: Any, base: str) -> str | None:
    """``base`` with the first YAML suffix under which ``tree`` (a ``source.Tree``) holds a
    file (``fleets/retail-eu`` → ``fleets/retail-eu.yaml``), or None."""
    return next((base + s for s in YAML_SUFFIXES if tree.exists(base + s)), None)


def read_document(tree: Any, path: str, kind: str, name: str | None = None) -> Document:
    """The ``kind`` document at ``path`` of ``tree``, read within ``MAX_FILE_BYTES`` and
    checked by `expect`."""
    return expect(load_document(tree.read(path, MAX_FILE_BYTES), path), kind, name)


def parse_yaml(
    data: bytes, path: str, *, multi: bool = False, limit: int = MAX_FILE_BYTES
) -> list[YamlDocument]:
    """Parse ``data`` (the bytes of ``path``) into documents, refusing the footguns above."""
    if len(data) > limit:
        raise DocumentError(
            f"file is {len(data):,} bytes; the limit is {limit:,} bytes "
            "(split it, or move large data out of the repository)",
            mark=Mark(path),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DocumentError(
            f"file is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
            mark=Mark(path, line),
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    # Each indicator takes a byte at least: a shorter file cannot hold more of them.
    if len(data) > _SAFE_INDICATORS and (
        sum(data.count(c) for c in _DEPTH_INDICATORS) > _SAFE_INDICATORS
    ):
        _check_depth(text, path)
    loader = _Loader(text)
    plain = "&" not in text and len(text) < MAX_NODES // 2  # see `_Converter`
    documents: list[YamlDocument] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            body, entry = _Converter(path, loader, plain=plain).convert(node)
            documents.append(YamlDocument(path, body, Lines(entry), len(documents)))
    except yaml.YAMLError as exc:
        raise yaml_error(exc, text, path) from None
    finally:
        loader.dispose()
    documents = [d for d in documents if d.body is not None]
    if not documents:
        raise DocumentError("file is empty; expected a YAML document", mark=Mark(path, 1))
    if len(documents) > 1 and not multi:
        second = documents[1]
        raise DocumentError(
            f"file holds {len(documents)} YAML documents; expected exactly one "
            "(put each document in its own file)",
            mark=second.mark(),
        )
    return documents


def yaml_error(exc: yaml.YAMLError, text: str, path: str) -> DocumentError:
    """PyYAML's error at ``path:line``, in its own words but without ``<unicode string>``.

    Every reader of YAML text goes through this, so an operator sees the file they
    edit and its line, never PyYAML's name for an in-memory string.
    """
    if isinstance(exc, yaml.MarkedYAMLError):
        problem_mark = exc.problem_mark or exc.context_mark
        line = problem_mark.line + 1 if problem_mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        return DocumentError(f"YAML syntax error: {problem}", mark=Mark(path, line))
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        return DocumentError(
            f"character U+{code:04X} is not allowed in YAML (control characters must be "
            "written as escapes inside double quotes)",
            mark=Mark(path, line),
        )
    return DocumentError(f"YAML error: {str(exc).splitlines()[0]}", mark=Mark(path))


def _check_depth(text: str, path: str) -> None:
    """Refuse values nested deeper than ``MAX_DEPTH`` before anything recursive sees them.

    Reads parser events (libyaml's parser is iterative; its composer is not). Only
    files with many nesting indicators come here: a line break, ``-``, ``?``, ``:``,
    ``[`` and ``{`` are the only ways to open a level, so fewer of them bound the depth.
    """
    loader = _BaseLoader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise DocumentError(
                        f"values are nested more than {MAX_DEPTH} levels deep; flatten the "
                        "document",
                        mark=Mark(path, event.start_mark.line + 1 if event.start_mark else 0),
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        raise yaml_error(exc, text, path) from None
    finally:
        loader.dispose()


def load_documents(data: bytes, path: str, *, multi: bool = False) -> list[Document]:
    """Parse Outpost documents: each a mapping with ``apiVersion: outpost/v1`` and a known kind."""
    return [as_document(doc) for doc in parse_yaml(data, path, multi=multi)]


def load_document(data: bytes, path: str) -> Document:
    """Parse the single Outpost document in ``path``."""
    return load_documents(data, path)[0]


def as_document(doc: YamlDocument) -> Document:
    """Check the envelope (mapping, apiVersion, kind) of a parsed document."""
    body = doc.body
    if not isinstance(body, dict):
        raise DocumentError(
            f"expected a mapping with apiVersion and kind, found {_type_name(body)}",
            mark=doc.mark(),
        )
    api_version = body.get("apiVersion")
    if api_version != API_VERSION:
        found = "no apiVersion" if api_version is None else f"apiVersion {api_version!r}"
        raise DocumentError(
            f"expected apiVersion {API_VERSION!r}, found {found}",
            mark=doc.mark("apiVersion"),
        )
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        found = "no kind" if kind is None else f"kind {kind!r}"
        raise DocumentError(
            f"expected kind one of {', '.join(sorted(KINDS))}; found {found}",
            mark=doc.mark("kind"),
        )
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return Document(
        doc.path,
        body,
        doc.lines,
        doc.index,
        kind=str(kind),
        name=name if isinstance(name, str) else "",
    )


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


class _Converter:
    """Turns a composed node graph into plain data and its ``Lines``, refusing aliases.

    ``plain``: the text has no anchor (``&``), so no node can come back through an alias,
    and is too short to hold ``MAX_NODES`` values (each takes at least a character of
    it); then nodes are neither remembered nor counted, and a mapping's string values
    are taken as they are met.
    """

    def __init__(self, path: str, loader: Any, *, plain: bool = False) -> None:
        self.path = path
        self.construct = loader.construct_object
        self.seen: set[int] = set()
        self.depth = 0
        self.plain = plain

    def convert(self, node: yaml.Node) -> tuple[Any, _Entry]:
        if not self.plain:
            seen = self.seen
            if id(node) in seen:
                raise DocumentError(
                    "the value anchored here is reused through an alias; YAML anchors and "
                    "aliases are not allowed, write the value out in full",
                    mark=Mark(self.path, node.start_mark.line + 1),
                )
            seen.add(id(node))
            if len(seen) > MAX_NODES:
                raise DocumentError(
                    f"document has more than {MAX_NODES:,} values; split it",
                    mark=Mark(self.path, node.start_mark.line + 1),
                )
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise DocumentError(
                    f"values are nested more than {MAX_DEPTH} levels deep; flatten the document",
                    mark=Mark(self.path, node.start_mark.line + 1),
                )
            if node.tag not in _COLLECTION_TAGS:
                raise self._tag_error(node)
            return self._collection(node)
        finally:
            self.depth -= 1

    def _tag_error(self, node: yaml.Node, why: str = "") -> DocumentError:
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        value = f" {node.value!r}" if isinstance(node, yaml.ScalarNode) else ""
        reason = why or "only strings, numbers, booleans, null, lists and mappings are allowed"
        return DocumentError(
            f"cannot read{value} as {tag}: {reason}",
            mark=Mark(self.path, node.start_mark.line + 1),
        )

    def _scalar(self, node: yaml.ScalarNode) -> tuple[Any, _Entry]:
        line = node.start_mark.line + 1
        tag = node.tag
        if tag == _STR:  # what SafeConstructor makes of a str scalar, without its dispatch
            value = node.value
            return (intern(value) if len(value) <= _INTERN_MAX else value), line
        if tag == _TIMESTAMP:
            return str(node.value), line
        if tag not in _SCALAR_TAGS:
            raise self._tag_error(node)
        text = node.value
        if tag == _INT:
            if len(text) > MAX_INT_CHARS:  # before int(): 4,300 digits raise
                raise self._int_error(node)
            if text.isdigit() and text.isascii() and (text[0] != "0" or len(text) == 1):
                return int(text), line  # decimal, as the constructor reads it (not 0-led: octal)
        elif tag == _NULL:
            return None, line  # the constructor's answer to every null
        elif tag == _BOOL:
            value = _BOOLS.get(text.lower())
            if value is not None:
                return value, line
        try:
            value = self.construct(node, deep=True)
        except (ValueError, KeyError, TypeError, yaml.YAMLError):
            raise self._tag_error(node, "the value is not of that type") from None
        return value, line

    def _int_error(self, node: yaml.ScalarNode) -> DocumentError:
        return DocumentError(
            f"integer {node.value[:20]}… has {len(node.value):,} characters; the limit is "
            f"{MAX_INT_CHARS} (quote it if it is an identifier, not a number)",
            mark=Mark(self.path, node.start_mark.line + 1),
        )

    def _collection(self, node: yaml.Node) -> tuple[Any, _Entry]:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, line)
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            entries: list[_Entry] = []
            plain = self.plain
            for item in node.value:
                if plain and item.tag == _STR and type(item) is _SCALAR:
                    text = item.value  # as `_scalar` takes it
                    items.append(intern(text) if len(text) <= _INTERN_MAX else text)
                    entries.append(item.start_mark.line + 1)
                    continue
                value, entry = self.convert(item)
                items.append(value)
                entries.append(entry)
            return items, (line, entries)
        raise self._tag_error(node)

    def _mapping(self, node: yaml.MappingNode, line: int) -> tuple[Any, _Entry]:
        result: dict[str, Any] = {}
        flat: list[Any] = []  # key, entry, key, entry, ...: the mapping's `Lines` children
        plain = self.plain
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                raise DocumentError(
                    "YAML merge keys (<<) are not allowed; write the keys out in full",
                    mark=Mark(self.path, key_line),
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise DocumentError(
                    "mapping keys must be plain strings", mark=Mark(self.path, key_line)
                )
            key = intern(str(key_node.value))
            if key in result:
                # In the flat list a string is always a key: its entry follows it.
                first = flat[flat.index(key) + 1]
                first_line = first if type(first) is int else first[0]
                raise DocumentError(
                    f"duplicate key {key!r} (first at line {first_line}); "
                    "YAML keeps only the last one, so remove one of them",
                    mark=Mark(self.path, key_line),
                )
            if plain and value_node.tag == _STR and type(value_node) is _SCALAR:
                text = value_node.value  # as `_scalar` takes it; its line is the key's
                result[key] = intern(text) if len(text) <= _INTERN_MAX else text
                flat += (key, key_line)
                continue
            value, entry = self.convert(value_node)
            result[key] = value
            # A key's own line is the better pointer for findings about its value.
            flat += (key, key_line if type(entry) is int else (key_line, entry[1]))
        return result, (line, tuple(flat))
