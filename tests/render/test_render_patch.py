"""RFC 7386 and RFC 6902 against the RFCs' own examples, plus the failure cases."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.render._patch import (
    PatchError,
    json_equal,
    json_patch,
    merge_patch,
    parse_pointer,
)

# RFC 7386 Appendix A: (target, patch, result)
MERGE_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), MERGE_CASES)
def test_merge_patch_rfc7386_examples(target, patch, result):
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before


# RFC 6902 Appendix A (the cases that succeed)
JSON_CASES = [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    (
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    (
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1, "b": 1}),
    ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
]


@pytest.mark.parametrize(("target", "ops", "result"), JSON_CASES)
def test_json_patch_rfc6902_examples(target, ops, result):
    before = copy.deepcopy(target)
    assert json_patch(target, ops) == result
    assert target == before


FAILING = [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], "does not exist"),
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "not the one"),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], "not the one"),
    ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/2", "value": 1}], "past the end"),
    ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/01", "value": 1}], "not a list index"),
    ({"foo": 1}, [{"op": "remove", "path": "/bar"}], "does not exist"),
    ({"foo": 1}, [{"op": "replace", "path": "/bar", "value": 2}], "does not exist"),
    ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}], "into itself"),
    ({"a": 1}, [{"op": "frob", "path": "/a"}], "unknown operation"),
    ({"a": 1}, [{"op": "add", "path": "a", "value": 1}], "must be empty or start"),
    ({"a": 1}, [{"op": "add", "path": "/a"}], "needs a 'value'"),
    ({"a": True}, [{"op": "test", "path": "/a", "value": 1}], "not the one"),
]


@pytest.mark.parametrize(("target", "ops", "message"), FAILING)
def test_json_patch_failures_leave_the_target_alone(target, ops, message):
    before = copy.deepcopy(target)
    with pytest.raises(PatchError, match=message) as info:
        json_patch(target, [{"op": "add", "path": "/zzz", "value": 0}, *ops])
    assert info.value.index == 1
    assert target == before


def test_pointer_escapes():
    assert parse_pointer("") == []
    assert parse_pointer("/a~1b/m~0n/") == ["a/b", "m~n", ""]
    with pytest.raises(PatchError):
        parse_pointer("/a~2")


def test_json_equality_follows_the_rfc():
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(json_values, st.dictionaries(st.text(max_size=3), json_values, max_size=3))
def test_merge_patch_is_idempotent(target, patch):
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
