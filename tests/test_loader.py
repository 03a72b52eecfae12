"""The YAML loader: every footgun refused with file:line, every value's line remembered."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.errors import DocumentError
from reconciler.core.loader import MAX_FILE_BYTES, load_document, parse_yaml

SITE = b"""apiVersion: outpost/v1
kind: Site
metadata:
  name: de-ber-0042
spec:
  timezone: Europe/Berlin
  fleets:
    - retail-eu
"""


def test_lines_of_nested_values() -> None:
    doc = load_document(SITE, "sites/de-ber-0042/site.yaml")
    assert doc.kind == "Site"
    assert doc.name == "de-ber-0042"
    assert str(doc.mark("spec", "timezone")) == "sites/de-ber-0042/site.yaml:6"
    assert str(doc.mark("spec", "fleets", 0)) == "sites/de-ber-0042/site.yaml:8"
    # A path that does not exist points at its nearest existing ancestor.
    assert str(doc.mark("spec", "missing", 3)) == "sites/de-ber-0042/site.yaml:5"


def test_keys_stay_text_and_timestamps_stay_strings() -> None:
    [doc] = parse_yaml(b"versions:\n  1.10: {}\n  2: {}\nfrom: 2026-11-20\n", "a.yaml")
    assert doc.body == {"versions": {"1.10": {}, "2": {}}, "from": "2026-11-20"}


def test_a_scalars_type_depends_on_it_alone_whatever_path_resolvers_are_registered() -> None:
    """A scalar's type depends on the scalar alone, as in PyYAML's safe loader: quoted or
    tagged ``!!str`` it is a string (``! 7`` is resolved as plain, as PyYAML does), and a
    path resolver another library registers on PyYAML's loaders is not followed."""
    text = b"a: '1'\nb: \"true\"\nc: ! 7\nd: 7\ne: [x]\nf: {g: null}\nh: !!str 8\n"
    expected = {"a": "1", "b": "true", "c": 7, "d": 7, "e": ["x"], "f": {"g": None}, "h": "8"}
    assert yaml.safe_load(text) == expected
    [doc] = parse_yaml(text, "a.yaml")
    assert doc.body == expected
    for loader in (yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        saved = loader.__dict__.get("yaml_path_resolvers")
        loader.add_path_resolver("tag:yaml.org,2002:str", ["d"], yaml.ScalarNode)
        try:
            [doc] = parse_yaml(text, "a.yaml")
            assert doc.body == expected
            # a plain string the loader has not met yet goes through PyYAML's resolver,
            # which looks at path resolvers once no implicit one matched
            fresh = f"unmet-{id(loader)}"
            [doc] = parse_yaml(f"d: {fresh}\n".encode(), "b.yaml")
            assert doc.body == {"d": fresh}
            assert loader.yaml_path_resolvers  # the registration itself took
        finally:
            if saved is None:
                del loader.yaml_path_resolvers
            else:
                loader.yaml_path_resolvers = saved


@pytest.mark.parametrize(
    ("data", "line", "needle"),
    [
        (b"a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first at line 1)"),
        (b"a:\n  x: 1\n  x: 2\n", 3, "duplicate key 'x'"),
        (b"a:\n  x: [1]\nb: x\na: 3\n", 4, "duplicate key 'a' (first at line 1)"),
        (b"b: 1\na: [x]\nc: a\na: 2\n", 4, "duplicate key 'a' (first at line 2)"),
        (b"a: &anchor [1, 2]\nb: *anchor\n", 1, "anchors and aliases are not allowed"),
        (b"base: {x: 1}\nderived:\n  <<: {y: 2}\n", 3, "merge keys (<<) are not allowed"),
        (b"", 1, "file is empty"),
        (b"# only a comment\n", 1, "file is empty"),
        (b"a: 1\n---\nb: 2\n", 3, "holds 2 YAML documents; expected exactly one"),
        (b"a: [1, 2\n", 2, "YAML syntax error"),
        (b"a: 1\n\xff\xfe\n", 2, "not UTF-8"),
        (b"? [a, b]\n: 1\n", 1, "mapping keys must be plain strings"),
    ],
)
def test_footguns_are_refused_with_their_line(data: bytes, line: int, needle: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_yaml(data, "x.yaml")
    assert caught.value.mark is not None
    assert caught.value.mark.path == "x.yaml"
    assert caught.value.mark.line == line
    assert needle in caught.value.message


def test_billion_laughs_is_refused_before_expansion() -> None:
    bomb = b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n".encode()
    with pytest.raises(DocumentError, match="anchors and aliases"):
        parse_yaml(bomb, "bomb.yaml")


def test_size_cap() -> None:
    data = b"a: '" + b"x" * MAX_FILE_BYTES + b"'\n"
    with pytest.raises(DocumentError, match="the limit is 1,048,576 bytes"):
        parse_yaml(data, "big.yaml")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"- 1\n", "expected a mapping with apiVersion and kind, found a list"),
        (b"kind: Site\n", "expected apiVersion 'outpost/v1', found no apiVersion"),
        (b"apiVersion: v1\nkind: Site\n", "found apiVersion 'v1'"),
        (b"apiVersion: outpost/v1\nkind: Store\n", "found kind 'Store'"),
        (b"apiVersion: outpost/v1\n", "found no kind"),
        (b"apiVersion: outpost/v1\nkind: []\n", r"found kind \[\]"),
    ],
)
def test_envelope(data: bytes, needle: str) -> None:
    with pytest.raises(DocumentError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_document(data, "x.yaml")


def test_multi_document_manifests() -> None:
    docs = parse_yaml(b"a: 1\n---\nb: 2\n---\n", "m.yaml", multi=True)
    assert [d.body for d in docs] == [{"a": 1}, {"b": 2}]
    assert str(docs[1].mark("b")) == "m.yaml:3"


_scalars = st.one_of(
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
)
_keys = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _values, min_size=1, max_size=5))
def test_roundtrip_of_anything_pyyaml_writes(body: dict[str, object]) -> None:
    """Whatever a safe YAML dump produces, the loader reads back to the same data."""
    text = yaml.safe_dump(body, allow_unicode=True, sort_keys=False)
    [doc] = parse_yaml(text.encode(), "p.yaml")
    assert doc.body == body
    for key in body:
        assert doc.mark(key).line >= 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_crashes(data: bytes) -> None:
    """Arbitrary bytes either parse or raise DocumentError with a mark; nothing else escapes."""
    try:
        parse_yaml(data, "g.yaml", multi=True)
    except DocumentError as exc:
        assert exc.mark is not None
        assert exc.mark.path == "g.yaml"


