"""Filling a manifest's placeholders through its template gives what the full walk gives.

``fill`` copies a manifest and fills only the strings its template lists;
``substitute`` walks every node. Both must produce the same object, or raise the
same error at the same line, for any manifest and any values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.errors import RenderError
from reconciler.loader import YamlDocument, parse_yaml
from reconciler.render._params import Scope, fill, substitute, used_parameters

ROOT = Path(__file__).resolve().parents[2]


def scope(values: dict[str, Any], declared: frozenset[str] | None = None) -> Scope:
    return Scope(
        app="web",
        site="s1",
        declared=frozenset(values) if declared is None else declared,
        values=values,
        builtins={
            "app.name": "web",
            "app.version": "1.0.0",
            "app.namespace": "web",
            "site.name": "s1",
            "site.timezone": "Europe/Berlin",
            "site.type": "store",
        },
        images={"server": "registry.example.com/web@sha256:" + "a" * 64},
        version="1.0.0",
    )


def outcome(function: Any, *args: Any) -> Any:
    try:
        return ("ok", function(*args))
    except RenderError as exc:
        return ("error", exc.message, str(exc.mark))


def test_the_example_apps_fill_like_the_full_walk() -> None:
    manifests = [
        doc
        for path in sorted((ROOT / "apps").glob("*/manifests/*.yaml"))
        for doc in parse_yaml(path.read_bytes(), path.relative_to(ROOT).as_posix(), multi=True)
    ]
    assert manifests
    values = {"replicas": 2, "greeting": "hi", "tls": {"port": 8443}}
    for doc in manifests:
        s = scope(values, frozenset())
        assert outcome(fill, doc, s) == outcome(substitute, doc.body, doc, s)


_texts = st.sampled_from(
    [
        "plain",
        "${greeting}",
        "${replicas}",
        "${tls}",
        "${tls.port}/tcp",
        "${tls.nope}",
        "${images.server}",
        "${images.nope}",
        "${site.name}-${app.version}",
        "$${HOME}",
        "${unknown}",
        "${",
        "${bad name}",
        "x ${tls} y",
    ]
)
_keys = st.one_of(st.sampled_from(["a", "b", "name", "${greeting}", "k-${site.name}"]), _texts)
_nodes = st.recursive(
    st.one_of(_texts, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(body=_nodes.filter(lambda node: node is not None), with_tls=st.booleans())
def test_fill_agrees_with_substitute(body: Any, with_tls: bool) -> None:
    text = yaml.safe_dump(body, sort_keys=False)
    doc = parse_yaml(text.encode(), "apps/web/manifests/m.yaml")[0]
    values: dict[str, Any] = {"greeting": "hello", "replicas": 1}
    if with_tls:
        values["tls"] = {"port": 8443}
    s = scope(values, frozenset({"greeting", "replicas", "tls"}))
    assert outcome(fill, doc, s) == outcome(substitute, doc.body, doc, s)
    assert outcome(fill, doc, s) == outcome(fill, doc, s)


def test_fill_leaves_the_manifest_alone() -> None:
    doc = parse_yaml(b"a: {b: '${greeting}', c: [1, {d: x}]}\n", "m.yaml")[0]
    filled = fill(doc, scope({"greeting": "hi"}))
    assert filled == {"a": {"b": "hi", "c": [1, {"d": "x"}]}}
    filled["a"]["c"][1]["d"] = "changed"
    assert doc.body == {"a": {"b": "${greeting}", "c": [1, {"d": "x"}]}}


def test_used_parameters_are_remembered_per_declaration() -> None:
    docs: tuple[YamlDocument, ...] = tuple(parse_yaml(b"a: '${greeting} ${x}'\n", "m.yaml"))
    assert used_parameters(docs, scope({}, frozenset({"greeting", "x"}))) == {"greeting", "x"}
    assert used_parameters(docs, scope({}, frozenset({"greeting", "x"}))) == {"greeting", "x"}
    with pytest.raises(RenderError, match=r"unknown placeholder \$\{x\}"):
        used_parameters(docs, scope({}, frozenset({"greeting"})))