def _reference_lines(text: str) -> dict[tuple[object, ...], int]:
    """Every path's line, computed the plain way from PyYAML's node graph."""
    lines: dict[tuple[object, ...], int] = {}

    def walk(node: yaml.Node, where: tuple[object, ...]) -> None:
        lines[where] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                walk(value_node, (*where, key_node.value))
                lines[(*where, key_node.value)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*where, index))

    walk(yaml.compose(text, Loader=yaml.SafeLoader), ())
    return lines


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(_keys, _values, min_size=1, max_size=5),
    st.booleans(),
    st.lists(st.one_of(_keys, st.integers(-1, 5)), max_size=3),
)
def test_lines_and_marks_match_the_node_graph(
    body: dict[str, object], flow: bool, extra: list[object]
) -> None:
    text = yaml.safe_dump(body, allow_unicode=True, sort_keys=False, default_flow_style=flow)
    [doc] = parse_yaml(text.encode(), "p.yaml")
    expected = _reference_lines(text)
    assert dict(doc.lines) == expected
    assert len(doc.lines) == len(expected)
    for path, line in expected.items():
        assert doc.lines[path] == line
        assert doc.mark(*path).line == line  # type: ignore[arg-type]
        probe = (*path, *extra)
        nearest = next(probe[:n] for n in range(len(probe), -1, -1) if probe[:n] in expected)
        assert doc.mark(*probe).line == expected[nearest]  # type: ignore[arg-type]


# -- edge cases that used to escape as Python errors ------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (b"a: 1\nb: !!bool maybe\n", 2, "cannot read 'maybe' as !!bool"),
        (b"a: !!int abc\n", 1, "cannot read 'abc' as !!int"),
        (b"a: !!float x\n", 1, "cannot read 'x' as !!float"),
        (b"a:\n  b: !!binary aGk=\n", 2, "as !!binary: only strings, numbers"),
        (b"a: !!set {x}\n", 1, "as !!set"),
        (b"a: " + b"9" * 5000 + b"\n", 1, "has 5,000 characters; the limit is 100"),
        (b"a: 1\nb: x\x07y\n", 2, "character U+0007 is not allowed"),
    ],
)
def test_values_yaml_cannot_give_us_are_findings_at_their_line(
    text: bytes, line: int, message: str
) -> None:
    with pytest.raises(DocumentError, match=re.escape(message)) as caught:
        parse_yaml(text, "f.yaml")
    assert caught.value.mark is not None
    assert (caught.value.mark.path, caught.value.mark.line) == ("f.yaml", line)
    assert "<unicode string>" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        b"a: " + b"[" * 200_000 + b"]" * 200_000 + b"\n",  # libyaml's composer would crash
        b"- " * 5000 + b"x\n",
        b"a: " + b"{b: " * 300 + b"1" + b"}" * 300 + b"\n",
        b"".join(b"  " * i + b"k:\n" for i in range(100)) + b"  " * 100 + b"v: 1\n",
    ],
)
def test_deep_nesting_is_a_finding(text: bytes) -> None:
    with pytest.raises(DocumentError, match="nested more than 64 levels"):
        parse_yaml(text, "f.yaml")


def test_a_long_binary_integer_within_the_limit_still_loads() -> None:
    assert parse_yaml(b"a: 0b" + b"1" * 64 + b"\n", "f.yaml")[0].body == {"a": 2**64 - 1}


_KEYS = st.sampled_from(["a", "b", "spec", "name", "1.10", "x y", "on", "&x"])
_SCALARS = st.one_of(
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.sampled_from(["s", "t u", "", "yes", "007", "2026-12-03", "a&b", "*c"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, min_size=1, max_size=3)
    ),
    max_leaves=12,
)


def _careful(text: str, path: str) -> list[tuple[object, object]]:
    """What the converter gives with every node remembered and counted (no fast path)."""
    from reconciler.core.loader import _Converter, _Loader

    loader = _Loader(text)
    try:
        converted = []
        while loader.check_node():
            converted.append(_Converter(path, loader, plain=False).convert(loader.get_node()))
        return converted
    finally:
        loader.dispose()


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=4), flow=st.booleans())
def test_a_text_without_anchors_converts_as_the_careful_converter_does(
    body: dict[str, object], flow: bool
) -> None:
    """The converter's fast path (no ``&`` in the text: no alias possible) gives the same
    values, types and lines as the path that remembers every node."""
    text = yaml.safe_dump(body, default_flow_style=flow, sort_keys=False)
    (doc,) = parse_yaml(text.encode(), "sites/x/site.yaml")
    [(careful_body, careful_lines)] = _careful(text, "sites/x/site.yaml")
    assert doc.body == careful_body == body
    assert repr(doc.body) == repr(careful_body)  # 1 stays 1, not True; "007" stays a string
    assert doc.lines.tree == careful_lines


_SPELLINGS = st.one_of(
    st.from_regex(r"\A[-+]?(0|[0-9][0-9_]{0,6}|0x[0-9a-fA-F]{1,4}|0b[01]{1,4}|[1-9]:[0-5][0-9])\Z"),
    st.sampled_from(["yes", "no", "on", "off", "true", "false", "y", "n", "null", "~", ""]).map(
        lambda word: "".join(
            c.upper() if i % 2 else c for i, c in enumerate(word)
        )  # mixed case too
    ),
    st.sampled_from(["Yes", "NO", "On", "OFF", "True", "FALSE", "Null", "NULL", "1.5", ".inf"]),
    st.text("0123456789٣²", min_size=1, max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_SPELLINGS, min_size=1, max_size=3))
def test_plain_scalars_read_as_the_safe_loader_reads_them(spellings: list[str]) -> None:
    """Integers, booleans and nulls the converter reads itself are what PyYAML's safe
    loader makes of the same text, value and type; the rest it leaves to the constructor."""
    text = "".join(f"k{i}: {word}\n" for i, word in enumerate(spellings)).encode()
    try:
        expected = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):
        return  # not a value the safe loader reads either
    [doc] = parse_yaml(text, "a.yaml")
    assert repr(doc.body) == repr(expected)
